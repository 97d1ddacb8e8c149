"""Curvature beyond the paper: the top Hessian eigenvalues of the loss on a batch, and its trace.

Hessian-vector products by double backward through `torch.func.functional_call` (one forward and
one backward build the gradient graph; each product is one more backward through it), handed to
ARPACK's Lanczos (`scipy.sparse.linalg.eigsh`) as a LinearOperator. Side-effect free like every
probe: weights, gradients, BN buffers, mode and RNG are as before; noise layers see one draw.

    top_eigenvalues(model, loss_fn, (x, y), k=1)  ->  {"eigenvalues": [...], "hvps": n, "converged": bool}

`max_hvps` caps the Hessian-vector products themselves (ARPACK's own `maxiter` counts restarts, each of
several products): the operator refuses the product past the cap, and the probe returns unconverged.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch import nn

from bnstudy.probes.callback import Probe, step_seed
from bnstudy.probes.functional import Evaluator, untouched


class _OutOfProducts(Exception):
    """The operator was asked for a Hessian-vector product past its cap."""


class HessianOperator:
    """v -> H v for the loss at the model's current weights on one batch (parameters flattened in order).

    limit: the most products it computes (None: no cap); asked for one more, it raises _OutOfProducts."""

    def __init__(self, model: nn.Module, loss_fn, batch, bn_mode: str, limit: int | None = None):
        self.evaluator = Evaluator(model, loss_fn, batch, bn_mode)
        self.leaves = [p.detach().requires_grad_(True) for p in self.evaluator.params.values()]
        params = dict(zip(self.evaluator.params, self.leaves))
        with torch.enable_grad():
            loss = self.evaluator.loss(params)
            self.grads = torch.autograd.grad(loss, self.leaves, create_graph=True)
        self.size = sum(p.numel() for p in self.leaves)
        self.calls, self.limit = 0, limit

    def _split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [chunk.view_as(p) for chunk, p in zip(flat.split([p.numel() for p in self.leaves]), self.leaves)]

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        if self.limit is not None and self.calls >= self.limit:
            raise _OutOfProducts()
        self.calls += 1
        with torch.enable_grad():
            products = torch.autograd.grad(self.grads, self.leaves, grad_outputs=self._split(v), retain_graph=True)
        return torch.cat([p.reshape(-1) for p in products])

    def as_scipy(self) -> LinearOperator:
        device, dtype = self.leaves[0].device, self.leaves[0].dtype

        def matvec(x: np.ndarray) -> np.ndarray:
            v = torch.as_tensor(np.ascontiguousarray(x).ravel(), device=device, dtype=dtype)
            return self.matvec(v).double().cpu().numpy()

        return LinearOperator((self.size, self.size), matvec=matvec, dtype=np.float64)


def top_eigenvalues(model: nn.Module, loss_fn, batch, k: int = 1, *, bn_mode: str = "train", tol: float = 1e-4,
                    max_hvps: int = 200, seed: int = 0) -> dict:
    """The k algebraically largest Hessian eigenvalues (descending) and the HVPs Lanczos used.

    tol: ARPACK's relative accuracy for the eigenvalues. max_hvps: the most Hessian-vector products
    spent; where Lanczos has not converged by then, `converged` is False and `eigenvalues` holds those
    that had (ARPACK hands back none when stopped mid-iteration, so usually []). The start vector is a
    function of `seed`, drawn from numpy, never from torch's global generator.
    """
    with untouched(model, bn_mode):
        operator = HessianOperator(model, loss_fn, batch, bn_mode, limit=max_hvps)
        start = np.random.default_rng(seed).standard_normal(operator.size)
        try:
            # each restart takes at least one product, so ARPACK's restart limit never binds before the cap
            values = eigsh(operator.as_scipy(), k=k, which="LA", tol=tol, maxiter=max_hvps, v0=start,
                           return_eigenvectors=False)
            converged = True
        except ArpackNoConvergence as partial:
            values, converged = partial.eigenvalues, False
        except _OutOfProducts:
            values, converged = [], False
    return {"eigenvalues": sorted(map(float, values), reverse=True), "hvps": operator.calls, "converged": converged}


def hessian_trace(model: nn.Module, loss_fn, batch, samples: int = 20, *, bn_mode: str = "train",
                  seed: int = 0) -> float:
    """Hutchinson's estimate E[v^T H v], v Rademacher: unbiased, `samples` HVPs."""
    with untouched(model, bn_mode):
        operator = HessianOperator(model, loss_fn, batch, bn_mode)
        generator = torch.Generator().manual_seed(seed)
        total = 0.0
        for _ in range(samples):
            v = (torch.randint(0, 2, (operator.size,), generator=generator) * 2 - 1).to(
                operator.leaves[0].device, operator.leaves[0].dtype)
            total += float(v @ operator.matvec(v))
    return total / samples


class CurvatureProbe(Probe):
    """Training callback: every `every` steps, lambda_max (and the HVPs it took) on the step's batch.

    eig1..eigk rows always; an eigenvalue Lanczos did not reach within max_hvps products is NaN (left out of
    figures and claims, and said, like every non-finite value)."""

    def __init__(self, every: int, k: int, bn_mode: str, tol: float, max_hvps: int, seed: int):
        self.every, self.k, self.bn_mode, self.tol, self.max_hvps, self.seed = every, k, bn_mode, tol, max_hvps, seed

    def measure(self, ctx) -> dict[str, list[dict]]:
        result = top_eigenvalues(ctx.model, ctx.loss_fn, ctx.batch, self.k, bn_mode=self.bn_mode, tol=self.tol,
                                 max_hvps=self.max_hvps, seed=step_seed(self.seed, ctx.step))
        values = result["eigenvalues"] + [float("nan")] * (self.k - len(result["eigenvalues"]))
        # eta is the landscape probe's step size alone: empty here (the run's LR is in meta.json)
        rows = [{"step": ctx.step, "probe": "curvature", "layer": 0, "eta": None, "metric": f"eig{i + 1}",
                 "value": value} for i, value in enumerate(values)]
        rows.append({"step": ctx.step, "probe": "curvature", "layer": 0, "eta": None, "metric": "hvps",
                     "value": result["hvps"]})
        return {"probes": rows}
