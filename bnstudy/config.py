"""Experiment files (TOML) -> frozen, validated run configurations.

An experiment file joins a model family (experiments/families/<family>.toml: the family's base and its
smoke/quick/paper presets) and states only what it changes, with its arms:

    family = "vgg"
    name = "noisy-bn"
    default_arms = ["standard", "batchnorm", "noisy-batchnorm"]   # the arms run by default
    [base.activations]       # any RunConfig section: data, model, train, activations, ...
    layers = [2, 9, 13]
    [arms.standard.model]    # what an arm changes
    norm = "none"
    [presets.quick]          # what a preset changes on top of the family's (scale only, never meaning)
    train.steps = 1200

One run's configuration is built as: dataclass defaults <- family base <- experiment base <- family preset
<- experiment preset <- arm <- --set overrides. Every mistake raises ConfigError with one sentence a user
understands.
"""
from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from bnstudy.architectures import DATASET_MODELS, INIT_KINDS, MODEL_KINDS, NORM_KINDS, VGG_CFGS, count_weight_layers
from bnstudy.errors import ConfigError  # noqa: F401  (raised here; importers take it from here too)

BATCH_STATISTICS = ("batch", "noisy-batch", "l1", "l2", "linf")  # norms whose statistics are taken over the batch
PRESETS = ("smoke", "quick", "long", "paper")  # long: the paper's schedule at quick's width (docs/long.md)
EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"


# ----------------------------------------------------------------------------------------------
# The sections of one run. Every field: what it is, its unit, the paper's value.
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataConfig:
    dataset: str = "cifar10"  # cifar10 | synthetic (a tiny labelled-synthetic set, tests only) | gaussian (DLN)
    train_size: int = 0  # training examples used; 0 = the whole split (CIFAR-10: 50,000; DLN: 1,000)
    test_size: int = 0  # test examples evaluated; 0 = the whole split (CIFAR-10: 10,000)
    augment: bool = False  # random crop (pad 4) + horizontal flip; the paper's main runs: none
    eval_batch: int = 1000  # examples per forward pass when evaluating (memory only, not results)


@dataclass(frozen=True)
class NoiseConfig:
    """Algorithm 1 of the paper: per step and unit mu ~ U(-n_mu, n_mu), sigma ~ U(1, n_sigma);
    per element m ~ U(mu - r_mu, mu + r_mu), s ~ N(sigma, r_sigma); a <- s * a + m."""

    n_mu: float = 0.5  # half-width of the per-unit mean shift (paper: 0.5)
    n_sigma: float = 1.25  # upper end of the per-unit scale U(1, n_sigma) (paper: 1.25)
    r_mu: float = 0.1  # half-width of the per-element shift around mu (paper: 0.1)
    r_sigma: float = 0.1  # standard deviation of the per-element scale around sigma (paper: 0.1)


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "vgg"  # vgg | dln
    cfg: int = 16  # VGG depth: 11 | 13 | 16 | 19 (paper: VGG-like with >= 13 weight layers -> 16)
    width: float = 1.0  # multiplier on every channel count and head width (paper: 1)
    head: tuple[int, ...] = (512, 512)  # hidden widths of the classifier at width 1 (paper: 512 -> 512 -> 512 -> 10)
    # none | batch | noisy-batch | noise-only | l1 | l2 | linf | layer | group (architectures.NORM_KINDS)
    norm: str = "batch"
    init: str = "glorot"  # weight init: glorot (Xavier uniform, the paper) | kaiming (He normal, fan-in, ReLU gain)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    dln_depth: int = 25  # DLN: number of linear layers (paper: 25)
    dln_width: int = 10  # DLN: input, hidden and output width (paper: 10)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 15_000  # SGD steps (paper: 15,000 for VGG, about 38 epochs at batch 128)
    batch_size: int = 128  # examples per step (paper: 128)
    lr: float = 0.1  # constant learning rate, plain SGD, no momentum or weight decay (paper: 0.1)
    log_every: int = 50  # steps between flushes of the per-step training metrics to disk
    eval_every: int = 1_000  # steps between test-set evaluations (also at the last step)
    checkpoint_every: int = 500  # steps between checkpoints (resume point after a crash)
    threads: int = 0  # CPU threads for torch; 0 = torch's default. Tiny models (the DLN) run fastest on 1


@dataclass(frozen=True)
class ActivationsConfig:
    layers: tuple[int, ...] = ()  # weight-layer numbers (from 1) whose pre-ReLU output is recorded; () = off
    units: int = 4  # units (channels) per layer, chosen at random once per run
    every: int = 50  # record at steps t and t+1 for t a multiple of this (t+1 gives step-to-step moments)
    density_at: tuple[int, ...] = ()  # steps at which each unit also records its 1st..99th percentiles (Fig. 6)


