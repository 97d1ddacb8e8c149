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


def _net_with_a_nearly_dead_filter() -> nn.Module:
    """Conv filter 1 feeds the classifier through weights of 1e-24: its gradient entries are ~1e-25, whose float32
    squares underflow to 0 (the committed long runs' standard seeds 0 and 1 met this late in training)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    with torch.no_grad():
        model[2].weight.view(3, 2, 36)[:, 1].mul_(1e-24)
    return model


def test_a_filter_whose_gradient_squares_underflow_still_steps_its_own_norm():
    """The failing case of the committed runs: a per-filter norm read as 0 made the step ~1e10 times ||w||."""
    from bnstudy.probes.functional import Evaluator
    from bnstudy.probes.landscape import per_filter_norms, probe_direction

    model, batch = _net_with_a_nearly_dead_filter(), (torch.randn(16, 3, 8, 8), torch.randint(0, 3, (16,)))
    evaluator = Evaluator(model, F.cross_entropy, batch)
    _, g = evaluator.loss_and_grad(evaluator.params)
    assert g["0.weight"][1].abs().max() < 1e-22 and g["0.weight"][1].flatten().norm() == 0  # squares underflow
    assert torch.count_nonzero(g["0.weight"][1]) > 0
    d = probe_direction("filter-gradient", g, evaluator.params, None)
    weight = evaluator.params["0.weight"]
    assert torch.allclose(per_filter_norms(d["0.weight"]), weight.flatten(1).norm(dim=1), rtol=1e-5)
    w_norm = torch.sqrt(sum(p.square().sum() for p in evaluator.params.values() if p.dim() > 1))
    step = along_gradient(model, F.cross_entropy, batch, [0.01], direction="filter-gradient")[0]["step_norm"]
    assert step / 0.01 <= float(w_norm) * (1 + 1e-5)


def test_per_filter_norms_are_exact_from_subnormal_to_huge():
    from bnstudy.probes.landscape import per_filter_norms

    values = torch.tensor([[3e-40, 4e-40], [3e-25, 4e-25], [3.0, 4.0], [3e30, 4e30], [0.0, 0.0]])
    expected = torch.tensor([5e-40, 5e-25, 5.0, 5e30, 0.0])
    assert torch.allclose(per_filter_norms(values), expected, rtol=1e-6, atol=0)


def test_a_direction_that_is_not_filter_normalized_is_refused():
    from bnstudy.probes.landscape import DirectionError, check_filter_normalized

    params = {"w": torch.ones(2, 4), "b": torch.ones(2)}
    good = {"w": torch.tensor([[2.0, 0, 0, 0], [0, 0, 0, 0]]), "b": torch.zeros(2)}  # filter 0: norm 2; filter 1: 0
    check_filter_normalized(good, params)
    check_filter_normalized({"w": torch.full((2, 4), float("nan")), "b": torch.zeros(2)}, params)  # diverged: rows
    for bad in ({"w": torch.tensor([[2.0, 0, 0, 0], [6e11, 0, 0, 0]]), "b": torch.zeros(2)},
                {"w": good["w"], "b": torch.ones(2)}):
        with pytest.raises(DirectionError, match="filter-normalized direction"):
            check_filter_normalized(bad, params)


def test_the_probe_writes_no_row_along_a_refused_direction(monkeypatch):
    """A wrong direction costs its step's rows, with a warning, never the run: no number of another meaning."""
    import bnstudy.probes.landscape as landscape
    from bnstudy.probes.callback import StepContext

    def wrong(source, params):
        raise landscape.DirectionError("filter-normalized direction is not: stand-in")

    monkeypatch.setattr(landscape, "filter_normalized", wrong)
    probe = landscape.LandscapeProbe([0.01], every=1, bn_mode="train", direction="filter-gradient", seed=0)
    model = _net_with_a_nearly_dead_filter()
    ctx = StepContext(step=3, model=model, batch=(torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4,))),
                      loss_fn=F.cross_entropy, lr=0.1, config=None)
    with pytest.warns(UserWarning, match="step 3: no landscape-filter rows"):
        assert probe.before_step(ctx) == {}


def _probe_rows(d_norm: float, w_norms: list[float], step: int = 10) -> list[dict]:
    filter_rows = [{"arm": "a", "seed": 0, "step": step, "probe": "landscape-filter", "layer": 0, "eta": eta,
                    "metric": "step_norm", "value": eta * d_norm} for eta in (0.01, 0.02)]
    weight_rows = [{"arm": "a", "seed": 0, "step": step, "probe": "weights", "layer": layer, "eta": None,
                    "metric": "w_norm", "value": w} for layer, w in enumerate(w_norms, start=1)]
    return filter_rows + weight_rows


def test_recorded_filter_probes_longer_than_the_weights_are_found():
    import pandas as pd

    from bnstudy.analysis.landscape import unnormalized_filter_probes

    # ||w|| = 5 over the two layers; a step of 5 (every filter moved) is right, one of 6e11 is not
    rows = _probe_rows(5.0, [3.0, 4.0], step=10) + _probe_rows(6e11, [3.0, 4.0], step=20)
    bad = unnormalized_filter_probes(pd.DataFrame(rows + _probe_rows(4.0, [3.0, 4.0], step=30)))
    assert bad[["arm", "seed", "step"]].values.tolist() == [["a", 0, 20]]
    assert bad.w_norm.iloc[0] == pytest.approx(5.0)


def test_the_committed_long_runs_two_unnormalized_probes_reach_no_figure_or_claim():
    """paper-figures at long, standard seeds 0 and 1: the probes recorded before the underflow was fixed."""
    from pathlib import Path

    from bnstudy.analysis import FILTER, landscape_summary
    from bnstudy.reading import Results

    results = Results(Path(__file__).resolve().parent.parent / "results", "paper-figures")
    assert results.unnormalized[["arm", "seed", "step"]].values.tolist() == [["standard", 0, 14200],
                                                                            ["standard", 1, 14000]]
    assert len(results.unnormalized_notes) == 2 and "not filter-normalized" in results.unnormalized_notes[0]
    summary = landscape_summary(results.tables["probes"], FILTER)
    assert summary.loss_max.max() < 1e3  # the two probes read 1e10-1e11; the real ones at most ~120 (standard, LR 0.01)
    assert "2 probe(s) left out, direction not filter-normalized" in results.unnormalized_words(["standard"])
    assert results.unnormalized_words(["batchnorm"]) == ""
