import pytest

from bnstudy.config import ConfigError, RunConfig, build, load_experiment, parse_override, run_config


@pytest.fixture(scope="module")
def noisy_bn():
    return load_experiment("noisy-bn")


def test_arm_and_preset_compose(noisy_bn):
    quick = run_config(noisy_bn, "noisy-batchnorm", seed=3, preset="quick")
    assert quick.model.norm == "noisy-batch" and quick.model.width == 0.25 and quick.seed == 3
    paper = run_config(noisy_bn, "standard", seed=0, preset="paper")
    assert (paper.model.norm, paper.model.width, paper.model.cfg, paper.model.head) == ("none", 1.0, 16, (512, 512))
    assert (paper.train.steps, paper.train.batch_size, paper.train.lr) == (15_000, 128, 0.1)
    assert (paper.model.noise.n_mu, paper.model.noise.n_sigma, paper.model.noise.r_mu, paper.model.noise.r_sigma) == (
        0.5, 1.25, 0.1, 0.1)
    assert paper.data.augment is False
    assert noisy_bn.arms_for("paper") == ("standard", "batchnorm", "noisy-batchnorm", "noise-only")
    assert noisy_bn.arms_for("quick") == ("standard", "batchnorm", "noisy-batchnorm")


def test_set_overrides_with_type_checks(noisy_bn):
    config = run_config(noisy_bn, "batchnorm", 0, "quick", ["train.lr=0.5", "model.norm=none", "activations.layers=[3, 11]"])
    assert (config.train.lr, config.model.norm, config.activations.layers) == (0.5, "none", (3, 11))
    assert parse_override("model.noise.n_mu=0.25") == {"model": {"noise": {"n_mu": 0.25}}}


@pytest.mark.parametrize("overrides, message", [
    (["train.lr=-0.1"], "train.lr must be > 0"),
    (["train.lr=0"], "train.lr must be > 0"),
    (["train.steps=0"], "train.steps must be > 0"),
    (["train.steps=1.5"], "train.steps must be an integer"),
    (["train.lrr=0.1"], "--set train.lrr: no such key"),
    (["model.norm=bacth"], "unknown model.norm 'bacth'; known: none, batch"),
    (["model.cfg=12"], "unknown model.cfg 12; known: 11, 13, 16, 19"),
    (["activations.layers=[2, 40]"], "layer #40 out of range; this vgg has weight layers #1..#16"),
    (["model.width=0"], "model.width must be > 0"),
    (["train.lr"], "--set expects section.key=value"),
])
def test_bad_values_are_clear_errors(noisy_bn, overrides, message):
    with pytest.raises(ConfigError, match=message):
        run_config(noisy_bn, "batchnorm", 0, "quick", overrides)


def test_unknown_arm_preset_and_experiment(noisy_bn):
    with pytest.raises(ConfigError, match="unknown arm 'bn' in experiment noisy-bn; known: standard"):
        run_config(noisy_bn, "bn", 0, "quick")
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        run_config(noisy_bn, "batchnorm", 0, "fast")
    with pytest.raises(ConfigError, match="unknown experiment 'nosiy-bn'; known: .*noisy-bn"):
        load_experiment("nosiy-bn")


def test_unknown_key_in_a_file_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'train.stpes'"):
        build(RunConfig, {"train": {"stpes": 3}})
    path = tmp_path / "broken.toml"
    path.write_text("name = 'broken'\n[arms.a.model\nnorm = 'none'\n")
    with pytest.raises(ConfigError, match="malformed TOML"):
        load_experiment(str(path))
    path.write_text("name = 'typo'\n[arms.a.model]\nnorm = 'nonee'\n")
    with pytest.raises(ConfigError, match="unknown model.norm 'nonee'"):
        load_experiment(str(path))  # a broken arm fails at load, before any training
