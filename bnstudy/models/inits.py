"""Weight initializations, one place for every model: INITS[kind](weight). Biases start at zero."""
from __future__ import annotations

from torch import nn

INITS = {
    "glorot": nn.init.xavier_uniform_,  # the paper's: Var = 2 / (fan_in + fan_out), so each ReLU halves the signal
    "kaiming": lambda w: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu"),  # Var = 2 / fan_in (He)
    # Gaussian, Var = 1 / fan_in: LeCun et al. (1998)'s scale for sigmoid units; Ioffe & Szegedy's MNIST network
    # starts from "small random Gaussian values" and names no scale (docs/protocol.md)
    "lecun": lambda w: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="linear"),
    # N(0, 0.01^2) whatever the layer's size: "small random Gaussian values" read literally, the control that asks
    # whether Ioffe & Szegedy's drifting sigmoid inputs come from a start with weights too small (docs/findings.md)
    "small": lambda w: nn.init.normal_(w, std=0.01),
}


def initialize(layers: list[nn.Module], kind: str = "glorot") -> None:
    """Weights of `layers` drawn by `kind` (from torch's global generator, in layer order), biases zero."""
    for layer in layers:
        INITS[kind](layer.weight)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
