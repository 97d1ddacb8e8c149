"""Loss landscape along the gradient, gradient predictiveness and effective beta-smoothness.

docs/protocol.md, "the loss landscape along the gradient" (Fig. 4, 10-13): at weights w, on batch B, with
g = grad L(w), for each step size eta evaluate L(w - eta d) and grad L(w - eta d), d = g (the paper), the
filter-normalized gradient (each filter's step scaled to that filter's weight norm: scale-free under BN) or
a filter-normalized random direction. Works on any PyTorch model:

    rows = along_gradient(model, torch.nn.functional.cross_entropy, (x, y), etas=[0.05, 0.1, 0.2])
    summary = summarize(rows)   # loss_min/max, grad_diff_min/max, beta_eff

Cost: one forward+backward for g plus one per eta, and nothing else. Side-effect free: the model's
parameters, gradients, buffers, mode and the RNG states are as before (see functional.untouched).
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from bnstudy.analysis.common import probe_row
# the row schema, which analysis reads back
from bnstudy.analysis.landscape import FILTER, GRAD_DIFF, GRAD_NORM, LOSS, PER_ETA, PLAIN, STEP_NORM
from bnstudy.probes.callback import Probe, step_seed
from bnstudy.probes.functional import Evaluator, difference_norm, flat_norm, moved, untouched

DIRECTIONS = ("gradient", "filter-gradient", "random")


class DirectionError(ValueError):
    """A probe direction that is not what its name says: no row is measured along it."""


# How far a filter's step may differ from its weights' norm, relative to that norm (float32 rounding is ~1e-7)
DIRECTION_RTOL = 1e-4


def _nonzero(values: torch.Tensor) -> torch.Tensor:
    """values with zeros replaced by ones: the divisor that leaves a zero filter zero."""
    return torch.where(values > 0, values, torch.ones_like(values))


def _per_filter(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(out,) -> (out, 1, ...): one number per filter, broadcast over a weight tensor shaped like `like`."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def per_filter_norms(tensor: torch.Tensor) -> torch.Tensor:
    """(out, ...) -> (out,): each filter's 2-norm without underflow. Squaring entries below ~1e-23 underflows in
    float32, so a tiny but nonzero filter (a nearly dead unit late in training) read as norm 0, and a step scaled to
    ||w_f|| / 0 came out ~1e12 times too long; dividing by the filter's largest entry first keeps every square in
    range (max|x| / ||x|| lies in [1/sqrt(n), 1])."""
    flat = tensor.flatten(1)
    largest = flat.abs().amax(dim=1, keepdim=True)
    return (flat / _nonzero(largest)).norm(dim=1) * largest.squeeze(1)


def filter_normalized(source: dict[str, torch.Tensor], params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`source` scaled per filter to the norm of that filter's weights (Li et al. 2018).

    Each output unit (first dimension) of a weight tensor gets ||d_f|| = ||w_f|| (zero where source_f is zero);
    vectors (biases, BN scales and shifts) get zero, as in Li et al., so the direction moves only the filters.
    Rescaling a filter that BN follows rescales its part of the direction alike: w - eta d computes the same function.
    Checked before it is returned (check_filter_normalized).
    """
    direction = {}
    for name, p in params.items():
        if p.dim() <= 1:
            direction[name] = torch.zeros_like(p)
            continue
        d = source[name]
        scaled = d / _per_filter(_nonzero(d.flatten(1).abs().amax(dim=1)), d)  # largest entry 1: no underflow below
        unit = scaled / _per_filter(_nonzero(scaled.flatten(1).norm(dim=1)), d)
        direction[name] = unit * _per_filter(per_filter_norms(p), p)
    check_filter_normalized(direction, params)
    return direction


def check_filter_normalized(direction: dict[str, torch.Tensor], params: dict[str, torch.Tensor]) -> None:
    """Raise DirectionError unless each filter's step has that filter's norm (to DIRECTION_RTOL) or is zero, and every
    vector's step is zero. A non-finite filter (the gradient of a diverged run) is not a wrong direction: its rows
    record the non-finite numbers, as every probe's do."""
    for name, p in params.items():
        d = direction[name]
        if p.dim() <= 1:
            if torch.count_nonzero(d):
                raise DirectionError(f"filter-normalized direction moves the vector '{name}', which it must not")
            continue
        d_norm, w_norm = per_filter_norms(d), per_filter_norms(p)
        wrong = (d_norm > 0) & ((d_norm - w_norm).abs() > DIRECTION_RTOL * w_norm)
        if wrong.any():
            f = int(wrong.nonzero()[0])
            raise DirectionError(f"filter-normalized direction is not: '{name}' filter {f} steps "
                                 f"{float(d_norm[f]):.3g} against its weights' norm {float(w_norm[f]):.3g} "
                                 f"({int(wrong.sum())} such filters)")


def filter_normalized_direction(params: dict[str, torch.Tensor], generator: torch.Generator | None = None):
    """A Gaussian direction scaled per filter to the norm of that filter's weights (Li et al. 2018)."""
    gaussian = {name: torch.randn(p.shape, generator=generator, device="cpu", dtype=p.dtype).to(p.device)
                for name, p in params.items() if p.dim() > 1}
    return filter_normalized(gaussian, params)


def probe_direction(direction: str, g: dict, params: dict, generator: torch.Generator | None) -> dict:
    """d for one of DIRECTIONS at weights `params` with gradient `g`."""
    if direction == "gradient":
        return g
    if direction == "filter-gradient":
        return filter_normalized(g, params)
    return filter_normalized_direction(params, generator)


