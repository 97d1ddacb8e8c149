"""One run's configuration: every field with its default, its unit and its bounds, declared once.

Each section is a frozen dataclass; each field is declared by `setting(default, unit, ...)`, whose bounds travel as
the field's metadata. `check_fields` walks every field (sections, and tuples element by element) and enforces them,
so adding a field means declaring it here and nowhere else; `validate` adds only the rules that span fields. `build`
makes a RunConfig from nested dicts (TOML tables, a run's config.json) with type checks. Imports neither torch nor
model code: names and layer counts come from bnstudy.architectures. bnstudy.config loads experiments into these.

About 400 lines, kept in one module on purpose: it is the one place a field is declared, with its comment, unit and
bounds; spread over files, a section's rules would sit apart from the fields they bound.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from dataclasses import dataclass, field

from bnstudy.architectures import (ACTIVATION_KINDS, DATASET_MODELS, INIT_KINDS, NORM_KINDS, VGG_CFGS, WEIGHT_LAYERS,
                                   count_weight_layers)
from bnstudy.errors import ConfigError

BATCH_STATISTICS = ("batch", "noisy-batch", "l1", "l2", "linf")  # norms whose statistics are taken over the batch
PRESETS = ("smoke", "quick", "long", "paper")  # long: the paper's schedule at quick's width (docs/long.md)
BN_MODES = ("train", "eval")  # a probe's norms: train = batch statistics (as the step sees them) | eval = running ones
BN_MODE = "the statistics a probe's norms use: the batch's or the running ones"

MAX_SEED = 2**31 - 1  # torch, numpy and CUDA generators all take a seed of 31 bits
MAX_STEPS = 10**9  # steps and intervals: years of training at the paper's scale; step numbers stay well inside int64
MAX_EXAMPLES = 10**6  # 20x CIFAR-10's training split; a synthetic set that large is already 12 GB of float32 images
MAX_LAYER = 1_024  # no model here has more weight layers (model.dln_depth <= 1,024)
MAX_HVPS = 100_000  # each Hessian-vector product a double backward: more would run for days
MAX_PROBE_STEP = 1e6  # landscape.eta_max * train.lr: a longer step sends float32 weights far past any loss surface


def setting(default, unit: str, *, above=None, at_least=None, at_most=None, choices=None):
    """A field: its default, its unit (as messages name it), and its bounds: > above, >= at_least, <= at_most, or
    one of choices. A tuple field's bounds hold for each element."""
    rules = {"above": above, "at_least": at_least, "at_most": at_most, "choices": choices}
    return field(default=default, metadata={"unit": unit} | {k: v for k, v in rules.items() if v is not None})


def in_steps(default, unit: str = "steps", **lower_bound):
    """Steps between records or probes, or step numbers: >= 0 (0 = off) unless `lower_bound` says otherwise."""
    return setting(default, unit, at_most=MAX_STEPS, **(lower_bound or {"at_least": 0}))


# ----------------------------------------------------------------------------------------------
# The sections of one run. Every field: what it is, its unit and bounds, the paper's value.
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataConfig:
    # cifar10 | synthetic (a tiny labelled-synthetic set, tests only) | gaussian (DLN) | mnist, and any that
    # data.register_dataset adds (the choices are the live registry)
    dataset: str = setting("cifar10", "a dataset", choices=DATASET_MODELS)
    # training examples used; 0 = the whole split (CIFAR-10: 50,000; DLN: 1,000)
    train_size: int = setting(0, "examples", at_least=0, at_most=MAX_EXAMPLES)
    # test examples evaluated; 0 = the whole split (CIFAR-10: 10,000)
    test_size: int = setting(0, "examples", at_least=0, at_most=MAX_EXAMPLES)
    augment: bool = False  # random crop (pad 4) + horizontal flip; the paper's main runs: none
    # examples per forward pass when evaluating (memory only, not results)
    eval_batch: int = setting(1000, "examples per forward pass", above=0, at_most=MAX_EXAMPLES)


