"""Weight norms, the training step's own gradient, and the logits' scale: what BN does to the step itself.

Per weight layer k (numbered from 1, bnstudy.models.weight_layers: for VGG and the DLN the numbering
bnstudy.probes.layers finds by hooks, tested), at every `every`-th step:

    w_norm          ||W_t||                      (the weight tensor alone, biases left out)
    grad_norm       ||g_t||                      the training step's own gradient (read from .grad after the step)
    grad_dot_w      <g_t, W_t>                   0 for a layer followed by BN: its loss is invariant to W's scale
    sq_norm_change  ||W_{t+1}||^2 - ||W_t||^2    the step's actual effect on the norm

and once per probed step, layer 0: `logit_std`, the standard deviation of the model's outputs on the step's batch
(taken from the training forward itself by a hook). The run's LR (meta.json) turns these into the effective step
eta ||g|| / ||W||, the cosine of g and W, and Arora et al.'s identity ||W_{t+1}||^2 - ||W_t||^2 = eta^2 ||g_t||^2
for scale-invariant weights (bnstudy.analysis.weights). Plain SGD makes the identity exact up to rounding
when <g, W> = 0; momentum or weight decay would break it, which is why it is measured, not assumed.

Costs no forward or backward pass: a copy of the weights before a probed step, a few reductions after it, and
one host transfer. Changes nothing: no RNG draw, no BN statistic, no weight.
"""
from __future__ import annotations

import torch
from torch import nn

from bnstudy.analysis.common import probe_row
from bnstudy.analysis.weights import LOGIT_STD, METRICS, PROBE  # the row schema, which analysis reads back
from bnstudy.models import weight_layers
from bnstudy.probes.callback import Probe


def layer_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weight tensor of every conv and linear layer, #1 first (forward order for sequential models)."""
    return [m.weight for m in weight_layers(model)]


def step_records(before: list[torch.Tensor], after: list[torch.Tensor],
                 grads: list[torch.Tensor | None]) -> torch.Tensor:
    """(layers, 4): per layer ||W_t||, ||g_t||, <g_t, W_t>, ||W_{t+1}||^2 - ||W_t||^2 (as (W'-W).(W'+W): the
    difference of two nearly equal squares, taken directly, keeps its digits)."""
    rows = []
    for w0, w1, g in zip(before, after, grads):
        g = torch.zeros_like(w0) if g is None else g  # a layer the loss does not reach
        rows.append(torch.stack([torch.linalg.vector_norm(w0), torch.linalg.vector_norm(g), (g * w0).sum(),
                                 ((w1 - w0) * (w1 + w0)).sum()]))
    return torch.stack(rows)


class WeightsProbe(Probe):
    """Training callback: every `every` steps, the per-layer records above and the logits' standard deviation.

    before_step copies the weights and hooks the model's output; after_step reads the step's gradient and the
    new weights. It must come after every callback whose before_step runs a forward pass (the training loop puts
    it there), so that the hook sees the training forward alone."""

    def __init__(self, every: int):
        self.every = every
        self.before: list[torch.Tensor] | None = None
        self.logit_std: torch.Tensor | None = None
        self.handle = None

    def measure(self, ctx) -> dict[str, list[dict]]:
        self.before = [w.detach().clone() for w in layer_weights(ctx.model)]
        self.logit_std = None
        self.handle = ctx.model.register_forward_hook(self._catch_logits)
        return {}

    def _catch_logits(self, module, inputs, output) -> None:
        self.logit_std = output.detach().double().std()  # a (batch, classes) tensor: double costs nothing
        self.handle.remove()  # the first forward after before_step is the training step's

    def after_step(self, ctx) -> dict[str, list[dict]]:
        if self.before is None:
            return {}
        if self.handle is not None:
            self.handle.remove()  # a step whose forward never ran (nothing to catch) leaves no hook behind
        weights = layer_weights(ctx.model)
        with torch.no_grad():
            table = step_records(self.before, [w.detach() for w in weights], [w.grad for w in weights])
            logit = self.logit_std if self.logit_std is not None else torch.tensor(float("nan"))
            values = torch.cat([table.flatten(), logit.reshape(1).to(table)]).tolist()  # one host transfer
        self.before, self.handle = None, None
        per_layer = [values[i:i + len(METRICS)] for i in range(0, len(values) - 1, len(METRICS))]
        return {"probes": weights_records(ctx.step, per_layer, values[-1])}


def weights_records(step: int, per_layer: list[list[float]], logit_std: float) -> list[dict]:
    """Tidy probes.csv rows: per weight layer (from 1) its METRICS in order, then (layer 0) the logits' scale."""
    rows = [probe_row(step, PROBE, k, metric, value)
            for k, layer_values in enumerate(per_layer, start=1) for metric, value in zip(METRICS, layer_values)]
    return rows + [probe_row(step, PROBE, 0, LOGIT_STD, logit_std)]


def from_config(config, model: nn.Module) -> list[Probe]:
    """The run's weights probe (bnstudy.train.LAST_PROBES), where `weights.every` turns it on."""
    return [WeightsProbe(config.weights.every)] if config.weights.every else []
