"""Reading an experiment's results: every run folder's tidy CSVs and meta.json, concatenated."""
from __future__ import annotations

import copy
import functools
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bnstudy.analysis import FILTER, KEYS, matches
from bnstudy.analysis.landscape import unnormalized_filter_probes
from bnstudy.config import ConfigError
from bnstudy.manifest import Manifest, experiment_manifest
from bnstudy.recording import SCHEMAS, RecordError, Run, RunDir, pooling_differences


class Results:
    """Every run folder of one experiment that loads (RunDir.load): tidy DataFrames concatenated over arms and seeds."""

    def __init__(self, results_dir: Path, experiment: str, unfinished: bool = False):
        """unfinished: also read runs still training (or killed part way); by default they are left out, and said,
        so that no band stops and no mean jumps where an unfinished run ends."""
        self.root = Path(results_dir) / experiment
        self.experiment = experiment
        started = RunDir.of_experiment(results_dir, experiment)
        if not started:
            raise ConfigError(f"no runs of '{experiment}' under {self.root}; run `bnstudy run {experiment}` first")
        runs, self.left_out = self._loaded(started, unfinished)
        if not runs:
            raise RecordError(f"no whole run of '{experiment}' under {self.root}: " + "; ".join(self.left_out.values()))
        self._check_pooled(runs)
        self.meta = pd.DataFrame([run.meta for run in runs])
        tables = {name: self._concat(runs, name) for name in SCHEMAS}
        self.non_finite = self._non_finite_notes(tables)
        self.tables = {name: table[np.isfinite(table.value.astype(float))] for name, table in tables.items()}
        self.unnormalized, self.unnormalized_notes = self._drop_unnormalized_probes()

    @staticmethod
    def _loaded(runs: list[RunDir], unfinished: bool) -> tuple[list[Run], dict[str, str]]:
        """The runs that load, and those left out with why (said on stderr): a run that does not check out
        (RunDir.load), or (unless `unfinished`) one not finished, contributes to no curve, number or caption."""
        loaded, left_out = [], {}
        for run in runs:
            try:
                loaded.append(run.load(unfinished))
            except RecordError as why:
                left_out[str(run.path)] = str(why)
                print(f"bnstudy: warning: left out {why}", file=sys.stderr)
        for note in (note for run in loaded for note in run.notes):
            print(f"bnstudy: warning: {note}", file=sys.stderr)
        return loaded, left_out

    def _check_pooled(self, runs: list[Run]) -> None:
        """An arm's seeds are averaged together: refuse seeds that ran different configurations."""
        first: dict[str, Run] = {}
        for run in runs:
            base = first.setdefault(run.config.arm, run)
            differences = pooling_differences(base.config, run.config)
            if differences:
                raise RecordError(f"{self.root / run.config.arm}: seeds {base.config.seed} and {run.config.seed} ran "
                                  f"different configurations ({'; '.join(differences)}), which are never pooled; "
                                  f"move one to another results folder")

    def _non_finite_notes(self, tables: dict[str, pd.DataFrame]) -> list[str]:
        """Non-finite values are left out of every figure and number, and said (stderr, REPORT.md), never averaged
        silently; a diverged run's are expected (its loss stopped being finite) and noted as its divergence."""
        diverged = {(arm, seed) for arm, seed, status in zip(self.meta.arm, self.meta.seed, self.meta.status)
                    if status == "diverged"}
        notes = []
        for name, table in tables.items():
            bad = table[~np.isfinite(table.value.astype(float))]
            for (arm, seed), rows in bad.groupby(["arm", "seed"]):
                if (arm, seed) in diverged:
                    continue
                first = rows.iloc[0]
                notes.append(f"{self.experiment}/{arm}/seed-{seed}: {len(rows)} non-finite value(s) in {name} "
                             f"left out (first: {first.value} at step {first.step})")
        for note in notes:
            print(f"bnstudy: warning: {note}", file=sys.stderr)
        return notes

    def _drop_unnormalized_probes(self) -> tuple[pd.DataFrame, list[str]]:
        """Filter-normalized probes whose direction was not (analysis.landscape.unnormalized_filter_probes) are left
        out of every figure and number, and said (stderr, REPORT.md, the figure's caption): their rows measured
        another direction. Returns them, one row per probe, and the notes said."""
        probes = self.tables["probes"]
        bad = unnormalized_filter_probes(probes)
        probe_keys = pd.MultiIndex.from_frame(probes[KEYS + ["step"]])
        wrong = (probes.probe == FILTER) & probe_keys.isin(pd.MultiIndex.from_frame(bad[KEYS + ["step"]]))
        self.tables["probes"] = probes[~wrong]
        notes = []
        for (arm, seed), runs in bad.groupby(KEYS):
            steps = ", ".join(f"{step} (‖d‖ {d:.3g} against ‖w‖ {w:.3g})"
                              for step, d, w in zip(runs.step, runs.d_norm, runs.w_norm))
            note = (f"{self.experiment}/{arm}/seed-{seed}: {len(runs)} {FILTER} probe(s) left out, their direction "
                    f"not filter-normalized (a filter's step must not exceed its norm): step {steps}")
            notes.append(note)
            print(f"bnstudy: warning: {note}", file=sys.stderr)
        return bad, notes

    def unnormalized_words(self, arms) -> str:
        """' | n probes left out: ...' for a figure of the filter-normalized probe that shows `arms`; '' if none."""
        bad = self.unnormalized[self.unnormalized.arm.isin(arms)]
        if bad.empty:
            return ""
        which = ", ".join(f"{arm} seed {seed} step {step}" for arm, seed, step in zip(bad.arm, bad.seed, bad.step))
        return f" | {len(bad)} probe(s) left out, direction not filter-normalized: {which}"

    @staticmethod
    def _concat(runs: list[Run], name: str) -> pd.DataFrame:
        frames = [run.tables[name] for run in runs if len(run.tables[name])]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SCHEMAS[name])

    def matching(self, queries: list[dict]) -> Results:
        """The runs whose configuration (meta.json's norm, lr, init) matches one of `queries`, in the queries'
        order, as a Results of their own: a figure finds its runs by what they are, not by arm names. The queries
        no run matches are in its `missing` (a configuration not trained yet)."""
        arms, missing = [], []
        for query in queries:
            found = list(dict.fromkeys(self.meta.arm[matches(self.meta, query)]))
            if not found:
                missing.append(", ".join(f"{k} = {v}" for k, v in query.items()))
            arms += [a for a in found if a not in arms]
        subset = copy.copy(self)
        subset.meta = self.meta[self.meta.arm.isin(arms)]
        subset.tables = {name: table[table.arm.isin(arms)] for name, table in self.tables.items()}
        subset.order, subset.missing = tuple(arms), missing
        return subset

    @functools.cached_property
    def manifest(self) -> Manifest:
        """What the experiment is, as its results folder says (bnstudy.manifest): title, arms, figures, presets."""
        return experiment_manifest(self.root.parent, self.experiment)

    def arms(self, order: tuple[str, ...] = ()) -> list[str]:
        present = list(dict.fromkeys(self.meta.arm))
        return [a for a in order if a in present] + [a for a in present if a not in order]

    def caption(self, shown_seed: int | None = None) -> str:
        return caption_of(self.experiment, self.meta, shown_seed)


