"""`bnstudy bench`: what the suite costs against what the mathematics costs, as ratios measured side by side.

Times alone drift on shared machines; every number here is a ratio of two timings taken in the same
run, each the median of torch.utils.benchmark's blocked_autorange (which also synchronizes CUDA).
"Ours" is the training loop's own step (bnstudy.train.run_step), not a copy of it. The data are
CIFAR-10 where it is found, else the synthetic set: every row, and the printed header, name which.

One module per kind of measurement: common (rows, timing, workloads), policy (the loop and first-order probes),
hessian (the Hessian probes), peers (PyHessian), device (TF32, compile, channels_last); this one runs them all and
writes the table.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from bnstudy.bench.common import (CIFAR, SYNTHETIC, Row, _measured_on, _target, bench_config, bench_setup, our_step,
                                  trained)
from bnstudy.bench.device import compile_row, cpu_lever_rows, device_rows, step_flops, tf32_peak
from bnstudy.bench.hessian import CURVATURE, hessian_rows, hvp_rows, spectrum_rows
from bnstudy.bench.peers import PEER, peer_rows
from bnstudy.bench.policy import policy_rows
from bnstudy.bench.share import probe_share_rows
from bnstudy.config import BackendConfig
from bnstudy.backends import backend_policy
from bnstudy.recording import RunDir, atomic_write_text

# What tests and the CLI reach through the package (each measurement's module owns the rest)
__all__ = ["CIFAR", "CURVATURE", "PEER", "SYNTHETIC", "Row", "bench_config", "bench_setup", "compile_row",
           "cpu_lever_rows", "device_rows", "end_to_end", "format_header", "format_table", "hessian_rows", "hvp_rows",
           "our_step", "peer_rows", "policy_rows", "probe_share_rows", "run_bench", "spectrum_rows", "step_flops",
           "tf32_peak", "trained", "write_rows"]

def run_bench(device: torch.device, data_dir: Path | None, width: float, batch: int, min_run_time: float,
              etas: int = 8, levers_only: bool = False, with_compile: bool = True) -> list[Row]:
    """Every ratio, under the backend policy training runs use (bnstudy.backends); on CUDA also `device_rows`.
    `levers_only`: the device's rows alone (a GPU lease's minute); `with_compile`: torch.compile's rows too (its
    compilation alone can take a minute)."""
    rows = []
    if not levers_only:
        with backend_policy(BackendConfig(), device):
            rows = (policy_rows(device, data_dir, width, batch, min_run_time, etas)
                    + probe_share_rows(device, data_dir, width, batch, min_run_time)
                    + hessian_rows(device, data_dir, width, batch, min_run_time)
                    + peer_rows(device, data_dir, min_run_time))
    levers = device_rows if device.type == "cuda" else cpu_lever_rows
    return rows + levers(device, data_dir, width, batch, min_run_time, with_compile)


def end_to_end(data_dir: Path | None, device: str) -> list[Row]:
    """Wall time and peak memory of the quick noisy-bn experiment (3 arms, figures), in a fresh results folder."""
    import resource
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as results:
        started = time.perf_counter()
        for command in (["run", "noisy-bn", "--preset", "quick", "--no-progress", "--device", device],
                        ["plot", "noisy-bn"]):
            extra = ["--data-dir", str(data_dir)] if command[0] == "run" and data_dir else []
            subprocess.run([sys.executable, "-m", "bnstudy", *command, *extra, "--results-dir", results], check=True,
                           stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        runs = RunDir.of_experiment(results, "noisy-bn")
        data = ", ".join(sorted({run.load().meta.get("dataset", "") for run in runs}))
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    return _measured_on([Row("make noisy-bn, quick preset: wall time", wall / 60, "minutes",
                             *_target(wall / 60, "<=", 10.0)),
                         Row("make noisy-bn, quick preset: peak resident memory", peak, "GiB")], data)


def write_rows(rows: list[Row], path: Path, device: torch.device, width: float, batch: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["benchmark", "value", "unit", "target", "meets", "note", "device", "width", "batch", "data", "torch"]
    lines = [",".join(fields)]
    for row in rows:
        values = [row.benchmark, f"{row.value:.4g}", row.unit, row.target, row.meets, row.note, str(device),
                  f"{width:g}", str(batch), row.data, torch.__version__]
        lines.append(",".join(f'"{v}"' if "," in v else v for v in values))
    atomic_write_text(path, "\n".join(lines) + "\n")


def format_header(rows: list[Row], device: torch.device, width: float, batch: int, data_dir: Path | None) -> str:
    """What the table was measured on; where CIFAR-10 was not found, a second line says so plainly."""
    data = ", ".join(dict.fromkeys(r.data for r in rows if r.data)) or "none"
    lines = [f"device {device}, VGG-16 width {width:g}, batch {batch}, data {data}, torch {torch.__version__}"]
    if any(r.data.startswith("synthetic") for r in rows):
        lines.append(f"note: no usable CIFAR-10 under {data_dir} "
                     f"(`bnstudy data check --data-dir {data_dir}` says why): these ratios are measured on the "
                     "synthetic test images, not on CIFAR-10")
    return "\n".join(lines)


def format_table(rows: list[Row]) -> str:
    width = max(len(r.benchmark) for r in rows)
    out = [f"{'benchmark':{width}s}  {'value':>8s}  {'target':12s}  {'meets':5s}  note"]
    for r in rows:
        out.append(f"{r.benchmark:{width}s}  {r.value:8.3g}  {r.target:12s}  {r.meets:5s}  {r.note}")
    return "\n".join(out)
