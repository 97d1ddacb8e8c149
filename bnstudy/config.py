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
understands. The fields themselves, with their defaults, units and bounds, are bnstudy.schema's.
"""
from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from bnstudy.errors import ConfigError
from bnstudy.schema import PRESETS, RunConfig, build, check_value, declared, dotted, field_types, require, validate

# Re-exported: the package and its tests take the run configuration's names from bnstudy.config, the loader
from bnstudy.schema import (  # noqa: F401
    BATCH_STATISTICS, MAX_PROBE_STEP, ActivationsConfig, BackendConfig, CurvatureConfig, DataConfig,
    ICSConfig, LandscapeConfig, ModelConfig, NoiseConfig, SpectrumConfig, TrainConfig, WeightsConfig)

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"


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


def deep_merge(base: dict, override: dict) -> dict:
    """A new dict: `base` with `override` merged in, tables merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# ----------------------------------------------------------------------------------------------
# Comparing two configurations (a resumed run's stored one with the one asked for now)
# ----------------------------------------------------------------------------------------------
# How often a run saves its state and flushes its rows: no number a run records depends on them (a resumed run equals
# the uninterrupted one, tests/test_planned_stop.py), so a run may go on, and seeds pool, under another cadence, e.g. a
# slow machine checkpointing more often than the preset's
BOOKKEEPING = frozenset({"train.checkpoint_every", "train.log_every"})


def config_differences(there: RunConfig, now: RunConfig, labels: tuple[str, str] = ("there", "now")) -> list[str]:
    """Every field whose value differs, as 'key: A there, B now' (`labels`), most telling first: preset,
    model.*, train.*, data.*, then the rest by name. BOOKKEEPING fields are no difference."""
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
        elif x != y and f"{where}{key}" not in BOOKKEEPING:
            out.append(f"{where}{key}: {x!r} {labels[0]}, {y!r} {labels[1]}")
    return out


# ----------------------------------------------------------------------------------------------
# --set section.key=value
# ----------------------------------------------------------------------------------------------
def parse_override(text: str) -> dict:
    """'train.lr=0.5' -> {'train': {'lr': 0.5}}; the value is read as TOML, else as a bare string."""
    key_text, _, raw = text.partition("=")
    keys = [k.strip() for k in key_text.split(".")]
    if "=" not in text or not all(re.fullmatch(r"[\w-]+", k, re.ASCII) for k in keys):  # words: one line, no '\n'
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except ValueError:  # not TOML (TOMLDecodeError), or an integer past Python's 4,300 digits
        value = raw.strip()
    except RecursionError:  # arrays or tables nested hundreds deep: no configuration value is
        raise ConfigError(f"--set {key_text.strip()}: the value is nested too deep to be a configuration "
                          f"value") from None
    nested: dict = value
    for key in reversed(keys):
        nested = {key: nested}
    return nested


RUN_IDENTITY = ("experiment", "arm", "seed", "preset")  # set by the command line, never by --set


