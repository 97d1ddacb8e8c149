"""The device's levers: TF32 peak and FLOPs on CUDA, torch.compile, channels_last on the CPU."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bnstudy.backends import CUDA_RTOL, backend_policy, memory_format
from bnstudy.config import BackendConfig
from bnstudy.models import BatchNoise

from bnstudy.bench.common import _measured_on, _target, bare_step, bench_setup, Row, seconds


# Dense (no sparsity) TF32 tensor-core peaks from NVIDIA's datasheets, in FLOP/s, by a part of the name torch
# reports; the first match wins, so a name that contains another comes first.
TF32_PEAKS = (("H100 PCIe", 378e12), ("H100 NVL", 417.5e12), ("H100", 494.7e12), ("H200", 494.7e12),
              ("GH200", 494.7e12), ("A100", 156e12), ("L40S", 183e12), ("L40", 90.5e12), ("L4", 60e12),
              ("A10", 62.5e12))


def tf32_peak(gpu_name: str) -> float | None:
    return next((peak for part, peak in TF32_PEAKS if part in gpu_name), None)


def step_flops(model, x, y) -> int:
    """FLOPs of one training forward+backward, counted by torch from the operators it runs (a multiply-add is 2)."""
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def timed_step(device: torch.device, data_dir: Path | None, width: float, batch: int, min_run_time: float,
               backend: BackendConfig, norm: str = "batch") -> tuple[float, int, str]:
    """Seconds per bare training step, its FLOPs, and the data's name, under `backend` (a fresh model with `norm`,
    in the backend's memory format)."""
    with backend_policy(backend, device):
        dataset, model, _ = bench_setup(device, data_dir, width, norm)
        model = model.to(memory_format=torch.channels_last if backend.channels_last else torch.contiguous_format)
        x, y = dataset.train_x[:batch], dataset.train_y[:batch]
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, foreach=True)
        return seconds(bare_step(model, x, y, optimizer), min_run_time), step_flops(model, x, y), dataset.name


def device_rows(device: torch.device, data_dir: Path | None, width: float, batch: int,
                min_run_time: float, with_compile: bool = True) -> list[Row]:
    """Throughput and what each backend option of bnstudy.backends costs or buys (CUDA only: on a CPU the
    options do nothing or measure something else, so these rows are absent there)."""
    t, flops, data = timed_step(device, data_dir, width, batch, min_run_time, BackendConfig())
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    rows = [Row(f"training step, VGG-16 width {width:g}, batch {batch}", t * 1e3, "ms", note=gpu),
            Row(f"training images/s, VGG-16 width {width:g}", batch / t, "images/s"),
            Row("FLOPs of one training step (counted by torch.utils.flop_counter)", flops / 1e9, "GFLOP")]
    peak = tf32_peak(gpu)
    options = {"TF32 on": BackendConfig(tf32=True), "channels_last": BackendConfig(channels_last=True),
               "TF32 on + channels_last": BackendConfig(tf32=True, channels_last=True),
               "deterministic mode": BackendConfig(deterministic=True)}
    times = {"policy (float32, TF32 off)": t} | {name: timed_step(device, data_dir, width, batch, min_run_time, cfg)[0]
                                                for name, cfg in options.items()}
    for name, seconds_per_step in times.items():
        if name in options:
            rows.append(Row(f"training step, {name} / policy", seconds_per_step / t, "ratio"))
        if peak is not None:
            rows.append(Row(f"achieved / dense TF32 peak, {name}", flops / seconds_per_step / peak, "fraction", "", "",
                            f"{flops / seconds_per_step / 1e12:.1f} TFLOP/s of {peak / 1e12:g}"))
    rows.append(noise_row(device, data_dir, width, batch, min_run_time, t))
    rows.append(lp_row(device, data_dir, width, batch, min_run_time, t))
    if with_compile:
        rows.append(compile_row(device, data_dir, width, batch, min_run_time, t))
    return _measured_on(rows, data)


def noise_draws(model, x) -> int:
    """Random numbers one training forward of `model` draws in its BatchNoise layers: Algorithm 1 draws a scale and
    a shift for every activation it touches (and two per unit, counted too)."""
    counts = []

    def count(module, inputs, output):
        counts.append(2 * inputs[0].numel() + 2 * inputs[0].shape[1])

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, BatchNoise)]
    try:
        model.train()(x)
    finally:
        for hook in hooks:
            hook.remove()
    return sum(counts)


