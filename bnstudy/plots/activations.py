"""Activation distributions over training (Fig. 1c, 2, 6, 9), their densities (Fig. 6) and moments (Fig. 8)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns

from bnstudy.analysis import DENSITY, moment_changes
from bnstudy.plots.style import ERRORBAR, arm_colors, finish
from bnstudy.reading import Results


def activation_distributions(results: Results, order: tuple[str, ...] = ()):
    """Percentile bands (5/15/50/85/95) of one unit per layer over training, per arm (Fig. 1c, 2, 6, 9)."""
    acts = results.tables["activations"]
    arms = results.arms(order)
    colors = arm_colors(results, arms)
    seed = int(acts.seed.min())
    acts = acts[(acts.seed == seed)]
    acts = acts[acts.step.isin(_interval_steps(acts.step))]
    layers = sorted(acts.layer.unique())
    fig, axes = plt.subplots(len(layers), len(arms), figsize=(3.6 * len(arms), 2.6 * len(layers) + 1.0),
                             squeeze=False, sharex=True)
    for i, layer in enumerate(layers):
        for j, arm in enumerate(arms):
            _percentile_band(axes[i][j], acts[(acts.layer == layer) & (acts.arm == arm)], colors[arm])
            axes[i][j].set_title(f"{arm}, layer #{layer}, seed {seed}", fontsize=10)
            axes[i][j].set(xlabel="training step" if i == len(layers) - 1 else None,
                           ylabel="pre-ReLU activation" if j == 0 else None)
    caption = results.caption(shown_seed=seed) + " | distribution of one random unit per layer"
    return finish(fig, f"{results.experiment}: activation distributions over training (5/15/50/85/95th percentiles)",
                  caption)


def _interval_steps(steps: pd.Series) -> list[int]:
    """Recording happens at t and t+1; distributions use the t's."""
    present = set(steps)
    return sorted(s for s in present if s - 1 not in present or s == 0)


def _percentile_band(ax, data: pd.DataFrame, color) -> None:
    if data.empty:
        return
    unit = data.unit.min()
    wide = data[data.unit == unit].pivot_table(index="step", columns="stat", values="value")
    ax.fill_between(wide.index, wide.p05, wide.p95, color=color, alpha=0.2, lw=0)
    ax.fill_between(wide.index, wide.p15, wide.p85, color=color, alpha=0.35, lw=0)
    ax.plot(wide.index, wide.p50, color=color, lw=1.5)


def densities(results: Results, order: tuple[str, ...] = ()):
    """Fig. 6: the distribution of one unit per layer at the `density_at` steps: a Gaussian kernel density of its
    1st..99th percentiles, which are a stratified sample of that distribution (1% of the mass each). Colours are
    the steps' (one arm per panel)."""
    acts = results.tables["activations"]
    seed = int(acts.seed.min()) if len(acts) else None
    acts = acts[acts.stat.isin(DENSITY) & (acts.seed == seed)]
    arms, steps = results.arms(order), sorted(acts.step.unique())
    layers = sorted(acts.layer.unique())
    fig, axes = plt.subplots(len(layers), len(arms), figsize=(3.8 * len(arms), 3.0 * len(layers) + 1.0), squeeze=False)
    colors = dict(zip(steps, sns.color_palette("viridis", len(steps))))
    for i, layer in enumerate(layers):
        for j, arm in enumerate(arms):
            ax = axes[i][j]
            unit_rows = acts[(acts.layer == layer) & (acts.arm == arm)]
            unit_rows = unit_rows[unit_rows.unit == unit_rows.unit.min()]
            for step, rows in unit_rows.groupby("step"):
                values = rows.value[np.isfinite(rows.value)]
                if values.nunique() > 1:  # a unit with one value everywhere (dead, or diverged) has no density
                    sns.kdeplot(x=values, color=colors[step], label=f"step {step}", ax=ax, cut=0)
            ax.set(title=f"{arm}, layer #{layer}, seed {seed}", xlabel="pre-ReLU activation",
                   ylabel="density" if j == 0 else None)
            ax.legend(fontsize=7)
    caption = results.caption(shown_seed=seed) + " | one random unit per layer"
    return finish(fig, f"{results.experiment}: activation densities (Fig. 6)", caption)


MOMENT_ROWS = {
    "d_mean": r"$|\mu_{t+1}-\mu_t|$ (step to step)",
    "d_var": r"$|\sigma^2_{t+1}-\sigma^2_t|$ (step to step)",
    "drift_mean": r"$|\mu_t-\mu_0|$ (drift)",
    "drift_var": r"$|\sigma^2_t-\sigma^2_0|$ (drift)",
}


def moments(results: Results, order: tuple[str, ...] = ()):
    """Fig. 8: how much the mean and variance of the recorded units move, step to step and since step 0."""
    arms = results.arms(order)
    changes = moment_changes(results.tables["activations"])
    layers = sorted(changes.layer.unique())
    fig, axes = plt.subplots(len(MOMENT_ROWS), len(layers), figsize=(4.2 * len(layers), 2.6 * len(MOMENT_ROWS)),
                             squeeze=False, sharex=True)
    for i, (column, ylabel) in enumerate(MOMENT_ROWS.items()):
        for j, layer in enumerate(layers):
            ax = axes[i][j]
            sns.lineplot(changes[changes.layer == layer], x="step", y=column, hue="arm", hue_order=arms,
                         palette=arm_colors(results, arms), errorbar=ERRORBAR, ax=ax, legend=(i == 0 and j == 0))
            ax.set_yscale("log")
            ax.set(title=f"layer #{layer}" if i == 0 else None, ylabel=ylabel if j == 0 else None,
                   xlabel="training step" if i == len(MOMENT_ROWS) - 1 else None)
    for ax in axes[-1]:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))  # '10000', '12500', '15000' ran together
    caption = results.caption() + " | mean over the recorded units"
    return finish(fig, f"{results.experiment}: change of activation moments (Fig. 8)", caption, legend_from=axes[0][0])
