"""The training loop and the first-order probes against their minimum passes, and a per-image DataLoader."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bnstudy.data import BatchOrder
from bnstudy.probes.functional import difference_norm
from bnstudy.probes.ics import gradient_shift
from bnstudy.probes.landscape import along_gradient
from bnstudy.probes.weights import WeightsProbe
from bnstudy.train import RunState

from bnstudy.bench.common import (Row, _measured_on, _target, bare_step, bench_config, bench_setup,
                                  forward_backward_seconds, our_step, seconds)


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
