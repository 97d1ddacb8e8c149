"""The spectrum probe (bnstudy.probes.spectrum): its rows, the smoothed density (which the probe and the figure
share), the bulk edge and the outliers per probe, and the run's numbers at mid-training.

Rows: probe probe_name(mode) per BN mode; layer = the start vector (from 1): ritz_metric(THETA | TAU, node) per Ritz
value; layer 0: top_metric(1..k) (the top Ritz values, descending), share_metric(k), CONVERGED (1 or 0) and HVPS."""
from __future__ import annotations

import numpy as np
import pandas as pd

from bnstudy.analysis.common import KEYS, at_mid_training

# The row schema, which the probe writes
PREFIX = "spectrum-"  # the probe's name is PREFIX + the BN mode it probed in
TRAIN_MODE, EVAL_MODE = "train", "eval"  # the BN modes (spectrum.bn_modes) whose numbers the claims read
THETA, TAU = "theta", "tau"  # a Ritz value and its quadrature weight
TOP_PREFIX, SHARE_PREFIX = "top", "share_top"
CONVERGED, HVPS = "converged", "hvps"


def probe_name(mode: str) -> str:
    return f"{PREFIX}{mode}"


def probe_modes(probe: pd.Series) -> pd.Series:
    """probe_name's inverse: the BN mode of each row's probe."""
    return probe.str.removeprefix(PREFIX)


def is_spectrum(probe: pd.Series) -> pd.Series:
    return probe.str.startswith(PREFIX)


def ritz_metric(kind: str, node: int) -> str:
    """THETA or TAU of the node-th Ritz value (from 0) of a start vector: 'theta_007'."""
    return f"{kind}_{node:03d}"


def parse_ritz_metrics(metric: pd.Series) -> tuple[pd.Series, pd.Series]:
    """ritz_metric's inverse: (kind, node) of each row."""
    parts = metric.str.split("_", expand=True)
    return parts[0], parts[1].astype(int)


def top_metric(i: int) -> str:
    """The i-th largest Ritz value (from 1) of the top-k computation."""
    return f"{TOP_PREFIX}{i}"


def share_metric(k: int) -> str:
    """The gradient's share in the span of the top-k Ritz vectors."""
    return f"{SHARE_PREFIX}{k}"


# The spectral density's smoothing (bnstudy.probes.spectrum.spectral_density, and the spectrum figure from recorded
# Ritz values): a Gaussian kernel of width SIGMA x the Ritz values' range, on GRID_POINTS points
GRID_POINTS = 1_000
SIGMA = 0.01


def smoothed_density(ritz: list[list[float]], weights: list[list[float]], sigma: float = SIGMA,
                     grid_points: int = GRID_POINTS) -> tuple[list[float], list[float]]:
    """The average over start vectors of sum_i tau_i N(t; theta_i, s^2), s = sigma x the Ritz values' range, on a
    grid padded by 5 s on each side; normalized to integrate to 1 on the grid (the tails cut off are < 1e-6)."""
    theta = np.array([t for row in ritz for t in row], dtype=np.float64)
    tau = np.array([w for row in weights for w in row], dtype=np.float64) / len(ritz)
    width = sigma * max(float(theta.max() - theta.min()), 1e-12)
    grid = np.linspace(theta.min() - 5 * width, theta.max() + 5 * width, grid_points)
    kernel = np.exp(-0.5 * ((grid[:, None] - theta[None, :]) / width) ** 2) / (width * np.sqrt(2 * np.pi))
    density = kernel @ tau
    integrate = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed it
    return grid.tolist(), (density / integrate(density, grid)).tolist()


BULK_WEIGHT = 1e-3  # a Ritz value with at least this quadrature weight carries bulk mass: an isolated eigenvalue
# carries ~(u . v)^2 / n ~ 1 / n (1e-6 for the quick VGG's 1e6 parameters), a node of the bulk ~1 / m (m = 30)


def spectrum_quadrature(probes: pd.DataFrame) -> pd.DataFrame:
    """One row per Ritz value: arm, seed, step, mode (train | eval), vector (from 1), theta, tau."""
    rows = probes[is_spectrum(probes.probe) & (probes.layer >= 1)]
    kind, node = parse_ritz_metrics(rows.metric)
    table = rows.assign(mode=probe_modes(rows.probe), kind=kind, node=node, vector=rows.layer)
    return table.pivot_table(index=KEYS + ["step", "mode", "vector", "node"], columns="kind",
                             values="value").reset_index()


# spectrum_summary's columns, and the run summary's mid_column(column, mode) of MID
BULK_EDGE, LAMBDA_MAX, SHARE, OUTLIERS = "bulk_edge", "lambda_max", "share", "outliers"
MID = [OUTLIERS, SHARE, LAMBDA_MAX, BULK_EDGE]


def spectrum_summary(probes: pd.DataFrame) -> pd.DataFrame:
    """One row per (arm, seed, step, mode): bulk_edge (per start vector the largest Ritz value with weight >=
    BULK_WEIGHT; the median over vectors), lambda_max (top1), outliers (how many of the top-k Ritz values lie above
    the bulk edge: unconverged ones are lower bounds, so the count can only be low), share (the gradient's share in
    the top-k Ritz vectors) and converged (whether all k met the tolerance)."""
    quadrature = spectrum_quadrature(probes)
    keys = KEYS + ["step", "mode"]
    edge = quadrature[quadrature[TAU] >= BULK_WEIGHT].groupby(keys + ["vector"])[THETA].max().groupby(keys).median()
    rows = probes[is_spectrum(probes.probe) & (probes.layer == 0)]
    top = rows.assign(mode=probe_modes(rows.probe)).pivot_table(
        index=keys, columns="metric", values="value")  # an unconverged (NaN) top-k was left out by reading: NaN here
    tops = [c for c in top.columns if c.startswith(TOP_PREFIX)]
    share = next(c for c in top.columns if c.startswith(SHARE_PREFIX))
    table = pd.DataFrame({BULK_EDGE: edge, LAMBDA_MAX: top[top_metric(1)], SHARE: top[share],
                          CONVERGED: top[CONVERGED].astype(bool)})
    above = top[tops].gt(table[BULK_EDGE], axis=0).sum(axis=1)
    table[OUTLIERS] = above.where(top[tops].notna().all(axis=1))
    return table.reset_index()


def mid_column(column: str, mode: str) -> str:
    """The run summary's column of a spectrum number at mid-training in one BN mode: 'mid_outliers_train'."""
    return f"mid_{column}_{mode}"


def spectrum_columns(meta: pd.DataFrame, tables: dict) -> list[pd.DataFrame]:
    """mid_column(column, mode) of MID at mid-training."""
    probes = tables["probes"]
    if not is_spectrum(probes.probe).any():
        return []
    mid = at_mid_training(spectrum_summary(probes), meta).pivot_table(index=KEYS, columns="mode", values=MID)
    mid.columns = [mid_column(column, mode) for column, mode in mid.columns]
    return [mid.reset_index()]