def noise_row(device, data_dir, width, batch, min_run_time, t_batch: float) -> Row:
    """What Algorithm 1's noise costs the step: noisy-batch over batch, same backend (fresh draws every step make
    it a generator's work, which a CPU does one number at a time)."""
    t_noisy = timed_step(device, data_dir, width, batch, min_run_time, BackendConfig(), norm="noisy-batch")[0]
    dataset, model, _ = bench_setup(device, data_dir, width, "noisy-batch")
    with torch.no_grad():
        draws = noise_draws(model, dataset.train_x[:batch])
    return Row("training step, noisy-batch / batch (Algorithm 1's noise)", t_noisy / t_batch, "ratio",
               note=f"{draws / 1e6:.1f} M random numbers a step, {(t_noisy - t_batch) / draws * 1e9:.1f} ns each")


def lp_row(device, data_dir, width, batch, min_run_time, t_batch: float) -> Row:
    """What ℓ1 normalization costs the step against BN (the ℓp runs of Fig. 5a, 6 and 12): its statistics are a
    reduction and an affine of our own (bnstudy.models.norms.LpBatchNorm), BN's are one native kernel."""
    t_l1 = timed_step(device, data_dir, width, batch, min_run_time, BackendConfig(), norm="l1")[0]
    return Row("training step, l1 / batch (ℓp normalization)", t_l1 / t_batch, "ratio")


def compile_row(device, data_dir, width, batch, min_run_time, t_eager: float) -> Row:
    """What torch.compile would buy for the plain step (not used for training runs: see bnstudy.backends)."""
    with backend_policy(BackendConfig(), device):
        dataset, model, _ = bench_setup(device, data_dir, width)
        x, y = dataset.train_x[:batch], dataset.train_y[:batch]
        try:
            compiled = torch.compile(model)
            t = seconds(bare_step(compiled, x, y, torch.optim.SGD(model.parameters(), lr=0.01, foreach=True)),
                        min_run_time)
        except Exception as err:  # a compiler missing or failing is a measurement too, not a crash of the bench
            return Row("training step, torch.compile / eager", float("nan"), "ratio",
                       note=f"failed: {type(err).__name__}", data=dataset.name)
    return Row("training step, torch.compile / eager", t / t_eager, "ratio", data=dataset.name)


AGREEMENT = {"steps": 5, "lr": 1e-6}  # as tests/test_cuda.py compares two kernels (bnstudy.backends.CUDA_RTOL: why)


def losses_under(device, data_dir, width: float, batch: int, backend: BackendConfig,
                 compiled: bool = False) -> list[float]:
    """The training losses of AGREEMENT's steps from one initialization, under `backend` (and torch.compile)."""
    with backend_policy(backend, device):
        dataset, model, _ = bench_setup(device, data_dir, width)
        model = model.to(memory_format=memory_format(backend))
        run = torch.compile(model) if compiled else model
        optimizer = torch.optim.SGD(model.parameters(), lr=AGREEMENT["lr"])
        losses = []
        for i in range(AGREEMENT["steps"]):
            rows = slice(i * batch, (i + 1) * batch)
            loss = F.cross_entropy(run(dataset.train_x[rows]), dataset.train_y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses


def agreement(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / abs(x) for x, y in zip(a, b))


def cpu_lever_rows(device: torch.device, data_dir: Path | None, width: float, batch: int,
                   min_run_time: float, with_compile: bool = True) -> list[Row]:
    """The CPU's levers on the training step, channels_last and torch.compile, as ratios to eager NCHW, each with
    how far its losses drift from eager's (AGREEMENT): a lever is adopted only within CUDA_RTOL (bnstudy.backends)."""
    t, _, data = timed_step(device, data_dir, width, batch, min_run_time, BackendConfig())
    t_last = timed_step(device, data_dir, width, batch, min_run_time, BackendConfig(channels_last=True))[0]
    eager = losses_under(device, data_dir, width, batch, BackendConfig())
    drift = agreement(eager, losses_under(device, data_dir, width, batch, BackendConfig(channels_last=True)))
    rows = [Row(f"training step, eager NCHW, VGG-16 width {width:g}, batch {batch}, {torch.get_num_threads()} threads",
                t * 1e3, "ms", note=str(device)),
            Row("training step, channels_last / eager", t_last / t, "ratio", "< 1", "yes" if t_last < t else "no"),
            Row("channels_last: largest relative loss difference to eager over 5 steps", drift, "relative",
                *_target(drift, "<=", CUDA_RTOL))]
    rows.append(noise_row(device, data_dir, width, batch, min_run_time, t))
    rows.append(lp_row(device, data_dir, width, batch, min_run_time, t))
    if not with_compile:
        return _measured_on(rows, data)
    compiled = compile_row(device, data_dir, width, batch, min_run_time, t)
    rows.append(compiled)
    if np.isfinite(compiled.value):
        drift = agreement(eager, losses_under(device, data_dir, width, batch, BackendConfig(), compiled=True))
        rows.append(Row("torch.compile: largest relative loss difference to eager over 5 steps", drift, "relative",
                        *_target(drift, "<=", CUDA_RTOL)))
    return _measured_on(rows, data)