# The noise (paper: at most 1.25) is squared by the next BN's variance: float32 overflows near 1e19, so each
# constant stays at most 1e3
@dataclass(frozen=True)
class NoiseConfig:
    """Algorithm 1 of the paper: per step and unit mu ~ U(-n_mu, n_mu), sigma ~ U(1, n_sigma);
    per element m ~ U(mu - r_mu, mu + r_mu), s ~ N(sigma, r_sigma); a <- s * a + m."""

    # half-width of the per-unit mean shift (paper: 0.5)
    n_mu: float = setting(0.5, "standard deviations of a normalized unit", at_least=0, at_most=1e3)
    # upper end of the per-unit scale U(1, n_sigma) (paper: 1.25): at least 1, the lower end
    n_sigma: float = setting(1.25, "a scale factor", at_least=1, at_most=1e3)
    # half-width of the per-element shift around mu (paper: 0.1)
    r_mu: float = setting(0.1, "standard deviations of a normalized unit", at_least=0, at_most=1e3)
    # standard deviation of the per-element scale around sigma (paper: 0.1)
    r_sigma: float = setting(0.1, "a scale factor", at_least=0, at_most=1e3)


@dataclass(frozen=True)
class ModelConfig:
    kind: str = setting("vgg", "a model", choices=WEIGHT_LAYERS)  # vgg | dln | mlp, and any models.register_model adds
    # VGG depth: 11 | 13 | 16 | 19 (paper: VGG-like with >= 13 weight layers -> 16)
    cfg: int = setting(16, "a VGG depth", choices=tuple(VGG_CFGS))
    # multiplier on every channel count and head width (paper: 1); at most 64: VGG-16 at 64 has 32,768 channels,
    # 1e11 weights
    width: float = setting(1.0, "a multiplier on channel counts", above=0, at_most=64)
    # hidden widths of the classifier at width 1 (paper: 512 -> 512 -> 512 -> 10); at most 65,536: one 65,536^2
    # layer is 16 GiB of float32
    head: tuple[int, ...] = setting((512, 512), "units per hidden layer at width 1", above=0, at_most=65_536)
    # none | batch | noisy-batch | noise-only | l1 | l2 | linf | layer | group (architectures.NORM_KINDS)
    norm: str = setting("batch", "a normalization", choices=NORM_KINDS)
    # weight init: glorot (Xavier uniform, the paper) | kaiming (He normal, fan-in, ReLU gain) | lecun (Gaussian,
    # variance 1/fan-in: the MNIST MLP's) | small (N(0, 0.01^2): Ioffe & Szegedy's "small random Gaussian values")
    init: str = setting("glorot", "a weight initialization", choices=INIT_KINDS)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    # DLN: number of linear layers (paper: 25); at most 1,024: a deeper DLN's gradients vanish or overflow float32
    dln_depth: int = setting(25, "linear layers", at_least=1, at_most=MAX_LAYER)
    # DLN: input, hidden and output width (paper: 10); at most 4,096: a 4,096^2 layer per depth, 64 MiB each
    dln_width: int = setting(10, "units per layer", at_least=1, at_most=4_096)
    # MLP (Ioffe & Szegedy's MNIST network: 3 hidden layers of 100 sigmoid units on 28 x 28 inputs); at most 1,024
    # layers and 65,536 units, as the DLN's and the VGG head's bounds
    mlp_depth: int = setting(3, "hidden layers", at_least=1, at_most=MAX_LAYER)
    mlp_width: int = setting(100, "units per hidden layer", at_least=1, at_most=65_536)
    mlp_inputs: int = setting(784, "input features (the image's pixels)", at_least=1, at_most=1_000_000)
    activation: str = setting("sigmoid", "a nonlinearity", choices=ACTIVATION_KINDS)  # the MLP's: sigmoid | relu | tanh


@dataclass(frozen=True)
class TrainConfig:
    steps: int = in_steps(15_000, "SGD steps", above=0)  # paper: 15,000 for VGG, about 38 epochs at batch 128
    batch_size: int = setting(128, "examples per step", above=0, at_most=MAX_EXAMPLES)  # paper: 128
    # constant learning rate, plain SGD, no momentum or weight decay (paper: 0.1); at most 1e3: sweeps here stop
    # at 2, and 1e308 overflows torch's float32 step
    lr: float = setting(0.1, "the SGD step size", above=0, at_most=1e3)
    log_every: int = in_steps(50, above=0)  # steps between flushes of the per-step training metrics to disk
    eval_every: int = in_steps(1_000, above=0)  # steps between test-set evaluations (also at the last step)
    checkpoint_every: int = in_steps(500, above=0)  # steps between checkpoints (resume point after a crash)
    # CPU threads for torch; 0 = torch's default. Tiny models (the DLN) run fastest on 1. At most 1,024: more than
    # any machine's cores; OpenMP fails on huge counts
    threads: int = setting(0, "CPU threads", at_least=0, at_most=1_024)


