"""The training curves (metrics.csv) and the runs' final numbers (meta.json): sweeps per kind = norm x init, the best
LR and the largest that trains, when a run leaves chance or reaches an accuracy, and the smoothed curves figures
draw."""
from __future__ import annotations

import pandas as pd

from bnstudy.analysis.common import CHANCE, KEYS

TRAINS_MARGIN = 0.1  # "still trains": final training accuracy at least this far above chance


def kind_label(norm, init):
    """The label of a kind (norm and init), e.g. 'none, kaiming': works on strings and on Series alike."""
    return norm + ", " + init


def arm_kind(meta: pd.DataFrame) -> pd.Series:
    """What a run is apart from its LR and seed: its norm and its init, e.g. 'none, kaiming'."""
    init = meta["init"] if "init" in meta else pd.Series("glorot", index=meta.index)
    return kind_label(meta.norm, init.fillna("glorot"))


def sweep_table(meta: pd.DataFrame) -> pd.DataFrame:
    """One row per run of a learning-rate sweep: kind (norm, init), lr, seed, final training accuracy, whether
    it trains, and `scored`: that accuracy with a diverged run counted as chance."""
    table = meta[["arm", "seed", "norm", "lr", "status", "diverged_at", "final_train_acc_last100"]].copy()
    table["kind"] = arm_kind(meta)
    table["init"] = meta["init"] if "init" in meta else "glorot"
    table["trains"] = (table.status == "complete") & (table.final_train_acc_last100 >= CHANCE + TRAINS_MARGIN)
    table["scored"] = table.final_train_acc_last100.where(table.status == "complete", CHANCE)
    return table.sort_values(["kind", "lr", "seed"])


def largest_trainable_lr(table: pd.DataFrame) -> pd.Series:
    """Per kind (norm, init): the largest LR at which every seed still trains (NaN where none does)."""
    per_lr = table.groupby(["kind", "lr"]).trains.all().reset_index()
    return per_lr[per_lr.trains].groupby("kind").lr.max().reindex(table.kind.unique())


def best_lr(table: pd.DataFrame) -> pd.Series:
    """Per kind: the LR whose training accuracy (last 100 steps, diverged = chance), averaged over seeds, is highest:
    one LR per kind for every seed, so a seed's luck does not pick its own LR."""
    mean = table.groupby(["kind", "lr"]).scored.mean().reset_index()
    return mean.loc[mean.groupby("kind").scored.idxmax()].set_index("kind").lr


def controls_runs(meta: pd.DataFrame) -> pd.DataFrame:
    """One row per run: kind, init, lr, whether it trains, whether its LR is its kind's best, and its LR over the
    kind's largest LR that trains (eta / eta_max; NaN where the kind never trains)."""
    table = sweep_table(meta)
    best, largest = best_lr(table), largest_trainable_lr(table)
    return table.assign(best=table.lr == table.kind.map(best), eta_ratio=table.lr / table.kind.map(largest))


def train_accuracy(metrics: pd.DataFrame) -> pd.DataFrame:
    """The per-step training accuracy rows, in step order."""
    return metrics[(metrics.split == "train") & (metrics.metric == "acc")].sort_values("step")


LEAVES_CHANCE = CHANCE + 0.05  # "left chance": the recent training accuracy at least 5 points above chance
LEAVES_WINDOW = 10  # steps averaged (1,280 examples at batch 128: chance's 10% has a standard error of 0.8 points)
LEFT_CHANCE_AT = "left_chance_at"  # the summary's column


def left_chance_at(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per run, the first step at which the mean training accuracy over the last LEAVES_WINDOW steps is at least
    LEAVES_CHANCE (NaN if never): column LEFT_CHANCE_AT."""
    acc = train_accuracy(metrics)
    rolling = acc.groupby(KEYS).value.transform(lambda v: v.rolling(LEAVES_WINDOW).mean())
    above = acc[rolling >= LEAVES_CHANCE]
    first = above.groupby(KEYS).step.min().rename(LEFT_CHANCE_AT)
    runs = acc[KEYS].drop_duplicates().set_index(KEYS)
    return runs.join(first).reset_index()


REACHES = 0.6  # claim 1b: "reaches 60% training accuracy", the mean over the last REACH_WINDOW steps
REACH_WINDOW = 100  # steps (12,800 examples at batch 128: a standard error of 0.4 points at 60%)
REACHED_AT = "reached_at"  # the summary's column


def reached_at(metrics: pd.DataFrame, level: float = REACHES) -> pd.DataFrame:
    """Per run, the first step at which the mean training accuracy over the last REACH_WINDOW steps is at least
    `level` (NaN if never): column REACHED_AT."""
    acc = train_accuracy(metrics)
    rolling = acc.groupby(KEYS).value.transform(lambda v: v.rolling(REACH_WINDOW).mean())
    first = acc[rolling >= level].groupby(KEYS).step.min().rename(REACHED_AT)
    return acc[KEYS].drop_duplicates().set_index(KEYS).join(first).reset_index()


TEST_REACHES = 0.95  # claim 14a: "reaches 95% test accuracy" (Ioffe & Szegedy's Fig. 1a: both networks pass it)
TEST_REACHED_AT = "test_reached_at"  # the summary's column


def test_reached_at(metrics: pd.DataFrame, level: float = TEST_REACHES) -> pd.DataFrame:
    """Per run, the first evaluated step at which the test accuracy is at least `level` (NaN if never): column
    TEST_REACHED_AT. An evaluation is of the whole test split, so no window is needed."""
    test = metrics[(metrics.split == "test") & (metrics.metric == "acc")]
    first = test[test.value >= level].groupby(KEYS).step.min().rename(TEST_REACHED_AT)
    return test[KEYS].drop_duplicates().set_index(KEYS).join(first).reset_index()


def reach_columns(meta: pd.DataFrame, tables: dict) -> list[pd.DataFrame]:
    """REACHED_AT and TEST_REACHED_AT, where the runs record accuracies."""
    metrics = tables["metrics"]
    if not (metrics.metric == "acc").any():
        return []
    return [reached_at(metrics), test_reached_at(metrics)]


SMOOTH_STEPS = 50  # rolling window for per-step training curves (one batch is a noisy estimate)
MAX_POINTS = 300  # x positions per curve after smoothing: enough for the eye, cheap to bootstrap


def smoothed_training(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per run, a rolling mean over SMOOTH_STEPS steps of the per-step training metrics."""
    train = metrics[metrics.split == "train"].sort_values("step")
    rolling = train.groupby(["arm", "seed", "metric"]).value.transform(
        lambda v: v.rolling(SMOOTH_STEPS, min_periods=1).mean())
    smoothed = train.assign(value=rolling)
    stride = max(1, int(smoothed.step.max()) // MAX_POINTS)  # the band is bootstrapped per x: keep ~MAX_POINTS of them
    return smoothed[smoothed.step % stride == 0]