@dataclass(frozen=True)
class LandscapeConfig:
    """Loss landscape along the gradient (PAPER.md Fig. 4, 10-13): probe on the step's own batch."""

    every: int = 0  # steps between probes; 0 = off
    eta_min: float = 0.5  # smallest step size, as a multiple of train.lr (paper, VGG: 1/2; DLN: 1/100)
    eta_max: float = 4.0  # largest step size, as a multiple of train.lr (paper, VGG: 4; DLN: 30)
    points: int = 8  # step sizes on the grid
    spacing: str = "linear"  # linear | log
    direction: str = "gradient"  # gradient (the paper) | random (filter-normalized Gaussian, Li et al. 2018)
    bn_mode: str = "train"  # train: batch statistics during the probe (the paper) | eval: running statistics
    # Beyond the paper: the same probe along the filter-normalized gradient (each filter's step scaled to that filter's
    # own weight norm, Li et al. 2018), recorded beside the plain one as probe "landscape-filter". A weight followed by
    # BN is scale-invariant, so this direction and its grid do not move with ||W|| as the plain gradient's do.
    filter_every: int = 0  # steps between probes along the filter-normalized gradient; 0 = off
    filter_eta_min: float = 0.005  # smallest step, as a fraction of each filter's norm: [1/2, 4] x 1%, the relative
    filter_eta_max: float = 0.04  # BN layers' step per SGD step at LR 0.1 (quick controls: 0.99% early, 1.02% late)


@dataclass(frozen=True)
class ICSConfig:
    """Internal covariate shift by Definition 2.1 (PAPER.md Fig. 3): ||G - G'|| and cos(G, G')."""

    every: int = 0  # steps between probes; 0 = off
    layers: tuple[int, ...] = (5, 10)  # weight-layer numbers (paper: VGG #5, #10; DLN #9, #17)
    bn_mode: str = "train"  # train: batch statistics during the probe (the paper) | eval


@dataclass(frozen=True)
class CurvatureConfig:
    """Top Hessian eigenvalues by Lanczos on Hessian-vector products (beyond the paper)."""

    every: int = 0  # steps between probes; 0 = off
    k: int = 1  # eigenvalues, the algebraically largest
    tol: float = 1e-3  # relative accuracy asked of each eigenvalue, by its Ritz residual bound (Lanczos)
    max_hvps: int = 100  # cap on Hessian-vector products per probe (not converged when reached: eigenvalues NaN)
    bn_mode: str = "train"  # train: batch statistics (as the training step sees the loss) | eval


@dataclass(frozen=True)
class SpectrumConfig:
    """The Hessian's spectral density by stochastic Lanczos quadrature, and the gradient's share in its top-k
    eigenvectors (beyond the paper: Ghorbani et al. 2019; bnstudy.probes.spectrum)."""

    at: tuple[int, ...] = ()  # the steps at which to probe (before the step); () = off
    bn_modes: tuple[str, ...] = ("train",)  # each probed separately: train (batch statistics) | eval (running)
    n_v: int = 3  # start vectors (Rademacher) of the quadrature
    m: int = 30  # Lanczos steps per start vector: m Ritz values, exact moments up to degree 2m - 1
    k: int = 10  # the top eigenvectors whose span the gradient's share is taken in (10: CIFAR-10's classes)
    tol: float = 1e-3  # relative residual bound asked of each of the top k (Lanczos)
    max_hvps: int = 150  # Hessian-vector products for the top k at most (then the Ritz values are lower bounds)


@dataclass(frozen=True)
class WeightsConfig:
    """Per weight layer ||W||, the step's gradient, <g, W> and the norm's change; the logits' scale (beyond the
    paper: bnstudy.probes.weights)."""

    every: int = 0  # steps between records (step 0 included: the gradients at initialization); 0 = off


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
    experiment: str = "noisy-bn"
    arm: str = "batchnorm"
    seed: int = 0
    preset: str = "quick"
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

    @property
    def run_name(self) -> str:
        return f"{self.arm}/seed-{self.seed}"


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    path: Path
    arms: dict[str, dict]  # arm name -> partial config it applies
    default_arms: tuple[str, ...]
    presets: dict[str, dict]  # preset name -> partial config
    preset_arms: dict[str, tuple[str, ...]]  # preset name -> arms it runs by default, where it says
    base: dict
    figures: tuple[str, ...]
    plots: dict[str, dict] = field(default_factory=dict)  # figure name -> {kind, runs (queries), layers, options}

    def arms_for(self, preset: str) -> tuple[str, ...]:
        return self.preset_arms.get(preset, self.default_arms)


# ----------------------------------------------------------------------------------------------
# Building a dataclass from nested dicts, with type checks
# ----------------------------------------------------------------------------------------------
def _field_types(cls) -> dict[str, object]:
    return typing.get_type_hints(cls)


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
    else:  # pragma: no cover - a field type this loader does not know is a programming error
        raise TypeError(f"unsupported config type {typ!r} at {where}")
    raise ConfigError(f"{where} must be {_type_words(typ)}, got {value!r} ({type(value).__name__})")


def _type_words(typ) -> str:
    if typing.get_origin(typ) is tuple:
        return f"a list of {_type_words(typing.get_args(typ)[0])}"
    if dataclasses.is_dataclass(typ):
        return "a table"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(typ, str(typ))


