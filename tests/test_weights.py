"""The weights probe against independent computations and the invariants it exists to check."""
import pytest
import torch
import torch.nn.functional as F

from bnstudy.models import VGG, DLN, weight_layers
from bnstudy.probes.callback import StepContext
from bnstudy.probes.weights import METRICS, WeightsProbe


def tiny_vgg(norm: str, seed: int = 0):
    torch.manual_seed(seed)
    model = VGG(11, 0.125, (128, 128), norm, init="kaiming").double()  # 16 units a head layer: BN is not degenerate
    x, y = torch.randn(12, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (12,))
    return model, (x, y)


def probed_step(model, batch, lr: float, step: int = 0, weight_decay: float = 0.0, every: int = 1):
    """One SGD step as the training loop takes it, with the probe around it; returns the rows as
    {(layer, metric): v}."""
    probe = WeightsProbe(every)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    ctx = StepContext(step, model, batch, F.cross_entropy, lr, None)
    assert probe.before_step(ctx) == {}
    loss = F.cross_entropy(model(batch[0]), batch[1])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    rows = probe.after_step(ctx).get("probes", [])
    return {(r["layer"], r["metric"]): r["value"] for r in rows}, rows


def independent(model, batch):
    """||W||, ||g|| and <g, W> per weight layer, and the logits' std, from a separate forward and backward."""
    clone = __import__("copy").deepcopy(model)
    outputs = clone(batch[0])
    F.cross_entropy(outputs, batch[1]).backward()
    layers = weight_layers(clone)
    return ([float(m.weight.detach().norm()) for m in layers], [float(m.weight.grad.norm()) for m in layers],
            [float((m.weight.grad * m.weight.detach()).sum()) for m in layers], float(outputs.detach().std()))


def test_records_match_an_independent_forward_and_backward():
    model, batch = tiny_vgg("batch")
    w, g, dot, logit_std = independent(model, batch)
    values, rows = probed_step(model, batch, lr=0.1)
    n = len(weight_layers(model))
    assert {r["probe"] for r in rows} == {"weights"} and len(rows) == n * len(METRICS) + 1
    for k in range(1, n + 1):
        assert values[(k, "w_norm")] == pytest.approx(w[k - 1], rel=1e-12)
        assert values[(k, "grad_norm")] == pytest.approx(g[k - 1], rel=1e-10)
        assert values[(k, "grad_dot_w")] == pytest.approx(dot[k - 1], rel=1e-8, abs=1e-12)
    assert values[(0, "logit_std")] == pytest.approx(logit_std, rel=1e-12)


def test_bn_preceded_weights_are_scale_invariant_and_follow_arora_identity():
    """For a layer followed by BN, <g, W> = 0 and ||W'||^2 - ||W||^2 = eta^2 ||g||^2; not for the last layer,
    and not for any layer without BN."""
    lr = 0.05
    values, _ = probed_step(*tiny_vgg("batch"), lr=lr)
    n = max(k for k, _ in values)
    for k in range(1, n):
        cosine = values[(k, "grad_dot_w")] / (values[(k, "grad_norm")] * values[(k, "w_norm")])
        assert abs(cosine) < 1e-5  # not 0: BN divides by sqrt(var + eps), eps = 1e-5 (measured up to 1e-7)
        step_algebra = -2 * lr * values[(k, "grad_dot_w")] + lr ** 2 * values[(k, "grad_norm")] ** 2  # plain SGD
        assert values[(k, "sq_norm_change")] == pytest.approx(step_algebra, rel=1e-10)
        # Arora et al.: eta^2 ||g||^2 alone, off by 2 |cos(g, W)| / (eta ||g|| / ||W||): 0.09% at most here
        assert values[(k, "sq_norm_change")] == pytest.approx(lr ** 2 * values[(k, "grad_norm")] ** 2, rel=1e-2)
    last_cosine = values[(n, "grad_dot_w")] / (values[(n, "grad_norm")] * values[(n, "w_norm")])
    assert abs(last_cosine) > 1e-4
    plain, _ = probed_step(*tiny_vgg("none"), lr=lr)
    cosines = [abs(plain[(k, "grad_dot_w")]) / (plain[(k, "grad_norm")] * plain[(k, "w_norm")]) for k in range(1, n)]
    assert max(cosines) > 1e-3


def test_norm_change_is_measured_not_assumed():
    """Weight decay shrinks every weight: the identity breaks, and the probe sees the actual change."""
    lr, decay = 0.05, 0.1
    model, batch = tiny_vgg("batch")
    before = [m.weight.detach().clone() for m in weight_layers(model)]
    values, _ = probed_step(model, batch, lr=lr, weight_decay=decay)
    for k, (w0, m) in enumerate(zip(before, weight_layers(model)), start=1):
        actual = float(m.weight.detach().pow(2).sum() - w0.pow(2).sum())
        assert values[(k, "sq_norm_change")] == pytest.approx(actual, rel=1e-8)
    assert values[(1, "sq_norm_change")] < 0 < lr ** 2 * values[(1, "grad_norm")] ** 2


def test_probe_changes_nothing_and_runs_only_when_due():
    model, batch = tiny_vgg("noisy-batch")
    twin, _ = tiny_vgg("noisy-batch")
    torch.manual_seed(5)
    probed_step(model, batch, lr=0.1)
    rng_probed = torch.get_rng_state()
    torch.manual_seed(5)
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.1)
    F.cross_entropy(twin(batch[0]), batch[1]).backward()
    optimizer.step()
    for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
        assert torch.equal(a, b)  # weights and BN statistics: the same step, bit for bit
    assert torch.equal(rng_probed, torch.get_rng_state())  # the noise layers drew the same, the probe nothing
    values, rows = probed_step(model, batch, lr=0.1, step=3, every=2)
    assert rows == [] and not model._forward_hooks  # not due: nothing recorded, no hook left behind


def test_works_on_any_model_and_a_layer_the_loss_does_not_reach():
    torch.manual_seed(0)
    model = DLN(depth=3, width=4, norm="none").double()
    model.layers[1].weight.requires_grad_(False)  # frozen: no gradient, recorded as zero
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.randint(0, 4, (5,))
    values, _ = probed_step(model, (x, y), lr=0.1)
    assert values[(2, "grad_norm")] == 0 and values[(2, "sq_norm_change")] == 0
    assert values[(1, "grad_norm")] > 0


def test_the_loop_puts_the_weights_probe_after_every_probe_that_runs_a_forward_pass():
    """Its hook takes the first forward after its before_step: that must be the training step's own."""
    from bnstudy.config import load_experiment, run_config
    from bnstudy.models import build_model
    from bnstudy.train import probe_callbacks

    config = run_config(load_experiment("controls"), "batchnorm-kaiming-lr0.01", 0, "smoke",
                        ["ics.every=3", "spectrum.at=[0]", "activations.layers=[2]"])
    kinds = [type(c).__name__ for c in probe_callbacks(config, build_model(config.model))]
    assert kinds == ["LandscapeProbe", "ICSProbe", "CurvatureProbe", "SpectrumProbe", "WeightsProbe",
                     "ActivationRecorder"]  # the recorder's hooks come last for the same reason
