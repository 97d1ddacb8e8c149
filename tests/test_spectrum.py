"""Lanczos, stochastic Lanczos quadrature and the gradient's top-subspace share, against exact eigendecompositions."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from bnstudy.probes.lanczos import lanczos
from bnstudy.probes.spectrum import gradient_share, rademacher, spectral_density


def symmetric(eigenvalues, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=generator, dtype=torch.float64))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T


def test_full_lanczos_recovers_every_eigenvalue_of_a_matrix():
    values = torch.linspace(-3, 7, 40, dtype=torch.float64).tolist()
    a = symmetric(values)
    result = lanczos(lambda v: a @ v, torch.ones(40, dtype=torch.float64), 40)
    assert torch.allclose(result.ritz()[0], torch.tensor(values, dtype=torch.float64), atol=1e-10)
    basis = result.basis
    assert torch.allclose(basis @ basis.T, torch.eye(len(basis), dtype=torch.float64), atol=1e-12)  # orthonormal


def test_a_clustered_top_is_not_stopped_early_on_a_wrong_value():
    """Three top eigenvalues within 2e-3 of each other over a wide bulk: the residual bound keeps Lanczos going
    until each is right, where a stall of the estimates between iterations would have stopped it."""
    top = [10.0, 9.99, 9.98]
    a = symmetric(top + torch.linspace(0, 5, 197, dtype=torch.float64).tolist(), seed=1)
    result = lanczos(lambda v: a @ v, torch.randn(200, generator=torch.Generator().manual_seed(2), dtype=torch.float64),
                     200, k=3, tol=1e-9)
    assert result.converged and len(result.alpha) < 200
    assert result.ritz()[0][-3:].flip(0).tolist() == pytest.approx(top, rel=1e-8)


def test_a_near_twin_top_that_lanczos_has_not_yet_split_stays_within_the_tolerance():
    """lambda_1 = 10, lambda_2 = 9.9 over a bulk in [0, 5], tol 1e-3, ten starts: the residual bound keeps each run
    going until lambda_1 is within 1e-3. The gap-refined estimate r^2 / (Ritz gap) stops after ~5 products, while
    the Ritz gap still spans the bulk, on values up to 1e-2 off: the reason the rule is the residual bound."""
    a = symmetric([10.0, 9.9] + torch.linspace(0, 5, 598, dtype=torch.float64).tolist(), seed=3)
    for seed in range(10):
        start = torch.randn(600, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
        result = lanczos(lambda v: a @ v, start, 150, k=1, tol=1e-3)
        assert result.converged
        assert abs(result.ritz()[0][-1].item() - 10.0) <= 1e-3 * 10.0


class SmallBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))

    def forward(self, x):
        return self.net(x)


def small_bn(seed=0):
    torch.manual_seed(seed)
    model = SmallBN().double()
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,))
    return model, (x, y)


def exact_hessian(model, batch, bn_mode="train") -> tuple[torch.Tensor, torch.Tensor]:
    """The full Hessian and gradient of the loss over every parameter, flattened in model order (float64)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    model.train(bn_mode == "train")

    def loss(w):
        params, start = {}, 0
        for name, shape in zip(names, shapes):
            params[name] = w[start:start + shape.numel()].view(shape)
            start += shape.numel()
        return F.cross_entropy(functional_call(model, (params, {k: b.clone() for k, b in buffers.items()}),
                                               (batch[0],)), batch[1])

    hessian = torch.autograd.functional.hessian(loss, flat)
    gradient = torch.func.grad(loss)(flat)
    model.train()
    return hessian, gradient