def build(cls, values: dict, where: str = ""):
    """A `cls` instance from defaults overridden by `values`; unknown keys are errors."""
    types_ = _field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        known = ", ".join(sorted(types_))
        of = " of " + where if where else ""
        raise ConfigError(f"unknown key '{_join(where, unknown[0])}'; known keys{of}: {known}")
    kwargs = {k: _coerce(v, types_[k], _join(where, k)) for k, v in values.items()}
    return cls(**kwargs)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def deep_merge(base: dict, override: dict) -> dict:
    """A new dict: `base` with `override` merged in, tables merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_differences(there: RunConfig, now: RunConfig, labels: tuple[str, str] = ("there", "now")) -> list[str]:
    """Every field whose value differs, as 'key: A there, B now' (`labels`), most telling first: preset,
    model.*, train.*, data.*, then the rest by name."""
    found = _differences(_stored_form(dataclasses.asdict(there)), _stored_form(dataclasses.asdict(now)), labels)
    rank = {"preset": 0, "model": 1, "train": 2, "data": 3}
    return sorted(found, key=lambda d: (rank.get(d.partition(":")[0].split(".")[0], 4), d))


def _stored_form(value):
    """Tuples as lists, as config.json holds them."""
    if isinstance(value, dict):
        return {k: _stored_form(v) for k, v in value.items()}
    return list(map(_stored_form, value)) if isinstance(value, (list, tuple)) else value


def _differences(a: dict, b: dict, labels: tuple[str, str], where: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, labels, f"{where}{key}.")
        elif x != y:
            out.append(f"{where}{key}: {x!r} {labels[0]}, {y!r} {labels[1]}")
    return out


# ----------------------------------------------------------------------------------------------
# --set section.key=value
# ----------------------------------------------------------------------------------------------
def parse_override(text: str) -> dict:
    """'train.lr=0.5' -> {'train': {'lr': 0.5}}; the value is read as TOML, else as a bare string."""
    dotted, _, raw = text.partition("=")
    keys = [k.strip() for k in dotted.split(".")]
    if "=" not in text or not all(re.fullmatch(r"\w+", k, re.ASCII) for k in keys):  # words: one line, no '\n'
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except ValueError:  # not TOML (TOMLDecodeError), or an integer past Python's 4,300 digits
        value = raw.strip()
    except RecursionError:  # arrays or tables nested hundreds deep: no configuration value is
        raise ConfigError(f"--set {dotted.strip()}: the value is nested too deep to be a configuration value") from None
    nested: dict = value
    for key in reversed(keys):
        nested = {key: nested}
    return nested


RUN_IDENTITY = ("experiment", "arm", "seed", "preset")  # set by the command line, never by --set


def _check_override_keys(text: str, override: dict, cls=RunConfig, where: str = "") -> None:
    """--set on a key that does not exist is an error even before merging."""
    types_ = {k: v for k, v in _field_types(cls).items() if where or k not in RUN_IDENTITY}
    for key, value in override.items():
        if key not in types_:
            dotted = ".".join(k.strip() for k in text.partition("=")[0].split("."))
            raise ConfigError(f"--set {dotted}: no such key; known keys{' of ' + where if where else ''}: "
                              f"{', '.join(sorted(types_))}")
        if isinstance(value, dict) and dataclasses.is_dataclass(types_[key]):
            _check_override_keys(text, value, types_[key], _join(where, key))


# ----------------------------------------------------------------------------------------------
# Experiment files
# ----------------------------------------------------------------------------------------------
def experiment_path(name: str) -> Path:
    """'noisy-bn', 'noisy_bn' or a path to a .toml file -> the file."""
    candidate = Path(name)
    if candidate.suffix == ".toml":
        if not candidate.is_file():
            raise ConfigError(f"experiment file {candidate} does not exist")
        return candidate
    path = EXPERIMENTS_DIR / f"{name.replace('-', '_')}.toml"
    if not NAME.fullmatch(name) or not path.is_file():  # a plain name: 'families/vgg' is a family, not an experiment
        known = ", ".join(list_experiments()) or "(none)"
        raise ConfigError(f"unknown experiment '{name}'; known: {known}")
    return path


def list_experiments() -> list[str]:
    """The experiment files directly in experiments/; the families under experiments/families/ are not experiments."""
    return sorted(p.stem.replace("_", "-") for p in EXPERIMENTS_DIR.glob("*.toml"))


def family_dirs(path: Path) -> list[Path]:
    """Where `family = "vgg"` in the experiment file `path` is looked for: families/ next to the file, then
    bnstudy's own experiments/families/ (so an experiment file kept anywhere can join a family of bnstudy's)."""
    own = Path(__file__).resolve().parent.parent / "experiments" / "families"
    return list(dict.fromkeys([path.parent / "families", own]))


def list_families(path: Path) -> list[str]:
    return sorted({p.stem for folder in family_dirs(path) for p in folder.glob("*.toml")})


def load_family(path: Path, family) -> tuple[dict, dict]:
    """The family an experiment file names: (base, presets). Every mistake is one sentence naming the file."""
    if not isinstance(family, str) or not NAME.fullmatch(family):
        raise ConfigError(f"{path}: 'family' must be the name of a file in families/ (letters, digits, '-' and '_'), "
                          f"got {family!r}")
    candidates = [folder / f"{family}.toml" for folder in family_dirs(path)]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        known = ", ".join(list_families(path)) or "(none)"
        raise ConfigError(f"{path}: family '{family}' does not exist (no {' or '.join(map(str, candidates))}); "
                          f"known families: {known}")
    raw = _read_toml(found, f"{path}: its family file {found} is malformed TOML")
    where = f"{path}: its family file {found}"
    unknown = sorted(set(raw) - {"base", "presets"})
    if unknown:
        raise ConfigError(f"{where} has unknown top-level key '{unknown[0]}'; known: base, presets "
                          f"(arms, names and the rest belong to experiment files)")
    base, presets = raw.get("base", {}), raw.get("presets", {})
    _require(isinstance(base, dict), f"{where}: 'base' must be a table")
    _require(isinstance(presets, dict), f"{where}: 'presets' must be a table")
    for preset, body in presets.items():
        _require(preset in PRESETS, f"{where}: unknown preset '{preset}'; known: {', '.join(PRESETS)}")
        _require(isinstance(body, dict), f"{where}: 'presets.{preset}' must be a table")
        _require("arms" not in body, f"{where}: 'presets.{preset}.arms': which arms a preset runs belongs to "
                                     f"the experiment file")
    for preset in PRESETS:  # unknown keys and wrong types name the family's file, not the experiment's
        try:
            build(RunConfig, deep_merge(base, presets.get(preset, {})))
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
    return base, presets


def _read_toml(path: Path, malformed: str) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:  # TOMLDecodeError, not UTF-8, or an integer past Python's 4,300 digits
        raise ConfigError(f"{malformed}: {err}") from None
    except RecursionError:
        raise ConfigError(f"{malformed}: tables or arrays nested too deep") from None


def merge_presets(family: dict, own: dict) -> dict:
    """Each preset of the experiment file deep-merged on top of the family's preset of that name."""
    return {p: deep_merge(family.get(p, {}), own.get(p, {})) for p in dict.fromkeys([*family, *own])}


