"""Weight initializations, one place for every model: INITS[kind](weight). Biases start at zero."""
from __future__ import annotations

from torch import nn

INITS = {
    "glorot": nn.init.xavier_uniform_,  # the paper's: Var = 2 / (fan_in + fan_out), so each ReLU halves the signal
    "kaiming": lambda w: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu"),  # Var = 2 / fan_in (He)
}


def initialize(layers: list[nn.Module], kind: str = "glorot") -> None:
    """Weights of `layers` drawn by `kind` (from torch's global generator, in layer order), biases zero."""
    for layer in layers:
        INITS[kind](layer.weight)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
