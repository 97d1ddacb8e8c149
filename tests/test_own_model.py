"""A network and a data set of one's own, added without editing bnstudy: a small ResNet, with and without BN, on a
data set registered from here, through an experiment file of one's own at smoke scale: trained, probed (ICS,
landscape, lambda_max, activations), its figures drawn and its runs reported."""
import pytest
import torch
from torch import nn

from bnstudy import architectures, data, models
from bnstudy.cli import main
from bnstudy.config import ConfigError
from bnstudy.models import make_norm


class Block(nn.Module):
    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.conv1, self.norm1 = nn.Conv2d(channels, channels, 3, padding=1), make_norm(norm, channels, True)
        self.conv2, self.norm2 = nn.Conv2d(channels, channels, 3, padding=1), make_norm(norm, channels, True)

    def forward(self, x):
        return torch.relu(x + self.norm2(self.conv2(torch.relu(self.norm1(self.conv1(x))))))


class TinyResNet(nn.Module):
    """stem conv (#1), one residual block (#2, #3), a linear head (#4); norm = bnstudy's kinds ('none', 'batch')."""

    def __init__(self, norm: str, width: int = 8):
        super().__init__()
        self.stem, self.stem_norm = nn.Conv2d(3, width, 3, padding=1), make_norm(norm, width, True)
        self.block = Block(width, norm)
        self.head = nn.Linear(width, 10)

    def preactivation(self, k: int) -> nn.Module:  # what the activation probe reads at weight layer #k
        return [self.stem_norm, self.block.norm1, self.block.norm2, self.head][k - 1]

    def forward(self, x):
        x = self.block(torch.relu(self.stem_norm(self.stem(x))))
        return self.head(x.mean(dim=(2, 3)))


def tiny_images(cfg, data_dir, device):
    """A data set of one's own: 10 classes of 3 x 16 x 16 images, each class a fixed pattern plus noise."""
    generator = torch.Generator().manual_seed(0)
    patterns = torch.randn(10, 3, 16, 16, generator=generator)

    def split(n):
        labels = torch.randint(0, 10, (n,), generator=generator)
        return (patterns[labels] + 0.5 * torch.randn(n, 3, 16, 16, generator=generator)).to(device), labels.to(device)

    (train_x, train_y), (test_x, test_y) = split(cfg.train_size or 256), split(cfg.test_size or 128)
    return data.Dataset("tiny patterns (a test's own)", train_x, train_y, test_x, test_y)


EXPERIMENT = """
name = "tiny-resnet"
title = "A ResNet of one's own, with and without BN"
default_arms = ["standard", "batchnorm"]
figures = ["training", "ics", "landscape", "curvature", "activations"]

[base]
model.kind = "tiny-resnet"
data.dataset = "tiny-patterns"
activations.layers = [2]
ics = { every = 4, layers = [2, 3] }
landscape.every = 4
curvature = { every = 6, max_hvps = 20 }

[arms.standard.model]
norm = "none"
[arms.batchnorm.model]
norm = "batch"

[presets.smoke]
train = { steps = 12, batch_size = 32, log_every = 4, eval_every = 6, checkpoint_every = 6 }
activations.every = 4
"""


@pytest.fixture
def registered():
    """Registered as a user's own script would; the registries (the package's own dicts, which the configuration
    reads live) are put back as they were after the test."""
    registries = (models.MODELS, architectures.WEIGHT_LAYERS, architectures.DATASET_MODELS, data.DATASETS)
    saved = [dict(registry) for registry in registries]
    data.register_dataset("tiny-patterns", tiny_images)
    models.register_model("tiny-resnet", lambda cfg: TinyResNet(cfg.norm), weight_layers=4,
                          datasets=("tiny-patterns",))
    yield
    for registry, before in zip(registries, saved):
        registry.clear()
        registry.update(before)


def test_a_model_and_data_set_of_ones_own_run_probe_plot_and_report(tmp_path, registered):
    experiment = tmp_path / "tiny_resnet.toml"
    experiment.write_text(EXPERIMENT, encoding="utf-8")
    results = tmp_path / "results"
    assert main(["run", str(experiment), "--preset", "smoke", "--seeds", "0", "--results-dir", str(results),
                 "--no-progress"]) == 0
    assert main(["plot", str(experiment), "--results-dir", str(results)]) == 0
    figures = {p.stem for p in (results / "tiny-resnet" / "figures").glob("*.png")}
    assert figures == {"training", "ics", "landscape", "curvature", "activations"}
    assert main(["report", "--results-dir", str(results)]) == 0
    report = (results / "REPORT.md").read_text(encoding="utf-8")
    assert "## tiny-resnet: A ResNet of one's own, with and without BN" in report
    assert "tiny patterns (a test's own)" in report


def test_a_registered_model_is_refused_on_data_it_was_not_registered_for(tmp_path, registered, capsys):
    experiment = tmp_path / "tiny_resnet.toml"
    experiment.write_text(EXPERIMENT.replace('data.dataset = "tiny-patterns"', 'data.dataset = "gaussian"'),
                          encoding="utf-8")
    assert main(["run", str(experiment), "--preset", "smoke", "--results-dir", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    assert "model.kind 'tiny-resnet' cannot train on data.dataset 'gaussian'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="register_model\\('other'\\): unknown data set svhn"):
        models.register_model("other", lambda cfg: TinyResNet("none"), weight_layers=4, datasets=("svhn",))
    assert "other" not in models.MODELS  # refused whole: nothing half-registered