def along_gradient(model: nn.Module, loss_fn, batch, etas, *, bn_mode: str | None = "train",
                   direction: str = "gradient", generator: torch.Generator | None = None) -> list[dict]:
    """One row per eta: eta, loss = L(w - eta d), grad_diff = ||grad L(w - eta d) - g||, grad_norm = ||g||,
    step_norm = eta ||d||, and loss0 = L(w). `batch = (inputs, targets)`; `loss_fn(outputs, targets)`.

    direction: "gradient" (d = g, the paper), "filter-gradient" (g scaled per filter to ||w_f||: eta is then a
    fraction of each filter's norm) or "random" (filter-normalized Gaussian; give a generator to make it
    reproducible; it is drawn from its own generator, never the global one).
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction '{direction}'; known: {', '.join(DIRECTIONS)}")
    with untouched(model, bn_mode):
        evaluator = Evaluator(model, loss_fn, batch, bn_mode)
        loss0, g = evaluator.loss_and_grad(evaluator.params)
        d = probe_direction(direction, g, evaluator.params, generator)
        g_norm, d_norm = flat_norm(g), flat_norm(d)
        measured = []
        for eta in etas:
            loss, grad = evaluator.loss_and_grad(moved(evaluator.params, d, float(eta)))
            measured.append((float(eta), loss, difference_norm(grad, g)))
        # one host transfer for all numbers of the probe
        values = torch.stack([loss0, g_norm, d_norm] + [v for _, loss, gd in measured for v in (loss, gd)]).tolist()
    loss0_v, g_norm_v, d_norm_v = values[:3]
    return [{"eta": eta, LOSS: values[3 + 2 * i], GRAD_DIFF: values[4 + 2 * i], GRAD_NORM: g_norm_v,
             STEP_NORM: eta * d_norm_v, "loss0": loss0_v} for i, (eta, _, _) in enumerate(measured)]


def summarize(rows: list[dict]) -> dict:
    """Per probe: the band of the loss and of the gradient change over eta, and the effective beta-smoothness
    beta_eff = max over eta of ||grad L(w - eta d) - g|| / ||eta d||."""
    return {
        "loss_min": min(r[LOSS] for r in rows),
        "loss_max": max(r[LOSS] for r in rows),
        "grad_diff_min": min(r[GRAD_DIFF] for r in rows),
        "grad_diff_max": max(r[GRAD_DIFF] for r in rows),
        "beta_eff": max(r[GRAD_DIFF] / r[STEP_NORM] for r in rows if r[STEP_NORM] > 0),
    }


def eta_grid(lr: float, low: float, high: float, points: int, spacing: str) -> list[float]:
    """`points` step sizes from low x lr to high x lr, linearly or logarithmically spaced."""
    if spacing == "log":
        grid = torch.logspace(torch.log10(torch.tensor(low)), torch.log10(torch.tensor(high)), points,
                              dtype=torch.float64)
    else:
        grid = torch.linspace(low, high, points, dtype=torch.float64)
    return [lr * float(v) for v in grid]


PROBE_NAMES = {"gradient": PLAIN, "filter-gradient": FILTER, "random": PLAIN}


def landscape_records(step: int, rows: list[dict], probe: str = PLAIN) -> list[dict]:
    """Tidy probes.csv rows: per eta loss, grad_diff, step_norm; once (eta = 0) the loss and ||g|| at w."""
    at_w = [probe_row(step, probe, 0, LOSS, rows[0]["loss0"], eta=0.0),
            probe_row(step, probe, 0, GRAD_NORM, rows[0][GRAD_NORM], eta=0.0)]
    return at_w + [probe_row(step, probe, 0, metric, r[metric], eta=r["eta"]) for r in rows for metric in PER_ETA]


class LandscapeProbe(Probe):
    """Training callback: every `every` steps, probe along the gradient on the step's own batch, before the step."""

    def __init__(self, etas: list[float], every: int, bn_mode: str, direction: str, seed: int):
        self.etas, self.every, self.bn_mode, self.direction, self.seed = etas, every, bn_mode, direction, seed

    def measure(self, ctx) -> dict[str, list[dict]]:
        generator = torch.Generator().manual_seed(step_seed(self.seed, ctx.step))  # resumable
        try:
            rows = along_gradient(ctx.model, ctx.loss_fn, ctx.batch, self.etas, bn_mode=self.bn_mode,
                                  direction=self.direction, generator=generator)
        except DirectionError as why:  # a probe's failure, not the run's: this step records no landscape row
            warnings.warn(f"step {ctx.step}: no {PROBE_NAMES[self.direction]} rows: {why}", stacklevel=2)
            return {}
        return {"probes": landscape_records(ctx.step, rows, PROBE_NAMES[self.direction])}


def from_config(config, model: nn.Module) -> list[Probe]:
    """The run's landscape probes (bnstudy.train.PROBES): along its direction every `landscape.every` steps, eta a
    grid of multiples of the LR; along the filter-normalized gradient every `filter_every`, eta fractions of each
    filter's norm, the same grid whatever the LR."""
    ls, probes = config.landscape, []
    if ls.every:
        etas = eta_grid(config.train.lr, ls.eta_min, ls.eta_max, ls.points, ls.spacing)
        probes.append(LandscapeProbe(etas, ls.every, ls.bn_mode, ls.direction, config.seed))
    if ls.filter_every:
        etas = eta_grid(1.0, ls.filter_eta_min, ls.filter_eta_max, ls.points, ls.spacing)
        probes.append(LandscapeProbe(etas, ls.filter_every, ls.bn_mode, "filter-gradient", config.seed))
    return probes
