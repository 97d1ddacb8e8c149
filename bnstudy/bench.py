"""`bnstudy bench`: what the suite costs against what the mathematics costs, as ratios measured side by side.

Times alone drift on shared machines; every number here is a ratio of two timings taken in the same
run, each the median of torch.utils.benchmark's blocked_autorange (which also synchronizes CUDA).
"Ours" is the training loop's own step (bnstudy.train.run_step), not a copy of it. The data are
CIFAR-10 where it is found, else the synthetic set: every row, and the printed header, name which.
"""
from __future__ import annotations

import copy
import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils import benchmark
from torch.utils.flop_counter import FlopCounterMode

from bnstudy.backends import CUDA_RTOL, backend_policy, memory_format
from bnstudy.config import BackendConfig, DataConfig, ModelConfig, RunConfig, TrainConfig
from bnstudy.data import BatchOrder, DataError, Dataset, data_kind, load_images
from bnstudy.models import build_model
from bnstudy.probes.curvature import HessianOperator, top_eigenvalues
from bnstudy.probes.functional import difference_norm, untouched
from bnstudy.probes.ics import gradient_shift
from bnstudy.probes.landscape import along_gradient
from bnstudy.probes.spectrum import gradient_share, spectral_density
from bnstudy.probes.weights import WeightsProbe
from bnstudy.recording import RunDir, atomic_write_text
from bnstudy.train import RunState, run_step


@dataclass
class Row:
    benchmark: str
    value: float
    unit: str
    target: str = ""
    meets: str = ""  # yes | no | "" (no target)
    note: str = ""
    data: str = ""  # the dataset it was measured on (Dataset.name), where it trained on one


def timed(fn, min_run_time: float) -> tuple[float, object]:
    """Median seconds per call of fn(), and what its first call (the warm-up: allocator, lazy init) returned, so a
    probe whose result a row reports is not run once more for it."""
    first = fn()
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median, first


def seconds(fn, min_run_time: float) -> float:
    """Median seconds per call of fn()."""
    return timed(fn, min_run_time)[0]


def forward_backward_seconds(model, x, y, min_run_time: float) -> float:
    """One forward+backward, the unit the probes' costs are given in; the gradients it leaves are cleared."""
    t = seconds(lambda: F.cross_entropy(model(x), y).backward(), min_run_time)
    model.zero_grad(set_to_none=True)
    return t


def _target(value: float, op: str, bound: float) -> tuple[str, str]:
    ok = value >= bound if op == ">=" else value <= bound
    return f"{op} {bound:g}", "yes" if ok else "no"


# ----------------------------------------------------------------------------------------------
# The workloads
# ----------------------------------------------------------------------------------------------
CIFAR = DataConfig(dataset="cifar10", train_size=10_000, test_size=1_000)
SYNTHETIC = DataConfig(dataset="synthetic", train_size=2_048, test_size=256)  # where CIFAR-10 is missing


def bench_setup(device: torch.device, data_dir: Path | None, width: float):
    """(dataset, model, its DataConfig): CIFAR-10 where it is found, else the synthetic set (its name says so, and
    every row carries the name)."""
    torch.manual_seed(0)
    try:
        data, dataset = CIFAR, load_images(CIFAR, data_dir, device)
    except DataError:
        data, dataset = SYNTHETIC, load_images(SYNTHETIC, None, device)
    model = build_model(ModelConfig(width=width, norm="batch")).to(device)
    return dataset, model, data


def _measured_on(rows: list[Row], data: str) -> list[Row]:
    """Each row names the data it was measured on, unless it already does."""
    for row in rows:
        row.data = row.data or data
    return rows


def bare_step(model, x, y, optimizer):
    def step():
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


class _NoLog:
    """Takes the rows a run would write to disk, and drops them (the bench times the step, not the disk)."""

    def append(self, rows) -> None:
        pass

    def flush(self) -> None:
        pass


def our_step(state: RunState, dataset: Dataset, config: RunConfig, callbacks: tuple = ()):
    """The training loop's step itself (train.run_step, no callbacks unless given): next indices, gather, SGD step,
    and the pending metrics turned into rows at each log interval (one host sync), as `config.train` sets them."""
    task, logs = data_kind(config.data.dataset).task, {"metrics": _NoLog(), "probes": _NoLog()}

    def step():
        run_step(state, dataset, task, config, logs, callbacks=list(callbacks))
    return step


