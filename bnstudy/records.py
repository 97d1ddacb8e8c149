"""Run folders: config.json, meta.json, tidy CSVs, checkpoint. Schemas declared once; atomic writes.

    <results>/<experiment>/<arm>/seed-<n>/
        config.json      the RunConfig, as resolved
        meta.json        status (running | complete | diverged), git SHA, versions, device, preset,
                         dataset, timings, final numbers
        metrics.csv      per-step training loss/accuracy, test accuracy at intervals
        activations.csv  percentiles and moments of chosen units at chosen layers
        probes.csv       numbers from the probes (landscape, ICS, curvature)
        checkpoint.pt    resume point (never committed)
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

# Every CSV's columns, declared once. A writer refuses rows with other columns.
SCHEMAS: dict[str, tuple[str, ...]] = {
    # split: train (per step, on the step's batch, train mode) | test (eval mode) | test-recal (noisy arms:
    # BN statistics recomputed on training batches with the noise off)
    "metrics": ("step", "arm", "seed", "split", "metric", "value"),
    # stat: p05 p15 p50 p85 p95 (percentiles over batch x H x W), mean, var
    "activations": ("step", "arm", "seed", "layer", "unit", "stat", "value"),
    "probes": ("step", "arm", "seed", "probe", "layer", "eta", "metric", "value"),
}


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary name and rename: a reader never sees half a file, a crash leaves the old one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _compact(value):
    """Floats with 7 significant digits (float32's precision): a third of the size of repr, same numbers."""
    return format(value, ".7g") if isinstance(value, float) else value


class CsvLog:
    """Append-only tidy CSV with a fixed schema; rows are buffered and flushed (fsynced) on demand.

    `size()` after a flush is a resume point: `truncate(size)` drops whatever was written after it.
    """

    def __init__(self, path: Path, columns: tuple[str, ...]):
        self.path, self.columns = path, columns
        self.buffer: list[dict] = []
        if not path.exists() or path.stat().st_size == 0:
            atomic_write_text(path, ",".join(columns) + "\n")

    def append(self, rows: list[dict]) -> None:
        for row in rows:
            if set(row) != set(self.columns):
                extra, missing = set(row) - set(self.columns), set(self.columns) - set(row)
                raise ValueError(f"{self.path.name}: row columns differ from the schema "
                                 f"(unknown: {sorted(extra)}, missing: {sorted(missing)})")
        self.buffer.extend(rows)

    def flush(self) -> None:
        if not self.buffer:
            return
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.columns, lineterminator="\n")
        writer.writerows({k: _compact(v) for k, v in row.items()} for row in self.buffer)
        with open(self.path, "a") as f:
            f.write(text.getvalue())
            f.flush()
            os.fsync(f.fileno())
        self.buffer.clear()

    def size(self) -> int:
        return self.path.stat().st_size

    def truncate(self, size: int) -> None:
        self.buffer.clear()
        with open(self.path, "r+") as f:
            f.truncate(size)


class RunDir:
    """One run's folder and the files in it."""

    def __init__(self, results_dir: Path, experiment: str, arm: str, seed: int):
        self.results_dir = Path(results_dir)
        self.path = self.results_dir / experiment / arm / f"seed-{seed}"
        self.arm, self.seed = arm, seed

    @property
    def meta_path(self) -> Path:
        return self.path / "meta.json"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    def csv(self, name: str) -> Path:
        return self.path / f"{name}.csv"

    def read_meta(self) -> dict:
        try:
            return json.loads(self.meta_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def write_meta(self, meta: dict) -> None:
        atomic_write_text(self.meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")

    def update_meta(self, **fields) -> dict:
        meta = self.read_meta() | fields
        self.write_meta(meta)
        return meta

    def is_finished(self) -> bool:
        return self.read_meta().get("status") in ("complete", "diverged")

    def write_config(self, config) -> None:
        atomic_write_text(self.path / "config.json", json.dumps(dataclasses.asdict(config), indent=2) + "\n")

    def open_logs(self) -> dict[str, CsvLog]:
        self.path.mkdir(parents=True, exist_ok=True)
        return {name: CsvLog(self.csv(name), columns) for name, columns in SCHEMAS.items()}


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(device: torch.device) -> dict:
    """What made the numbers: code version, libraries, hardware."""
    info = {"git_sha": git_sha(), "python": sys.version.split()[0], "torch": torch.__version__,
            "platform": platform.platform(), "device": str(device), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
