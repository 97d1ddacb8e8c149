"""Tidy records -> the derived numbers that figures, claims and the report share (pure pandas, no plotting, no torch).

One module per probe kind, each declaring the kind's row schema (probe and metric names, which its probe in
bnstudy.probes imports to write its rows), their decoding, its per-run summary function and the names of the
summary's columns (which the claims import): common, training, landscape, ics, curvature, weights, spectrum,
activations. Here: the registry of per-run summaries, and run_summary.
"""
from __future__ import annotations

import pandas as pd

from bnstudy.analysis.activations import DENSITY, PERCENTILES, drift_columns, moment_changes, moment_columns
from bnstudy.analysis.common import (CHANCE, EARLY, KEYS, StepTable, at_mid_training, experiment_of, matches, phase,
                                     phase_medians, probe_row)
from bnstudy.analysis.curvature import curvature_columns, curvature_summary
from bnstudy.analysis.ics import ics_columns
from bnstudy.analysis.landscape import (FILTER, PLAIN, WINDOW_QUANTITIES, WINDOWS, filter_columns, landscape_columns,
                                        landscape_summary, step_tables, window_ratios)
from bnstudy.analysis.spectrum import (BULK_WEIGHT, GRID_POINTS, SIGMA, smoothed_density, spectrum_columns,
                                       spectrum_quadrature, spectrum_summary)
from bnstudy.analysis.training import (LEAVES_CHANCE, LEAVES_WINDOW, MAX_POINTS, REACH_WINDOW, REACHES, SMOOTH_STEPS,
                                       TRAINS_MARGIN, arm_kind, best_lr, controls_runs, kind_label,
                                       largest_trainable_lr, left_chance_at, reach_columns, reached_at,
                                       smoothed_training, sweep_table)
from bnstudy.analysis.weights import BN_KINDS, weights_columns, weights_per_step, weights_summary

__all__ = [  # what the package has always offered (figures, report, tests import it from here), and the registry
    "BN_KINDS", "BULK_WEIGHT", "CHANCE", "DENSITY", "EARLY", "FILTER", "GRID_POINTS", "KEYS", "LEAVES_CHANCE",
    "LEAVES_WINDOW", "MAX_POINTS", "PERCENTILES", "PLAIN", "REACHES", "REACH_WINDOW", "SIGMA", "SMOOTH_STEPS",
    "SUMMARIES", "StepTable", "TRAINS_MARGIN", "arm_kind", "at_mid_training", "best_lr", "controls_runs",
    "controls_summary", "curvature_summary", "experiment_of", "kind_label", "landscape_summary",
    "largest_trainable_lr", "left_chance_at", "matches", "moment_changes", "phase", "phase_medians", "probe_row",
    "reached_at", "register_summary", "run_summary", "smoothed_density", "smoothed_training", "spectrum_quadrature",
    "spectrum_summary", "step_tables", "sweep_table", "weights_per_step", "weights_summary", "WINDOWS",
    "WINDOW_QUANTITIES", "window_ratios"]

# What a run's summary holds beyond its meta.json: each entry reads the tables and returns frames keyed by
# (arm, seed), merged in this order (so summary.csv's columns keep it). register_summary adds one of your own.
SUMMARIES: list = [landscape_columns, filter_columns, reach_columns, ics_columns, curvature_columns, weights_columns,
                   spectrum_columns, moment_columns, drift_columns]

# What run_summary keeps of meta.json (bnstudy.train writes it)
META_COLUMNS = ["arm", "seed", "norm", "init", "lr", "width", "steps", "preset", "dataset", "status", "diverged_at",
                "steps_done", "stopped_at", "wall_time_s", "final_train_acc_last100", "final_test_acc",
                "final_test_acc_recal", "final_train_loss"]


def register_summary(summarize) -> None:
    """summarize(meta, tables) -> [frames keyed by arm and seed]: its columns join every run summary from now on."""
    if summarize not in SUMMARIES:
        SUMMARIES.append(summarize)


def run_summary(meta: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per arm x seed with the numbers the claims use."""
    summary = meta[[c for c in META_COLUMNS if c in meta]].copy()
    for summarize in SUMMARIES:
        for frame in summarize(meta, tables):
            summary = summary.merge(frame, on=KEYS, how="left")
    return summary.sort_values(KEYS).reset_index(drop=True)


def controls_summary(meta: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The run summaries of a sweep over kinds (norm x init) and LRs, each with its kind and eta / eta_max
    (controls_runs)."""
    runs = controls_runs(meta)
    return run_summary(meta, tables).merge(runs[KEYS + ["kind", "eta_ratio"]], on=KEYS)
