"""The curvature probe (bnstudy.probes.curvature): its rows, lambda_max per probe beside the landscape's beta_eff,
and early and late medians per run.

Rows: probe PROBE, layer 0: eig_metric(1..k), the top Hessian eigenvalues (NaN where Lanczos did not converge), and
HVPS, the Hessian-vector products spent."""
from __future__ import annotations

import pandas as pd

from bnstudy.analysis import landscape
from bnstudy.analysis.common import KEYS, phase_medians

# The row schema, which the probe writes
PROBE = "curvature"
HVPS = "hvps"


def eig_metric(i: int) -> str:
    """The metric of the i-th largest eigenvalue, from 1."""
    return f"eig{i}"


# curvature_summary's columns, and the run summary's phase_column(phase, column) of PHASED
LAMBDA_MAX, ETA_LAMBDA, LAMBDA_OVER_BETA = "lambda_max", "eta_lambda", "lambda_over_beta"
PHASED = [LAMBDA_MAX, ETA_LAMBDA]


def curvature_summary(probes: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """One row per (arm, seed, step) curvature probe: lambda_max, HVPs used, the run's LR (meta.json), and, where
    the landscape probe ran at the same step, beta_eff and lambda_max / beta_eff. (Runs written before eta meant the
    landscape step size alone have the LR in eta too; it is not read.)"""
    curv = probes[probes.probe == PROBE]
    keys = KEYS + ["step"]
    table = curv.pivot_table(index=keys, columns="metric", values="value").reset_index()
    table = table.rename(columns={eig_metric(1): LAMBDA_MAX}).merge(meta[KEYS + ["lr"]], on=KEYS)
    if (probes.probe == landscape.PLAIN).any():
        beta = landscape.landscape_summary(probes)[keys + [landscape.BETA_EFF]]
        table = table.merge(beta, on=keys, how="left")
        table[LAMBDA_OVER_BETA] = table[LAMBDA_MAX] / table[landscape.BETA_EFF]
    return table


def curvature_columns(meta: pd.DataFrame, tables: dict) -> list[pd.DataFrame]:
    """early_/late_ medians of lambda_max and eta * lambda_max."""
    if not (tables["probes"].probe == PROBE).any():
        return []
    curv = curvature_summary(tables["probes"], meta)
    curv[ETA_LAMBDA] = curv.lr * curv[LAMBDA_MAX]
    return [phase_medians(curv, PHASED, meta)]
