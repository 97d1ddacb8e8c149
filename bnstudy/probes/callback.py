"""The training loop's callback protocol, and the one scheme that gives a probe a random stream per step.

The loop (bnstudy.train) calls, at every step, `before_step(ctx)` on the batch and the pre-step weights,
then takes one SGD step, then `after_step(ctx)`; each returns {table name: rows} (empty: nothing to write).
A `Probe` measures every `every` steps, before the step: it says *what* it measures (`measure`), and the
check of *when* is made here, once. Any object with the two methods is a callback; deriving is optional.

This module imports nothing of bnstudy, so the training loop and the probes can both import it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from bnstudy.config import RunConfig

Rows = dict[str, list[dict]]  # table name ("probes", "activations", ...) -> rows to append


@dataclass
class StepContext:
    """What a callback sees at one step."""

    step: int
    model: nn.Module
    batch: tuple[torch.Tensor, torch.Tensor]
    loss_fn: object
    lr: float
    config: RunConfig


class Callback:
    """A training callback that writes nothing: override either method."""

    def before_step(self, ctx: StepContext) -> Rows:
        return {}

    def after_step(self, ctx: StepContext) -> Rows:
        return {}


class Probe(Callback):
    """A callback that measures at the steps `due` says (every `every` steps), before the step."""

    every: int

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def before_step(self, ctx: StepContext) -> Rows:
        return self.measure(ctx) if self.due(ctx.step) else {}

    def measure(self, ctx: StepContext) -> Rows:
        raise NotImplementedError


STREAMS_PER_SEED = 1_000_003  # above the steps of any preset's run (15,000 at most); config allows up to 10**9


def step_seed(seed: int, step: int) -> int:
    """The seed of a run's random stream at one step: a function of (seed, step), so a resumed run draws what an
    uninterrupted one would, and distinct for distinct (seed, step) while step < STREAMS_PER_SEED (seed 0's
    stream at step 1 is not seed 1's at step 0, as `seed + step` would make it)."""
    return seed * STREAMS_PER_SEED + step
