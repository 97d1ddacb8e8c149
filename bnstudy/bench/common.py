"""What every benchmark shares: a row of the table, timing, the workloads (data, model, the loop's own step)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils import benchmark

from bnstudy.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from bnstudy.data import DataError, Dataset, data_kind, load_images
from bnstudy.models import build_model
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


def bench_setup(device: torch.device, data_dir: Path | None, width: float, norm: str = "batch"):
    """(dataset, model, its DataConfig): CIFAR-10 where it is found, else the synthetic set (its name says so, and
    every row carries the name)."""
    torch.manual_seed(0)
    try:
        data, dataset = CIFAR, load_images(CIFAR, data_dir, device)
    except DataError:
        data, dataset = SYNTHETIC, load_images(SYNTHETIC, None, device)
    model = build_model(ModelConfig(width=width, norm=norm)).to(device)
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
    task, logs = data_kind(config.data.dataset).task, {name: _NoLog() for name in ("metrics", "probes", "activations")}

    def step():
        run_step(state, dataset, task, config, logs, callbacks=list(callbacks))
    return step


def bench_config(data: DataConfig, batch: int, lr: float = 0.01, log_every: int = 50) -> RunConfig:
    """The loop's configuration for `our_step`: never an evaluation, a checkpoint or an end within a bench."""
    never = 10**9
    return RunConfig(data=data, train=TrainConfig(steps=never, batch_size=batch, lr=lr, log_every=log_every,
                                                  eval_every=never, checkpoint_every=never))


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
