"""results/<experiment>/experiment.json: what an experiment is, written beside its runs.

The runner writes it each time it runs the experiment (title, arms in order, figures and [plots] views, which
arms each preset runs, and which presets give every arm one configuration). `plot` and `report` read it instead
of today's experiments/*.toml, so a results folder copied from another machine, or one whose experiment file has
changed or gone since, is drawn and reported as it was run. A folder written before manifests existed has none:
it is then described by today's experiment file, and the reader is told so once.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bnstudy import config
from bnstudy.config import PRESETS, ConfigError, Experiment, load_experiment, run_config
from bnstudy.recording import atomic_write_text, json_safe, read_json

MANIFEST = "experiment.json"
FORMAT = 1  # bumped when a key changes meaning; a reader refuses a format it does not know


@dataclass(frozen=True)
class Manifest:
    """The part of an Experiment that drawing and reporting need, as stored."""

    name: str
    title: str
    arms: tuple[str, ...]  # every arm, in the experiment file's order (the figures' legend order)
    figures: tuple[str, ...]
    plots: dict = field(default_factory=dict)  # figure name -> {kind, runs (queries), layers, options}
    preset_arms: dict = field(default_factory=dict)  # preset -> the arms it runs by default
    alike: tuple[tuple[str, ...], ...] = ()  # groups of presets that give every arm one configuration

    def same_runs(self, a: str, b: str) -> bool:
        """Whether presets a and b ran one configuration for every arm (the DLN's quick, long and paper are its
        paper protocol): runs made at either count at both."""
        return a == b or any(a in group and b in group for group in self.alike)


def alike_presets(experiment: Experiment) -> tuple[tuple[str, ...], ...]:
    """PRESETS grouped by the configurations they give every arm (seed 0, the preset's own name left out)."""
    groups: dict[str, list[str]] = {}
    for preset in PRESETS:
        configs = [dataclasses.asdict(dataclasses.replace(run_config(experiment, arm, 0, preset), preset=""))
                   for arm in experiment.arms]
        groups.setdefault(json.dumps(configs, sort_keys=True), []).append(preset)  # a dict field: not hashable
    return tuple(tuple(group) for group in groups.values() if len(group) > 1)


def describe(experiment: Experiment) -> Manifest:
    return Manifest(name=experiment.name, title=experiment.title, arms=tuple(experiment.arms),
                    figures=tuple(experiment.figures), plots=experiment.plots,
                    preset_arms={p: experiment.arms_for(p) for p in PRESETS}, alike=alike_presets(experiment))


def write_manifest(folder: Path, experiment: Experiment) -> Path:
    """Write (atomically: a kill leaves the previous one) the experiment's manifest into its results folder."""
    path = Path(folder) / MANIFEST
    record = {"format": FORMAT, **dataclasses.asdict(describe(experiment))}
    atomic_write_text(path, json.dumps(json_safe(record), indent=1) + "\n")
    return path


def read_manifest(folder: Path) -> Manifest | None:
    """The manifest in a results folder; None where there is none. A damaged one is a ConfigError naming it."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    record = read_json(path, "remove it and rerun `bnstudy run` (finished runs are skipped) to write it again")
    if record.get("name") != Path(folder).name:
        raise ConfigError(f"{path}: the manifest of experiment {record.get('name')!r}, not of {Path(folder).name!r} "
                          f"whose folder it is in (copied from another?); remove it and rerun `bnstudy run "
                          f"{Path(folder).name}` to write it again")
    if record.get("format") != FORMAT:
        raise ConfigError(f"{path}: manifest format {record.get('format')!r}, this bnstudy reads {FORMAT}; "
                          f"update bnstudy, or remove it and rerun `bnstudy run` to write it again")
    _check_figures(path, record)
    try:
        return Manifest(name=record["name"], title=record["title"], arms=tuple(record["arms"]),
                        figures=tuple(record["figures"]), plots=record["plots"],
                        preset_arms={p: tuple(a) for p, a in record["preset_arms"].items()},
                        alike=tuple(tuple(group) for group in record["alike"]))
    except (KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"{path}: not a bnstudy manifest ({type(err).__name__}: {err}); remove it and rerun "
                          f"`bnstudy run` to write it again") from None


def _check_figures(path: Path, record: dict) -> None:
    """The figures a manifest names are kinds bnstudy draws, and its [plots] views are whole (config's own check of an
    experiment file's), so plot and report never meet one they cannot draw."""
    figures, plots = record.get("figures"), record.get("plots")
    hint = "; remove it and rerun `bnstudy run` to write it again"
    if not isinstance(figures, list) or not all(isinstance(kind, str) for kind in figures):
        raise ConfigError(f"{path}: 'figures' is not a list of figure kinds{hint}")
    unknown = [kind for kind in figures if kind not in config.FIGURE_KINDS]
    if unknown:
        raise ConfigError(f"{path}: unknown figure kind(s) {', '.join(map(repr, unknown))}; known: "
                          f"{', '.join(config.FIGURE_KINDS)}{hint}")
    try:
        config.check_plots(path, plots)
    except ConfigError as err:
        raise ConfigError(f"{err}{hint}") from None


def experiment_manifest(results_dir: Path, name: str) -> Manifest:
    """How an experiment's results folder describes itself; a folder without a manifest (written before
    manifests existed) by today's experiment file of that name, said on stderr."""
    manifest = read_manifest(Path(results_dir) / name)
    if manifest is not None:
        return manifest
    print(f"bnstudy: warning: {Path(results_dir) / name} has no {MANIFEST} (written before results described "
          f"themselves); described by today's experiment file", file=sys.stderr)
    return describe(load_experiment(name))
