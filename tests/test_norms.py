import pytest
import torch
from torch import nn

from bnstudy.config import NoiseConfig
from bnstudy.models import BatchNoise, make_norm

ZERO_NOISE = NoiseConfig(n_mu=0.0, n_sigma=1.0, r_mu=0.0, r_sigma=0.0)


@pytest.mark.parametrize("spatial, shape", [(True, (16, 6, 5, 5)), (False, (16, 6))])
def test_noisy_batch_with_zero_noise_equals_torch_batchnorm(spatial, shape):
    torch.manual_seed(0)
    noisy = make_norm("noisy-batch", 6, spatial, ZERO_NOISE)
    reference = nn.BatchNorm2d(6) if spatial else nn.BatchNorm1d(6)
    with torch.no_grad():
        for module in (noisy.bn, reference):
            module.weight.copy_(torch.linspace(0.5, 2, 6))
            module.bias.copy_(torch.linspace(-1, 1, 6))
    for _ in range(3):  # train mode, updating running statistics
        x = torch.randn(shape) * 3 + 1
        assert torch.equal(noisy(x), reference(x))
    assert torch.equal(noisy.bn.running_mean, reference.running_mean)
    assert torch.equal(noisy.bn.running_var, reference.running_var)
    noisy.eval(), reference.eval()
    x = torch.randn(shape)
    assert torch.equal(noisy(x), reference(x))


def test_noise_is_off_in_eval_mode_and_when_disabled():
    noise = BatchNoise()
    x = torch.randn(8, 3, 4, 4)
    noise.eval()
    assert torch.equal(noise(x), x)
    noise.train()
    assert not torch.equal(noise(x), x)
    noise.enabled = False
    assert torch.equal(noise(x), x)


def draws(noise: NoiseConfig, x: torch.Tensor, count: int) -> torch.Tensor:
    module = BatchNoise(noise)
    return torch.stack([module(x) for _ in range(count)])  # (draws, N, C, H, W)


def test_shift_statistics_follow_algorithm_1():
    """x = 0 leaves only m: per channel a mean mu ~ U(-n_mu, n_mu), per element uniform of half-width r_mu."""
    torch.manual_seed(1)
    n = NoiseConfig()
    m = draws(n, torch.zeros(64, 8, 6, 6), 300)
    per_channel = m.mean(dim=(1, 3, 4))  # (draws, C): estimates of mu_j
    assert per_channel.abs().max() < n.n_mu + 0.01
    assert per_channel.mean().abs() < 0.02
    assert per_channel.var().item() == pytest.approx((2 * n.n_mu) ** 2 / 12, rel=0.1)  # U(-n_mu, n_mu)
    spread = m - per_channel[:, None, :, None, None]
    assert spread.abs().max() <= n.r_mu + 0.01
    assert spread.std().item() == pytest.approx(n.r_mu / 3 ** 0.5, rel=0.05)  # U(mu - r_mu, mu + r_mu)


def test_scale_statistics_follow_algorithm_1():
    """x = 1 with the shift switched off leaves only s: per channel mean sigma ~ U(1, n_sigma), spread r_sigma."""
    torch.manual_seed(2)
    n = NoiseConfig(n_mu=0.0, r_mu=0.0)
    s = draws(n, torch.ones(64, 8, 6, 6), 300)
    per_channel = s.mean(dim=(1, 3, 4))
    assert per_channel.min() > 1 - 0.01 and per_channel.max() < n.n_sigma + 0.01
    assert per_channel.mean().item() == pytest.approx((1 + n.n_sigma) / 2, abs=0.01)
    assert per_channel.var().item() == pytest.approx((n.n_sigma - 1) ** 2 / 12, rel=0.15)
    residual = s - per_channel[:, None, :, None, None]
    assert residual.std().item() == pytest.approx(n.r_sigma, rel=0.05)  # s ~ N(sigma, r_sigma)
    assert residual.mean().abs() < 1e-3


def test_noise_only_is_noise_without_normalization():
    module = make_norm("noise-only", 4)
    assert isinstance(module, BatchNoise)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def test_noise_gradient_is_the_drawn_scale():
    torch.manual_seed(3)
    x = torch.randn(4, 2, 3, 3, requires_grad=True)
    state = torch.get_rng_state()
    y = BatchNoise()(x)
    y.sum().backward()
    torch.set_rng_state(state)  # the same draw again, applied to ones and zeros: s and m
    ones = BatchNoise()(torch.ones_like(x))
    torch.set_rng_state(state)
    zeros = BatchNoise()(torch.zeros_like(x))
    assert torch.allclose(x.grad, ones - zeros, atol=1e-6)


def test_unknown_norm_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown norm 'bacth'; known: none, batch"):
        make_norm("bacth", 4)