def load_experiment(name: str) -> Experiment:
    path = experiment_path(name)
    raw = _read_toml(path, f"{path}: malformed TOML")
    known_top = {"name", "title", "arms", "default_arms", "presets", "base", "figures", "sweep", "family", "with",
                 "plots"}
    unknown = sorted(set(raw) - known_top)
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key '{unknown[0]}'; known: {', '.join(sorted(known_top))}")
    _check_shapes(path, raw)
    family_base, family_presets = load_family(path, raw["family"]) if "family" in raw else ({}, {})
    arms = raw.get("arms", {})
    presets = raw.get("presets", {})
    if not isinstance(arms, dict) or not arms:
        raise ConfigError(f"{path}: 'arms' must be a table with at least one arm")
    _check_tables_say_nothing_ignored(path, raw)
    default_arms = raw.get("default_arms", list(arms))
    if "sweep" in raw:
        arms, default_arms = expand_sweep(path, raw["sweep"], arms, default_arms)
    preset_arms = {p: tuple(v.pop("arms")) for p, v in ((p, dict(v)) for p, v in presets.items()) if "arms" in v}
    presets = {p: {k: v for k, v in body.items() if k != "arms"} for p, body in presets.items()}
    # dataclass defaults <- family base <- experiment base <- family preset <- experiment preset <- arm <- --set
    presets = merge_presets(family_presets, presets)
    experiment = Experiment(
        name=raw.get("name", path.stem.replace("_", "-")),
        title=raw.get("title", ""),
        path=path,
        arms=arms,
        default_arms=tuple(default_arms),
        presets=presets,
        preset_arms=preset_arms,
        base=deep_merge(family_base, raw.get("base", {})),
        figures=tuple(raw.get("figures", ())),
        plots=raw.get("plots", {}),
    )
    _check_names(path, experiment.name, experiment.arms)
    _check_with(path, experiment.name, raw.get("with", []))
    for preset in PRESETS:  # fail at load, not after an hour of training, on a broken arm or preset
        for arm in experiment.arms_for(preset):
            run_config(experiment, arm=arm, seed=0, preset=preset)
    return experiment


