"""Tidy records -> the derived numbers that figures and the report share (pure pandas, no plotting)."""
from __future__ import annotations

import pandas as pd


def landscape_summary(probes: pd.DataFrame) -> pd.DataFrame:
    """One row per (arm, seed, step) landscape probe: loss_min/max and grad_diff_min/max over eta, grad_norm,
    and beta_eff = max over eta of grad_diff / step_norm (PAPER.md Fig. 4)."""
    land = probes[probes.probe == "landscape"]
    keys = ["arm", "seed", "step"]
    per_eta = land[land.eta > 0].pivot_table(index=keys + ["eta"], columns="metric", values="value").reset_index()
    per_eta["beta"] = per_eta.grad_diff / per_eta.step_norm
    summary = per_eta.groupby(keys).agg(loss_min=("loss", "min"), loss_max=("loss", "max"),
                                        grad_diff_min=("grad_diff", "min"), grad_diff_max=("grad_diff", "max"),
                                        beta_eff=("beta", "max"))
    at_w = land[land.eta == 0].pivot_table(index=keys, columns="metric", values="value")
    return summary.join(at_w.rename(columns={"loss": "loss_at_w"})).reset_index()


def early(frame: pd.DataFrame, fraction: float = 0.25) -> pd.DataFrame:
    """The rows of the first `fraction` of training, by step (per experiment: steps are shared by arms)."""
    return frame[frame.step <= frame.step.min() + fraction * (frame.step.max() - frame.step.min())]
