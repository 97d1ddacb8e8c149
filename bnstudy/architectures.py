"""What the models are, without torch: the names a configuration may use and the weight layers each model has.

The ground floor below both the configuration (which validates names and layer numbers against these)
and the models (which build from them): `import bnstudy.config` imports no model code and no torch.
"""
from __future__ import annotations

# Channel counts per VGG depth; "M" is a 2x2 max-pool. 32x32 inputs leave 1x1 after the five pools.
VGG_CFGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}

# dataset kind -> the model kinds that train on it (data.DATASETS adds each kind's task and reader; a test checks
# the kinds agree)
DATASET_MODELS = {"cifar10": ("vgg",), "synthetic": ("vgg", "mlp"), "gaussian": ("dln",), "mnist": ("mlp",)}

# Weight initializations (models.inits.INITS has exactly these): glorot is the paper's
INIT_KINDS = ("glorot", "kaiming", "lecun", "small")

# The nonlinearities of the MLP family (models.mlp.ACTIVATIONS has exactly these)
ACTIVATION_KINDS = ("sigmoid", "relu", "tanh")

# The normalizations models.norms.make_norm builds (tests/test_vgg.py checks that NORMS has exactly these)
NORM_KINDS = ("none", "batch", "noisy-batch", "noise-only", "l1", "l2", "linf", "layer", "group")


def vgg_weight_layer_count(cfg) -> int:
    """Convolutions, the head's hidden layers, and the output layer."""
    return sum(1 for v in VGG_CFGS[cfg.cfg] if v != "M") + len(cfg.head) + 1


def dln_weight_layer_count(cfg) -> int:
    return cfg.dln_depth


def mlp_weight_layer_count(cfg) -> int:
    return cfg.mlp_depth + 1


# model kind -> its weight-layer count; models.MODELS adds each kind's builder (a test checks the kinds agree)
WEIGHT_LAYERS = {"vgg": vgg_weight_layer_count, "dln": dln_weight_layer_count, "mlp": mlp_weight_layer_count}
MODEL_KINDS = tuple(WEIGHT_LAYERS)  # the package's own; models.register_model adds to WEIGHT_LAYERS


def count_weight_layers(cfg) -> int:
    return WEIGHT_LAYERS[cfg.kind](cfg)