@dataclass(frozen=True)
class ActivationsConfig:
    # weight-layer numbers (from 1) whose pre-ReLU output is recorded; () = off
    layers: tuple[int, ...] = setting((), "a weight-layer number", at_least=1, at_most=MAX_LAYER)
    # units (channels) per layer, chosen at random once per run; at most 65,536: more than any layer has (units
    # are clipped to its width)
    units: int = setting(4, "units per layer", above=0, at_most=65_536)
    every: int = in_steps(50, above=0)  # record at steps t and t+1 for t a multiple of this (t+1: step-to-step moments)
    # steps at which each unit also records its 1st..99th percentiles (Fig. 6)
    density_at: tuple[int, ...] = in_steps((), "a step number")


@dataclass(frozen=True)
class LandscapeConfig:
    """Loss landscape along the gradient (docs/protocol.md, Fig. 4, 10-13): probe on the step's own batch."""

    every: int = in_steps(0)  # steps between probes; 0 = off
    # smallest and largest step size, as multiples of train.lr (paper, VGG: 1/2 and 4; DLN: 1/100 and 30)
    eta_min: float = setting(0.5, "multiples of train.lr", above=0, at_most=1e4)
    eta_max: float = setting(4.0, "multiples of train.lr", above=0, at_most=1e4)
    # step sizes on the grid; at most 1,000: each a forward and backward pass, more would hang a run
    points: int = setting(8, "step sizes per probe", at_least=1, at_most=1_000)
    spacing: str = setting("linear", "a grid spacing", choices=("linear", "log"))
    # gradient (the paper) | random (filter-normalized Gaussian, Li et al. 2018)
    direction: str = setting("gradient", "a probe direction", choices=("gradient", "random"))
    bn_mode: str = setting("train", BN_MODE, choices=BN_MODES)  # the paper: train
    # Beyond the paper: the same probe along the filter-normalized gradient (each filter's step scaled to that filter's
    # own weight norm, Li et al. 2018), recorded beside the plain one as probe "landscape-filter". A weight followed by
    # BN is scale-invariant, so this direction and its grid do not move with ||W|| as the plain gradient's do.
    filter_every: int = in_steps(0)  # steps between probes along the filter-normalized gradient; 0 = off
    # smallest and largest step, as fractions of each filter's norm: [1/2, 4] x 1%, the relative BN layers' step per
    # SGD step at LR 0.1 (quick controls: 0.99% early, 1.02% late); at most 10: a step ten times the filter itself
    filter_eta_min: float = setting(0.005, "fractions of each filter's norm", above=0, at_most=10.0)
    filter_eta_max: float = setting(0.04, "fractions of each filter's norm", above=0, at_most=10.0)


@dataclass(frozen=True)
class ICSConfig:
    """Internal covariate shift by Definition 2.1 (docs/protocol.md, Fig. 3): ||G - G'|| and cos(G, G')."""

    every: int = in_steps(0)  # steps between probes; 0 = off
    # weight-layer numbers (paper: VGG #5, #10; DLN #9, #17)
    layers: tuple[int, ...] = setting((5, 10), "a weight-layer number", at_least=1, at_most=MAX_LAYER)
    bn_mode: str = setting("train", BN_MODE, choices=BN_MODES)  # the paper: train


@dataclass(frozen=True)
class CurvatureConfig:
    """Top Hessian eigenvalues by Lanczos on Hessian-vector products (beyond the paper)."""

    every: int = in_steps(0)  # steps between probes; 0 = off
    # eigenvalues, the algebraically largest; at most 64: Lanczos keeps every basis vector (max_hvps of them), each
    # model-sized
    k: int = setting(1, "eigenvalues", at_least=1, at_most=64)
    # relative accuracy asked of each eigenvalue, by its Ritz residual bound (Lanczos); at most 1: 1 already asks for
    # no digit at all
    tol: float = setting(1e-3, "a relative accuracy", above=0, at_most=1.0)
    # cap on Hessian-vector products per probe (not converged when reached: eigenvalues NaN)
    max_hvps: int = setting(100, "Hessian-vector products", at_least=1, at_most=MAX_HVPS)
    bn_mode: str = setting("train", BN_MODE, choices=BN_MODES)  # train: as the training step sees the loss


