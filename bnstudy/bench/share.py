"""What the probes of a `paper-figures` group-1 run (standard and batchnorm at LR 0.1: every probe) cost at the long
preset's cadence, against the same training steps without them: the probes' share of a run's time.

Each probe is timed by the loop's own step with the probe due at every step, less the step alone, and counted once
per its `every` steps (the activations twice: at t and t + 1); the test evaluation once per `eval_every`, scaled
to the test set a run evaluates. A stretch of a real run would need thousands of steps to see each probe at its
cadence; this gives the same sum in seconds, from the loop's own code."""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch

from bnstudy.bench.common import Row, _measured_on, _target, bench_setup, our_step, seconds
from bnstudy.config import load_experiment, run_config
from bnstudy.probes.activations import ActivationRecorder
from bnstudy.train import evaluate_test, make_state, probe_callbacks

SHARE_TARGET = 1.3  # a run with every probe at most 1.3 x the time of its training steps
TEST_IMAGES = 10_000  # what a CIFAR-10 run evaluates every `eval_every` steps
WARM_STEPS = 20  # steps before timing: the curvature probe's Lanczos takes longer on the weights at initialization


def group_one_config(data, width: float, batch: int):
    """paper-figures' batchnorm arm at the long preset (every probe, its cadence), on the bench's data and width,
    with no evaluation, checkpoint or end inside a bench."""
    config = run_config(load_experiment("paper-figures"), "batchnorm", 0, "long",
                        [f"model.width={width}", f"train.batch_size={batch}"])
    never = 10**9
    return dataclasses.replace(config, data=data, train=dataclasses.replace(
        config.train, steps=never, eval_every=never, checkpoint_every=never))


def probe_share_rows(device: torch.device, data_dir: Path | None, width: float, batch: int,
                     min_run_time: float) -> list[Row]:
    dataset, _, data = bench_setup(device, data_dir, width)
    config = group_one_config(data, width, batch)
    cadence = run_config(load_experiment("paper-figures"), "batchnorm", 0, "long").train  # the run's own
    state = make_state(config, dataset, device)
    for _ in range(WARM_STEPS):
        our_step(state, dataset, config)()
    t_step = seconds(our_step(state, dataset, config), min_run_time)
    shares = {}
    for callback in probe_callbacks(config, state.model):
        always = copy.copy(callback)
        always.every = 1  # due at every step: its cost, on top of the step
        t_with = seconds(our_step(state, dataset, config, [always]), min_run_time)
        per_every = 2 if isinstance(callback, ActivationRecorder) else 1  # recorded at t and t + 1
        name = type(callback).__name__.removesuffix("Probe").removesuffix("Recorder").lower()
        name += f" ({callback.direction})" if hasattr(callback, "direction") else ""
        shares[name] = max(t_with - t_step, 0.0) * per_every / callback.every
    scale = TEST_IMAGES / len(dataset.test_x)
    shares["evaluation"] = seconds(lambda: evaluate_test(state.model, dataset, config), min_run_time) * scale \
        / cadence.eval_every
    ratio = 1 + sum(shares.values()) / t_step
    note = ", ".join(f"{name} {share / t_step:.1%}" for name, share in shares.items())
    return _measured_on([Row("paper-figures group 1 at the long cadence: time with every probe / training steps alone",
                             ratio, "ratio", *_target(ratio, "<=", SHARE_TARGET),
                             f"step {t_step * 1e3:.0f} ms; per step: {note}")], dataset.name)
