"""The callback protocol the loop and the probes share, and the random streams derived per (seed, step)."""
import pytest
import torch

from bnstudy.config import load_experiment, run_config
from bnstudy.data import load_images
from bnstudy.probes.activations import ActivationRecorder
from bnstudy.probes.callback import Callback, Probe, StepContext, step_seed
from bnstudy.probes.curvature import CurvatureProbe
from bnstudy.probes.ics import ICSProbe
from bnstudy.probes.landscape import LandscapeProbe
from bnstudy.recording import RunDir

CPU = torch.device("cpu")


@pytest.mark.parametrize("cls", [LandscapeProbe, ICSProbe, CurvatureProbe, ActivationRecorder])
def test_every_probe_leaves_when_to_the_protocol(cls):
    """Each probe says what it measures; the `every` check and the empty after_step are the protocol's, once."""
    assert issubclass(cls, Probe) and issubclass(cls, Callback)
    assert "before_step" not in vars(cls) and "measure" in vars(cls)
    assert "after_step" not in vars(cls) or cls is ActivationRecorder  # the recorder hands over its hooks' rows


def test_a_probe_measures_at_its_due_steps_only():
    class Count(Probe):
        def __init__(self, every):
            self.every, self.steps = every, []

        def measure(self, ctx):
            self.steps.append(ctx.step)
            return {"probes": [{"step": ctx.step}]}

    probe = Count(every=3)
    out = [probe.before_step(StepContext(s, None, None, None, 0.1, None)) for s in range(7)]
    assert probe.steps == [0, 3, 6] and out[1] == {} and out[3] == {"probes": [{"step": 3}]}
    assert probe.after_step(StepContext(0, None, None, None, 0.1, None)) == {}


def test_step_seeds_never_collide_across_seeds_and_steps():
    seeds = {step_seed(seed, step) for seed in range(20) for step in range(0, 15_001, 7)}
    assert len(seeds) == 20 * len(range(0, 15_001, 7))
    assert step_seed(0, 1) != step_seed(1, 0)


def test_recalibration_draws_its_own_stream_not_the_next_seeds_data_order(tmp_path, monkeypatch):
    """seed + 1 made seed s's 50 recalibration batches exactly seed s + 1's first training batches."""
    from bnstudy import train

    used = []
    real = train.recalibrated
    monkeypatch.setattr(train, "recalibrated",
                        lambda *args, seed, **kw: used.append(seed) or real(*args, seed=seed, **kw))
    config = run_config(load_experiment("noisy-bn"), "noisy-batchnorm", 0, "smoke", ["data.dataset=synthetic"])
    meta = train.train_run(config, RunDir(tmp_path, config.experiment, config.arm, config.seed),
                           load_images(config.data, None, CPU), CPU, progress=False)
    assert meta["final_test_acc_recal"] is not None
    assert used == [step_seed(config.seed, config.train.steps)]  # after the last step: no probe draws it either
    assert used[0] != config.seed + 1  # BatchOrder(n, batch, 1): seed 1's own training batches
    recalibrations = {step_seed(seed, config.train.steps) for seed in range(100)}
    assert len(recalibrations) == 100 and not recalibrations & set(range(1, 4))  # nor seeds 1..3's data order
