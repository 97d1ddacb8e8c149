"""The weights probe (bnstudy.probes.weights): its rows, the effective step and Arora et al.'s identity per layer
and per step, and their per-run medians.

Rows: probe PROBE; per weight layer (from 1) one row per metric of METRICS; layer 0: LOGIT_STD."""
from __future__ import annotations

import pandas as pd

from bnstudy.analysis.common import KEYS, phase_medians
from bnstudy.analysis.training import left_chance_at

# The row schema, which the probe writes
PROBE = "weights"
W_NORM, GRAD_NORM, GRAD_DOT_W, SQ_NORM_CHANGE = "w_norm", "grad_norm", "grad_dot_w", "sq_norm_change"
METRICS = (W_NORM, GRAD_NORM, GRAD_DOT_W, SQ_NORM_CHANGE)  # per layer, in this order
LOGIT_STD = "logit_std"

BN_KINDS = ("batch", "noisy-batch")  # norms that make the weight layer before them scale-invariant

# weights_per_step's columns, and the run summary's: phase_column(phase, EFF_STEP) and IDENTITY_ERROR_MEDIAN
EFF_STEP, IDENTITY_ERROR, W_NORM_RATIO = "eff_step", "identity_error", "w_norm_ratio"
IDENTITY_ERROR_MEDIAN = "identity_error_median"


def weights_summary(probes: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """One row per (arm, seed, step, layer >= 1) of the weights probe, with the run's LR and norm and
    eff_step = eta ||g|| / ||W||, cosine = cos(g, W), identity_error = |(||W'||^2 - ||W||^2) - eta^2 ||g||^2| /
    (eta^2 ||g||^2) (Arora et al.), and scale_invariant: the layer is followed by BN (every layer but the last of
    a BN network)."""
    rows = probes[(probes.probe == PROBE) & (probes.layer >= 1)]
    table = rows.pivot_table(index=KEYS + ["step", "layer"], columns="metric", values="value").reset_index()
    table = table.merge(meta[KEYS + ["lr", "norm"]], on=KEYS)
    squared_step = table.lr ** 2 * table[GRAD_NORM] ** 2
    last = table.groupby(KEYS).layer.transform("max")
    return table.assign(**{EFF_STEP: table.lr * table[GRAD_NORM] / table[W_NORM],
                           "cosine": table[GRAD_DOT_W] / (table[GRAD_NORM] * table[W_NORM]),
                           IDENTITY_ERROR: (table[SQ_NORM_CHANGE] - squared_step).abs() / squared_step,
                           "scale_invariant": table.norm.isin(BN_KINDS) & (table.layer < last)})


def weights_per_step(weights: pd.DataFrame) -> pd.DataFrame:
    """Per (arm, seed, step): the mean effective step over the layers before a norm (all but the last: the ones
    BN makes scale-invariant, where it has BN), the median identity error over the scale-invariant ones, and
    ||W|| / ||W_0|| over every weight layer taken as one vector."""
    hidden = weights[weights.layer < weights.groupby(KEYS).layer.transform("max")]
    keys = KEYS + ["step"]
    table = hidden.groupby(keys)[EFF_STEP].mean().to_frame()
    table[IDENTITY_ERROR] = weights[weights.scale_invariant].groupby(keys)[IDENTITY_ERROR].median()
    total = (weights[W_NORM] ** 2).groupby([weights[k] for k in keys]).sum() ** 0.5
    table[W_NORM_RATIO] = total / total.groupby(level=KEYS).transform("first")
    return table.reset_index()


def weights_columns(meta: pd.DataFrame, tables: dict) -> list[pd.DataFrame]:
    """early_/late_eff_step, identity_error_median, and the step each run left chance at."""
    if not (tables["probes"].probe == PROBE).any():
        return []
    per_step = weights_per_step(weights_summary(tables["probes"], meta))
    identity = per_step.groupby(KEYS)[IDENTITY_ERROR].median().rename(IDENTITY_ERROR_MEDIAN)
    return [phase_medians(per_step, [EFF_STEP], meta).merge(identity.reset_index(), on=KEYS),
            left_chance_at(tables["metrics"])]
