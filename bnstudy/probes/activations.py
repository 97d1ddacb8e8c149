"""Distributions of chosen units at chosen layers, recorded from the training forward pass itself.

The recorded quantity is the input to the nonlinearity, after normalization and noise (docs/protocol.md,
"Activation distributions"). Forward hooks read the training step's own activations, so recording
costs no extra pass and changes nothing: no RNG draw, no BN statistic, no weight.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bnstudy.analysis.activations import DENSITY, MEAN, PERCENTILES, VAR  # the row schema, which analysis reads
from bnstudy.probes.callback import Probe



def choose_units(width: int, count: int, seed: int, layer: int) -> list[int]:
    """`count` distinct units of a layer, fixed by (seed, layer) so every arm of a seed watches the same ones."""
    generator = torch.Generator().manual_seed(seed * 1_000 + layer)
    return sorted(torch.randperm(width, generator=generator)[:count].tolist())


def quantiles(x: torch.Tensor, levels: list[float]) -> torch.Tensor:
    """(U, M) -> (len(levels), U), linear interpolation (both libraries' default, equal results).

    On the CPU numpy selects each order statistic (introselect) where torch.quantile sorts the whole row:
    8x faster for a 128 x 32 x 32 conv unit, which matters when every step of a quick run is recorded."""
    if x.device.type == "cpu":
        with np.errstate(invalid="ignore"):  # a diverging run's inf activations give nan/inf percentiles: a result
            return torch.from_numpy(np.quantile(x.numpy(), levels, axis=1).astype(np.float32))
    return torch.quantile(x, torch.tensor(levels, device=x.device), dim=1)


def unit_statistics(output: torch.Tensor, units: list[int], density: bool = False) -> dict[str, torch.Tensor]:
    """(N, C, ...) -> per chosen unit: percentiles (with `density`, the 1st..99th too), mean and variance over batch
    (and space), shape (U,)."""
    x = output.detach()[:, units].transpose(0, 1).reshape(len(units), -1).float()  # (U, N*H*W)
    levels = PERCENTILES | (DENSITY if density else {})
    stats = dict(zip(levels, quantiles(x, list(levels.values()))))
    stats[MEAN] = x.mean(dim=1)
    stats[VAR] = x.var(dim=1, unbiased=False)
    return stats


class ActivationRecorder(Probe):
    """Training callback: at steps t and t+1 for t a multiple of `every`, hook `modules` and record rows.

    modules: layer number -> the module whose output is that layer's pre-nonlinearity activation.
    Recording at t+1 as well gives true step-to-step changes of the moments (Fig. 8). At the steps
    `density_at` each unit also records its 1st..99th percentiles, from which Fig. 6 draws densities.
    """

    def __init__(self, modules: dict[int, nn.Module], units: int, every: int, seed: int,
                 density_at: tuple[int, ...] = ()):
        self.modules, self.every, self.seed, self.density_at = modules, every, seed, frozenset(density_at)
        self.units_per_layer = units
        self.units: dict[int, list[int]] = {}
        self.handles: list = []
        self.rows: list[dict] = []

    def due(self, step: int) -> bool:
        return step % self.every in (0, 1) or step in self.density_at

    def measure(self, ctx) -> dict[str, list[dict]]:
        """Hook the modules: the step's own forward pass records the rows, which after_step hands over."""
        for layer, module in self.modules.items():
            self.handles.append(module.register_forward_hook(self._hook(layer, ctx.step)))
        return {}

    def after_step(self, ctx) -> dict[str, list[dict]]:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        rows, self.rows = self.rows, []
        return {"activations": rows} if rows else {}

    def _hook(self, layer: int, step: int):
        def record(module, inputs, output):
            if layer not in self.units:
                self.units[layer] = choose_units(output.shape[1], self.units_per_layer, self.seed, layer)
            units = self.units[layer]
            for stat, values in unit_statistics(output, units, step in self.density_at).items():
                self.rows += [{"step": step, "layer": layer, "unit": u, "stat": stat, "value": v}
                              for u, v in zip(units, values.tolist())]
        return record


def from_config(config, model: nn.Module) -> list[Probe]:
    """The run's activation recorder (bnstudy.train.LAST_PROBES), at `activations.layers` of the model (its
    `preactivation(k)`: the module whose output is layer k's input to the nonlinearity)."""
    a = config.activations
    modules = {k: model.preactivation(k) for k in a.layers}
    return [ActivationRecorder(modules, a.units, a.every, config.seed, a.density_at)]
