"""Models with a pluggable normalization; build_model(ModelConfig) picks one from MODELS."""
from __future__ import annotations

from torch import nn

from bnstudy.models.dln import DLN, build_dln, dln_weight_layer_count
from bnstudy.models.norms import NORMS, BatchNoise, has_noise, make_norm, set_noise
from bnstudy.models.vgg import VGG, VGG_CFGS, build_vgg, layer, vgg_weight_layer_count, weight_layers

# kind -> (builder, weight-layer count); a new model family is one line here
MODELS = {
    "vgg": (build_vgg, vgg_weight_layer_count),
    "dln": (build_dln, dln_weight_layer_count),
}


def build_model(cfg) -> nn.Module:
    return MODELS[cfg.kind][0](cfg)


def count_weight_layers(cfg) -> int:
    return MODELS[cfg.kind][1](cfg)


__all__ = ["DLN", "NORMS", "MODELS", "VGG", "VGG_CFGS", "BatchNoise", "build_model", "count_weight_layers", "has_noise",
           "layer", "make_norm", "set_noise", "weight_layers"]
