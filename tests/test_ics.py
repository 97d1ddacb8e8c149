"""Definition 2.1 against hand-derived closed forms and invariants."""
import pytest
import torch
import torch.nn.functional as F

from bnstudy.models import DLN, VGG
from bnstudy.probes.ics import gradient_shift
from bnstudy.probes.layers import traced_layers
from bnstudy.train import summed_squared_error


def two_layer(seed=0):
    torch.manual_seed(seed)
    model = DLN(depth=2, width=3, norm="none").double()
    x = torch.randn(7, 3, dtype=torch.float64)
    y = torch.randn(7, 3, dtype=torch.float64)
    return model, x, y


def closed_form_gradients(w1, w2, x, y):
    """L = sum_n ||W2 W1 x_n - y_n||^2: dL/dW2 = 2 R^T H, dL/dW1 = 2 W2^T R^T X, with H = X W1^T, R = H W2^T - Y."""
    h = x @ w1.T
    r = h @ w2.T - y
    return 2 * w2.T @ r.T @ x, 2 * r.T @ h


def test_two_layer_linear_network_matches_closed_form():
    model, x, y = two_layer()
    lr = 0.01
    w1, w2 = model.layers[0].weight.detach(), model.layers[1].weight.detach()
    g1, g2 = closed_form_gradients(w1, w2, x, y)
    _, g2_shifted = closed_form_gradients(w1 - lr * g1, w2, x, y)  # only layer 1 moved
    row = gradient_shift(model, summed_squared_error, (x, y), lr, [2])[0]
    assert row["l2"] == pytest.approx(float(torch.linalg.norm(g2 - g2_shifted)), rel=1e-10)
    cosine = float(F.cosine_similarity(g2.flatten(), g2_shifted.flatten(), dim=0))
    assert row["cosine"] == pytest.approx(cosine, rel=1e-10)
    assert row["rel_l2"] == pytest.approx(row["l2"] / float(torch.linalg.norm(g2)), rel=1e-10)
    assert row["l2"] > 0


def test_zero_lr_and_first_layer_have_no_shift():
    model, x, y = two_layer(1)
    for row in gradient_shift(model, summed_squared_error, (x, y), 0.0, [1, 2]):
        assert row["l2"] == 0 and row["cosine"] == pytest.approx(1.0, abs=1e-12)
    row = gradient_shift(model, summed_squared_error, (x, y), 0.05, [1])[0]
    assert row["l2"] == 0 and row["cosine"] == pytest.approx(1.0, abs=1e-12)


def test_upstream_of_a_vgg_layer_is_every_layer_before_with_its_norm():
    model = VGG(16, 0.0625, (32, 32), "batch")
    batch = (torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,)))
    second = traced_layers(model, F.cross_entropy, batch)[1]
    assert second.weight == "features.3.weight"
    assert second.upstream == ("features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias")
    with pytest.raises(IndexError, match="#17 out of range"):
        gradient_shift(model, F.cross_entropy, batch, 0.1, [17])


@pytest.mark.parametrize("norm", ["batch", "noisy-batch"])
def test_probe_leaves_no_trace_and_repeats_exactly(norm):
    torch.manual_seed(0)
    model = VGG(16, 0.0625, (32, 32), norm)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    F.cross_entropy(model(x), y).backward()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    rng = torch.get_rng_state()
    first = gradient_shift(model, F.cross_entropy, (x, y), 0.1, [5, 10])
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(grads[k], p.grad) for k, p in model.named_parameters())
    assert torch.equal(rng, torch.get_rng_state()) and model.training
    assert gradient_shift(model, F.cross_entropy, (x, y), 0.1, [5, 10]) == first
    assert [r["layer"] for r in first] == [5, 10] and all(-1 <= r["cosine"] <= 1 for r in first)
