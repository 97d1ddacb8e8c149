"""l_p normalizations: the defining identities, eval mode, and gradients (gradcheck)."""
import math

import pytest
import torch

from bnstudy.models import make_norm
from bnstudy.models.norms import LpBatchNorm

P = {"l1": 1.0, "l2": 2.0, "linf": math.inf}


def lp_average(x: torch.Tensor, p: float) -> torch.Tensor:
    """Independent per-channel computation on (N, C, H, W): mean |x|^p ^ (1/p), or max |x|."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1)
    return flat.abs().max(dim=1).values if p == math.inf else flat.abs().pow(p).mean(dim=1).pow(1 / p)


@pytest.mark.parametrize("kind", sorted(P))
def test_train_mode_identities(kind):
    torch.manual_seed(0)
    norm = make_norm(kind, 5).double()
    norm.eps = 0.0
    x = torch.randn(8, 5, 3, 3, dtype=torch.float64) * 2 + 0.7
    y = norm(x)  # scale 1, shift 0 at init: the output before the affine
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(5, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(norm(3.5 * x), y, atol=1e-12)  # unchanged by a positive scaling of the input
    scale = lp_average(x, P[kind]).view(1, 5, 1, 1)
    assert torch.allclose(y * scale, x - x.mean(dim=(0, 2, 3), keepdim=True), atol=1e-12)


@pytest.mark.parametrize("kind", sorted(P))
def test_eval_mode_uses_running_statistics(kind):
    torch.manual_seed(1)
    norm = make_norm(kind, 4, spatial=False)
    batches = [torch.randn(16, 4) * 3 + 1 for _ in range(50)]
    for x in batches:
        norm(x)
    norm.eval()
    x = torch.randn(16, 4)
    expected = (x - norm.running_mean) / (norm.running_norm + norm.eps)
    assert torch.allclose(norm(x), expected)
    assert torch.allclose(norm.running_mean, torch.ones(4), atol=0.4)  # running averages track the input's mean
    assert not torch.allclose(norm(x), norm.train()(x))


@pytest.mark.parametrize("kind", sorted(P))
def test_gradients_are_right(kind):
    torch.manual_seed(2)
    norm = make_norm(kind, 3).double()
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([0.5, 1.5, -1.0]))
        norm.bias.copy_(torch.tensor([0.1, 0.0, -0.3]))
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    weight, bias = (norm.weight.detach().clone().requires_grad_(), norm.bias.detach().clone().requires_grad_())
    # the input's gradient and the affine's: the forward folds gamma, beta, mean and norm into one scale and shift
    assert torch.autograd.gradcheck(lambda t, w, b: torch.func.functional_call(norm, {"weight": w, "bias": b}, (t,)),
                                    (x, weight, bias))


@pytest.mark.parametrize("kind", sorted(P))
def test_affine_output_is_the_textbook_form(kind):
    torch.manual_seed(3)
    norm = make_norm(kind, 4).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.normal_()
    x = torch.randn(8, 4, 3, 3, dtype=torch.float64) * 2 + 0.7
    centred = (x - x.mean(dim=(0, 2, 3), keepdim=True)) / (lp_average(x, P[kind]).view(1, 4, 1, 1) + norm.eps)
    expected = centred * norm.weight.view(1, 4, 1, 1) + norm.bias.view(1, 4, 1, 1)
    assert torch.allclose(norm(x), expected, atol=1e-12)


@pytest.mark.parametrize("kind", ["layer", "group"])
def test_layer_and_group_norm_are_per_sample(kind):
    norm = make_norm(kind, 64)
    x = torch.randn(6, 64, 4, 4)
    single = norm(x[:1])
    assert torch.allclose(norm(x)[:1], single, atol=1e-6)  # no batch statistics


def test_bad_p():
    with pytest.raises(ValueError, match="p >= 1"):
        LpBatchNorm(3, 0.5)
