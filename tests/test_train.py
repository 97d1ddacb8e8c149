"""The loop: determinism, resume, divergence — on the synthetic set, in seconds."""
import pandas as pd
import pytest
import torch

from bnstudy.config import load_experiment, run_config
from bnstudy.data import load_images
from bnstudy.probes.activations import PERCENTILES, quantiles, unit_statistics
from bnstudy.recording import RunDir, table_bytes
from bnstudy.train import train_run

CPU = torch.device("cpu")


def smoke(arm="noisy-batchnorm", seed=0, overrides=()):
    return run_config(load_experiment("noisy-bn"), arm, seed, "smoke", ["data.dataset=synthetic", *overrides])


def run(tmp_path, config, callbacks=None):
    dataset = load_images(config.data, None, CPU)
    return train_run(config, RunDir(tmp_path, config.experiment, config.arm, config.seed), dataset, CPU,
                     callbacks=callbacks, progress=False)


def csvs(tmp_path, config):
    folder = RunDir(tmp_path, config.experiment, config.arm, config.seed).path
    return {name: table_bytes(folder, name) for name in ("metrics", "activations", "probes")}


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path):
    run(tmp_path / "a", smoke(seed=0))
    run(tmp_path / "b", smoke(seed=0))
    run(tmp_path / "c", smoke(seed=1))
    assert csvs(tmp_path / "a", smoke(seed=0)) == csvs(tmp_path / "b", smoke(seed=0))
    assert csvs(tmp_path / "a", smoke(seed=0))["metrics"] != csvs(tmp_path / "c", smoke(seed=1))["metrics"]


class Crash(Exception):
    pass


class CrashAt:
    def __init__(self, step):
        self.step = step

    def before_step(self, ctx):
        if ctx.step == self.step:
            raise Crash()
        return {}

    def after_step(self, ctx):
        return {}


def test_resume_after_a_crash_gives_the_uninterrupted_numbers(tmp_path):
    config = smoke()  # checkpoints every 6 of 12 steps
    run(tmp_path / "whole", config)
    with pytest.raises(Crash):
        run(tmp_path / "resumed", config, callbacks=[CrashAt(9)])
    assert RunDir(tmp_path / "resumed", config.experiment, config.arm, config.seed).read_meta()["status"] == "running"
    meta = run(tmp_path / "resumed", config)
    assert meta["status"] == "complete"
    assert csvs(tmp_path / "whole", config) == csvs(tmp_path / "resumed", config)


def test_divergence_is_a_result(tmp_path):
    config = smoke(arm="standard", overrides=["train.lr=1e3", "train.steps=30"])
    meta = run(tmp_path, config)
    assert meta["status"] == "diverged" and meta["diverged_at"] is not None
    metrics = pd.read_csv(RunDir(tmp_path, config.experiment, config.arm, config.seed).table_path("metrics"))
    assert metrics.step.max() == meta["diverged_at"] < 29


def test_activation_rows_are_recorded_at_t_and_t_plus_1(tmp_path):
    config = smoke(arm="batchnorm")
    run(tmp_path, config)
    acts = pd.read_csv(RunDir(tmp_path, config.experiment, config.arm, config.seed).table_path("activations"))
    assert sorted(acts.step.unique()) == [0, 1, 5, 6, 10, 11]
    assert sorted(acts.layer.unique()) == [2, 9, 13]
    assert set(acts.stat) == {"p05", "p15", "p50", "p85", "p95", "mean", "var"}
    wide = acts.pivot_table(index=["step", "layer", "unit"], columns="stat", values="value")
    assert (wide.p05 <= wide.p15).all() and (wide.p15 <= wide.p50).all() and (wide.p85 <= wide.p95).all()
    # BN in train mode at init (scale 1, shift 0): each unit has mean 0 and variance 1 over the batch
    first = wide.loc[0]
    assert first["mean"].abs().max() < 1e-4 and (first["var"] - 1).abs().max() < 1e-2


def test_activations_record_the_training_forward_only_when_probes_share_the_step(tmp_path):
    from bnstudy.runner import load_dataset

    # probes and recording at step 0, 5, ...
    config = run_config(load_experiment("dln"), "batchnorm-lr1e-6", 0, "smoke")
    train_run(config, RunDir(tmp_path, config.experiment, config.arm, config.seed), load_dataset(config, None, CPU),
              CPU, progress=False)
    acts = pd.read_csv(RunDir(tmp_path, config.experiment, config.arm, config.seed).table_path("activations"))
    assert not acts.duplicated(["step", "layer", "unit", "stat"]).any()


def test_unit_statistics_against_known_order_statistics_and_torch():
    # unit 1 holds 0..100 over (batch, space): its p-th percentile is exactly p
    x = torch.zeros(101, 3, 1, 1)
    x[:, 1, 0, 0] = torch.arange(101.0)[torch.randperm(101)]
    stats = unit_statistics(x, [1])
    for name, level in PERCENTILES.items():
        assert stats[name].item() == pytest.approx(100 * level)
    assert stats["mean"].item() == pytest.approx(50.0) and stats["var"].item() == pytest.approx(850.0)
    # the CPU (numpy selection) path gives torch.quantile's numbers
    y = torch.randn(16, 8, 32, 32)
    levels = list(PERCENTILES.values())
    rows = y[:, [0, 5]].transpose(0, 1).reshape(2, -1)
    assert torch.allclose(quantiles(rows, levels), torch.quantile(rows, torch.tensor(levels), dim=1), atol=0, rtol=1e-6)


def test_the_progress_bar_ends_on_the_final_test_accuracy(tmp_path, capsys):
    config = smoke(arm="batchnorm")  # evaluations at steps 6 and 12
    dataset = load_images(config.data, None, CPU)
    meta = train_run(config, RunDir(tmp_path, config.experiment, config.arm, config.seed), dataset, CPU, progress=True)
    shown = capsys.readouterr().err.rsplit("test_acc=", 1)[1][:5]
    metrics = pd.read_csv(RunDir(tmp_path, config.experiment, config.arm, config.seed).table_path("metrics"))
    test = metrics[(metrics.split == "test") & (metrics.metric == "acc")].set_index("step").value
    assert test[6] != test[12] and float(shown) == pytest.approx(meta["final_test_acc"], abs=1e-3)


def test_a_run_folder_has_one_writer(tmp_path):
    """A second trainer of the same run (a `processes` worker that outlived its launcher, beside the next
    launcher's) is refused in one line and writes nothing there."""
    from bnstudy.recording import ResultsLock
    config = smoke("batchnorm")
    folder = RunDir(tmp_path, config.experiment, config.arm, config.seed).path
    with ResultsLock(folder):
        with pytest.raises(FileExistsError, match="in use by another bnstudy run"):
            run(tmp_path, config)
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]
    assert run(tmp_path, config)["status"] == "complete"  # released: the run trains
