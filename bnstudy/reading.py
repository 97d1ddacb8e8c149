"""Reading an experiment's results: every run folder's tidy CSVs and meta.json, concatenated."""
from __future__ import annotations

import copy
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bnstudy.config import ConfigError, RunConfig, config_differences
from bnstudy.recording import SCHEMAS, RecordError, RunDir, read_table


class Results:
    """Every run folder of one experiment: tidy DataFrames concatenated over arms and seeds."""

    def __init__(self, results_dir: Path, experiment: str, unfinished: bool = False):
        """unfinished: also read runs still training (or killed part way); by default they are left out, and said,
        so that no band stops and no mean jumps where an unfinished run ends."""
        self.root = Path(results_dir) / experiment
        self.experiment = experiment
        started = RunDir.of_experiment(results_dir, experiment)
        if not started:
            raise ConfigError(f"no runs of '{experiment}' under {self.root}; run `bnstudy run {experiment}` first")
        runs, self.left_out = self._whole_runs(started, unfinished)
        if not runs:
            raise RecordError(f"no whole run of '{experiment}' under {self.root}: " + "; ".join(self.left_out.values()))
        self._check_pooled(runs)
        self.meta = pd.DataFrame([self._with_init(run) for run in runs])
        tables = {name: self._concat(runs, name) for name in SCHEMAS}
        self.non_finite = self._non_finite_notes(tables)
        self.tables = {name: table[np.isfinite(table.value.astype(float))] for name, table in tables.items()}

    @staticmethod
    def _with_init(run: RunDir) -> dict:
        """meta.json, with the model's init taken from config.json where meta.json predates it (those runs all
        used the paper's Glorot init: RunConfig's default)."""
        meta = run.read_meta()
        if "init" not in meta:
            config = run.stored_config()
            meta["init"] = config.model.init if config is not None else RunConfig().model.init
        return meta

    @staticmethod
    def _whole_runs(runs: list[RunDir], unfinished: bool) -> tuple[list[RunDir], dict[str, str]]:
        """The runs to read, and those left out (said on stderr): a finished run missing a file it wrote, or (unless
        `unfinished`) a run not finished, contributes to no curve, number or caption."""
        whole, left_out = [], {}
        for run in runs:
            why = run.incomplete() or (None if unfinished or run.is_finished() else
                                       f"not finished ({run.read_meta().get('status', 'no status')}): left out of "
                                       f"every figure and number until it is")
            if why:
                left_out[str(run.path)] = f"{run.path}: {why}"
                print(f"bnstudy: warning: left out {run.path}: {why}", file=sys.stderr)
            else:
                whole.append(run)
        return whole, left_out

    def _check_pooled(self, runs: list[RunDir]) -> None:
        """An arm's seeds are averaged together: refuse seeds that ran different configurations."""
        first: dict[str, RunConfig] = {}
        for run in runs:
            config = run.stored_config()
            if config is None:
                continue
            base = first.setdefault(run.arm, config)
            differences = config_differences(base, dataclasses.replace(config, seed=base.seed),
                                             (f"in seed {base.seed}", f"in seed {run.seed}"))
            if differences:
                raise RecordError(f"{self.root / run.arm}: seeds {base.seed} and {run.seed} ran different "
                                  f"configurations ({'; '.join(differences)}), which are never pooled; move one "
                                  f"to another results folder")

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

    def _concat(self, runs: list[RunDir], name: str) -> pd.DataFrame:
        paths = [run.table_path(name) for run in runs]
        frames = [f for f in (read_table(p, name) for p in paths if p is not None) if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SCHEMAS[name])

    def matching(self, queries: list[dict]) -> Results:
        """The runs whose configuration (meta.json's norm, lr, init) matches one of `queries`, in the queries'
        order, as a Results of their own: a figure finds its runs by what they are, not by arm names. Raises
        ConfigError where a query matches no run."""
        arms = []
        for query in queries:
            mask = np.ones(len(self.meta), dtype=bool)
            for key, value in query.items():
                column = self.meta.get(key, pd.Series(index=self.meta.index, dtype=object))
                mask &= np.isclose(pd.to_numeric(column, errors="coerce"), value, rtol=1e-9, atol=0) \
                    if isinstance(value, float) else column.eq(value).to_numpy()
            found = list(dict.fromkeys(self.meta.arm[mask]))
            if not found:
                raise ConfigError(f"{self.root}: no run with {', '.join(f'{k} = {v}' for k, v in query.items())}")
            arms += [a for a in found if a not in arms]
        subset = copy.copy(self)
        subset.meta = self.meta[self.meta.arm.isin(arms)]
        subset.tables = {name: table[table.arm.isin(arms)] for name, table in self.tables.items()}
        subset.order = tuple(arms)
        return subset

    def arms(self, order: tuple[str, ...] = ()) -> list[str]:
        present = list(dict.fromkeys(self.meta.arm))
        return [a for a in order if a in present] + [a for a in present if a not in order]

    def caption(self) -> str:
        seeds = sorted(set(self.meta.seed))
        presets = ", ".join(sorted(set(self.meta.preset)))
        datasets = ", ".join(sorted(set(self.meta.dataset)))
        caption = f"{self.experiment} | preset: {presets} | data: {datasets} | seeds: {', '.join(map(str, seeds))} (n={len(seeds)})"
        return caption + self._gpu_words()

    def _gpu_words(self) -> str:
        """' | GPU: <name>' where runs trained on CUDA (and how many did not, if some); '' for CPU runs alone."""
        environments = [e if isinstance(e, dict) else {} for e in self.meta.get("environment", [])]
        gpus = sorted({e["gpu"] for e in environments if e.get("gpu")})
        on_cpu = sum(not e.get("gpu") for e in environments)
        if not gpus:
            return ""
        return f" | GPU: {', '.join(gpus)}" + (f" ({on_cpu} of {len(environments)} runs on a CPU)" if on_cpu else "")


