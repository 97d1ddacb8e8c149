"""Results describe themselves: `bnstudy run` writes experiment.json beside the runs, and plot reads it, not the
experiment file, so a folder whose experiment file changed or went away is drawn as it was run."""
import json

import pytest

from bnstudy import config
from bnstudy.cli import main
from bnstudy.config import ConfigError, load_experiment
from bnstudy.manifest import MANIFEST, describe, experiment_manifest, read_manifest, write_manifest

TITLE = "noisy BN, an experiment of one's own"


def own_experiment(path, title: str, figures: str):
    text = (config.EXPERIMENTS_DIR / "noisy_bn.toml").read_text(encoding="utf-8")
    text = text.replace('figures = ["training", "activations", "moments"]', f"figures = {figures}")
    text = text.replace('name = "noisy-bn"', 'name = "own-noisy-bn"')
    path.write_text(text.replace(load_experiment("noisy-bn").title, title), encoding="utf-8")
    return path


def test_a_run_writes_the_manifest_and_plot_follows_it_after_the_file_changes_and_goes(tmp_path, capsys):
    own = own_experiment(tmp_path / "own.toml", TITLE, '["training", "moments"]')
    results = tmp_path / "results"
    assert main(["run", str(own), "--preset", "smoke", "--arms", "batchnorm", "--results-dir", str(results),
                 "--no-progress", "--set", "data.dataset=synthetic", "--set", "train.steps=4"]) == 0
    manifest = read_manifest(results / "own-noisy-bn")
    assert manifest == describe(load_experiment(str(own)))
    assert manifest.title == TITLE and manifest.figures == ("training", "moments")
    assert manifest.arms == tuple(load_experiment(str(own)).arms) and len(manifest.arms) > 1  # every arm, in order

    own_experiment(own, "a title written later", '["training"]')  # the file changes after the run ...
    assert main(["plot", "own-noisy-bn", "--results-dir", str(results)]) == 0
    own.unlink()  # ... and goes
    assert main(["plot", "own-noisy-bn", "--results-dir", str(results)]) == 0
    drawn = sorted(p.name for p in (results / "own-noisy-bn" / "figures").glob("*.png"))
    assert drawn == ["moments.png", "training.png"]
    assert "warning" not in capsys.readouterr().err


def test_presets_that_give_every_arm_one_configuration_are_alike():
    dln, vgg = describe(load_experiment("dln")), describe(load_experiment("noisy-bn"))
    assert dln.same_runs("quick", "paper") and dln.same_runs("long", "quick") and not dln.same_runs("smoke", "quick")
    assert not vgg.same_runs("quick", "long") and vgg.same_runs("quick", "quick")


def test_a_folder_without_a_manifest_is_described_by_todays_file_and_says_so(tmp_path, capsys):
    (tmp_path / "noisy-bn").mkdir()
    assert experiment_manifest(tmp_path, "noisy-bn") == describe(load_experiment("noisy-bn"))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and MANIFEST in err[0] and "today's experiment file" in err[0]


@pytest.mark.parametrize("damage", ["", "{not json", "[]", '{"format": 99}', '{"format": 1, "name": "x"}'])
def test_a_damaged_manifest_is_one_clear_error(tmp_path, damage):
    write_manifest(tmp_path, load_experiment("noisy-bn"))
    (tmp_path / MANIFEST).write_text(damage, encoding="utf-8")
    with pytest.raises(Exception) as error:
        read_manifest(tmp_path)
    assert str(tmp_path / MANIFEST) in str(error.value) and "\n" not in str(error.value)
    assert isinstance(error.value, ConfigError) or type(error.value).__name__ == "RecordError"


def test_the_manifest_round_trips_through_json(tmp_path):
    experiment = load_experiment("paper-figures")  # [plots] views with queries and options
    folder = tmp_path / experiment.name  # a manifest sits in its experiment's folder (and is refused elsewhere)
    folder.mkdir()
    write_manifest(folder, experiment)
    assert read_manifest(folder) == describe(experiment)
    assert json.loads((folder / MANIFEST).read_text())["format"] == 1
