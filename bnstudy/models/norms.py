"""The one place that decides normalization: make_norm(kind, width) -> module.

Kinds: none | batch | noisy-batch | noise-only. A model never branches on the kind; it asks
make_norm for the module that sits between a weight layer and its nonlinearity.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from bnstudy.config import NoiseConfig


class BatchNoise(nn.Module):
    """Algorithm 1 of Santurkar et al.: non-zero-mean, non-unit-variance noise, fresh every step.

    For each unit j (a channel for conv layers), once per forward pass:
        mu_j ~ U(-n_mu, n_mu),  sigma_j ~ U(1, n_sigma)
    for each sample i and unit j (conv: each i, h, w):
        m_ij ~ U(mu_j - r_mu, mu_j + r_mu),  s_ij ~ N(sigma_j, r_sigma)   (r_sigma a standard deviation)
        a_ij <- s_ij * a_ij + m_ij
    Training mode only; the identity in evaluation mode or when `enabled` is False.
    """

    def __init__(self, noise: NoiseConfig = NoiseConfig()):
        super().__init__()
        self.noise = noise
        self.enabled = True  # off while recalibrating BN statistics noise-free

    def extra_repr(self) -> str:
        n = self.noise
        return f"n_mu={n.n_mu}, n_sigma={n.n_sigma}, r_mu={n.r_mu}, r_sigma={n.r_sigma}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.enabled):
            return x
        n = self.noise
        unit_shape = (1, x.shape[1]) + (1,) * (x.dim() - 2)  # (1, C, 1, 1): one draw per unit, shared by i, h, w
        mu = torch.empty(unit_shape, device=x.device, dtype=x.dtype).uniform_(-n.n_mu, n.n_mu)
        sigma = torch.empty(unit_shape, device=x.device, dtype=x.dtype).uniform_(1.0, n.n_sigma)
        shift = torch.empty_like(x).uniform_(-n.r_mu, n.r_mu).add_(mu)  # m ~ U(mu - r_mu, mu + r_mu)
        scale = torch.empty_like(x).normal_(0.0, n.r_sigma).add_(sigma)  # s ~ N(sigma, r_sigma)
        return torch.addcmul(shift, x, scale)  # s * a + m in one pass


def _batch_norm(width: int, spatial: bool) -> nn.Module:
    return nn.BatchNorm2d(width) if spatial else nn.BatchNorm1d(width)


def _noisy_batch_norm(width: int, spatial: bool, noise: NoiseConfig) -> nn.Module:
    return nn.Sequential(OrderedDict(bn=_batch_norm(width, spatial), noise=BatchNoise(noise)))


# kind -> factory(width, spatial, noise). spatial: inputs are (N, C, H, W), else (N, C).
NORMS = {
    "none": lambda width, spatial, noise: nn.Identity(),
    "batch": lambda width, spatial, noise: _batch_norm(width, spatial),
    "noisy-batch": _noisy_batch_norm,
    "noise-only": lambda width, spatial, noise: BatchNoise(noise),  # the paper's control: the noise, no BN
}


def make_norm(kind: str, width: int, spatial: bool = True, noise: NoiseConfig = NoiseConfig()) -> nn.Module:
    """The module between a weight layer of `width` units and its nonlinearity."""
    try:
        factory = NORMS[kind]
    except KeyError:
        raise ValueError(f"unknown norm '{kind}'; known: {', '.join(NORMS)}") from None
    return factory(width, spatial, noise)


def set_noise(model: nn.Module, enabled: bool) -> None:
    """Turn every BatchNoise in `model` on or off (e.g. to recalibrate BN statistics noise-free)."""
    for module in model.modules():
        if isinstance(module, BatchNoise):
            module.enabled = enabled


def has_noise(model: nn.Module) -> bool:
    return any(isinstance(m, BatchNoise) for m in model.modules())