@dataclass(frozen=True)
class SpectrumConfig:
    """The Hessian's spectral density by stochastic Lanczos quadrature, and the gradient's share in its top-k
    eigenvectors (beyond the paper: Ghorbani et al. 2019; bnstudy.probes.spectrum)."""

    at: tuple[int, ...] = in_steps((), "a step number")  # the steps at which to probe (before the step); () = off
    bn_modes: tuple[str, ...] = setting(("train",), BN_MODE, choices=BN_MODES)  # each probed separately
    # start vectors (Rademacher) of the quadrature; at most 1,000: each m Hessian-vector products
    n_v: int = setting(3, "start vectors", at_least=1, at_most=1_000)
    # Lanczos steps per start vector: m Ritz values, exact moments up to degree 2m - 1; at most 1,000: the basis
    # holds m vectors the size of the model
    m: int = setting(30, "Lanczos steps", at_least=1, at_most=1_000)
    # the top eigenvectors whose span the gradient's share is taken in (10: CIFAR-10's classes)
    k: int = setting(10, "eigenvectors", at_least=1, at_most=1_000)
    tol: float = setting(1e-3, "a relative accuracy", above=0, at_most=1.0)  # residual bound asked of each of the top k
    # Hessian-vector products for the top k at most (then the Ritz values are lower bounds)
    max_hvps: int = setting(150, "Hessian-vector products", at_least=1, at_most=MAX_HVPS)


@dataclass(frozen=True)
class WeightsConfig:
    """Per weight layer ||W||, the step's gradient, <g, W> and the norm's change; the logits' scale (beyond the
    paper: bnstudy.probes.weights)."""

    every: int = in_steps(0)  # steps between records (step 0 included: the gradients at initialization); 0 = off


@dataclass(frozen=True)
class BackendConfig:
    """How a run uses its device; bnstudy.backends states the policy and why. All but `deterministic` and
    `channels_last` act on CUDA alone."""

    tf32: bool = False  # TF32 in convolutions and matmuls; off: full float32, as the probes' gradient differences need
    cudnn_benchmark: bool = True  # cuDNN times its convolution algorithms once per shape (off in deterministic mode)
    channels_last: bool = False  # NHWC memory layout for the convolutions' weights (and so their activations)
    deterministic: bool = False  # torch.use_deterministic_algorithms: CUDA runs repeat and resume bit for bit


