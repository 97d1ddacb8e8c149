"""The activation recorder (bnstudy.probes.activations): its `stat` names, the moments' step-to-step changes, and
their per-run means per layer.

Rows (table activations): step, layer, unit, stat, value; stat one of PERCENTILES, MEAN, VAR at every recording, and
of DENSITY at the `density_at` steps."""
from __future__ import annotations

import pandas as pd

from bnstudy.analysis.common import KEYS

# The row schema, which the recorder writes and figures read back: percentiles at every recording, and at
# `density_at` steps the quantile function, 1% a bin, from which Fig. 6 draws densities
PERCENTILES = {"p05": 0.05, "p15": 0.15, "p50": 0.50, "p85": 0.85, "p95": 0.95}
DENSITY = {f"q{i:02d}": i / 100 for i in range(1, 100)}
MEAN, VAR = "mean", "var"

# moment_changes' columns; the run summary's are moment_column(change, layer) of CHANGES
D_MEAN, D_VAR, DRIFT_MEAN, DRIFT_VAR = "d_mean", "d_var", "drift_mean", "drift_var"
CHANGES = [D_MEAN, D_VAR]


def moment_changes(acts: pd.DataFrame) -> pd.DataFrame:
    """Per arm, seed, layer and recorded t: mean over units of |mu_{t+1} - mu_t|, |var_{t+1} - var_t|,
    |mu_t - mu_0| and |var_t - var_0| (Fig. 8; NaN drift at t = 0)."""
    moments = acts[acts.stat.isin([MEAN, VAR])].pivot_table(
        index=KEYS + ["layer", "unit", "step"], columns="stat", values="value").reset_index()
    moments = moments.sort_values("step")
    keys = KEYS + ["layer", "unit"]
    grouped = moments.groupby(keys)
    nxt = grouped[["step", MEAN, VAR]].shift(-1)
    first = grouped[[MEAN, VAR]].transform("first")
    t0 = grouped.step.transform("min")
    per_unit = moments.assign(**{
        D_MEAN: (nxt[MEAN] - moments[MEAN]).abs(), D_VAR: (nxt[VAR] - moments[VAR]).abs(),
        DRIFT_MEAN: (moments[MEAN] - first[MEAN]).abs().where(moments.step > t0),
        DRIFT_VAR: (moments[VAR] - first[VAR]).abs().where(moments.step > t0),
    })[nxt.step == moments.step + 1]  # only t whose t+1 was recorded: true one-step changes
    return per_unit.groupby(KEYS + ["layer", "step"], as_index=False)[[D_MEAN, D_VAR, DRIFT_MEAN, DRIFT_VAR]].mean()


def moment_column(change: str, layer: int) -> str:
    """The run summary's column of a change's mean over a run at one layer: 'd_mean_L9'."""
    return f"{change}_L{layer}"


def moment_layers(columns, change: str = D_MEAN) -> list[int]:
    """moment_column's inverse: the layers that have a column of `change` among `columns`, ascending."""
    prefix = moment_column(change, "")
    return sorted(int(c.removeprefix(prefix)) for c in columns if c.startswith(prefix))


P50_DRIFT = "p50_drift"  # claim 14b's measure; the run summary's columns are drift_column(layer)


def percentile_drift(acts: pd.DataFrame) -> pd.DataFrame:
    """Per run and layer, how far the median of a unit's input to its nonlinearity travels over training, in units of
    its own spread: (max over recordings of p50 - min over recordings of p50) / the median over recordings of
    (p85 - p15), the median over the recorded units (claim 14b, written before the runs). 0: it stays put; 1: its
    median moves by as much as the middle 70% of its values span."""
    wide = acts[acts.stat.isin(["p15", "p50", "p85"])].pivot_table(index=KEYS + ["layer", "unit", "step"],
                                                                   columns="stat", values="value")
    per_unit = wide.groupby(KEYS + ["layer", "unit"]).agg(low=("p50", "min"), high=("p50", "max"))
    spread = (wide.p85 - wide.p15).groupby(KEYS + ["layer", "unit"]).median()
    drift = ((per_unit.high - per_unit.low) / spread).rename(P50_DRIFT)
    return drift.groupby(KEYS + ["layer"]).median().reset_index()


def drift_column(layer: int) -> str:
    return f"{P50_DRIFT}_L{layer}"


def drift_columns(meta: pd.DataFrame, tables: dict) -> list[pd.DataFrame]:
    """drift_column(layer): percentile_drift per recorded layer."""
    acts = tables["activations"]
    if not len(acts) or not acts.stat.eq("p50").any():
        return []
    drift = percentile_drift(acts).set_index(KEYS + ["layer"])[P50_DRIFT].unstack("layer")
    drift.columns = [drift_column(layer) for layer in drift.columns]
    return [drift.reset_index()]


def moment_columns(meta: pd.DataFrame, tables: dict) -> list[pd.DataFrame]:
    """moment_column(change, layer) of CHANGES: mean step-to-step moment changes."""
    if not len(tables["activations"]):
        return []
    changes = moment_changes(tables["activations"]).groupby(KEYS + ["layer"])[CHANGES].mean()
    changes = changes.unstack("layer")
    changes.columns = [moment_column(change, layer) for change, layer in changes.columns]
    return [changes.reset_index()]