def caption_of(experiment: str, meta: pd.DataFrame, shown_seed: int | None = None) -> str:
    """What every figure's caption says of its runs (one row of `meta` each): experiment, preset, data, seeds, and
    the GPU where runs trained on one. `shown_seed`: the figure draws that seed alone, and says so first."""
    presets = _listed(sorted(set(meta.preset)))
    datasets = _listed(sorted(set(meta.dataset)))
    seeds = _seed_words(meta)
    if shown_seed is not None:
        seeds = f"every panel: seed {shown_seed} alone (n=1), of the runs' {seeds}"
    widths = sorted(set(meta.width.dropna())) if "width" in meta else []  # the VGG's; a DLN has none
    width = f" | width: {_listed(f'{w:g}' for w in widths)}" if widths else ""
    return f"{experiment} | preset: {presets}{width}{_stop_words(meta)} | data: {datasets} | {seeds}{_gpu_words(meta)}"


def _stop_words(meta: pd.DataFrame) -> str:
    """' | stopped at step 3,750 of 15,000' where runs stopped as asked (--until-step) before the end of their
    schedule, and how many of the runs did where not all: a figure that ends early says why."""
    stopped = meta[meta.stopped_at.notna()] if "stopped_at" in meta else meta.iloc[:0]
    if stopped.empty:
        return ""
    stops = sorted(set(zip(stopped.stopped_at, stopped.steps)))
    where = _listed(f"{int(at):,} of {int(steps):,}" for at, steps in stops)
    some = "" if len(stopped) == len(meta) else f" ({len(stopped)} of {len(meta)} runs)"
    return f" | stopped at step {where}{some}"


def _seed_words(meta: pd.DataFrame) -> str:
    """'seeds: 0, 1, 2 (n=3)', and the arms trained on fewer seeds named with theirs ('; l1, l2: seed 0'), so a
    caption never claims three seeds for an arm drawn from one."""
    seeds = sorted(set(meta.seed))
    arms_with: dict[tuple, list[str]] = {}
    for arm, runs in meta.groupby("arm", sort=False):
        own = sorted(set(runs.seed))
        if own != seeds:
            arms_with.setdefault(tuple(own), []).append(arm)
    fewer = "".join(f"; {', '.join(arms)}: seed{'s' if len(own) > 1 else ''} {_listed(own)}"
                    for own, arms in arms_with.items())
    return f"seeds: {_listed(seeds)} (n={len(seeds)})" + fewer


def _gpu_words(meta: pd.DataFrame) -> str:
    """' | GPU: <name>' where runs trained on CUDA (and how many did not, if some); '' for CPU runs alone."""
    environments = [e if isinstance(e, dict) else {} for e in meta.get("environment", [])]
    gpus = sorted({e["gpu"] for e in environments if e.get("gpu")})
    on_cpu = sum(not e.get("gpu") for e in environments)
    if not gpus:
        return ""
    return f" | GPU: {', '.join(gpus)}" + (f" ({on_cpu} of {len(environments)} runs on a CPU)" if on_cpu else "")


def _listed(values) -> str:
    return ", ".join(map(str, values))
