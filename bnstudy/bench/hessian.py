"""The Hessian probes (lambda_max, spectral density, gradient share, one product) against ARPACK and a forward+backward
pass."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bnstudy.probes.curvature import HessianOperator, top_eigenvalues
from bnstudy.probes.functional import untouched
from bnstudy.probes.spectrum import gradient_share, spectral_density

from bnstudy.bench.common import (Row, _measured_on, _target, bench_setup, forward_backward_seconds, seconds, timed,
                                  trained)


CURVATURE = {"steps": 30, "lr": 0.1, "tol": 1e-3}  # the one matrix the Hessian probes' rows are timed on
CURVATURE_BEFORE = 51  # the curvature row as ARPACK first measured it (issue #21's baseline, another run)


def arpack_lambda_max(model, x, y, tol: float) -> dict:
    """The curvature probe before #21, kept here alone as the baseline its row is timed against in the same run:
    ARPACK (scipy's eigsh) on the same Hessian operator, every product through a float64 NumPy round trip."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    with untouched(model, "train"):
        operator = HessianOperator(model, F.cross_entropy, (x, y), "train")
        leaf = operator.leaves[0]

        def matvec(v: np.ndarray) -> np.ndarray:
            flat = torch.as_tensor(np.ascontiguousarray(v).ravel(), device=leaf.device, dtype=leaf.dtype)
            return operator.matvec(flat).double().cpu().numpy()

        start = np.random.default_rng(0).standard_normal(operator.size)
        value = eigsh(LinearOperator((operator.size, operator.size), matvec=matvec, dtype=np.float64), k=1,
                      which="LA", tol=tol, v0=start, return_eigenvectors=False)[0]
    return {"eigenvalue": float(value), "hvps": operator.calls}


def hessian_rows(device: torch.device, data_dir: Path | None, width: float, batch: int, min_run_time: float
                 ) -> list[Row]:
    """The Hessian probes' costs, on one matrix whatever the machine: the bench's VGG with BN after
    CURVATURE["steps"] SGD steps (the timing loops of `policy_rows` train their model for as many steps as fit in
    the time, and a probe's product count depends on the matrix). lambda_max against forward+backward and against
    ARPACK on the same matrix; one product against a plain double backward; the spectrum probes."""
    dataset, model, _ = bench_setup(device, data_dir, width)
    x, y = trained(model, dataset, batch, CURVATURE["steps"], CURVATURE["lr"])
    t_fwd_bwd = forward_backward_seconds(model, x, y, min_run_time)

    def ours():
        return top_eigenvalues(model, F.cross_entropy, (x, y), tol=CURVATURE["tol"])

    t_ours, found = timed(ours, min_run_time)
    t_arpack, before = timed(lambda: arpack_lambda_max(model, x, y, CURVATURE["tol"]), min_run_time)
    rows = [Row("curvature probe (lambda_max, tol 1e-3) / 1 forward+backward", t_ours / t_fwd_bwd, "ratio",
                *_target(t_ours / t_fwd_bwd, "<=", CURVATURE_BEFORE / 2),
                f"{found['hvps']} Hessian-vector products, probe {t_ours:.2f} s (ARPACK here: "
                f"{t_arpack / t_fwd_bwd:.1f}; when the target was set: {CURVATURE_BEFORE:g})"),
            Row("curvature probe, ours / ARPACK (scipy eigsh, the probe before the torch Lanczos), same matrix",
                t_ours / t_arpack, "ratio", *_target(t_ours / t_arpack, "<=", 0.5),
                f"ours {found['hvps']} products, lambda_max {found['eigenvalues'][0]:.6g}; ARPACK {before['hvps']} "
                f"products, {t_arpack:.2f} s, lambda_max {before['eigenvalue']:.6g}")]
    rows += hvp_rows(model, x, y, min_run_time)
    rows += spectrum_rows(model, x, y, t_fwd_bwd, min_run_time)
    return _measured_on(rows, dataset.name)


def spectrum_rows(model, x, y, t_fwd_bwd: float, min_run_time: float) -> list[Row]:
    """One probe of the spectrum experiment's quick preset, per BN mode: the density (3 vectors x 20 Lanczos steps)
    and the top-10 gradient share, each in forward+backward units."""
    t_density, density = timed(lambda: spectral_density(model, F.cross_entropy, (x, y), n_v=3, m=20), min_run_time)
    t_share, share = timed(lambda: gradient_share(model, F.cross_entropy, (x, y), k=10, max_steps=100), min_run_time)
    return [Row("spectral density (3 x 20 Lanczos steps) / 1 forward+backward", t_density / t_fwd_bwd, "ratio", "", "",
                f"{density['hvps']} Hessian-vector products, {t_density:.2f} s"),
            Row("gradient share in the top 10 (tol 1e-3, <= 100 products) / 1 forward+backward", t_share / t_fwd_bwd,
                "ratio", "", "", f"{share['hvps']} products (converged: {share['converged']}), {t_share:.2f} s")]


def hvp_rows(model, x, y, min_run_time: float) -> list[Row]:
    """One Hessian-vector product of ours (HessianOperator.matvec: flat vector in, flat vector out) against the
    plainest one: a double backward through the same retained graph, per-parameter tensors in and out."""
    operator = HessianOperator(model, F.cross_entropy, (x, y), "train")
    v = torch.randn(operator.size, device=x.device)
    pieces = operator._split(v)
    t_ours = seconds(lambda: operator.matvec(v), min_run_time)
    t_plain = seconds(lambda: torch.autograd.grad(operator.grads, operator.leaves, grad_outputs=pieces,
                                                  retain_graph=True), min_run_time)
    return [Row("Hessian-vector product, ours / a plain double backward", t_ours / t_plain, "ratio",
                *_target(t_ours / t_plain, "<=", 1.05), f"ours {t_ours * 1e3:.0f} ms, plain {t_plain * 1e3:.0f} ms")]