def _check_shapes(path: Path, raw: dict) -> None:
    """Tables and lists where the file needs them: a wrong shape is one sentence, not a traceback further on."""
    def need(ok: bool, key: str, what: str) -> None:
        _require(ok, f"{path}: '{key}' must be {what}")

    for key in ("arms", "presets", "base", "sweep"):
        need(isinstance(raw.get(key, {}), dict), key, "a table")
    for key in ("arms", "presets"):
        for name, body in raw.get(key, {}).items():
            need(isinstance(body, dict), f"{key}.{name}", "a table")
    need(isinstance(raw.get("family", ""), str), "family", "a string (a file in families/)")
    lists = {"default_arms": raw.get("default_arms", []), "figures": raw.get("figures", []),
             "with": raw.get("with", []),
             **{f"presets.{p}.arms": body.get("arms", []) for p, body in raw.get("presets", {}).items()}}
    for key, value in lists.items():
        need(isinstance(value, list) and all(isinstance(v, str) for v in value), key, "a list of strings")
    _check_plots(path, raw.get("plots", {}))
    for kind in lists["figures"]:
        _require(kind in FIGURE_KINDS, f"{path}: figures: unknown kind {kind!r}; known: {', '.join(FIGURE_KINDS)}")
    sweep = raw.get("sweep", {})
    for key, typ, what in (("key", str, "a string"), ("label", str, "a string"),
                           ("values", (list, dict), "a list, or a table of lists by arm")):
        need(key not in sweep or isinstance(sweep[key], typ), f"sweep.{key}", what)
    if isinstance(sweep.get("values"), dict):
        for arm, values in sweep["values"].items():
            need(isinstance(values, list) and values, f"sweep.values.{arm}", "a non-empty list")


# The kinds of figure bnstudy.plots draws (its FIGURES registry; a test keeps the two equal): named here so that an
# experiment file naming another is refused when it loads, not after its runs have trained
FIGURE_KINDS = ("training", "activations", "moments", "landscape", "landscape_filter", "densities", "grad_vs_eta",
                "ics", "test", "lr_sweep", "curvature", "controls_training", "controls_smoothness",
                "controls_sharpness", "controls_weights", "controls_init", "spectrum")
PLOT_KEYS = {"kind": str, "runs": list, "layers": list, "options": dict}
QUERY_KEYS = {"norm": str, "lr": (int, float), "init": str}  # what a figure's runs are found by (meta.json's fields)


def _check_plots(path: Path, plots) -> None:
    """[plots.NAME] kind = "...", runs = [{norm = ..., lr = ...}, ...], optionally layers and options."""
    _require(isinstance(plots, dict), f"{path}: 'plots' must be a table of figures")
    for name, spec in plots.items():
        where = f"{path}: plots.{name}"
        _require(NAME.fullmatch(name) is not None, f"{where}: a figure's name is letters, digits, '-' and '_' (a file)")
        _require(isinstance(spec, dict) and "kind" in spec and "runs" in spec, f"{where} needs kind and runs")
        _require(spec["kind"] in FIGURE_KINDS,
                 f"{where}: unknown kind {spec['kind']!r}; known: {', '.join(FIGURE_KINDS)}")
        for key, value in spec.items():
            _require(key in PLOT_KEYS, f"{where}: unknown key '{key}'; known: {', '.join(PLOT_KEYS)}")
            _require(isinstance(value, PLOT_KEYS[key]), f"{where}.{key} has the wrong type")
        for query in spec["runs"]:
            _require(isinstance(query, dict) and query and all(
                k in QUERY_KEYS and isinstance(v, QUERY_KEYS[k]) and not isinstance(v, bool) for k, v in query.items()),
                f"{where}.runs: each run is a table of {', '.join(QUERY_KEYS)}, got {query!r}")


def _check_tables_say_nothing_ignored(path: Path, raw: dict) -> None:
    """Every table of the file is read: a preset it names exists, and no base, preset or arm sets what the command
    line decides (experiment, arm, seed, preset), which would otherwise be dropped without a word."""
    for preset in raw.get("presets", {}):
        _require(preset in PRESETS,
                 f"{path}: unknown preset '{preset}' in [presets.{preset}]; known: {', '.join(PRESETS)}")
    tables = {"base": raw.get("base", {})} | {f"presets.{p}": b for p, b in raw.get("presets", {}).items()} | \
             {f"arms.{a}": b for a, b in raw.get("arms", {}).items()}
    for where, body in tables.items():
        for key in RUN_IDENTITY:
            _require(key not in body, f"{path}: [{where}] sets '{key}', which the command line decides "
                                      f"(--seed, --preset, --arms); remove it")
    _require(raw.get("sweep", {}).get("key") not in RUN_IDENTITY, f"{path}: [sweep] key "
             f"'{raw['sweep'].get('key') if 'sweep' in raw else ''}' is set by the command line, not swept; "
             "use --seeds")


def _check_with(path: Path, name: str, together: list[str]) -> None:
    """`with = ["lp-norm-dln"]`: experiments that `make <name>` runs as well (the Makefile reads it)."""
    known = list_experiments()
    for other in together:
        _require(other in known and other != name, f"{path}: 'with' names {other!r}, which is not another "
                                                   f"experiment; known: {', '.join(known)}")


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # an experiment's name: one folder under --results-dir
ARM_NAME = re.compile(r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]*")  # also '.': sweeps name arms e.g. 'batchnorm-lr0.1'


