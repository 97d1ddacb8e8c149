"""The Hessian's whole spectrum (Ghorbani, Krishnan and Xiao 2019), and how much of the gradient lies in its top.

    result = spectral_density(model, loss_fn, (x, y), n_v=3, m=30)   # stochastic Lanczos quadrature
    result["ritz"], result["weights"]      # per start vector: T's eigenvalues and the squared first components
    result["grid"], result["density"]      # a Gaussian-smoothed density, integrating to 1
    gradient_share(model, loss_fn, (x, y), k=10)   # ||P_k g||^2 / ||g||^2, P_k onto the top-k eigenvectors

Stochastic Lanczos quadrature: for a start vector v (Rademacher), m Lanczos steps give T = S diag(theta) S^T, and
sum_i tau_i f(theta_i), tau_i = S[0, i]^2, is a Gauss quadrature of v^T f(H) v / ||v||^2, exact for polynomials
of degree up to 2m - 1; averaged over v it estimates (1/n) tr f(H), i.e. the spectral density. Hessian-vector
products come from curvature.HessianOperator (the shared functional helper); the model is left as it was found.
"""
from __future__ import annotations

import torch
from torch import nn

from bnstudy.analysis.common import probe_row
from bnstudy.analysis.spectrum import (  # the row schema, which analysis reads back, and the smoothing figures use too
    CONVERGED, GRID_POINTS, HVPS, SIGMA, TAU, THETA, probe_name, ritz_metric, share_metric, smoothed_density,
    top_metric)
from bnstudy.probes.callback import Probe, step_seed
from bnstudy.probes.curvature import HessianOperator, rademacher
from bnstudy.probes.functional import untouched
from bnstudy.probes.lanczos import lanczos



def spectral_density(model: nn.Module, loss_fn, batch, *, n_v: int = 3, m: int = 30, bn_mode: str | None = "train",
                     seed: int = 0, sigma: float = SIGMA, grid_points: int = GRID_POINTS) -> dict:
    """Ritz values and quadrature weights per start vector, and their Gaussian-smoothed density on a grid.

    n_v start vectors x at most m Lanczos steps (fewer where the Krylov space is invariant: a small model).
    sigma: the kernel width as a fraction of the Ritz values' range. Returns {"ritz", "weights" (lists per
    vector), "grid", "density" (integrates to 1 over the grid), "size" (parameters), "hvps"}."""
    generator = torch.Generator().manual_seed(seed)
    with untouched(model, bn_mode):
        operator = HessianOperator(model, loss_fn, batch, bn_mode)
        ritz, weights = [], []
        for _ in range(n_v):
            values, vectors = lanczos(operator.matvec, rademacher(operator.size, generator, operator.leaves[0]),
                                      m).ritz()
            ritz.append(values.tolist())
            weights.append((vectors[0] ** 2).tolist())
    grid, density = smoothed_density(ritz, weights, sigma, grid_points)
    return {"ritz": ritz, "weights": weights, "grid": grid, "density": density, "size": operator.size,
            "hvps": operator.calls}


def gradient_share(model: nn.Module, loss_fn, batch, *, k: int = 10, bn_mode: str | None = "train", seed: int = 0,
                   tol: float = 1e-3, max_steps: int = 200) -> dict:
    """The share of the gradient's squared norm in the span of the Hessian's top-k eigenvectors (the k algebraically
    largest: the outliers, when there are any), by Lanczos to `tol` on those k. Returns {"share", "eigenvalues"
    (top k, descending), "hvps", "converged"}."""
    generator = torch.Generator().manual_seed(seed)
    with untouched(model, bn_mode):
        operator = HessianOperator(model, loss_fn, batch, bn_mode)
        start = rademacher(operator.size, generator, operator.leaves[0])
        result = lanczos(operator.matvec, start, max_steps, k=k, tol=tol)
        values, vectors = result.ritz()
        top = result.ritz_vectors(vectors[:, -k:])  # (k, n)
        g = torch.cat([grad.detach().reshape(-1) for grad in operator.grads])
        share = float((top.double() @ g.double()).pow(2).sum() / g.double().pow(2).sum())
    return {"share": share, "eigenvalues": values[-k:].flip(0).tolist(), "hvps": operator.calls,
            "converged": result.converged}


class SpectrumProbe(Probe):
    """Training callback: at the steps in `at`, for each BN mode in `bn_modes`, the spectral density (Ritz values
    and weights per start vector) and the gradient's share in the top-k eigenvectors, on the step's own batch.

    Rows (probe "spectrum-<mode>", layer = the start vector, from 1): theta_<j> and tau_<j> per Ritz value;
    and (layer 0) share_top<k>, top1..top<k> (the top Ritz values, descending), converged (1 if every one of the k
    met the tolerance within max_hvps products, else 0: unconverged top Ritz values are lower bounds of the
    eigenvalues) and hvps."""

    def __init__(self, at: tuple[int, ...], bn_modes: tuple[str, ...], n_v: int, m: int, k: int, tol: float,
                 max_hvps: int, seed: int):
        self.at, self.bn_modes, self.n_v, self.m, self.k, self.seed = set(at), bn_modes, n_v, m, k, seed
        self.tol, self.max_hvps = tol, max_hvps

    def due(self, step: int) -> bool:
        return step in self.at

    def measure(self, ctx) -> dict[str, list[dict]]:
        rows = []
        for mode in self.bn_modes:
            seed = step_seed(self.seed, ctx.step)
            density = spectral_density(ctx.model, ctx.loss_fn, ctx.batch, n_v=self.n_v, m=self.m, bn_mode=mode,
                                       seed=seed)
            top = gradient_share(ctx.model, ctx.loss_fn, ctx.batch, k=self.k, bn_mode=mode, seed=seed, tol=self.tol,
                                 max_steps=self.max_hvps)
            rows += spectrum_records(ctx.step, probe_name(mode), density, top, self.k)
        return {"probes": rows}


def spectrum_records(step: int, probe: str, density: dict, top: dict, k: int) -> list[dict]:
    """The probe's rows at one step in one BN mode (`probe`): per start vector (layer, from 1) theta and tau of each
    Ritz value, node by node; then (layer 0) the top k, the gradient's share, whether they converged, the products."""
    def record(layer, metric, value):
        return probe_row(step, probe, layer, metric, value)

    rows = [record(vector, ritz_metric(kind, node), value)
            for vector, (ritz, weights) in enumerate(zip(density["ritz"], density["weights"]), start=1)
            for node, pair in enumerate(zip(ritz, weights)) for kind, value in zip((THETA, TAU), pair)]
    rows += [record(0, top_metric(i), value) for i, value in enumerate(top["eigenvalues"], start=1)]
    rows += [record(0, share_metric(k), top["share"]), record(0, CONVERGED, float(top["converged"])),
             record(0, HVPS, density["hvps"] + top["hvps"])]
    return rows


def from_config(config, model: nn.Module) -> list[Probe]:
    """The run's spectrum probe (bnstudy.train.PROBES), at the steps `spectrum.at` lists."""
    sp = config.spectrum
    return [SpectrumProbe(sp.at, sp.bn_modes, sp.n_v, sp.m, sp.k, sp.tol, sp.max_hvps, config.seed)] if sp.at else []
