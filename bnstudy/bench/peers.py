"""lambda_max against PyHessian's power iteration (the `bench` extra), on the matrix PyHessian can take."""
from __future__ import annotations

import copy
import importlib
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

from bnstudy.probes.curvature import top_eigenvalues

from bnstudy.bench.common import _measured_on, _target, bench_setup, Row, timed, trained


PEER = {"width": 0.125, "steps": 30, "batch": 64, "tol": 1e-3}  # the configuration of the PyHessian comparison


def peer_rows(device: torch.device, data_dir: Path | None, min_run_time: float) -> list[Row]:
    """lambda_max, ours against PyHessian's power iteration, on the matrix PyHessian can take: VGG-16 at width 1/8
    with BN after 30 SGD steps, one batch of 64, BN in eval mode; the same tolerance. Absent (one row saying why)
    where PyHessian is not installed (`pip install -c constraints.txt -e '.[bench]'`: make bench does)."""
    try:
        from pyhessian import hessian as PyHessian
        pyhessian_module = importlib.import_module("pyhessian.hessian")  # the package's `hessian` is the class
    except ImportError:
        return [Row("lambda_max time, ours / PyHessian", float("nan"), "ratio", "<= 1", "",
                    "PyHessian not installed: pip install -c constraints.txt -e '.[bench]'")]
    dataset, model, _ = bench_setup(device, data_dir, PEER["width"])
    x, y = trained(model, dataset, PEER["batch"], PEER["steps"], lr=0.1)
    theirs_model = copy.deepcopy(model)  # PyHessian leaves the model in eval mode with a graph in .grad

    def theirs(tol: float) -> tuple[float, int]:
        """PyHessian's lambda_max at `tol`, and the products it took (counted on its own HVP function)."""
        torch.manual_seed(0)
        found = PyHessian(theirs_model, F.cross_entropy, data=(x, y), cuda=device.type == "cuda")
        with mock.patch.object(pyhessian_module, "hessian_vector_product",
                               wraps=pyhessian_module.hessian_vector_product) as product:
            value = found.eigenvalues(tol=tol, top_n=1)[0][0]
        theirs_model.zero_grad(set_to_none=True)
        return value, product.call_count

    def ours():
        return top_eigenvalues(model, F.cross_entropy, (x, y), bn_mode="eval", tol=PEER["tol"])

    # PyHessian's tol is a change between power iterations, not an error: at a tenth of it, it is as accurate as
    # ours at tol (the second pair of rows: the "equal accuracy")
    tighter = PEER["tol"] / 10
    t_ours, result = timed(ours, min_run_time)
    timings = {tol: timed(lambda: theirs(tol), min_run_time) for tol in (PEER["tol"], tighter)}
    t_theirs, found = {tol: t for tol, (t, _) in timings.items()}, {tol: run for tol, (_, run) in timings.items()}
    mine, value = result["eigenvalues"][0], {tol: found[tol][0] for tol in found}
    # the truth all are judged against: Lanczos to a 1e-9 residual bound on the same matrix
    exact = top_eigenvalues(model, F.cross_entropy, (x, y), bn_mode="eval", tol=1e-9, max_hvps=300)["eigenvalues"][0]
    rows = []
    for tol, what in ((PEER["tol"], "equal tolerance"), (tighter, "equal accuracy")):
        time_ratio, agreement = t_ours / t_theirs[tol], abs(mine - value[tol]) / abs(value[tol])
        rows += [Row(f"lambda_max time, ours (tol {PEER['tol']:g}) / PyHessian power iteration (tol {tol:g}), "
                     f"{what}", time_ratio, "ratio", *_target(time_ratio, "<=", 1.0),
                     f"ours {t_ours:.2f} s, {result['hvps']} products; PyHessian {t_theirs[tol]:.2f} s, "
                     f"{found[tol][1]} products; lambda_max {mine:.6g} vs {value[tol]:.6g}"),
                 Row(f"lambda_max, |ours - PyHessian| / PyHessian, {what}", agreement, "fraction",
                     *_target(agreement, "<=", 1e-3), f"against lambda_max to 1e-9 ({exact:.6g}): ours off by "
                                                      f"{abs(mine - exact) / abs(exact):.1e}, PyHessian by "
                                                      f"{abs(value[tol] - exact) / abs(exact):.1e}")]
    return _measured_on(rows, dataset.name)