@dataclass(frozen=True)
class RunConfig:
    experiment: str = "noisy-bn"  # names a folder: config.NAME checks it when the experiment file loads
    arm: str = "batchnorm"  # names a folder: config.ARM_NAME checks it when the experiment file loads
    seed: int = setting(0, "a random seed; torch and numpy take 31 bits", at_least=0, at_most=MAX_SEED)
    preset: str = setting("quick", "a preset", choices=PRESETS)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    activations: ActivationsConfig = field(default_factory=ActivationsConfig)
    landscape: LandscapeConfig = field(default_factory=LandscapeConfig)
    ics: ICSConfig = field(default_factory=ICSConfig)
    curvature: CurvatureConfig = field(default_factory=CurvatureConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    spectrum: SpectrumConfig = field(default_factory=SpectrumConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    # the settings of probes registered from outside the package, by name: [base.probes.<name>] tables, checked
    # against the options each registered (register_options) when a run is configured; {} = every one's defaults
    probes: dict[str, dict] = field(default_factory=dict)

    @property
    def run_name(self) -> str:
        return f"{self.arm}/seed-{self.seed}"


# ----------------------------------------------------------------------------------------------
# Sections of one's own: a probe defined outside the package declares its settings as a frozen dataclass of
# setting() fields (train.register_probe(build, options=(name, cls))); they are bounded and stored like the above
# ----------------------------------------------------------------------------------------------
PROBE_OPTIONS: dict[str, type] = {}


SETTABLE = (bool, int, float, str)  # what a TOML value (an experiment file, --set) gives: these, and tuples of them
KEY = re.compile(r"[A-Za-z0-9_-]+")  # a key --set and an experiment file can name (config.parse_override)


def register_options(name: str, options: type) -> None:
    """Experiment files and --set may set `probes.<name>.<field>` from now on, checked against `options`: a frozen
    dataclass (the class, not an instance) whose fields --set can reach and give, with finite defaults. Anything else
    is refused here (ConfigError: one line where a command catches it), when the probe is registered, not when a run
    first needs an option."""
    if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
        raise ConfigError(f"the options of probe '{name}' must be a dataclass class, got {options!r}"
                        + (" (an instance: pass its class)" if dataclasses.is_dataclass(options) else ""))
    if not isinstance(name, str) or not KEY.fullmatch(name):
        raise ConfigError(f"probe name {name!r}: --set probes.NAME.FIELD reaches letters, digits, '_' and '-' only")
    for f in dataclasses.fields(options):
        _check_option_field(name, f, field_types(options)[f.name])
    PROBE_OPTIONS[name] = options


def _check_option_field(probe: str, f: dataclasses.Field, hint) -> None:
    where = f"option '{f.name}' of probe '{probe}'"
    if not KEY.fullmatch(f.name):
        raise ConfigError(f"{where}: --set reaches names of letters, digits, '_' and '-' only")
    if not (hint in SETTABLE or typing.get_origin(hint) in (tuple, list) and all(
            arg in SETTABLE or arg is Ellipsis for arg in typing.get_args(hint))):
        raise ConfigError(f"{where}: its type {hint!r} is none that an experiment file or --set can give "
                        f"({', '.join(t.__name__ for t in SETTABLE)}, or a tuple of them)")
    default = f.default
    if isinstance(default, float) and not math.isfinite(default):
        raise ConfigError(f"{where}: its default {default} is not a finite number")


def probe_options(config: RunConfig, name: str):
    """The options of probe `name` in this run: its declared defaults, overridden by config.probes[name]."""
    return build(PROBE_OPTIONS[name], config.probes.get(name, {}), dotted("probes", name))


def check_probe_options(config: RunConfig) -> None:
    """Each probes.<name> table names a registered probe, and holds its options within their bounds."""
    for name in config.probes:
        require(name in PROBE_OPTIONS, f"probes.{name}: no probe registered options of that name (registered: "
                                       f"{', '.join(sorted(PROBE_OPTIONS)) or 'none'})")
        check_fields(probe_options(config, name), dotted("probes", name))


@functools.cache
def field_types(cls) -> dict[str, object]:
    return typing.get_type_hints(cls)


def dotted(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


@functools.cache
def declared(cls=RunConfig, where: str = "") -> dict[str, tuple[object, dict]]:
    """Every field's dotted key -> (its type, its declared unit and bounds; {} for none), sections walked."""
    found = {}
    for f in dataclasses.fields(cls):
        key, typ = dotted(where, f.name), field_types(cls)[f.name]
        found |= declared(typ, key) if dataclasses.is_dataclass(typ) else {key: (typ, dict(f.metadata))}
    return found


# ----------------------------------------------------------------------------------------------
# Checks: the declared bounds of every field (one walk), then the rules that span fields
# ----------------------------------------------------------------------------------------------
def require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def check_fields(config, where: str = "") -> None:
    """Every field of `config` within its declared bounds, sections walked and tuples element by element."""
    for f in dataclasses.fields(config):
        key, value = dotted(where, f.name), getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            check_fields(value, key)
        elif isinstance(value, tuple):
            for i, item in enumerate(value):
                check_value(f"{key}[{i}]", item, f.metadata)
        else:
            check_value(key, value, f.metadata)


def check_value(key: str, value, rules) -> None:
    """One value against its field's declared rules: one sentence naming the key, the bound, the unit and the value.
    A number that is not finite is refused whatever the rules (a probe's own option may declare none)."""
    if isinstance(value, float) and not math.isfinite(value) and not rules:
        raise ConfigError(f"{key} must be a finite number, got {value}")
    if not rules or isinstance(value, bool):  # a bool is an int to Python, but has no bounds to keep
        return
    unit = rules["unit"]
    if "choices" in rules:
        known = ", ".join(map(str, rules["choices"]))
        require(value in rules["choices"], f"unknown {key} {value!r}; known: {known} ({unit})")
        return
    too_large = "at_most" in rules and not value <= rules["at_most"]  # NaN compares false, so it lands here too
    if too_large or isinstance(value, float) and not math.isfinite(value):
        finite = "a finite number " if isinstance(value, float) else ""
        at_most = f"at most {_number(rules['at_most'], value)}" if "at_most" in rules else ""
        raise ConfigError(f"{key} must be {(finite + at_most).strip()} ({unit}), got {value}")
    if "above" in rules:
        require(value > rules["above"], f"{key} must be > {_number(rules['above'], value)} ({unit}), got {value}")
    if "at_least" in rules:
        require(value >= rules["at_least"], f"{key} must be >= {_number(rules['at_least'], value)} ({unit}), "
                                            f"got {value}")


def _number(bound, value) -> str:
    """A bound as it reads beside `value`: 1000 for a float field, 1,000 for an integer one."""
    return f"{bound:g}" if isinstance(value, float) else f"{bound:,}"


def validate(config: RunConfig) -> None:
    """Every field within its declared bounds, then every rule that ties one field to another."""
    check_fields(config)
    check_probe_options(config)
    m, t, d, a, ls, sp = config.model, config.train, config.data, config.activations, config.landscape, config.spectrum
    require(t.batch_size > 1 or m.norm not in BATCH_STATISTICS, f"train.batch_size 1 cannot train model.norm "
            f"'{m.norm}': it normalizes over the batch, and one example has no spread (use 2 or more)")
    require(m.kind in DATASET_MODELS[d.dataset], f"model.kind '{m.kind}' cannot train on data.dataset '{d.dataset}' "
                                                 f"(it trains {' or '.join(DATASET_MODELS[d.dataset])})")
    require(ls.eta_min <= ls.eta_max, f"landscape needs eta_min <= eta_max (multiples of train.lr), got "
                                      f"{ls.eta_min}, {ls.eta_max}")
    require(ls.eta_max * t.lr <= MAX_PROBE_STEP, f"landscape.eta_max * train.lr (the longest probe step) must be "
                                                 f"at most {MAX_PROBE_STEP:g}, got {ls.eta_max * t.lr:g}")
    require(ls.filter_eta_min <= ls.filter_eta_max, f"landscape needs filter_eta_min <= filter_eta_max (fractions "
                                                    f"of each filter's norm), got {ls.filter_eta_min}, "
                                                    f"{ls.filter_eta_max}")
    require(len(sp.bn_modes) > 0, f"spectrum.bn_modes must name at least one of {', '.join(BN_MODES)}, got []")
    require(sp.max_hvps >= sp.k, f"spectrum.max_hvps must be >= spectrum.k (one Hessian-vector product at least per "
                                 f"eigenvector), got {sp.max_hvps} and {sp.k}")
    n_layers = count_weight_layers(m)
    for section, layers in (("activations", a.layers), ("ics", config.ics.layers if config.ics.every else ())):
        for layer in layers:
            require(layer <= n_layers, f"{section}.layers: layer #{layer} out of range; "
                                       f"this {m.kind} has weight layers #1..#{n_layers}")


# ----------------------------------------------------------------------------------------------
# Building a RunConfig from nested dicts (TOML, config.json), with type checks
# ----------------------------------------------------------------------------------------------
def build(cls, values: dict, where: str = ""):
    """A `cls` instance from defaults overridden by `values`; unknown keys are errors."""
    types_ = field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        known = ", ".join(sorted(types_))
        of = " of " + where if where else ""
        raise ConfigError(f"unknown key '{dotted(where, unknown[0])}'; known keys{of}: {known}")
    kwargs = {k: _coerce(v, types_[k], dotted(where, k)) for k, v in values.items()}
    return cls(**kwargs)


def _coerce(value, typ, where: str):
    """Check (and lightly convert) one TOML value against a dataclass field type."""
    origin = typing.get_origin(typ)
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, int) and abs(value) > 1e300:  # so large it does not even convert to a float
                raise ConfigError(f"{where} must be a finite number, got an integer of {len(str(value))} digits")
            return float(value)
    elif typ is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        (item_type, _ellipsis) = typing.get_args(typ)
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
    elif origin in (typing.Union, types.UnionType):
        for option in typing.get_args(typ):
            try:
                return _coerce(value, option, where)
            except ConfigError:
                pass
    elif dataclasses.is_dataclass(typ):
        if isinstance(value, dict):
            return build(typ, value, where)
    elif origin is dict:  # probes: a table of tables, each checked against its probe's options by validate
        if isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):
            return {k: dict(v) for k, v in value.items()}
    else:  # pragma: no cover - a field type this loader does not know is a programming error
        raise TypeError(f"unsupported config type {typ!r} at {where}")
    raise ConfigError(f"{where} must be {_type_words(typ)}, got {value!r} ({type(value).__name__})")


def _type_words(typ) -> str:
    if typing.get_origin(typ) is tuple:
        return f"a list of {_type_words(typing.get_args(typ)[0])}"
    if dataclasses.is_dataclass(typ) or typing.get_origin(typ) is dict:
        return "a table" if dataclasses.is_dataclass(typ) else "a table of tables"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(typ, str(typ))