def _check_names(path: Path, name, arms: dict) -> None:
    """Names become folders under --results-dir: plain words, never a way out of it ('../x', '/x', 'a/b')."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(f"{path}: experiment name {name!r} must be letters, digits, '-' and '_', "
                          f"starting with a letter or digit (it names a folder)")
    for arm in arms:
        if not ARM_NAME.fullmatch(arm):
            raise ConfigError(f"{path}: arm name {arm!r} must be letters, digits, '-', '_' and '.' (not '..'), "
                              f"starting with a letter or digit (it names a folder)")


def expand_sweep(path: Path, sweep: dict, arms: dict, default_arms: list[str]) -> tuple[dict, list[str]]:
    """[sweep] key = "train.lr", values = [...], label = "lr": every arm x every value, named e.g. 'batchnorm-lr0.1'.

    values may instead be a table of lists by arm ([sweep.values] standard = [...], batchnorm = [...]): each arm
    its own grid, e.g. learning rates around each arm's own best; every arm must have one."""
    unknown = sorted(set(sweep) - {"key", "values", "label"})
    if unknown or "key" not in sweep or not sweep.get("values"):
        raise ConfigError(f"{path}: [sweep] needs key and a non-empty values list (and optionally label)")
    label = sweep.get("label", sweep["key"].split(".")[-1])
    grids = sweep["values"] if isinstance(sweep["values"], dict) else {arm: sweep["values"] for arm in arms}
    if set(grids) != set(arms):
        raise ConfigError(f"{path}: [sweep.values] must give a list for every arm and no other; arms: "
                          f"{', '.join(arms)}; lists for: {', '.join(grids)}")
    expanded = {}
    for arm, body in arms.items():
        for value in grids[arm]:
            name = f"{arm}-{label}{value:g}" if isinstance(value, (int, float)) else f"{arm}-{label}{value}"
            _require(name not in expanded, f"{path}: [sweep] values {value!r} and another of arm '{arm}' both name "
                                           f"the arm '{name}' (names keep 6 significant digits); make them distinct")
            expanded[name] = deep_merge(body, parse_override(f"{sweep['key']}={value!r}"))
    defaults = [name for name in expanded if name.rsplit("-" + label, 1)[0] in default_arms]
    return expanded, defaults


def run_config(experiment: Experiment, arm: str, seed: int, preset: str, overrides: list[str] = ()) -> RunConfig:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; known: {', '.join(PRESETS)}")
    if arm not in experiment.arms:
        raise ConfigError(f"unknown arm '{arm}' in experiment {experiment.name}; known: {', '.join(experiment.arms)}")
    _check_seed(seed)
    merged = deep_merge(experiment.base, experiment.presets.get(preset, {}))
    merged = deep_merge(merged, experiment.arms[arm])
    for text in overrides:
        override = parse_override(text)
        _check_override_keys(text, override)
        merged = deep_merge(merged, override)
    merged = deep_merge(merged, {"experiment": experiment.name, "arm": arm, "seed": seed, "preset": preset})
    config = build(RunConfig, merged)
    validate(config)
    return config


# ----------------------------------------------------------------------------------------------
# Validation: every rule a sentence
# ----------------------------------------------------------------------------------------------
def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


MAX_SEED = 2**31 - 1  # torch, numpy and CUDA generators all take a seed of 31 bits
MAX_STEPS = 10**9  # steps and intervals: years of training at the paper's scale; step numbers stay well inside int64
MAX_EXAMPLES = 10**6  # 20x CIFAR-10's training split; a synthetic set that large is already 12 GB of float32 images

