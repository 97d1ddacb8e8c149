"""Internal covariate shift measured by gradients (docs/protocol.md, Fig. 3: Definition 2.1), on any model.

For weight layer i at the current step, on the step's batch:
    G  = grad of the loss w.r.t. W_i at the current weights;
    G' = the same gradient after everything upstream of layer i took this step's plain SGD update
         w - lr * grad, every other parameter left as it is.
Rows: layer, l2 = ||G - G'||, cosine = cos(G, G'), rel_l2 = ||G - G'|| / ||G||.

Weight layers and what is upstream of them: bnstudy.probes.layers, found by hooks in the gradient's own forward
pass. Layers are numbered from 1 in the order the forward pass first calls them; upstream of layer i are the
trainable parameters its input depends on (for a chain such as VGG: the weight layers 1..i-1 with the norms between
them; in a ResNet block not the shortcut; in attention not a sibling projection). Cost: one forward+backward for the
gradient, plus one per requested layer that has anything upstream (for layer 1 nothing is, so G' = G).
Side-effect free, like every probe.
"""
from __future__ import annotations

import torch
from torch import nn

from bnstudy.analysis.common import probe_row
from bnstudy.analysis.ics import COSINE, L2, METRICS, PROBE, REL_L2  # the row schema, which analysis reads back
from bnstudy.probes.callback import Probe
from bnstudy.probes.functional import Evaluator, flat_norm, untouched
from bnstudy.probes.layers import LayerTrace, WeightLayer


def chosen(layers: list[WeightLayer], number: int) -> WeightLayer:
    """Layer #number, or one clear error: out of range, or frozen (a frozen weight has no gradient to shift)."""
    if not 1 <= number <= len(layers):
        raise IndexError(f"layer #{number} out of range; this model has weight layers #1..#{len(layers)}")
    layer = layers[number - 1]
    if not layer.trainable:
        raise ValueError(f"layer #{number} ({layer.weight}) is frozen (requires_grad=False): "
                         "it has no gradient to shift")
    return layer


def gradient_shift(model: nn.Module, loss_fn, batch, lr: float, layers, *, bn_mode: str | None = "train") -> list[dict]:
    """Definition 2.1 at the given weight layers: one row per layer with l2, cosine and rel_l2."""
    with untouched(model, bn_mode):
        evaluator = Evaluator(model, loss_fn, batch, bn_mode)
        trace = LayerTrace(model)
        _, grads = evaluator.loss_and_grad(evaluator.params, watching=trace.watching)
        measured = []
        for number in layers:
            layer = chosen(trace.layers, number)
            shifted = dict(evaluator.params)
            for name in layer.upstream:
                shifted[name] = evaluator.params[name] - lr * grads[name]
            g = grads[layer.weight]
            g_shifted = evaluator.loss_and_grad(shifted, wrt=[layer.weight])[1][layer.weight] if layer.upstream else g
            cosine = torch.nn.functional.cosine_similarity(g.flatten(), g_shifted.flatten(), dim=0)
            measured.append(torch.stack([flat_norm({"d": g - g_shifted}), flat_norm({"g": g}), cosine]))
        values = torch.stack(measured).tolist() if measured else []  # one host transfer
    return [{"layer": layer, L2: l2, COSINE: cos, REL_L2: l2 / g_norm if g_norm > 0 else float("nan")}
            for layer, (l2, g_norm, cos) in zip(layers, values)]


class ICSProbe(Probe):
    """Training callback: every `every` steps, Definition 2.1 at `layers` on the step's batch, before the step."""

    def __init__(self, layers: tuple[int, ...], every: int, bn_mode: str):
        self.layers, self.every, self.bn_mode = layers, every, bn_mode

    def measure(self, ctx) -> dict[str, list[dict]]:
        rows = gradient_shift(ctx.model, ctx.loss_fn, ctx.batch, ctx.lr, self.layers, bn_mode=self.bn_mode)
        return {"probes": ics_records(ctx.step, rows)}


def ics_records(step: int, rows: list[dict]) -> list[dict]:
    """Tidy probes.csv rows of gradient_shift's rows: per layer, each of METRICS."""
    return [probe_row(step, PROBE, r["layer"], metric, r[metric]) for r in rows for metric in METRICS]


def from_config(config, model: nn.Module) -> list[Probe]:
    """The run's ICS probe (bnstudy.train.PROBES), where `ics.every` turns it on."""
    ics = config.ics
    return [ICSProbe(ics.layers, ics.every, ics.bn_mode)] if ics.every else []
