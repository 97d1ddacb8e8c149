"""The one place that decides normalization: make_norm(kind, width) -> module.

Kinds: none | batch | noisy-batch | noise-only | l1 | l2 | linf | layer | group. A model never
branches on the kind; it asks make_norm for the module between a weight layer and its nonlinearity.
"""
from __future__ import annotations

import math
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

    # part of noisy BN: a probe's bn_mode="eval" (running statistics) turns it off with BN, as model.eval() does
    switched_by_bn_mode = True

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


class LpBatchNorm(nn.Module):
    """BN with the standard deviation replaced by an average l_p norm (docs/protocol.md, "ℓp normalization").

    Per unit j over the batch (conv: batch x height x width), in training mode:
        y = (x - mean(x)) / ( mean(|x|^p) )^(1/p)        p = 1, 2
        y = (x - mean(x)) / max(|x|)                      p = inf
    the norm taken on the uncentred x ("fix the first moment as BN does, then normalize by the average
    l_p norm, before shifting the mean"), then BN's learnable scale and shift: gamma * y + beta.
    Evaluation mode uses running averages of the mean and the norm (momentum as torch's BN).
    """

    switched_by_bn_mode = True  # a probe's bn_mode sets it, as it sets torch's batch norms

    def __init__(self, width: int, p: float, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        if not (p == math.inf or p >= 1):
            raise ValueError(f"LpBatchNorm needs p >= 1 or inf, got {p}")
        self.p, self.momentum, self.eps = p, momentum, eps
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))
        self.register_buffer("running_mean", torch.zeros(width))
        self.register_buffer("running_norm", torch.ones(width))

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, p={self.p}, momentum={self.momentum}, eps={self.eps}"

    def batch_statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, ...) -> per-unit mean and l_p norm average, each (C,): over batch and space."""
        dims = [0] + list(range(2, x.dim()))
        # one fused reduction (and its backward) instead of abs, pow, mean, pow: the ℓp runs' largest cost on a CPU
        norm = torch.linalg.vector_norm(x, ord=self.p, dim=dims)  # (Σ|x|^p)^(1/p), or max |x|
        if self.p != math.inf:
            norm = norm / (x.numel() // x.shape[1]) ** (1 / self.p)  # the average: (mean |x|^p)^(1/p)
        return x.mean(dim=dims), norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean, norm = self.batch_statistics(x)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_norm.lerp_(norm.detach(), self.momentum)
        else:
            mean, norm = self.running_mean, self.running_norm
        # gamma * (x - mean) / (norm + eps) + beta as x * scale + shift, per unit: one pass over x, as BN's kernels do
        scale = self.weight / (norm + self.eps)
        shift = self.bias - mean * scale
        shape = (1, -1) + (1,) * (x.dim() - 2)  # (1, C, 1, 1): broadcast per unit
        return torch.addcmul(shift.view(shape), x, scale.view(shape))


def _layer_norm(width: int, spatial: bool) -> nn.Module:
    """Per sample over all units (and space), with a per-unit affine: GroupNorm with one group."""
    return nn.GroupNorm(1, width)


def _group_norm(width: int, spatial: bool, groups: int = 32) -> nn.Module:
    """Per sample over groups of units (Wu and He 2018): 32 groups, or fewer where the width is not a multiple."""
    return nn.GroupNorm(math.gcd(groups, width), width)


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
    "l1": lambda width, spatial, noise: LpBatchNorm(width, 1),
    "l2": lambda width, spatial, noise: LpBatchNorm(width, 2),
    "linf": lambda width, spatial, noise: LpBatchNorm(width, math.inf),
    "layer": lambda width, spatial, noise: _layer_norm(width, spatial),  # beyond the paper, for comparison
    "group": lambda width, spatial, noise: _group_norm(width, spatial),
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
