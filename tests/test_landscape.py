"""The landscape probe against closed forms, invariants and the optimizer itself."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnstudy.models import VGG
from bnstudy.probes.landscape import along_gradient, eta_grid, summarize


class Quadratic(nn.Module):
    """A model whose 'loss' is exactly L(w) = 1/2 (w - w*)^T H (w - w*)."""

    def __init__(self, h: torch.Tensor, w_star: torch.Tensor, w0: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w0.clone())
        self.register_buffer("h", h)
        self.register_buffer("w_star", w_star)

    def forward(self, x):
        r = self.w - self.w_star
        return 0.5 * r @ self.h @ r + 0 * x.sum()


def identity_loss(output, target):
    return output


def quadratic(seed=0, n=6):
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    eigenvalues = torch.linspace(0.5, 5.0, n, dtype=torch.float64)
    h = q @ torch.diag(eigenvalues) @ q.T
    w_star = torch.randn(n, generator=gen, dtype=torch.float64)
    w0 = torch.randn(n, generator=gen, dtype=torch.float64)
    return Quadratic(h, w_star, w0).double(), h, w_star, q, eigenvalues


BATCH = (torch.zeros(1, dtype=torch.float64), None)


def test_quadratic_matches_closed_form_for_every_eta():
    model, h, w_star, _, _ = quadratic()
    etas = [0.01, 0.05, 0.1, 0.3]
    rows = along_gradient(model, identity_loss, BATCH, etas)
    w = model.w.detach()
    g = h @ (w - w_star)
    for row, eta in zip(rows, etas):
        moved = w - eta * g
        assert row["loss"] == pytest.approx(float(0.5 * (moved - w_star) @ h @ (moved - w_star)), rel=1e-12)
        # grad L(w - eta g) - g = -eta H g
        assert row["grad_diff"] == pytest.approx(float(eta * torch.linalg.norm(h @ g)), rel=1e-12)
        assert row["grad_norm"] == pytest.approx(float(torch.linalg.norm(g)), rel=1e-12)


def test_beta_eff_equals_the_eigenvalue_when_g_is_an_eigenvector():
    model, h, w_star, q, eigenvalues = quadratic(seed=1)
    with torch.no_grad():
        model.w.copy_(w_star + 0.7 * q[:, 3])  # g = H (w - w*) = 0.7 lambda_3 q_3
    assert summarize(along_gradient(model, identity_loss, BATCH, [0.1, 0.2]))["beta_eff"] == pytest.approx(
        float(eigenvalues[3]), rel=1e-10)
    with torch.no_grad():
        model.w.copy_(w_star + q[:, 0] + q[:, 5])  # not an eigenvector: between the extreme eigenvalues
    beta = summarize(along_gradient(model, identity_loss, BATCH, [0.1]))["beta_eff"]
    assert float(eigenvalues[0]) < beta < float(eigenvalues[-1])


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()},
            torch.get_rng_state(), model.training)


def assert_same(a, b):
    state_a, grads_a, rng_a, mode_a = a
    state_b, grads_b, rng_b, mode_b = b
    assert state_a.keys() == state_b.keys() and all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    for k in grads_a:
        assert (grads_a[k] is None and grads_b[k] is None) or torch.equal(grads_a[k], grads_b[k])
    assert torch.equal(rng_a, rng_b) and mode_a == mode_b


@pytest.mark.parametrize("norm", ["batch", "noisy-batch"])
@pytest.mark.parametrize("direction", ["gradient", "random"])
def test_probe_leaves_no_trace_and_repeats_exactly(norm, direction):
    torch.manual_seed(0)
    model = VGG(16, 0.0625, (32, 32), norm)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    F.cross_entropy(model(x), y).backward()  # some .grad and running statistics already there
    before = snapshot(model)
    probe = lambda: along_gradient(model, F.cross_entropy, (x, y), [0.05, 0.1, 0.2], direction=direction,
                                   generator=torch.Generator().manual_seed(3))
    first = probe()
    assert_same(before, snapshot(model))
    assert probe() == first


def test_noisy_probe_sees_one_noise_draw_for_every_eta():
    torch.manual_seed(2)
    model = VGG(16, 0.0625, (32, 32), "noisy-batch")
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    rows = along_gradient(model, F.cross_entropy, (x, y), [1e-9, 2e-9])
    # a fresh draw per evaluation would move the loss by far more than a 1e-9 step does
    assert rows[0]["loss"] == pytest.approx(rows[0]["loss0"], rel=1e-6)
    assert rows[1]["grad_diff"] < 1e-4 * rows[1]["grad_norm"]


@pytest.mark.parametrize("norm", ["none", "batch", "noisy-batch"])
def test_row_at_the_training_lr_is_the_loss_after_the_training_step(norm):
    """The probe and the optimizer agree on what a step is (same batch, same noise draw)."""
    torch.manual_seed(1)
    lr = 0.1
    model = VGG(16, 0.0625, (32, 32), norm)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    row = along_gradient(model, F.cross_entropy, (x, y), [lr])[0]
    rng = torch.get_rng_state()
    opt = torch.optim.SGD(model.parameters(), lr=lr, foreach=True)
    F.cross_entropy(model(x), y).backward()  # the training step draws the noise the probe drew
    opt.step()
    torch.set_rng_state(rng)
    with torch.no_grad():
        after = F.cross_entropy(model(x), y).item()  # train mode: batch statistics, same noise again
    assert row["loss"] == pytest.approx(after, rel=1e-5)


def test_eta_grid():
    assert eta_grid(0.1, 0.5, 4.0, 8, "linear") == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4])
    grid = eta_grid(1e-6, 0.01, 30, 5, "log")
    assert grid[0] == pytest.approx(1e-8) and grid[-1] == pytest.approx(3e-5)


def _bn_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4, eps=1e-30),  # eps ~0: scale-invariant
                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).double()


def test_the_filter_normalized_gradient_moves_each_filter_by_eta_times_its_norm():
    from bnstudy.probes.functional import Evaluator
    from bnstudy.probes.landscape import probe_direction

    model, batch = _bn_net(), (torch.randn(16, 3, 8, 8, dtype=torch.float64), torch.randint(0, 3, (16,)))
    evaluator = Evaluator(model, F.cross_entropy, batch)
    _, g = evaluator.loss_and_grad(evaluator.params)
    d = probe_direction("filter-gradient", g, evaluator.params, None)
    for name, p in evaluator.params.items():
        if p.dim() == 1:  # BN's scale and shift, the linear bias: not moved (Li et al.)
            assert torch.count_nonzero(d[name]) == 0
            continue
        assert torch.allclose(d[name].flatten(1).norm(dim=1), p.flatten(1).norm(dim=1), rtol=1e-12)
        cos = F.cosine_similarity(d[name].flatten(1), g[name].flatten(1), dim=1)  # each filter along its own gradient
        assert torch.allclose(cos, torch.ones_like(cos), rtol=1e-12)


def test_the_filter_normalized_probe_does_not_see_the_free_scale_that_bn_gives_a_weight():
    """Scaling a weight that BN follows changes no function: along the filter-normalized gradient every loss is the
    same; along the plain gradient (the paper's) the losses move with the scale."""
    batch = (torch.randn(16, 3, 8, 8, dtype=torch.float64), torch.randint(0, 3, (16,)))
    etas = [0.01, 0.02, 0.04]
    losses = {}
    for scale in (1.0, 5.0):
        model = _bn_net()
        with torch.no_grad():
            model[0].weight.mul_(scale)
        for direction in ("gradient", "filter-gradient"):
            losses[direction, scale] = [r["loss"] for r in along_gradient(model, F.cross_entropy, batch, etas,
                                                                          direction=direction)]
    assert losses["filter-gradient", 1.0] == pytest.approx(losses["filter-gradient", 5.0], rel=1e-10)
    assert losses["gradient", 1.0] != pytest.approx(losses["gradient", 5.0], rel=1e-3)
