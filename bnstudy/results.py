"""Reading an experiment's results: every run folder's tidy CSVs and meta.json, concatenated."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bnstudy.config import ConfigError
from bnstudy.records import SCHEMAS, read_json, table_path


class Results:
    """Every run folder of one experiment: tidy DataFrames concatenated over arms and seeds."""

    def __init__(self, results_dir: Path, experiment: str):
        self.root = Path(results_dir) / experiment
        self.experiment = experiment
        run_dirs = sorted(p.parent for p in self.root.glob("*/seed-*/meta.json"))
        if not run_dirs:
            raise ConfigError(f"no runs of '{experiment}' under {self.root}; run `bnstudy run {experiment}` first")
        self.meta = pd.DataFrame([read_json(d / "meta.json") for d in run_dirs])
        self.tables = {name: self._concat(run_dirs, name) for name in SCHEMAS}

    def _concat(self, run_dirs: list[Path], name: str) -> pd.DataFrame:
        paths = [table_path(d, name) for d in run_dirs]
        frames = [f for f in (pd.read_csv(p) for p in paths if p is not None) if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SCHEMAS[name])

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


