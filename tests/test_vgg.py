import pytest
import torch
from torch import nn

from bnstudy.config import ModelConfig
from bnstudy.models import NORMS, VGG, VGG_CFGS, BatchNoise, count_weight_layers, layer, weight_layers

# VGG-16 at width 1 with head 512 -> 512 -> 512 -> 10, counted by hand:
# convs 3x3 (weights + biases): 1,792 + 36,928 + 73,856 + 147,584 + 295,168 + 2 x 590,080
#   + 1,180,160 + 2 x 2,359,808 + 3 x 2,359,808 = 14,714,688
# linear: 2 x (512 x 512 + 512) + (512 x 10 + 10) = 530,442
VGG16_PARAMS = 14_714_688 + 530_442
# BN: scale and shift per unit: 2 x (64x2 + 128x2 + 256x3 + 512x6 + 512x2) = 10,496
VGG16_BN_PARAMS = VGG16_PARAMS + 10_496


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_hand_computed_values():
    assert n_params(VGG(16, 1.0, (512, 512), "none")) == VGG16_PARAMS
    assert n_params(VGG(16, 1.0, (512, 512), "batch")) == VGG16_BN_PARAMS
    assert n_params(VGG(16, 1.0, (512, 512), "noisy-batch")) == VGG16_BN_PARAMS  # the noise has no parameters


@pytest.mark.parametrize("cfg", sorted(VGG_CFGS))
@pytest.mark.parametrize("norm", sorted(NORMS))
def test_output_shape_for_every_cfg_and_norm(cfg, norm):
    model = VGG(cfg, 0.125, (64, 64), norm)
    assert model(torch.randn(4, 3, 32, 32)).shape == (4, 10)
    convs = sum(1 for v in VGG_CFGS[cfg] if v != "M")
    assert len(weight_layers(model)) == convs + 3 == count_weight_layers(ModelConfig(cfg=cfg, head=(64, 64)))


def test_standard_network_has_no_norm_modules():
    model = VGG(16, 0.25, (512, 512), "none")
    assert not any(isinstance(m, (nn.modules.batchnorm._BatchNorm, BatchNoise)) for m in model.modules())


def test_layer_numbering_follows_the_paper():
    model = VGG(16, 0.25, (512, 512), "batch")
    assert isinstance(layer(model, 1), nn.Conv2d) and layer(model, 1).in_channels == 3
    assert isinstance(layer(model, 13), nn.Conv2d) and isinstance(layer(model, 14), nn.Linear)
    assert layer(model, 16).out_features == 10
    # the pre-activation of #k is the norm right after weight layer #k
    features = list(model.features)
    conv5 = features.index(layer(model, 5))
    assert model.preactivation(5) is features[conv5 + 1]
    assert isinstance(features[conv5 + 2], nn.ReLU)
    assert model.preactivation(16) is layer(model, 16)
    with pytest.raises(IndexError, match="#17 out of range"):
        layer(model, 17)


def test_glorot_init_and_zero_biases_and_paired_seeds():
    torch.manual_seed(0)
    a = VGG(16, 0.25, (512, 512), "none")
    torch.manual_seed(0)
    b = VGG(16, 0.25, (512, 512), "noisy-batch")
    for la, lb in zip(weight_layers(a), weight_layers(b)):
        assert torch.equal(la.weight, lb.weight)  # same seed, same weights, whatever the norm
        assert torch.count_nonzero(la.bias) == 0
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(la.weight)
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert la.weight.abs().max() <= bound
        assert la.weight.abs().max() > 0.9 * bound  # uniform over the whole Glorot range


def test_the_torch_free_architecture_names_what_the_models_build():
    from bnstudy import architectures
    from bnstudy.models import MODELS

    from bnstudy.data import DATASETS

    assert tuple(NORMS) == architectures.NORM_KINDS and tuple(MODELS) == architectures.MODEL_KINDS
    assert set(DATASETS) == set(architectures.DATASET_MODELS)


def test_validating_a_config_imports_no_model_code():
    import subprocess
    import sys

    code = ("import sys, bnstudy.config as c; c.run_config(c.load_experiment('noisy-bn'), 'batchnorm', 0, 'quick'); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('bnstudy.models')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_init_kinds_are_the_ones_models_build():
    from bnstudy import architectures
    from bnstudy.models.inits import INITS

    assert tuple(INITS) == architectures.INIT_KINDS


def test_kaiming_init_has_variance_two_over_fan_in():
    torch.manual_seed(0)
    model = VGG(16, 0.5, (256, 256), "none", init="kaiming")
    for weight_layer in weight_layers(model)[2:]:  # layers with thousands of weights: the sample std is close
        fan_in = weight_layer.weight[0].numel()
        assert weight_layer.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)
        assert not weight_layer.bias.any()


def test_glorot_shrinks_the_no_bn_logits_that_kaiming_keeps():
    """Each ReLU layer halves the second moment under Glorot (fan_in = fan_out): after 15 of them the logits
    of the no-BN VGG barely depend on the input, the plateau the quick preset shows; He init keeps the scale."""
    x = torch.randn(64, 3, 32, 32)
    scale = {}
    for init in ("glorot", "kaiming"):
        torch.manual_seed(0)
        with torch.no_grad():
            scale[init] = VGG(16, 0.25, (512, 512), "none", init=init)(x).std().item()
    assert scale["kaiming"] > 30 * scale["glorot"]


def test_an_unknown_init_is_a_config_error():
    from bnstudy.config import ConfigError, load_experiment, run_config

    with pytest.raises(ConfigError, match="unknown model.init 'he'; known: glorot, kaiming"):
        run_config(load_experiment("noisy-bn"), "standard", 0, "smoke", ["model.init=he"])