def test_quadrature_gives_each_start_vectors_moments_exactly():
    """sum_i tau_i theta_i^p = v^T H^p v / ||v||^2 for p <= 2m - 1: checked for p = 1, 2 against the exact Hessian."""
    model, batch = small_bn()
    h, _ = exact_hessian(model, batch)
    result = spectral_density(model, F.cross_entropy, batch, n_v=4, m=5, seed=3)
    generator = torch.Generator().manual_seed(3)
    for ritz, weights in zip(result["ritz"], result["weights"]):
        v = rademacher(result["size"], generator, h)
        theta, tau = torch.tensor(ritz, dtype=torch.float64), torch.tensor(weights, dtype=torch.float64)
        n = result["size"]
        assert float(n * (tau * theta).sum()) == pytest.approx(float(v @ h @ v), rel=1e-9)  # Hutchinson's trace term
        assert float(n * (tau * theta ** 2).sum()) == pytest.approx(float(v @ h @ h @ v), rel=1e-9)
        assert float(tau.sum()) == pytest.approx(1.0, rel=1e-12)
    grid = torch.tensor(result["grid"])
    assert float(torch.trapezoid(torch.tensor(result["density"]), grid)) == pytest.approx(1.0, rel=1e-9)


def test_ritz_values_lie_within_and_reach_the_exact_extremes():
    model, batch = small_bn(1)
    h, _ = exact_hessian(model, batch)
    exact = torch.linalg.eigvalsh(h)
    short = spectral_density(model, F.cross_entropy, batch, n_v=2, m=8)
    for ritz in short["ritz"]:
        assert exact[0] - 1e-9 <= min(ritz) and max(ritz) <= exact[-1] + 1e-9  # Cauchy interlacing
    full = spectral_density(model, F.cross_entropy, batch, n_v=1, m=len(exact))
    assert max(full["ritz"][0]) == pytest.approx(float(exact[-1]), rel=1e-8)
    assert min(full["ritz"][0]) == pytest.approx(float(exact[0]), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_gradient_share_matches_an_exact_eigendecomposition(bn_mode):
    model, batch = small_bn(2)
    model.train()
    model(batch[0])  # running statistics that differ from the batch's, so that the eval mode is a different Hessian
    h, g = exact_hessian(model, batch, bn_mode)
    values, vectors = torch.linalg.eigh(h)
    k = 3
    exact = float((vectors[:, -k:].T @ g).pow(2).sum() / g.pow(2).sum())
    result = gradient_share(model, F.cross_entropy, batch, k=k, bn_mode=bn_mode, tol=1e-10)
    assert result["converged"]
    assert result["eigenvalues"] == pytest.approx(values[-k:].flip(0).tolist(), rel=1e-8)
    assert result["share"] == pytest.approx(exact, rel=1e-6)


def test_probes_leave_no_trace_and_repeat_exactly():
    model, batch = small_bn(3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    first = spectral_density(model, F.cross_entropy, batch, n_v=2, m=6, seed=7)
    share = gradient_share(model, F.cross_entropy, batch, k=2, seed=7)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and all(p.grad is None for p in model.parameters())
    assert torch.equal(rng, torch.get_rng_state())
    assert spectral_density(model, F.cross_entropy, batch, n_v=2, m=6, seed=7) == first
    assert gradient_share(model, F.cross_entropy, batch, k=2, seed=7) == share


def test_the_training_callback_probes_each_mode_at_its_steps_only():
    from bnstudy.probes.callback import StepContext
    from bnstudy.probes.spectrum import SpectrumProbe

    model, batch = small_bn(4)
    probe = SpectrumProbe(at=(0, 5), bn_modes=("train", "eval"), n_v=2, m=4, k=2, tol=1e-6, max_hvps=100, seed=1)
    assert probe.before_step(StepContext(3, model, batch, F.cross_entropy, 0.1, None)) == {}
    rows = probe.before_step(StepContext(5, model, batch, F.cross_entropy, 0.1, None))["probes"]
    for mode in ("train", "eval"):
        mine = [r for r in rows if r["probe"] == f"spectrum-{mode}"]
        assert len([r for r in mine if r["metric"].startswith("theta_")]) == 2 * 4  # 2 vectors x 4 Ritz values
        tops = {r["metric"]: r["value"] for r in mine if r["layer"] == 0}
        assert set(tops) == {"top1", "top2", "share_top2", "converged", "hvps"} and tops["converged"] == 1.0
        expected = gradient_share(model, F.cross_entropy, batch, k=2, bn_mode=mode, seed=5 + 1 * 1_000_003, tol=1e-6)
        assert tops["share_top2"] == expected["share"]  # the step's own stream: step_seed(seed, step)
