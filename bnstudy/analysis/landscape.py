"""The landscape probe (bnstudy.probes.landscape): its rows, the bands and smoothness per probe, and per run.

Rows: probe PLAIN (along the gradient) or FILTER (along the filter-normalized gradient), layer 0; at eta = 0 the
loss and ||g|| at w (LOSS, GRAD_NORM); per eta > 0 the loss at w - eta d, ||grad L(w - eta d) - g|| and the step's
length (PER_ETA)."""
from __future__ import annotations

import pandas as pd

from bnstudy.analysis import weights
from bnstudy.analysis.common import KEYS, phase_medians

# The row schema, which the probe writes
PLAIN, FILTER = "landscape", "landscape-filter"  # the probe names of the two directions
LOSS, GRAD_NORM, GRAD_DIFF, STEP_NORM = "loss", "grad_norm", "grad_diff", "step_norm"
PER_ETA = (LOSS, GRAD_DIFF, STEP_NORM)  # per eta > 0, in this order (at eta = 0: LOSS, GRAD_NORM)

# landscape_summary's columns (one row per probe) that the run summaries and the claims read
LOSS_RATIO, OVERSHOOT, GRAD_DIFF_MAX = "loss_ratio", "overshoot", "grad_diff_max"
BETA_EFF, BETA_REL, REL_GRAD_DIFF_MAX = "beta_eff", "beta_rel", "rel_grad_diff_max"
# True where beta peaks at the grid's smallest step and the gradient change there is ||g|| itself (within
# CANCEL_TOL): the step cancels the gradient, and beta reads 1/eta_min, the grid, not the landscape
CANCELS, CANCEL_TOL = "cancels", 0.05


# A filter-normalized step moves each filter by that filter's norm (or not at all), so its length ||d|| is at most the
# norm of every weight layer together, which the weights probe records at the same steps. A probe recorded past it
# by more than DIRECTION_TOL was not along a filter-normalized direction (a per-filter norm that underflowed to 0,
# fixed since, and checked by the probe itself now): its rows mean something else and are left out (reading.Results).
DIRECTION_TOL = 1e-3


def unnormalized_filter_probes(probes: pd.DataFrame) -> pd.DataFrame:
    """One row per (arm, seed, step) FILTER probe whose ||d|| (step_norm / eta) exceeds (1 + DIRECTION_TOL) ||w||,
    ||w|| from the weights probe at that step, with both norms (d_norm, w_norm). A step without weights rows cannot
    be checked here and is not listed."""
    keys = KEYS + ["step"]
    steps = probes[(probes.probe == FILTER) & (probes.metric == STEP_NORM) & (probes.eta > 0)]
    d_norm = (steps.value / steps.eta).groupby([steps[k] for k in keys]).max().rename("d_norm")
    layers = probes[(probes.probe == weights.PROBE) & (probes.metric == weights.W_NORM) & (probes.layer >= 1)]
    w_norm = layers.value.pow(2).groupby([layers[k] for k in keys]).sum().pow(0.5).rename("w_norm")
    both = pd.concat([d_norm, w_norm], axis=1, join="inner")
    return both[both.d_norm > (1 + DIRECTION_TOL) * both.w_norm].reset_index()


def landscape_summary(probes: pd.DataFrame, probe: str = PLAIN) -> pd.DataFrame:
    """One row per (arm, seed, step) landscape probe: loss_min/max and grad_diff_min/max over eta, grad_norm,
    loss_at_w, beta_eff = max over eta of grad_diff / step_norm (docs/protocol.md, Fig. 4), and the scale-free numbers:
    overshoot = loss_max / loss_at_w, rel_grad_diff_max = grad_diff_max / grad_norm, and beta_rel = max over eta of
    (grad_diff / grad_norm) / eta, the relative gradient change per relative step (along the filter-normalized
    gradient eta is the step as a fraction of each filter's norm; along the plain gradient beta_rel has no such
    meaning and is not read), and CANCELS (cancelled_gradient)."""
    keys = KEYS + ["step"]
    per_eta = per_eta_table(probes, probe)
    at_w = per_eta.groupby(keys)[["loss_at_w", GRAD_NORM]].first()
    summary = per_eta.groupby(keys).agg(**{
        "loss_min": (LOSS, "min"), "loss_max": (LOSS, "max"), "grad_diff_min": (GRAD_DIFF, "min"),
        GRAD_DIFF_MAX: (GRAD_DIFF, "max"), BETA_EFF: ("beta", "max"), BETA_REL: ("beta_rel", "max")})
    summary = summary.join(at_w).join(cancelled_gradient(per_eta)).reset_index()
    return summary.assign(**{OVERSHOOT: summary.loss_max / summary.loss_at_w,
                             "rel_grad_diff_min": summary.grad_diff_min / summary[GRAD_NORM],
                             REL_GRAD_DIFF_MAX: summary[GRAD_DIFF_MAX] / summary[GRAD_NORM],
                             LOSS_RATIO: summary.loss_max / summary.loss_min})


def cancelled_gradient(per_eta: pd.DataFrame) -> pd.Series:
    """Per probe, CANCELS: beta's max is at the grid's smallest step, where ||grad L(w - eta d) - g|| / ||g|| is
    within CANCEL_TOL of 1 (a probe whose numbers are all NaN, a diverged one, is False)."""
    keys = KEYS + ["step"]
    peak = per_eta.sort_values("beta_rel", ascending=False, kind="stable").drop_duplicates(keys).set_index(keys)
    smallest = per_eta.sort_values("eta", kind="stable").drop_duplicates(keys).set_index(keys).reindex(peak.index)
    relative = smallest[GRAD_DIFF] / smallest[GRAD_NORM]
    return ((peak.eta == smallest.eta) & ((relative - 1).abs() <= CANCEL_TOL)).rename(CANCELS)


