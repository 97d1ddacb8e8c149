"""Models with a pluggable normalization; build_model(ModelConfig) picks one from MODELS."""
from __future__ import annotations

from torch import nn

from bnstudy.architectures import VGG_CFGS, count_weight_layers
from bnstudy.models.dln import DLN, build_dln
from bnstudy.models.norms import NORMS, BatchNoise, has_noise, make_norm, set_noise
from bnstudy.models.vgg import VGG, build_vgg, layer, weight_layers

# kind -> builder; a new model family is one line here and one in architectures.WEIGHT_LAYERS
MODELS = {"vgg": build_vgg, "dln": build_dln}


def build_model(cfg) -> nn.Module:
    return MODELS[cfg.kind](cfg)


__all__ = ["DLN", "NORMS", "MODELS", "VGG", "VGG_CFGS", "BatchNoise", "build_model", "count_weight_layers", "has_noise",
           "layer", "make_norm", "set_noise", "weight_layers"]
