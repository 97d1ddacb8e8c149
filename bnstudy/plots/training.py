"""Training and test curves per arm (Fig. 1, 2, 3b, 5) and the learning-rate sweep (beyond the paper)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from bnstudy.analysis import CHANCE, TRAINS_MARGIN, largest_trainable_lr, smoothed_training, sweep_table
from bnstudy.plots.style import ERRORBAR, TRAIN_LABELS, arm_colors, arm_labels, finish, kind_styles
from bnstudy.reading import Results


def training_curves(results: Results, order: tuple[str, ...] = ()):
    """Training accuracy (where it means something) and loss against step per arm (Fig. 1, 2 left, 3b, 5)."""
    arms = results.arms(order)
    data = smoothed_training(results.tables["metrics"])
    labels, colors = arm_labels(results), arm_colors(results, arms)
    metrics = [m for m in ("acc", "loss") if (data.metric == m).any()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sub = data[data.metric == metric].assign(arm=lambda d: d.arm.map(labels))
        sns.lineplot(sub, x="step", y="value", hue="arm", hue_order=[labels[a] for a in arms], errorbar=ERRORBAR,
                     palette=[colors[a] for a in arms], ax=ax)
        _mark_divergence(ax, results, data[data.metric == metric], colors)
        ax.set(xlabel="training step", ylabel=TRAIN_LABELS[metric], yscale="log" if metric == "loss" else "linear")
        ax.legend(title=None, fontsize=8)
    return finish(fig, f"{results.experiment}: training {' and '.join(metrics).replace('acc', 'accuracy')}",
                  results.caption())


def _mark_divergence(ax, results: Results, data: pd.DataFrame, colors: dict) -> None:
    """A cross where a run's loss stopped being finite."""
    for _, meta in results.meta[results.meta.status == "diverged"].iterrows():
        run = data[(data.arm == meta.arm) & (data.seed == meta.seed)]
        finite = run[np.isfinite(run.value)]
        y = finite.value.iloc[-1] if len(finite) else np.nan
        ax.plot([meta.diverged_at], [y], marker="x", markersize=12, mew=3, color=colors[meta.arm], linestyle="none")


def test_curves(results: Results, order: tuple[str, ...] = ()):
    """Test accuracy (eval mode) at the evaluation steps, per arm (Fig. 1 right)."""
    arms = results.arms(order)
    test = results.tables["metrics"].query("split == 'test' and metric == 'acc'")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.lineplot(test, x="step", y="value", hue="arm", hue_order=arms, palette=arm_colors(results, arms),
                 errorbar=ERRORBAR, marker="o", ax=ax)
    ax.set(xlabel="training step", ylabel="test accuracy (eval mode)")
    ax.legend(title=None, fontsize=8)
    return finish(fig, f"{results.experiment}: test accuracy", results.caption())


def lr_sweep(results: Results, order: tuple[str, ...] = ()):
    """Final training accuracy against learning rate per kind (norm, init); crosses where a run diverged."""
    table = sweep_table(results.meta)
    largest = largest_trainable_lr(table)
    styles = kind_styles(table)
    kinds = list(styles.index)
    labels = {k: f"{styles.name[k]} (trains up to LR {largest[k]:g})" if pd.notna(largest[k])
              else f"{styles.name[k]} (never trains)" for k in kinds}
    fig, ax = plt.subplots(figsize=(8, 5))
    trained = table[table.status == "complete"].assign(kind=lambda d: d.kind.map(labels))
    sns.lineplot(trained, x="lr", y="final_train_acc_last100", hue="kind", hue_order=[labels[k] for k in kinds],
                 palette=list(styles.color), errorbar=ERRORBAR, marker="o", ax=ax)
    for _, run in table[table.status == "diverged"].iterrows():
        ax.plot([run.lr], [CHANCE], marker="x", markersize=12, mew=3, color=styles.color[run.kind], linestyle="none")
    ax.axhline(CHANCE + TRAINS_MARGIN, color="0.5", ls=":", lw=1, label="chance + 10 points")
    ax.set(xscale="log", xlabel="learning rate (constant, plain SGD)", ylabel="training accuracy, last 100 steps",
           ylim=(0, 1))
    ax.legend(title=None, fontsize=8)
    return finish(fig, f"{results.experiment}: final training accuracy against learning rate (x: diverged)",
                  results.caption())