# Every int and float field of RunConfig: its unit, and the largest value a run can take without crashing or
# hanging (each bound's reason in its comment). The lower bounds are rules of validate() below.
LIMITS: dict[str, tuple[str, float]] = {
    "seed": ("a random seed", MAX_SEED),
    "data.train_size": ("examples", MAX_EXAMPLES),
    "data.test_size": ("examples", MAX_EXAMPLES),
    "data.eval_batch": ("examples per forward pass", MAX_EXAMPLES),
    "model.cfg": ("VGG weight layers", 19),  # the deepest VGG_CFGS entry
    "model.width": ("a multiplier on channel counts", 64),  # VGG-16 at 64: 32,768 channels, 1e11 weights
    "model.head": ("units per hidden layer at width 1", 65_536),  # one 65,536^2 layer is 16 GiB of float32
    "model.dln_depth": ("linear layers", 1_024),  # a deeper DLN's gradients vanish or overflow float32 anyway
    "model.dln_width": ("units per layer", 4_096),  # a 4,096^2 layer per depth: 64 MiB each
    # the noise (paper: at most 1.25) is squared by the next BN's variance: float32 overflows near 1e19
    "model.noise.n_mu": ("standard deviations of a normalized unit", 1e3),
    "model.noise.n_sigma": ("a scale factor", 1e3),
    "model.noise.r_mu": ("standard deviations of a normalized unit", 1e3),
    "model.noise.r_sigma": ("a scale factor", 1e3),
    "train.steps": ("SGD steps", MAX_STEPS),
    "train.batch_size": ("examples per step", MAX_EXAMPLES),
    "train.lr": ("the SGD step size", 1e3),  # paper: 0.1, sweeps here stop at 2; 1e308 overflows torch's float32 step
    "train.log_every": ("steps", MAX_STEPS),
    "train.eval_every": ("steps", MAX_STEPS),
    "train.checkpoint_every": ("steps", MAX_STEPS),
    "train.threads": ("CPU threads", 1_024),  # more than any machine's cores; OpenMP fails on huge counts
    "activations.layers": ("a weight-layer number", 1_024),  # no model here has more layers (dln_depth <= 1,024)
    "activations.units": ("units per layer", 65_536),  # more than any layer has (units are clipped to its width)
    "activations.every": ("steps", MAX_STEPS),
    "activations.density_at": ("a step number", MAX_STEPS),
    "landscape.every": ("steps", MAX_STEPS),
    "landscape.eta_min": ("multiples of train.lr", 1e4),  # paper: 1/2 and 4 (VGG), 1/100 and 30 (DLN)
    "landscape.eta_max": ("multiples of train.lr", 1e4),
    "landscape.points": ("step sizes per probe", 1_000),  # each a forward and backward pass: more would hang a run
    "landscape.filter_every": ("steps", MAX_STEPS),
    "landscape.filter_eta_min": ("fractions of each filter's norm", 10.0),  # 10: a step ten times the filter itself
    "landscape.filter_eta_max": ("fractions of each filter's norm", 10.0),
    "ics.every": ("steps", MAX_STEPS),
    "ics.layers": ("a weight-layer number", 1_024),
    "curvature.every": ("steps", MAX_STEPS),
    "curvature.k": ("eigenvalues", 64),  # Lanczos keeps every basis vector (max_hvps of them), each model-sized
    "curvature.tol": ("a relative accuracy", 1.0),  # 1 already asks for no digit at all
    "curvature.max_hvps": ("Hessian-vector products", 100_000),  # each a double backward: more would run for days
    "weights.every": ("steps", MAX_STEPS),
    "spectrum.at": ("a step number", MAX_STEPS),
    "spectrum.n_v": ("start vectors", 1_000),  # each m Hessian-vector products
    "spectrum.m": ("Lanczos steps", 1_000),  # the basis holds m vectors the size of the model
    "spectrum.k": ("eigenvectors", 1_000),
    "spectrum.tol": ("a relative accuracy", 1.0),
    "spectrum.max_hvps": ("Hessian-vector products", 100_000),
}
MAX_PROBE_STEP = 1e6  # landscape.eta_max * train.lr: a longer step sends float32 weights far past any loss surface


def numeric_keys(cls=RunConfig, where: str = "") -> list[str]:
    """The dotted key of every int and float field (or tuple of them), in every section, from the types alone."""
    keys = []
    for name, typ in _field_types(cls).items():
        key = _join(where, name)
        if dataclasses.is_dataclass(typ):
            keys += numeric_keys(typ, key)
        elif {int, float} & {typ, *typing.get_args(typ)}:
            keys.append(key)
    return keys


def _check_seed(seed: int) -> None:
    _require(0 <= seed <= MAX_SEED, f"seed must be 0 <= seed < 2**31 (torch and numpy take 31-bit seeds), got {seed}")


def _check_limits(config: RunConfig) -> None:
    """Every number finite and at most its limit: non-finite or huge values are invalid input everywhere."""
    for key in numeric_keys():
        value = config
        for part in key.split("."):
            value = getattr(value, part)
        unit, limit = LIMITS.get(key, ("", math.inf))  # a field not in LIMITS yet is still checked as finite
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, float):
                _require(math.isfinite(v) and v <= limit, f"{key} must be a finite number at most {limit:g} "
                                                          f"({unit}), got {v}")
            elif isinstance(v, int):
                _require(v <= limit, f"{key} must be at most {limit:,} ({unit}), got {v}")


