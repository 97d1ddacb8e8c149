"""Top Hessian eigenvalues against the full Hessian of a small network with BN, and invariants."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from bnstudy.probes.curvature import hessian_trace, top_eigenvalues


def small_bn_net(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 8), nn.BatchNorm1d(8),
                          nn.Tanh(), nn.Linear(8, 3)).double()
    x = torch.randn(32, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (32,))
    return model, x, y


def full_hessian(model, x, y):
    """The exact Hessian of the train-mode loss w.r.t. all parameters, flattened, from torch.autograd.functional."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    buffers = {n: b.clone() for n, b in model.named_buffers()}

    def loss(w):
        params, offset = {}, 0
        for name, shape in zip(names, shapes):
            params[name] = w[offset:offset + shape.numel()].view(shape)
            offset += shape.numel()
        return F.cross_entropy(functional_call(model, (params, {k: v.clone() for k, v in buffers.items()}), (x,)), y)

    return torch.autograd.functional.hessian(loss, flat)


def test_top_eigenvalues_match_the_full_hessian():
    model, x, y = small_bn_net()
    assert 200 < sum(p.numel() for p in model.parameters()) < 400
    exact = torch.linalg.eigvalsh(full_hessian(model, x, y)).flip(0)
    result = top_eigenvalues(model, F.cross_entropy, (x, y), k=3, tol=1e-10)
    assert result["converged"] and result["hvps"] > 0
    for found, true in zip(result["eigenvalues"], exact[:3].tolist()):
        assert found == pytest.approx(true, rel=1e-8)


def test_trace_is_unbiased_on_the_small_network():
    model, x, y = small_bn_net(1)
    hessian = full_hessian(model, x, y)
    exact = torch.trace(hessian).item()
    samples = 400
    # Rademacher Hutchinson: variance 2 * sum of squared off-diagonal entries, per sample
    std_error = (2 * (hessian.square().sum() - hessian.diag().square().sum()).item() / samples) ** 0.5
    estimate = hessian_trace(model, F.cross_entropy, (x, y), samples=samples)
    assert abs(estimate["trace"] - exact) < 4 * std_error
    assert estimate["stderr"] == pytest.approx(std_error, rel=0.25)  # the samples' own error, near the analytic one


def test_probe_leaves_no_trace():
    model, x, y = small_bn_net(2)
    F.cross_entropy(model(x), y).backward()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    first = top_eigenvalues(model, F.cross_entropy, (x, y))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
    assert torch.equal(rng, torch.get_rng_state())
    assert top_eigenvalues(model, F.cross_entropy, (x, y)) == first


def test_max_hvps_caps_the_hessian_vector_products():
    model, x, y = small_bn_net(3)
    capped = top_eigenvalues(model, F.cross_entropy, (x, y), k=3, tol=1e-12, max_hvps=7)
    assert capped["hvps"] == 7 and not capped["converged"] and len(capped["eigenvalues"]) == 3  # Ritz values, flagged
    ample = top_eigenvalues(model, F.cross_entropy, (x, y), k=3, tol=1e-10, max_hvps=10_000)
    assert ample["converged"] and 7 < ample["hvps"] <= 10_000


def test_the_curvature_probe_writes_nan_where_lanczos_ran_out_of_products():
    from bnstudy.probes.callback import StepContext
    from bnstudy.probes.curvature import CurvatureProbe

    model, x, y = small_bn_net(4)
    rows = CurvatureProbe(1, 2, "train", 1e-12, 5, seed=0).before_step(
        StepContext(0, model, (x, y), F.cross_entropy, 0.1, None))["probes"]
    values = {r["metric"]: r["value"] for r in rows}
    assert set(values) == {"eig1", "eig2", "hvps"} and values["hvps"] == 5
    assert all(v != v for k, v in values.items() if k != "hvps")  # NaN: left out of figures and said, never made up


def test_curvature_probe_start_vectors_are_distinct_per_seed_and_step(monkeypatch):
    """seed + step gave seed 0 at step 1 the start vector of seed 1 at step 0."""
    from bnstudy.probes import curvature
    from bnstudy.probes.callback import StepContext

    seeds = []
    monkeypatch.setattr(curvature, "top_eigenvalues",
                        lambda *args, seed, **kw: seeds.append(seed) or {"eigenvalues": [1.0], "hvps": 1,
                                                                         "converged": True})
    for run_seed in range(3):
        probe = curvature.CurvatureProbe(1, 1, "train", 1e-3, 100, seed=run_seed)
        for step in range(3):
            probe.before_step(StepContext(step, None, None, None, 0.1, None))
    assert len(seeds) == 9 == len(set(seeds))


def test_a_loose_tolerance_stops_early_within_it_and_a_tight_one_reaches_the_exact_value():
    model, x, y = small_bn_net(5)
    exact = torch.linalg.eigvalsh(full_hessian(model, x, y))[-1].item()
    loose = top_eigenvalues(model, F.cross_entropy, (x, y), tol=1e-3)
    tight = top_eigenvalues(model, F.cross_entropy, (x, y), tol=1e-12, max_hvps=1_000)
    assert loose["hvps"] < tight["hvps"]
    assert loose["eigenvalues"][0] == pytest.approx(exact, rel=1e-3)  # the residual bound bounds the error
    assert tight["eigenvalues"][0] == pytest.approx(exact, rel=1e-10)


@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_products_stay_in_the_parameters_dtype_and_device(bn_mode):
    from bnstudy.probes.curvature import HessianOperator

    model, x, y = small_bn_net(6)
    model.float()
    operator = HessianOperator(model, F.cross_entropy, (x.float(), y), bn_mode)
    v = torch.randn(operator.size)
    product = operator.matvec(v)
    assert product.dtype == torch.float32 and product.device == v.device and product.shape == v.shape
