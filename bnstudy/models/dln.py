"""The deep linear network of the paper (docs/protocol.md): 25 square linear layers, no bias, no nonlinearity.

Each layer but the last is followed by make_norm(...) (nothing else: the network stays linear in
its weights apart from the normalization). Layer numbering as for VGG: #1 at the input.
"""
from __future__ import annotations

import torch
from torch import nn

from bnstudy.config import ModelConfig
from bnstudy.models.inits import initialize
from bnstudy.models.norms import make_norm


class DLN(nn.Module):
    def __init__(self, depth: int = 25, width: int = 10, norm: str = "none", noise=None, init: str = "glorot"):
        super().__init__()
        norm_args = {} if noise is None else {"noise": noise}
        self.layers = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(depth))
        self.norms = nn.ModuleList(make_norm(norm, width, False, **norm_args) for _ in range(depth - 1))
        initialize(list(self.layers), init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, width) -> (N, width)
        for layer, norm in zip(self.layers, self.norms):
            x = norm(layer(x))
        return self.layers[-1](x)

    def preactivation(self, k: int) -> nn.Module:
        """The module whose output follows weight layer #k (its norm; the last layer itself for #depth)."""
        if not 1 <= k <= len(self.layers):
            raise IndexError(f"layer #{k} out of range; this model has weight layers #1..#{len(self.layers)}")
        return self.norms[k - 1] if k < len(self.layers) else self.layers[-1]


def build_dln(cfg: ModelConfig) -> DLN:
    return DLN(cfg.dln_depth, cfg.dln_width, cfg.norm, cfg.noise, init=cfg.init)
