"""A fully connected network with a pluggable normalization and nonlinearity: Ioffe & Szegedy's MNIST network
(2015, section 4.1) is 3 hidden layers of 100 sigmoid units (docs/protocol.md, "Ioffe & Szegedy's MNIST experiment").

Weight layers are numbered from the input as for VGG: #1..#depth are the hidden layers, each followed by
make_norm(...) and the nonlinearity; the norm's output is "the input to the nonlinearity" (the sigmoid's input that
Ioffe & Szegedy's Fig. 1b, c follow), which the activation probes record. #depth + 1 is the output layer.
"""
from __future__ import annotations

import torch
from torch import nn

from bnstudy.config import ModelConfig
from bnstudy.models.inits import initialize
from bnstudy.models.norms import make_norm

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}  # architectures.ACTIVATION_KINDS


class MLP(nn.Module):
    def __init__(self, inputs: int = 784, depth: int = 3, width: int = 100, activation: str = "sigmoid",
                 norm: str = "none", noise=None, num_classes: int = 10, init: str = "lecun"):
        super().__init__()
        norm_args = {} if noise is None else {"noise": noise}
        self._preactivations: list[nn.Module] = []
        blocks: list[nn.Module] = [nn.Flatten()]
        n_in = inputs
        for _ in range(depth):
            norm_module = make_norm(norm, width, False, **norm_args)
            self._preactivations.append(norm_module)
            blocks += [nn.Linear(n_in, width), norm_module, ACTIVATIONS[activation]()]
            n_in = width
        logits = nn.Linear(n_in, num_classes)
        self._preactivations.append(logits)  # the output layer has no norm and no nonlinearity
        self.layers = nn.Sequential(*blocks, logits)
        initialize([m for m in self.layers if isinstance(m, nn.Linear)], init)

    def preactivation(self, k: int) -> nn.Module:
        """The module whose output is the input to the nonlinearity of weight layer #k (from 1)."""
        if not 1 <= k <= len(self._preactivations):
            raise IndexError(f"layer #{k} out of range; this model has weight layers #1..#{len(self._preactivations)}")
        return self._preactivations[k - 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, ...) flattened to (N, inputs) -> (N, classes)
        return self.layers(x)


def build_mlp(cfg: ModelConfig) -> MLP:
    return MLP(cfg.mlp_inputs, cfg.mlp_depth, cfg.mlp_width, cfg.activation, cfg.norm, cfg.noise, init=cfg.init)
