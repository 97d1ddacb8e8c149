"""Counting products, timing, and the reference: a plain double backward on a float64 copy."""
from __future__ import annotations

import copy
import math
import statistics
import time
from contextlib import contextmanager
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn

from bnstudy.crosscheck.models import K, REF_SAMPLES, REF_TOL, REPEATS, SEED, set_bn_mode, trainable

# ----------------------------------------------------------------------------------------------
# Counting and timing
# ----------------------------------------------------------------------------------------------
class Counter:
    def __init__(self):
        self.n = 0

    def reset(self) -> None:
        self.n = 0


@contextmanager
def counting(owner, attribute: str, per_call=lambda args: 1):
    """Count a peer's Hessian products: `owner.attribute` replaced (mock.patch.object) by a wrapper that adds
    per_call(args) and calls the original."""
    original = getattr(owner, attribute)
    counter = Counter()

    def wrapper(*args, **kwargs):
        counter.n += per_call(args)
        return original(*args, **kwargs)

    with mock.patch.object(owner, attribute, wrapper):
        yield counter


def timed(run, repeats: int = REPEATS, prepare=None):
    """(the last run's result, the median wall time of `repeats` runs). prepare() (untimed, before each run) makes
    the run's input (a fresh deep copy) or resets a counter; run() takes what it returns where it is given."""
    times, result = [], None
    for _ in range(repeats):
        state = prepare() if prepare is not None else None
        start = time.perf_counter()
        result = run(state) if prepare is not None else run()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b != 0 else float("nan")


# ----------------------------------------------------------------------------------------------
# The reference: a plain double backward on a float64 copy
# ----------------------------------------------------------------------------------------------
class Reference:
    """v -> H v in float64 by a plain double backward on a float64 copy of the (eager-attention) model, BN in `mode`,
    over the trainable parameters; exact eigenvalues (eigsh at REF_TOL) and a large-sample Hutchinson."""

    def __init__(self, peers_model: nn.Module, batch, mode: str):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        self.model = set_bn_mode(copy.deepcopy(peers_model), mode).double()
        inputs, targets = batch
        inputs = inputs.double() if inputs.is_floating_point() else inputs
        self.params = trainable(self.model)
        self.size = sum(p.numel() for p in self.params)
        with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
            loss = F.cross_entropy(self.model(inputs), targets)
            self.grads = torch.autograd.grad(loss, self.params, create_graph=True)
        self.calls = 0
        self._eigen = self._trace = None

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        chunks = v.double().split([p.numel() for p in self.params])
        products = torch.autograd.grad(self.grads, self.params, [c.view_as(p) for c, p in zip(chunks, self.params)],
                                       retain_graph=True)
        return torch.cat([p.reshape(-1) for p in products])

    def eigen(self) -> dict:
        if self._eigen is None:
            import numpy as np
            from scipy.sparse.linalg import LinearOperator, eigsh

            calls, start = self.calls, time.perf_counter()
            operator = LinearOperator((self.size, self.size), dtype=np.float64,
                                      matvec=lambda x: self.matvec(torch.from_numpy(np.asarray(x).ravel())).numpy())
            v0 = np.random.default_rng(SEED).standard_normal(self.size)
            values = eigsh(operator, k=K, which="LA", tol=REF_TOL, v0=v0, return_eigenvectors=False)
            self._eigen = {"eigenvalues": sorted(values.tolist(), reverse=True), "hvps": self.calls - calls,
                           "time": time.perf_counter() - start}
        return self._eigen

    def quadratics(self, vectors) -> tuple[list[float], list[float]]:
        """v^T H v and ||H v||^2 for each vector (float64): exact, where the vectors are ours."""
        first, second = [], []
        for v in vectors:
            hv = self.matvec(v)
            first.append(float(v.double() @ hv))
            second.append(float(hv @ hv))
        return first, second

    def traces(self) -> dict:
        """tr H and tr H^2 by Hutchinson over REF_SAMPLES Rademacher vectors of its own: the means of v^T H v and
        ||H v||^2, their standard errors, and the standard deviation of one sample of v^T H v."""
        if self._trace is None:
            calls, start = self.calls, time.perf_counter()
            first, second = self.quadratics(rademacher_stream(SEED + 7, self.size, REF_SAMPLES))
            se = lambda xs: statistics.stdev(xs) / math.sqrt(len(xs))  # noqa: E731
            self._trace = {"trace": statistics.fmean(first), "trace_se": se(first), "sd": statistics.stdev(first),
                           "trace2": statistics.fmean(second), "trace2_se": se(second),
                           "hvps": self.calls - calls, "time": time.perf_counter() - start}
        return self._trace


def rademacher_stream(seed: int, size: int, count: int) -> list[torch.Tensor]:
    """`count` Rademacher vectors drawn one after the other from torch.Generator().manual_seed(seed): the vectors
    our hessian_trace and spectral_density draw for that seed (a CPU generator's stream does not depend on how the
    draws are chunked). Checked against their results before any row relies on it."""
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 2, (size,), generator=generator) * 2 - 1).float() for _ in range(count)]


def z_score(a: float, se_a: float, b: float, se_b: float) -> float:
    """|a - b| in units of their combined standard error."""
    return abs(a - b) / math.sqrt(se_a ** 2 + se_b ** 2) if se_a > 0 or se_b > 0 else float("nan")