def _check_override_keys(text: str, override: dict, cls=RunConfig, where: str = "") -> None:
    """--set on a key that does not exist is an error even before merging."""
    types_ = {k: v for k, v in field_types(cls).items() if where or k not in RUN_IDENTITY}
    for key, value in override.items():
        if key not in types_:
            key_text = ".".join(k.strip() for k in text.partition("=")[0].split("."))
            raise ConfigError(f"--set {key_text}: no such key; known keys{' of ' + where if where else ''}: "
                              f"{', '.join(sorted(types_))}")
        if isinstance(value, dict) and dataclasses.is_dataclass(types_[key]):
            _check_override_keys(text, value, types_[key], dotted(where, key))


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
    require(isinstance(base, dict), f"{where}: 'base' must be a table")
    require(isinstance(presets, dict), f"{where}: 'presets' must be a table")
    for preset, body in presets.items():
        require(preset in PRESETS, f"{where}: unknown preset '{preset}'; known: {', '.join(PRESETS)}")
        require(isinstance(body, dict), f"{where}: 'presets.{preset}' must be a table")
        require("arms" not in body, f"{where}: 'presets.{preset}.arms': which arms a preset runs belongs to "
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
        require(ok, f"{path}: '{key}' must be {what}")

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
    check_plots(path, raw.get("plots", {}))
    for kind in lists["figures"]:
        require(kind in FIGURE_KINDS, f"{path}: figures: unknown kind {kind!r}; known: {', '.join(FIGURE_KINDS)}")
    sweep = raw.get("sweep", {})
    for key, typ, what in (("key", str, "a string"), ("label", str, "a string"),
                           ("values", (list, dict), "a list, or a table of lists by arm")):
        need(key not in sweep or isinstance(sweep[key], typ), f"sweep.{key}", what)
    if isinstance(sweep.get("values"), dict):
        for arm, values in sweep["values"].items():
            need(isinstance(values, list) and values, f"sweep.values.{arm}", "a non-empty list")


# The kinds of figure bnstudy.plots draws (its FIGURES registry; a test keeps the two equal): named here so that an
# experiment file naming another is refused when it loads, not after its runs have trained
FIGURE_KINDS = ("training", "activations", "moments", "landscape", "landscape_filter", "landscape_windows", "densities",
                "grad_vs_eta", "ics", "test", "lr_sweep", "curvature", "controls_training", "controls_smoothness",
                "controls_sharpness", "controls_weights", "controls_init", "spectrum", "ioffe_fig1")
PLOT_KEYS = {"kind": str, "runs": list, "layers": list, "options": dict}
QUERY_KEYS = {"norm": str, "lr": (int, float), "init": str}  # what a figure's runs are found by (meta.json's fields)


def check_plots(path: Path, plots) -> None:
    """[plots.NAME] kind = "...", runs = [{norm = ..., lr = ...}, ...], optionally layers and options."""
    require(isinstance(plots, dict), f"{path}: 'plots' must be a table of figures")
    for name, spec in plots.items():
        where = f"{path}: plots.{name}"
        require(NAME.fullmatch(name) is not None, f"{where}: a figure's name is letters, digits, '-' and '_' (a file)")
        require(isinstance(spec, dict) and "kind" in spec and "runs" in spec, f"{where} needs kind and runs")
        require(spec["kind"] in FIGURE_KINDS,
                f"{where}: unknown kind {spec['kind']!r}; known: {', '.join(FIGURE_KINDS)}")
        for key, value in spec.items():
            require(key in PLOT_KEYS, f"{where}: unknown key '{key}'; known: {', '.join(PLOT_KEYS)}")
            require(isinstance(value, PLOT_KEYS[key]), f"{where}.{key} has the wrong type")
        for query in spec["runs"]:
            require(isinstance(query, dict) and query and all(
                k in QUERY_KEYS and isinstance(v, QUERY_KEYS[k]) and not isinstance(v, bool) for k, v in query.items()),
                f"{where}.runs: each run is a table of {', '.join(QUERY_KEYS)}, got {query!r}")


def _check_tables_say_nothing_ignored(path: Path, raw: dict) -> None:
    """Every table of the file is read: a preset it names exists, and no base, preset or arm sets what the command
    line decides (experiment, arm, seed, preset), which would otherwise be dropped without a word."""
    for preset in raw.get("presets", {}):
        require(preset in PRESETS,
                f"{path}: unknown preset '{preset}' in [presets.{preset}]; known: {', '.join(PRESETS)}")
    tables = {"base": raw.get("base", {})} | {f"presets.{p}": b for p, b in raw.get("presets", {}).items()} | \
             {f"arms.{a}": b for a, b in raw.get("arms", {}).items()}
    for where, body in tables.items():
        for key in RUN_IDENTITY:
            require(key not in body, f"{path}: [{where}] sets '{key}', which the command line decides "
                                     f"(--seed, --preset, --arms); remove it")
    require(raw.get("sweep", {}).get("key") not in RUN_IDENTITY, f"{path}: [sweep] key "
            f"'{raw['sweep'].get('key') if 'sweep' in raw else ''}' is set by the command line, not swept; "
            "use --seeds")


def _check_with(path: Path, name: str, together: list[str]) -> None:
    """`with = ["lp-norm-dln"]`: experiments that `make <name>` runs as well (the Makefile reads it)."""
    known = list_experiments()
    for other in together:
        require(other in known and other != name, f"{path}: 'with' names {other!r}, which is not another "
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
            require(name not in expanded, f"{path}: [sweep] values {value!r} and another of arm '{arm}' both name "
                                          f"the arm '{name}' (names keep 6 significant digits); make them distinct")
            expanded[name] = deep_merge(body, parse_override(f"{sweep['key']}={value!r}"))
    defaults = [name for name in expanded if name.rsplit("-" + label, 1)[0] in default_arms]
    return expanded, defaults


def run_config(experiment: Experiment, arm: str, seed: int, preset: str, overrides: list[str] = ()) -> RunConfig:
    for key, value in (("preset", preset), ("seed", seed)):  # what the command line gave, before any file's values
        check_value(key, value, declared()[key][1])
    if arm not in experiment.arms:
        raise ConfigError(f"unknown arm '{arm}' in experiment {experiment.name}; known: {', '.join(experiment.arms)}")
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
