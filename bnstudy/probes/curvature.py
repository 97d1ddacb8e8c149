"""Curvature beyond the paper: the top Hessian eigenvalues of the loss on a batch, and its trace.

Hessian-vector products by double backward through `torch.func.functional_call` (one forward and
one backward build the gradient graph; each product is one more backward through it), handed to the
project's one Lanczos (bnstudy.probes.lanczos: torch, on the parameters' device, full
reorthogonalization, stopping on the Ritz residual bound). Side-effect free like every probe:
weights, gradients, BN buffers, mode and RNG are as before; noise layers see one draw.

    top_eigenvalues(model, loss_fn, (x, y), k=1)  ->  {"eigenvalues": [...], "hvps": n, "converged": bool}
    hessian_trace(model, loss_fn, (x, y))          ->  {"trace": t, "stderr": s, "samples": [...], "hvps": n}

The Hessian is over the trainable parameters (requires_grad) alone. Its graph is built under the math kernel of
scaled dot-product attention: the fused CPU and flash kernels have no double backward, so a transformer's products
would fail there.

It replaced ARPACK (scipy's eigsh), which builds a Krylov basis of at least 20 vectors before it can
stop (21 products per probe at any tolerance, where Lanczos stops after about 7 on a well-separated
top) and sends every product to the host as float64 NumPy: docs/benchmarks.md has the numbers.
"""
from __future__ import annotations

import math
import statistics

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from bnstudy.analysis.common import probe_row
from bnstudy.analysis.curvature import HVPS, PROBE, eig_metric  # the row schema, which analysis reads back
from bnstudy.probes.callback import Probe, step_seed
from bnstudy.probes.functional import Evaluator, untouched
from bnstudy.probes.lanczos import lanczos


class HessianOperator:
    """v -> H v for the loss at the model's current weights on one batch (parameters flattened in order), on the
    parameters' device and in their dtype: no host transfer."""

    def __init__(self, model: nn.Module, loss_fn, batch, bn_mode: str | None):
        self.evaluator = Evaluator(model, loss_fn, batch, bn_mode)
        self.leaves = [p.detach().requires_grad_(True) for p in self.evaluator.params.values()]
        params = dict(zip(self.evaluator.params, self.leaves))
        with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):  # the one attention kernel with a double backward
            loss = self.evaluator.loss(params)
            self.grads = torch.autograd.grad(loss, self.leaves, create_graph=True)
        self.size = sum(p.numel() for p in self.leaves)
        self.calls = 0
        self.batched = True  # until a product batched by vmap fails on this model (an op without a batching rule)

    def _split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [chunk.view_as(p) for chunk, p in zip(flat.split([p.numel() for p in self.leaves]), self.leaves)]

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        with torch.enable_grad():
            products = torch.autograd.grad(self.grads, self.leaves, grad_outputs=self._split(v), retain_graph=True)
        return torch.cat([p.reshape(-1) for p in products])

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        """(b, n) -> (b, n): H v for each row, in one vmapped backward where the model's ops allow (one product per
        row all the same), else row by row."""
        if self.batched:
            try:
                with torch.enable_grad():
                    products = torch.autograd.grad(self.grads, self.leaves, retain_graph=True, is_grads_batched=True,
                                                   grad_outputs=[c.view(len(vectors), *p.shape) for c, p in zip(
                                                       vectors.split([p.numel() for p in self.leaves], dim=1),
                                                       self.leaves)])
                self.calls += len(vectors)
                return torch.cat([p.reshape(len(vectors), -1) for p in products], dim=1)
            except RuntimeError:  # no batching rule for an op of this model: fall back, and remember
                self.batched = False
        return torch.stack([self.matvec(v) for v in vectors])


