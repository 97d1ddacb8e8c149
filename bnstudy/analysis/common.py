"""What every probe kind's analysis shares: one probe row, finding runs, early and late, mid-training, chance."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

KEYS = ["arm", "seed"]  # one run; every summary frame is keyed by them
CHANCE = 0.1  # CIFAR-10: ten balanced classes


def probe_row(step: int, probe: str, layer: int, metric: str, value, eta: float | None = None) -> dict:
    """One row of probes.csv (bnstudy.recording declares its columns; the run adds arm and seed). eta is the
    landscape probe's step size alone: empty for every other probe (the run's LR is in meta.json)."""
    return {"step": step, "probe": probe, "layer": layer, "eta": eta, "metric": metric, "value": value}


def matches(frame: pd.DataFrame, query: dict) -> pd.Series:
    """Which rows' configuration columns (norm, lr, init, ...) equal every value of `query` (floats to 1e-9):
    how claims and figures find runs by what they are. A column the frame lacks matches nothing."""
    mask = pd.Series(True, index=frame.index)
    for key, value in query.items():
        column = frame[key] if key in frame else pd.Series(index=frame.index, dtype=object)
        mask &= (np.isclose(pd.to_numeric(column, errors="coerce"), value, rtol=1e-9, atol=0)
                 if isinstance(value, float) else column.eq(value))
    return mask


EARLY = 0.25  # "early in training": the first quarter of the run's configured schedule (steps 0-3,750 of 15,000)
EARLY_PHASE, LATE_PHASE = "early", "late"


def phase_column(phase: str, column: str) -> str:
    """The name of a column's median over one phase of a run: 'early_beta_eff'."""
    return f"{phase}_{column}"


def first_quarter_end(steps) -> float:
    """The step that ends the first quarter of a schedule of `steps` steps: early is every step before it."""
    return EARLY * steps


def phase(frame: pd.DataFrame, meta: pd.DataFrame) -> pd.Series:
    """EARLY_PHASE for each run's rows at steps in the first quarter of its configured schedule (meta's `steps`),
    LATE_PHASE after, however far the run went (a run stopped at the quarter's end has no late rows)."""
    schedule = frame[KEYS].merge(meta[KEYS + ["steps"]].drop_duplicates(KEYS), on=KEYS, how="left").steps
    early = frame.step.to_numpy() < first_quarter_end(schedule.to_numpy())
    return pd.Series(np.where(early, EARLY_PHASE, LATE_PHASE), index=frame.index)


def phase_medians(frame: pd.DataFrame, columns: list[str], meta: pd.DataFrame) -> pd.DataFrame:
    """Per run, the median of each column early and late, as columns phase_column(phase, column)."""
    medians = frame.assign(phase=phase(frame, meta)).groupby(KEYS + ["phase"])[columns].median().unstack()
    medians.columns = [phase_column(p, column) for column, p in medians.columns]
    return medians.reset_index()


def at_mid_training(frame: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """Per run, the rows of its probed step closest to half its steps (meta.json's `steps`)."""
    frame = frame.merge(steps[["arm", "seed", "steps"]], on=KEYS)
    distance = (frame.step - frame.steps / 2).abs()
    nearest = distance.groupby([frame.arm, frame.seed]).transform("min")
    return frame[distance == nearest].drop(columns="steps")


class StepTable(NamedTuple):
    """The key of a table with one row per probed step (not per run) among the tables that report.collect hands to
    the claims: beside the experiment's per-run summary, keyed by the experiment's name alone. Written
    '<experiment>:<table>' where a verdict names it."""

    experiment: str
    table: str  # what the probe kind's analysis module calls it (e.g. analysis.landscape.STEPS)

    def __str__(self) -> str:
        return f"{self.experiment}:{self.table}"


def experiment_of(key: str | StepTable) -> str:
    """The experiment whose runs a table holds: its key, or a StepTable's experiment."""
    return key.experiment if isinstance(key, StepTable) else key