def bench_config(data: DataConfig, batch: int, lr: float = 0.01, log_every: int = 50) -> RunConfig:
    """The loop's configuration for `our_step`: never an evaluation, a checkpoint or an end within a bench."""
    never = 10**9
    return RunConfig(data=data, train=TrainConfig(steps=never, batch_size=batch, lr=lr, log_every=log_every,
                                                  eval_every=never, checkpoint_every=never))


class PerImageDataset(torch.utils.data.Dataset):
    """How most public reproductions feed CIFAR-10: uint8 HWC images converted and normalized one at a time."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels
        self.mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
        self.std = torch.tensor([0.2470, 0.2435, 0.2616]).view(3, 1, 1)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = torch.from_numpy(self.images[i]).permute(2, 0, 1).float().div(255)  # ToTensor
        return (image - self.mean) / self.std, int(self.labels[i])  # Normalize


def dataloader_step(model, optimizer, loader, device):
    iterator = iter(loader)

    def step():
        nonlocal iterator
        try:
            x, y = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            x, y = next(iterator)
        bare_step(model, x.to(device, non_blocking=True), y.to(device, non_blocking=True), optimizer)()
    return step


def deepcopy_landscape(model, x, y, etas):
    """A naive reproduction: a deep copy of the model per eta, edited in place."""
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    g = {n: gr for (n, _), gr in zip(model.named_parameters(), grads)}
    rows = []
    for eta in etas:
        clone = copy.deepcopy(model)
        with torch.no_grad():
            for name, p in clone.named_parameters():
                p -= eta * g[name]
        moved_loss = F.cross_entropy(clone(x), y)
        moved = torch.autograd.grad(moved_loss, list(clone.parameters()))
        moved_grads = {n: m for (n, _), m in zip(clone.named_parameters(), moved)}
        rows.append((moved_loss.item(), difference_norm(moved_grads, g).item()))
    return rows


# ----------------------------------------------------------------------------------------------
# The benchmarks
# ----------------------------------------------------------------------------------------------
def run_bench(device: torch.device, data_dir: Path | None, width: float, batch: int, min_run_time: float,
              etas: int = 8) -> list[Row]:
    """Every ratio, under the backend policy training runs use (bnstudy.backends); on CUDA also `device_rows`."""
    with backend_policy(BackendConfig(), device):
        rows = (policy_rows(device, data_dir, width, batch, min_run_time, etas)
                + hessian_rows(device, data_dir, width, batch, min_run_time)
                + peer_rows(device, data_dir, min_run_time))
    levers = device_rows if device.type == "cuda" else cpu_lever_rows
    return rows + levers(device, data_dir, width, batch, min_run_time)


def policy_rows(device: torch.device, data_dir: Path | None, width: float, batch: int, min_run_time: float,
                etas: int) -> list[Row]:
    dataset, model, data = bench_setup(device, data_dir, width)
    x, y = dataset.train_x[:batch], dataset.train_y[:batch]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, foreach=True)
    rows: list[Row] = []

    t_bare = seconds(bare_step(model, x, y, optimizer), min_run_time)
    state = RunState(model, optimizer, BatchOrder(dataset.train_size, batch, seed=0))
    t_ours = seconds(our_step(state, dataset, bench_config(data, batch)), min_run_time)
    rows.append(Row("training steps/s, ours / bare step on a pre-made batch", t_bare / t_ours, "ratio",
                    *_target(t_bare / t_ours, ">=", 0.95), f"bare {1 / t_bare:.2f} steps/s, ours {1 / t_ours:.2f}"))
    t_records = seconds(our_step(state, dataset, bench_config(data, batch), [WeightsProbe(every=1)]), min_run_time)
    extra = t_records / t_ours - 1
    rows.append(Row("weights probe at every step: extra time / training step", extra, "fraction",
                    *_target(extra, "<=", 0.03), f"{(t_records - t_ours) * 1e3:.2f} ms a step; the controls quick "
                                                 f"preset records every 10th step: {extra / 10:.2%} of training"))

    images = (dataset.train_x.cpu().numpy() * 60 + 120).clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    loader = torch.utils.data.DataLoader(PerImageDataset(images, dataset.train_y.cpu().numpy()), batch_size=batch,
                                         shuffle=True, drop_last=True, pin_memory=device.type == "cuda")
    t_loader = seconds(dataloader_step(model, optimizer, loader, device), min_run_time)
    rows.append(Row("training steps/s, ours / per-image DataLoader reproduction", t_loader / t_ours, "ratio",
                    "> 1 on GPU", "", f"DataLoader {1 / t_loader:.2f} steps/s"))

    grid = [0.01 * (i + 1) for i in range(etas)]
    t_fwd_bwd = forward_backward_seconds(model, x, y, min_run_time)
    t_probe = seconds(lambda: along_gradient(model, F.cross_entropy, (x, y), grid), min_run_time)
    ratio = t_probe / ((etas + 1) * t_fwd_bwd)
    rows.append(Row(f"landscape probe ({etas} etas) / {etas + 1} forward+backward", ratio, "ratio",
                    *_target(ratio, "<=", 1.15),
                    f"probe {t_probe * 1e3:.0f} ms, forward+backward {t_fwd_bwd * 1e3:.1f} ms"))
    t_copy = seconds(lambda: deepcopy_landscape(model, x, y, grid), min_run_time)
    rows.append(Row("landscape probe / deep-copy-per-eta implementation", t_probe / t_copy, "ratio", "", "",
                    f"deep copy {t_copy * 1e3:.0f} ms"))

    t_ics = seconds(lambda: gradient_shift(model, F.cross_entropy, (x, y), 0.1, [5, 10]), min_run_time)
    rows.append(Row("ICS probe (layers #5, #10) / 3 forward+backward", t_ics / (3 * t_fwd_bwd), "ratio", "", "",
                    f"probe {t_ics * 1e3:.0f} ms"))

    return _measured_on(rows, dataset.name)


CURVATURE = {"steps": 30, "lr": 0.1, "tol": 1e-3}  # the one matrix the Hessian probes' rows are timed on
CURVATURE_BEFORE = 51  # the curvature row as ARPACK first measured it (issue #21's baseline, another run)


def trained(model, dataset: Dataset, batch: int, steps: int, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`steps` SGD steps on the full batches in order (around again where the set is small: the synthetic one);
    returns the next batch, the one a probe then reads."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    full = len(dataset.train_x) // batch
    batches = list(zip(dataset.train_x[:full * batch].split(batch), dataset.train_y[:full * batch].split(batch)))
    for x, y in (batches[i % full] for i in range(steps)):
        bare_step(model, x, y, optimizer)()
    model.zero_grad(set_to_none=True)
    return batches[steps % full]


def arpack_lambda_max(model, x, y, tol: float) -> dict:
    """The curvature probe before #21, kept here alone as the baseline its row is timed against in the same run:
    ARPACK (scipy's eigsh) on the same Hessian operator, every product through a float64 NumPy round trip."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    with untouched(model, "train"):
        operator = HessianOperator(model, F.cross_entropy, (x, y), "train")
        leaf = operator.leaves[0]

        def matvec(v: np.ndarray) -> np.ndarray:
            flat = torch.as_tensor(np.ascontiguousarray(v).ravel(), device=leaf.device, dtype=leaf.dtype)
            return operator.matvec(flat).double().cpu().numpy()

        start = np.random.default_rng(0).standard_normal(operator.size)
        value = eigsh(LinearOperator((operator.size, operator.size), matvec=matvec, dtype=np.float64), k=1,
                      which="LA", tol=tol, v0=start, return_eigenvectors=False)[0]
    return {"eigenvalue": float(value), "hvps": operator.calls}


def hessian_rows(device: torch.device, data_dir: Path | None, width: float, batch: int, min_run_time: float
                 ) -> list[Row]:
    """The Hessian probes' costs, on one matrix whatever the machine: the bench's VGG with BN after
    CURVATURE["steps"] SGD steps (the timing loops of `policy_rows` train their model for as many steps as fit in
    the time, and a probe's product count depends on the matrix). lambda_max against forward+backward and against
    ARPACK on the same matrix; one product against a plain double backward; the spectrum probes."""
    dataset, model, _ = bench_setup(device, data_dir, width)
    x, y = trained(model, dataset, batch, CURVATURE["steps"], CURVATURE["lr"])
    t_fwd_bwd = forward_backward_seconds(model, x, y, min_run_time)

    def ours():
        return top_eigenvalues(model, F.cross_entropy, (x, y), tol=CURVATURE["tol"])

    t_ours, found = timed(ours, min_run_time)
    t_arpack, before = timed(lambda: arpack_lambda_max(model, x, y, CURVATURE["tol"]), min_run_time)
    rows = [Row("curvature probe (lambda_max, tol 1e-3) / 1 forward+backward", t_ours / t_fwd_bwd, "ratio",
                *_target(t_ours / t_fwd_bwd, "<=", CURVATURE_BEFORE / 2),
                f"{found['hvps']} Hessian-vector products, probe {t_ours:.2f} s (ARPACK here: "
                f"{t_arpack / t_fwd_bwd:.1f}; when the target was set: {CURVATURE_BEFORE:g})"),
            Row("curvature probe, ours / ARPACK (scipy eigsh, the probe before the torch Lanczos), same matrix",
                t_ours / t_arpack, "ratio", *_target(t_ours / t_arpack, "<=", 0.5),
                f"ours {found['hvps']} products, lambda_max {found['eigenvalues'][0]:.6g}; ARPACK {before['hvps']} "
                f"products, {t_arpack:.2f} s, lambda_max {before['eigenvalue']:.6g}")]
    rows += hvp_rows(model, x, y, min_run_time)
    rows += spectrum_rows(model, x, y, t_fwd_bwd, min_run_time)
    return _measured_on(rows, dataset.name)


def spectrum_rows(model, x, y, t_fwd_bwd: float, min_run_time: float) -> list[Row]:
    """One probe of the spectrum experiment's quick preset, per BN mode: the density (3 vectors x 20 Lanczos steps)
    and the top-10 gradient share, each in forward+backward units."""
    t_density, density = timed(lambda: spectral_density(model, F.cross_entropy, (x, y), n_v=3, m=20), min_run_time)
    t_share, share = timed(lambda: gradient_share(model, F.cross_entropy, (x, y), k=10, max_steps=100), min_run_time)
    return [Row("spectral density (3 x 20 Lanczos steps) / 1 forward+backward", t_density / t_fwd_bwd, "ratio", "", "",
                f"{density['hvps']} Hessian-vector products, {t_density:.2f} s"),
            Row("gradient share in the top 10 (tol 1e-3, <= 100 products) / 1 forward+backward", t_share / t_fwd_bwd,
                "ratio", "", "", f"{share['hvps']} products (converged: {share['converged']}), {t_share:.2f} s")]


def hvp_rows(model, x, y, min_run_time: float) -> list[Row]:
    """One Hessian-vector product of ours (HessianOperator.matvec: flat vector in, flat vector out) against the
    plainest one: a double backward through the same retained graph, per-parameter tensors in and out."""
    operator = HessianOperator(model, F.cross_entropy, (x, y), "train")
    v = torch.randn(operator.size, device=x.device)
    pieces = operator._split(v)
    t_ours = seconds(lambda: operator.matvec(v), min_run_time)
    t_plain = seconds(lambda: torch.autograd.grad(operator.grads, operator.leaves, grad_outputs=pieces,
                                                  retain_graph=True), min_run_time)
    return [Row("Hessian-vector product, ours / a plain double backward", t_ours / t_plain, "ratio",
                *_target(t_ours / t_plain, "<=", 1.05), f"ours {t_ours * 1e3:.0f} ms, plain {t_plain * 1e3:.0f} ms")]


PEER = {"width": 0.125, "steps": 30, "batch": 64, "tol": 1e-3}  # the configuration of the PyHessian comparison


def peer_rows(device: torch.device, data_dir: Path | None, min_run_time: float) -> list[Row]:
    """lambda_max, ours against PyHessian's power iteration, on the matrix PyHessian can take: VGG-16 at width 1/8
    with BN after 30 SGD steps, one batch of 64, BN in eval mode; the same tolerance. Absent (one row saying why)
    where PyHessian is not installed (`pip install -c constraints.txt -e '.[bench]'`: make bench does)."""
    try:
        from pyhessian import hessian as PyHessian
        pyhessian_module = importlib.import_module("pyhessian.hessian")  # the package's `hessian` is the class
    except ImportError:
        return [Row("lambda_max time, ours / PyHessian", float("nan"), "ratio", "<= 1", "",
                    "PyHessian not installed: pip install -c constraints.txt -e '.[bench]'")]
    dataset, model, _ = bench_setup(device, data_dir, PEER["width"])
    x, y = trained(model, dataset, PEER["batch"], PEER["steps"], lr=0.1)
    theirs_model = copy.deepcopy(model)  # PyHessian leaves the model in eval mode with a graph in .grad

    def theirs(tol: float) -> tuple[float, int]:
        """PyHessian's lambda_max at `tol`, and the products it took (counted on its own HVP function)."""
        torch.manual_seed(0)
        found = PyHessian(theirs_model, F.cross_entropy, data=(x, y), cuda=device.type == "cuda")
        with mock.patch.object(pyhessian_module, "hessian_vector_product",
                               wraps=pyhessian_module.hessian_vector_product) as product:
            value = found.eigenvalues(tol=tol, top_n=1)[0][0]
        theirs_model.zero_grad(set_to_none=True)
        return value, product.call_count

    def ours():
        return top_eigenvalues(model, F.cross_entropy, (x, y), bn_mode="eval", tol=PEER["tol"])

    # PyHessian's tol is a change between power iterations, not an error: at a tenth of it, it is as accurate as
    # ours at tol (the second pair of rows: the "equal accuracy")
    tighter = PEER["tol"] / 10
    t_ours, result = timed(ours, min_run_time)
    timings = {tol: timed(lambda: theirs(tol), min_run_time) for tol in (PEER["tol"], tighter)}
    t_theirs, found = {tol: t for tol, (t, _) in timings.items()}, {tol: run for tol, (_, run) in timings.items()}
    mine, value = result["eigenvalues"][0], {tol: found[tol][0] for tol in found}
    # the truth all are judged against: Lanczos to a 1e-9 residual bound on the same matrix
    exact = top_eigenvalues(model, F.cross_entropy, (x, y), bn_mode="eval", tol=1e-9, max_hvps=300)["eigenvalues"][0]
    rows = []
    for tol, what in ((PEER["tol"], "equal tolerance"), (tighter, "equal accuracy")):
        time_ratio, agreement = t_ours / t_theirs[tol], abs(mine - value[tol]) / abs(value[tol])
        rows += [Row(f"lambda_max time, ours (tol {PEER['tol']:g}) / PyHessian power iteration (tol {tol:g}), "
                     f"{what}", time_ratio, "ratio", *_target(time_ratio, "<=", 1.0),
                     f"ours {t_ours:.2f} s, {result['hvps']} products; PyHessian {t_theirs[tol]:.2f} s, "
                     f"{found[tol][1]} products; lambda_max {mine:.6g} vs {value[tol]:.6g}"),
                 Row(f"lambda_max, |ours - PyHessian| / PyHessian, {what}", agreement, "fraction",
                     *_target(agreement, "<=", 1e-3), f"against lambda_max to 1e-9 ({exact:.6g}): ours off by "
                                                      f"{abs(mine - exact) / abs(exact):.1e}, PyHessian by "
                                                      f"{abs(value[tol] - exact) / abs(exact):.1e}")]
    return _measured_on(rows, dataset.name)


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
               backend: BackendConfig) -> tuple[float, int, str]:
    """Seconds per bare training step, its FLOPs, and the data's name, under `backend` (a fresh model in its
    memory format)."""
    with backend_policy(backend, device):
        dataset, model, _ = bench_setup(device, data_dir, width)
        model = model.to(memory_format=torch.channels_last if backend.channels_last else torch.contiguous_format)
        x, y = dataset.train_x[:batch], dataset.train_y[:batch]
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, foreach=True)
        return seconds(bare_step(model, x, y, optimizer), min_run_time), step_flops(model, x, y), dataset.name


def device_rows(device: torch.device, data_dir: Path | None, width: float, batch: int,
                min_run_time: float) -> list[Row]:
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
    return _measured_on(rows + [compile_row(device, data_dir, width, batch, min_run_time, t)], data)


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
                   min_run_time: float) -> list[Row]:
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
    compiled = compile_row(device, data_dir, width, batch, min_run_time, t)
    rows.append(compiled)
    if np.isfinite(compiled.value):
        drift = agreement(eager, losses_under(device, data_dir, width, batch, BackendConfig(), compiled=True))
        rows.append(Row("torch.compile: largest relative loss difference to eager over 5 steps", drift, "relative",
                        *_target(drift, "<=", CUDA_RTOL)))
    return _measured_on(rows, data)


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