def rademacher(shape: int | tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """+-1 entries, drawn on the CPU from `generator` (never the global one) and moved to `like`'s device and dtype."""
    return (torch.randint(0, 2, shape if isinstance(shape, tuple) else (shape,), generator=generator) * 2 - 1).to(
        like.device, like.dtype)


def top_eigenvalues(model: nn.Module, loss_fn, batch, k: int = 1, *, bn_mode: str | None = "train", tol: float = 1e-4,
                    max_hvps: int = 200, seed: int = 0) -> dict:
    """The k algebraically largest Hessian eigenvalues (descending) and the HVPs Lanczos used.

    tol: the relative accuracy asked of each of the k, by its Ritz error bound (bnstudy.probes.lanczos). max_hvps:
    the most Hessian-vector products spent; where Lanczos has not converged by then, `converged` is False and
    `eigenvalues` are the Ritz values it has (lower bounds of the top eigenvalues, short of the tolerance). The start
    vector is a function of `seed`, drawn from its own generator, never from torch's global one.
    """
    with untouched(model, bn_mode):
        operator = HessianOperator(model, loss_fn, batch, bn_mode)
        generator = torch.Generator().manual_seed(seed)
        start = torch.randn(operator.size, generator=generator, dtype=torch.float64).to(operator.leaves[0])
        result = lanczos(operator.matvec, start, max_hvps, k=k, tol=tol)
        values = result.ritz()[0][-k:].flip(0).tolist()
    return {"eigenvalues": values, "hvps": operator.calls, "converged": result.converged}


def hessian_trace(model: nn.Module, loss_fn, batch, samples: int = 32, *, bn_mode: str | None = "train",
                  seed: int = 0, chunk: int = 8) -> dict:
    """Hutchinson's estimate of tr H = E[v^T H v], v Rademacher: unbiased, one product per sample, `chunk` samples per
    batched product. Returns {"trace": the mean, "stderr": its standard error (the samples' standard deviation over
    sqrt(samples)), "samples": each v^T H v, "hvps"}: the error of a few dozen samples can exceed the trace itself on
    a network whose Hessian has large off-diagonal entries, so read the trace with its error."""
    if samples < 2:
        raise ValueError(f"hessian_trace needs samples >= 2 for a standard error, got {samples}")
    with untouched(model, bn_mode):
        operator = HessianOperator(model, loss_fn, batch, bn_mode)
        generator = torch.Generator().manual_seed(seed)
        values = []
        for start in range(0, samples, chunk):
            vectors = rademacher((min(chunk, samples - start), operator.size), generator, operator.leaves[0])
            values += (vectors * operator.matmat(vectors)).sum(dim=1).tolist()
    return {"trace": statistics.fmean(values), "stderr": statistics.stdev(values) / math.sqrt(samples),
            "samples": values, "hvps": operator.calls}


class CurvatureProbe(Probe):
    """Training callback: every `every` steps, lambda_max (and the HVPs it took) on the step's batch.

    eig1..eigk rows always; an eigenvalue Lanczos did not reach within max_hvps products is NaN (left out of
    figures and claims, and said, like every non-finite value)."""

    def __init__(self, every: int, k: int, bn_mode: str, tol: float, max_hvps: int, seed: int):
        self.every, self.k, self.bn_mode, self.tol, self.max_hvps, self.seed = every, k, bn_mode, tol, max_hvps, seed

    def measure(self, ctx) -> dict[str, list[dict]]:
        result = top_eigenvalues(ctx.model, ctx.loss_fn, ctx.batch, self.k, bn_mode=self.bn_mode, tol=self.tol,
                                 max_hvps=self.max_hvps, seed=step_seed(self.seed, ctx.step))
        values = result["eigenvalues"] if result["converged"] else []  # a Ritz value short of its tolerance: NaN
        return {"probes": curvature_records(ctx.step, values + [float("nan")] * (self.k - len(values)),
                                            result["hvps"])}


def curvature_records(step: int, eigenvalues: list[float], hvps: int) -> list[dict]:
    """Tidy probes.csv rows: the top eigenvalues, largest first, then the products spent."""
    rows = [probe_row(step, PROBE, 0, eig_metric(i), value) for i, value in enumerate(eigenvalues, start=1)]
    return rows + [probe_row(step, PROBE, 0, HVPS, hvps)]


def from_config(config, model: nn.Module) -> list[Probe]:
    """The run's curvature probe (bnstudy.train.PROBES), where `curvature.every` turns it on."""
    c = config.curvature
    return [CurvatureProbe(c.every, c.k, c.bn_mode, c.tol, c.max_hvps, config.seed)] if c.every else []
