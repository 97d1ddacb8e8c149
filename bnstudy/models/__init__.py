"""Models with a pluggable normalization; build_model(ModelConfig) picks one from MODELS."""
from __future__ import annotations

from torch import nn

from bnstudy.architectures import DATASET_MODELS, VGG_CFGS, WEIGHT_LAYERS, count_weight_layers
from bnstudy.errors import ConfigError
from bnstudy.models.dln import DLN, build_dln
from bnstudy.models.mlp import MLP, build_mlp
from bnstudy.models.norms import NORMS, BatchNoise, has_noise, make_norm, set_noise
from bnstudy.models.vgg import VGG, build_vgg, layer, weight_layers

# kind -> builder; a new model family of the package is one line here and one in architectures.WEIGHT_LAYERS (and
# architectures.DATASET_MODELS); one of one's own is a register_model call
MODELS = {"vgg": build_vgg, "dln": build_dln, "mlp": build_mlp}


def build_model(cfg) -> nn.Module:
    return MODELS[cfg.kind](cfg)


def register_model(kind: str, build, weight_layers: int, datasets: tuple[str, ...]) -> None:
    """A model of one's own, by name: `model.kind = "<kind>"` in an experiment file then builds it with
    build(ModelConfig) (it reads whichever fields of model.* it needs: norm, init, width, ...), on the data sets named
    (data.register_dataset adds one's own). `weight_layers`: how many the probes may name (activations.layers,
    ics.layers). The model exposes `preactivation(k)`, the module whose output is weight layer #k's input to its
    nonlinearity, where the activation probes are asked to read it. Registering a kind again replaces it."""
    unknown = [name for name in datasets if name not in DATASET_MODELS]
    if unknown:
        raise ConfigError(f"register_model('{kind}'): unknown data set {unknown[0]}; known: "
                          f"{', '.join(DATASET_MODELS)}")
    MODELS[kind] = build
    WEIGHT_LAYERS[kind] = lambda cfg: weight_layers
    for name in datasets:
        if kind not in DATASET_MODELS[name]:
            DATASET_MODELS[name] = (*DATASET_MODELS[name], kind)


__all__ = ["DLN", "MLP", "NORMS", "MODELS", "VGG", "VGG_CFGS", "BatchNoise", "build_model", "count_weight_layers",
           "has_noise", "layer", "make_norm", "register_model", "set_noise", "weight_layers"]