def per_eta_table(probes: pd.DataFrame, probe: str = PLAIN) -> pd.DataFrame:
    """One row per (arm, seed, step, eta > 0) of a landscape probe: the PER_ETA metrics, loss_at_w and grad_norm at w,
    beta = grad_diff / step_norm and beta_rel = (grad_diff / grad_norm) / eta."""
    land = probes[probes.probe == probe]
    keys = KEYS + ["step"]
    # reindex: pivot_table drops a metric whose every value is NaN (a probe that diverged), and it is still read
    per_eta = land[land.eta > 0].pivot_table(index=keys + ["eta"], columns="metric", values="value").reindex(
        columns=list(PER_ETA)).reset_index()
    at_w = land[land.eta == 0].pivot_table(index=keys, columns="metric", values="value").reindex(
        columns=[LOSS, GRAD_NORM])
    per_eta = per_eta.merge(at_w.rename(columns={LOSS: "loss_at_w"}).reset_index(), on=keys, how="left")
    return per_eta.assign(beta=per_eta[GRAD_DIFF] / per_eta[STEP_NORM],
                          beta_rel=per_eta[GRAD_DIFF] / per_eta[GRAD_NORM] / per_eta.eta)


# "Especially early", read window by window: the steps (of the run's schedule) that bound each window, and the
# landscape numbers compared in each, standard's over BN's per seed (docs/findings.md)
WINDOWS = (0, 500, 1000, 2000, 3750, 15000)
LOSS_WIDTH, LOSS_WIDTH_REL = "loss_width", "loss_width_rel"  # max - min of L(w - eta g) over eta; that over L(w)
WINDOW_QUANTITIES = (GRAD_DIFF_MAX, LOSS_RATIO, LOSS_WIDTH, LOSS_WIDTH_REL)


def window_label(low: int, high: int) -> str:
    return f"{low:,}–{high:,}"


def window_ratios(probes: pd.DataFrame, numerator: str, denominator: str, windows=WINDOWS) -> pd.DataFrame:
    """One row per (seed, window, quantity of WINDOW_QUANTITIES): the median over the window's probes along the
    gradient of the `numerator` arm's number, over the `denominator` arm's, seed by seed (windows [low, high) of
    steps; a window where either arm has no probe has no row)."""
    summary = landscape_summary(probes)
    width = summary.loss_max - summary.loss_min
    summary = summary.assign(**{LOSS_WIDTH: width, LOSS_WIDTH_REL: width / summary.loss_at_w})
    labels = [window_label(low, high) for low, high in zip(windows, windows[1:])]
    summary["window"] = pd.cut(summary.step, bins=list(windows), right=False, labels=labels)
    medians = summary.groupby(["arm", "seed", "window"], observed=True)[list(WINDOW_QUANTITIES)].median()
    ratio = (medians.xs(numerator, level="arm") / medians.xs(denominator, level="arm")).dropna(how="all")
    table = ratio.reset_index().melt(id_vars=["seed", "window"], var_name="quantity", value_name="ratio")
    return table.assign(window=pd.Categorical(table.window, categories=labels, ordered=True)).sort_values(
        ["quantity", "window", "seed"], kind="stable", ignore_index=True)


# The run summary's columns: phase_column(phase, column) of PHASED, BETA_EFF_MEDIAN, and filter_column(phase_column(
# phase, column)) of FILTER_PHASED
PHASED = [GRAD_DIFF_MAX, BETA_EFF, LOSS_RATIO, OVERSHOOT]
FILTER_PHASED = [LOSS_RATIO, REL_GRAD_DIFF_MAX, BETA_REL]
BETA_EFF_MEDIAN = "beta_eff_median"
FILTER_PREFIX = "filter_"


def filter_column(column: str) -> str:
    """The run summary's name of a number measured along the filter-normalized gradient."""
    return f"{FILTER_PREFIX}{column}"


def landscape_columns(meta: pd.DataFrame, tables: dict) -> list[pd.DataFrame]:
    """early_/late_ medians of the landscape band and beta_eff, and beta_eff's median over the run."""
    probes = tables["probes"]
    if not (probes.probe == PLAIN).any():
        return []
    land = landscape_summary(probes)
    beta_median = land.groupby(KEYS)[BETA_EFF].median().rename(BETA_EFF_MEDIAN).reset_index()
    return [phase_medians(land, PHASED, meta), beta_median]


def filter_columns(meta: pd.DataFrame, tables: dict) -> list[pd.DataFrame]:
    """filter_<phase>_<column>: the same along the filter-normalized gradient."""
    probes = tables["probes"]
    if not (probes.probe == FILTER).any():
        return []
    medians = phase_medians(landscape_summary(probes, FILTER), FILTER_PHASED, meta)
    return [medians.rename(columns=lambda c: c if c in KEYS else filter_column(c))]


# The tables of one row per probe (landscape_summary, with the run's preset) beside the run summaries, that claims
# compare step by step (claims 8 and 13c): their names in a StepTable, by the probe they come from
STEPS, FILTER_STEPS = "steps", "filter-steps"
STEP_TABLES = {PLAIN: STEPS, FILTER: FILTER_STEPS}


def step_tables(probes: pd.DataFrame, summary: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Table name (STEP_TABLES) -> landscape_summary of that probe with each run's preset, for each probe the runs
    have."""
    scale = [c for c in ("preset", "width") if c in summary]  # what report.by_preset splits verdicts by
    return {name: landscape_summary(probes, probe).merge(summary[KEYS + scale], on=KEYS)
            for probe, name in STEP_TABLES.items() if (probes.probe == probe).any()}
