"""The ICS probe (bnstudy.probes.ics, docs/protocol.md, Definition 2.1): its rows and their per-run medians.

Rows: probe PROBE, layer = the weight layer (from 1), one row per metric of METRICS."""
from __future__ import annotations

import pandas as pd

from bnstudy.analysis.common import KEYS

# The row schema, which the probe writes
PROBE = "ics"
L2, COSINE, REL_L2 = "l2", "cosine", "rel_l2"  # ||G - G'||, cos(G, G'), ||G - G'|| / ||G||
METRICS = (L2, COSINE, REL_L2)


def ics_column(metric: str, layer: int) -> str:
    """The run summary's column of a metric's median over the run's probes at one layer: 'ics_l2_median_L5'."""
    return f"ics_{metric}_median_L{layer}"


def ics_columns(meta: pd.DataFrame, tables: dict) -> list[pd.DataFrame]:
    """ics_column(metric, layer) for every metric and probed layer."""
    ics_rows = tables["probes"][tables["probes"].probe == PROBE]
    if ics_rows.empty:
        return []
    ics = ics_rows.groupby(KEYS + ["layer", "metric"]).value.median().unstack(["metric", "layer"])
    ics.columns = [ics_column(metric, layer) for metric, layer in ics.columns]
    return [ics.reset_index()]
