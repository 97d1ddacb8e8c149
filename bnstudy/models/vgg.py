"""VGG for CIFAR-10 with a pluggable normalization, numbered as in the paper (docs/protocol.md).

Weight layers (conv and linear) are numbered from the input, starting at 1: VGG-16 has #1..#13
convolutions and #14..#16 linear layers. Each weight layer but the last is followed by
make_norm(...) and a ReLU; the norm's output is "the input to the nonlinearity" that the
activation probes record.
"""
from __future__ import annotations

import torch
from torch import nn

from bnstudy.architectures import VGG_CFGS
from bnstudy.config import ModelConfig
from bnstudy.models.inits import initialize
from bnstudy.models.norms import make_norm


def scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class VGG(nn.Module):
    def __init__(self, cfg: int = 16, width: float = 1.0, head: tuple[int, ...] = (512, 512), norm: str = "batch",
                 noise=None, num_classes: int = 10, in_channels: int = 3, init: str = "glorot"):
        super().__init__()
        norm_args = {} if noise is None else {"noise": noise}
        self._preactivations: list[nn.Module] = []  # per weight layer: the module whose output feeds the ReLU
        features: list[nn.Module] = []
        c_in = in_channels
        for v in VGG_CFGS[cfg]:
            if v == "M":
                features.append(nn.MaxPool2d(2))
                continue
            c_out = scaled(v, width)
            features += self._block(nn.Conv2d(c_in, c_out, 3, padding=1), make_norm(norm, c_out, True, **norm_args))
            c_in = c_out
        classifier: list[nn.Module] = [nn.Flatten()]
        for h in head:
            h = scaled(h, width)
            classifier += self._block(nn.Linear(c_in, h), make_norm(norm, h, False, **norm_args))
            c_in = h
        logits = nn.Linear(c_in, num_classes)
        self._preactivations.append(logits)  # the last layer has no norm and no ReLU
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(*classifier, logits)
        initialize(weight_layers(self), init)

    def _block(self, layer: nn.Module, norm: nn.Module) -> list[nn.Module]:
        self._preactivations.append(norm)
        return [layer, norm, nn.ReLU()]

    def preactivation(self, k: int) -> nn.Module:
        """The module whose output is the input to the nonlinearity of weight layer #k (from 1)."""
        return self._preactivations[_index(k, len(self._preactivations))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, 32, 32) -> (N, classes)
        return self.classifier(self.features(x))


def _index(k: int, n: int) -> int:
    if not 1 <= k <= n:
        raise IndexError(f"layer #{k} out of range; this model has weight layers #1..#{n}")
    return k - 1


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """Conv and linear modules in registration order (forward order for sequential models), #1 first."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]


def layer(model: nn.Module, k: int) -> nn.Module:
    """Weight layer #k of any model, numbered from 1 as in the paper."""
    layers = weight_layers(model)
    return layers[_index(k, len(layers))]


def build_vgg(cfg: ModelConfig) -> VGG:
    return VGG(cfg.cfg, cfg.width, cfg.head, cfg.norm, cfg.noise, init=cfg.init)