def validate(config: RunConfig) -> None:

    _check_seed(config.seed)
    _check_limits(config)
    m, t, d, a = config.model, config.train, config.data, config.activations
    _require(m.kind in MODEL_KINDS, f"unknown model.kind '{m.kind}'; known: {', '.join(MODEL_KINDS)}")
    _require(m.norm in NORM_KINDS, f"unknown model.norm '{m.norm}'; known: {', '.join(NORM_KINDS)}")
    _require(m.init in INIT_KINDS, f"unknown model.init '{m.init}'; known: {', '.join(INIT_KINDS)}")
    _require(m.cfg in VGG_CFGS, f"unknown model.cfg {m.cfg}; known: {', '.join(map(str, VGG_CFGS))}")
    _require(m.width > 0, f"model.width must be > 0, got {m.width}")
    _require(all(h > 0 for h in m.head), f"model.head widths must be > 0, got {list(m.head)}")
    _require(m.dln_depth >= 1 and m.dln_width >= 1, "model.dln_depth and model.dln_width must be >= 1")
    _require(m.noise.n_sigma >= 1, f"model.noise.n_sigma must be >= 1 (sigma ~ U(1, n_sigma)), got {m.noise.n_sigma}")
    _require(min(m.noise.n_mu, m.noise.r_mu, m.noise.r_sigma) >= 0, "model.noise constants must be >= 0")
    _require(t.lr > 0, f"train.lr must be > 0, got {t.lr}")
    _require(t.steps > 0, f"train.steps must be > 0, got {t.steps}")
    _require(t.batch_size > 0, f"train.batch_size must be > 0, got {t.batch_size}")
    _require(t.batch_size > 1 or m.norm not in BATCH_STATISTICS, f"train.batch_size 1 cannot train model.norm "
             f"'{m.norm}': it normalizes over the batch, and one example has no spread (use 2 or more)")
    _require(t.threads >= 0, f"train.threads must be >= 0 (0 = torch's default), got {t.threads}")
    for key in ("log_every", "eval_every", "checkpoint_every"):
        _require(getattr(t, key) > 0, f"train.{key} must be > 0, got {getattr(t, key)}")
    _require(d.dataset in DATASET_MODELS, f"unknown data.dataset '{d.dataset}'; known: {', '.join(DATASET_MODELS)}")
    _require(m.kind in DATASET_MODELS[d.dataset], f"model.kind '{m.kind}' cannot train on data.dataset '{d.dataset}' "
                                                  f"(it trains {' or '.join(DATASET_MODELS[d.dataset])})")
    _require(d.train_size >= 0 and d.test_size >= 0, "data.train_size and data.test_size must be >= 0 (0 = all)")
    _require(d.eval_batch > 0, f"data.eval_batch must be > 0, got {d.eval_batch}")
    _require(a.units > 0 and a.every > 0, "activations.units and activations.every must be > 0")
    ls = config.landscape
    _require(ls.every >= 0, f"landscape.every must be >= 0 (0 = off), got {ls.every}")
    _require(0 < ls.eta_min <= ls.eta_max, f"landscape needs 0 < eta_min <= eta_max, got {ls.eta_min}, {ls.eta_max}")
    _require(ls.eta_max * t.lr <= MAX_PROBE_STEP, f"landscape.eta_max * train.lr (the longest probe step) must be "
                                                  f"at most {MAX_PROBE_STEP:g}, got {ls.eta_max * t.lr:g}")
    _require(ls.points >= 1, f"landscape.points must be >= 1, got {ls.points}")
    _require(ls.filter_every >= 0, f"landscape.filter_every must be >= 0 (0 = off), got {ls.filter_every}")
    _require(0 < ls.filter_eta_min <= ls.filter_eta_max, f"landscape needs 0 < filter_eta_min <= filter_eta_max, got "
                                                          f"{ls.filter_eta_min}, {ls.filter_eta_max}")
    _require(all(s >= 0 for s in a.density_at), f"activations.density_at: step numbers must be >= 0, got "
                                                 f"{list(a.density_at)}")
    _require(ls.spacing in ("linear", "log"), f"unknown landscape.spacing '{ls.spacing}'; known: linear, log")
    _require(ls.direction in ("gradient", "random"),
             f"unknown landscape.direction '{ls.direction}'; known: gradient, random")
    _require(ls.bn_mode in ("train", "eval"), f"unknown landscape.bn_mode '{ls.bn_mode}'; known: train, eval")
    _require(config.ics.every >= 0, f"ics.every must be >= 0 (0 = off), got {config.ics.every}")
    _require(config.ics.bn_mode in ("train", "eval"), f"unknown ics.bn_mode '{config.ics.bn_mode}'; known: train, eval")
    c = config.curvature
    _require(c.every >= 0 and c.k >= 1 and c.max_hvps >= 1 and c.tol > 0,
             "curvature needs every >= 0, k >= 1, max_hvps >= 1 and tol > 0")
    _require(c.bn_mode in ("train", "eval"), f"unknown curvature.bn_mode '{c.bn_mode}'; known: train, eval")
    _require(config.weights.every >= 0, f"weights.every must be >= 0 (0 = off), got {config.weights.every}")
    sp = config.spectrum
    _require(all(s >= 0 for s in sp.at), f"spectrum.at: step numbers must be >= 0, got {list(sp.at)}")
    _require(sp.bn_modes and all(mode in ("train", "eval") for mode in sp.bn_modes),
             f"spectrum.bn_modes must be a non-empty list of train and eval, got {list(sp.bn_modes)}")
    _require(sp.n_v >= 1 and sp.m >= 1 and sp.k >= 1 and sp.tol > 0 and sp.max_hvps >= sp.k,
             "spectrum needs n_v >= 1, m >= 1, k >= 1, tol > 0 and max_hvps >= k")
    n_layers = count_weight_layers(m)
    for section, layers in (("activations", a.layers), ("ics", config.ics.layers if config.ics.every else ())):
        for layer in layers:
            _require(1 <= layer <= n_layers, f"{section}.layers: layer #{layer} out of range; "
                                             f"this {m.kind} has weight layers #1..#{n_layers}")
