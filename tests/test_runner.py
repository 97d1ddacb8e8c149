"""The local launcher: data loaded once per distinct input, through the dataset registry."""
import subprocess
import sys

import torch

from bnstudy import runner
from bnstudy.config import RunConfig, load_experiment, run_config
from bnstudy.data import CLASSIFICATION, DATASETS, DataKind, Dataset
from bnstudy.recording import RunDir

CPU = torch.device("cpu")


def fake_runs(monkeypatch):
    seen = []
    monkeypatch.setattr(runner, "train_run",
                        lambda config, run, dataset, device, progress, deadline, until_step=None:
                        seen.append(dataset) or {})
    monkeypatch.setattr(runner, "summary_line", lambda meta: "")
    return seen


def test_dln_data_are_shared_only_by_runs_of_the_same_width_and_seed(tmp_path, monkeypatch):
    """The cache key left out model.dln_width: a second width trained on the first width's data."""
    seen = fake_runs(monkeypatch)
    exp = load_experiment("dln")
    configs = [run_config(exp, "standard-lr1e-6", 0, "smoke", overrides)
               for overrides in ([], ["model.dln_width=4"], []) ]
    configs.append(run_config(exp, "standard-lr1e-6", 1, "smoke", []))
    runner.run_local([(c, RunDir(tmp_path, c.experiment, c.arm, c.seed)) for c in configs], CPU, None, False)
    assert [d.train_x.shape[1] for d in seen] == [10, 4, 10, 10]
    assert seen[0] is seen[2] and seen[0] is not seen[3]  # same inputs share; another seed draws its own A


def test_a_kind_added_to_the_registry_is_loaded_and_trained_with_its_task(monkeypatch):
    def tiny(cfg, data_dir, device):
        x = torch.zeros(4, 3, 32, 32)
        return Dataset("tiny", x, torch.zeros(4, dtype=torch.long), x, torch.zeros(4, dtype=torch.long))

    monkeypatch.setitem(DATASETS, "tiny", DataKind(CLASSIFICATION, ("vgg",), tiny))
    config = RunConfig(data=RunConfig().data.__class__(dataset="tiny"))
    assert runner.load_dataset(config, None, CPU).name == "tiny"


def test_a_processes_worker_ends_when_its_launcher_is_gone():
    """exit_with_parent in a process whose launcher is already gone (its parent is not the pid it was given):
    it ends at once, as a kill would, instead of sleeping (training) on."""
    code = "import os, sys, time; from bnstudy import runner; runner.exit_with_parent(os.getppid() + 1, 0.01); " \
           "time.sleep(120); sys.exit(0)"
    assert subprocess.run([sys.executable, "-c", code], timeout=100).returncode == 1


def test_a_processes_worker_lives_while_its_launcher_does():
    code = "import os, sys, time; from bnstudy import runner; runner.exit_with_parent(os.getppid(), 0.01); " \
           "time.sleep(1); sys.exit(0)"
    assert subprocess.run([sys.executable, "-c", code], timeout=100).returncode == 0
