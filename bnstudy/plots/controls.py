"""The controls experiment: kinds (norm, init), each at its own grid of LRs. A kind has one name and one colour in
every one of its figures (style.kind_styles: a norm's two inits are a dark and a light shade of the norm's colour)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from bnstudy.analysis import (controls_runs, controls_summary, curvature_summary, smoothed_training, weights_per_step,
                              weights_summary)
from bnstudy.analysis import landscape, weights
from bnstudy.analysis.common import EARLY_PHASE, phase_column
from bnstudy.plots.style import ERRORBAR, TRAIN_LABELS, finish, kind_styles, norm_colors, norm_name
from bnstudy.reading import Results


def _label_palette(frame: pd.DataFrame, styles: pd.DataFrame) -> dict:
    """Legend label -> its kind's colour, labels sorted, from a frame with label and kind columns."""
    pairs = frame.drop_duplicates("label").sort_values("label")
    return {label: styles.color[kind] for label, kind in zip(pairs.label, pairs.kind)}


def controls_training(results: Results, order: tuple[str, ...] = ()):
    """Training accuracy and loss of each kind at its own best LR, one column per init."""
    runs = controls_runs(results.meta)
    styles = kind_styles(runs)
    best = runs[runs.best].assign(label=lambda d: d.norm.map(norm_name) + " (best LR " + d.lr.map("{:g}".format) + ")")
    data = smoothed_training(results.tables["metrics"]).merge(best[["arm", "seed", "init", "kind", "label"]],
                                                              on=["arm", "seed"])
    inits = sorted(best.init.unique())
    fig, axes = plt.subplots(2, len(inits), figsize=(6 * len(inits), 8), squeeze=False, sharex=True)
    for j, init in enumerate(inits):
        for i, metric in enumerate(("acc", "loss")):
            sub = data[(data.init == init) & (data.metric == metric)]
            palette = _label_palette(sub, styles)
            sns.lineplot(sub, x="step", y="value", hue="label", hue_order=list(palette), palette=palette,
                         errorbar=ERRORBAR, ax=axes[i][j])
            axes[i][j].set(title=f"{init} init" if i == 0 else None, ylabel=TRAIN_LABELS[metric],
                           yscale="log" if metric == "loss" else "linear", xlabel="training step" if i else None)
            axes[i][j].legend(title=None, fontsize=8)
    return finish(fig, f"{results.experiment}: training at each arm's own best LR", results.caption())


def controls_smoothness(results: Results, order: tuple[str, ...] = ()):
    """beta_eff (run median) and early gradient change against eta / eta_max, one line per kind."""
    styles = kind_styles(controls_runs(results.meta))
    summary = controls_summary(results.meta, results.tables)
    shown = summary[summary.eta_ratio.notna()].assign(label=lambda d: d.kind.map(styles.name))
    never = [styles.name[kind] for kind in sorted(set(summary.kind) - set(shown.kind))]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for ax, column, ylabel in ((axes[0], landscape.BETA_EFF_MEDIAN, "β_eff, median over the run's probes"),
                               (axes[1], phase_column(EARLY_PHASE, landscape.GRAD_DIFF_MAX),
                                "‖∇L(w−ηg)−g‖, early median of max over η")):
        if shown.empty:
            ax.text(0.5, 0.5, "no arm trains at any of its LRs", ha="center", va="center", transform=ax.transAxes)
        else:
            palette = _label_palette(shown, styles)
            sns.lineplot(shown, x="eta_ratio", y=column, hue="label", hue_order=list(palette), palette=palette,
                         errorbar=ERRORBAR, marker="o", ax=ax)
            ax.legend(title=None, fontsize=8)
        ax.axvline(1, color="0.5", ls=":", lw=1)
        ax.set(xscale="log", yscale="log", xlabel="η / η_max (the arm's largest LR that trains)", ylabel=ylabel)
    note = f" | left out, never trains: {', '.join(never)}" if never else ""
    return finish(fig, f"{results.experiment}: smoothness against each arm's own LR scale", results.caption() + note)


def controls_sharpness(results: Results, order: tuple[str, ...] = ()):
    """eta * lambda_max over training against the stability line at 2, one panel per kind, one line per LR (shades
    of the kind's norm, dark for small LRs)."""
    runs = controls_runs(results.meta)
    styles = kind_styles(runs)
    table = curvature_summary(results.tables["probes"], results.meta).merge(runs[["arm", "seed", "kind"]],
                                                                           on=["arm", "seed"])
    table = table.assign(eta_lambda=table.lr * table.lambda_max, LR=table.lr.map("{:g}".format))
    kinds = sorted(table.kind.unique())
    columns = min(2, len(kinds))
    rows = -(-len(kinds) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 4.4 * rows), squeeze=False, sharey=True)
    for ax in axes.flat[len(kinds):]:
        ax.set_visible(False)
    for ax, kind in zip(axes.flat, kinds):
        sub = table[table.kind == kind].sort_values("lr")
        palette = norm_colors({lr: styles.norm[kind] for lr in sub.LR.unique()})
        sns.lineplot(sub, x="step", y="eta_lambda", hue="LR", hue_order=list(palette), palette=palette,
                     errorbar=ERRORBAR, marker="o", ax=ax)
        ax.axhline(2, color="0.2", ls="--", lw=1.2, label="2 (stability edge)")
        ax.set(title=styles.name[kind], xlabel="training step", ylabel="η · λ_max", yscale="log")
        ax.legend(title="LR", fontsize=7)
    return finish(fig, f"{results.experiment}: sharpness against the stability edge, η·λ_max = 2", results.caption())


def controls_weights(results: Results, order: tuple[str, ...] = ()):
    """Effective step and total weight norm over training, each kind at its best LR."""
    runs = controls_runs(results.meta)
    styles = kind_styles(runs)
    best = runs[runs.best].assign(label=lambda d: d.kind.map(styles.name) + " (LR " + d.lr.map("{:g}".format) + ")")
    per_step = weights_per_step(weights_summary(results.tables["probes"], results.meta)).merge(
        best[["arm", "seed", "kind", "label"]], on=["arm", "seed"])
    palette = _label_palette(per_step, styles)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for ax, column, ylabel, log in ((axes[0], "eff_step", "η‖g‖/‖W‖, mean over layers before a norm", True),
                                    (axes[1], "w_norm_ratio", "‖W_t‖ / ‖W_0‖, all weight layers", False)):
        sns.lineplot(per_step, x="step", y=column, hue="label", hue_order=list(palette), palette=palette,
                     errorbar=ERRORBAR, ax=ax)
        ax.set(xlabel="training step", ylabel=ylabel, yscale="log" if log else "linear")
        ax.legend(title=None, fontsize=8)
    return finish(fig, f"{results.experiment}: effective step and weight norm, each arm at its best LR",
                  results.caption())


def controls_init(results: Results, order: tuple[str, ...] = ()):
    """Per-layer gradient norms at step 0 (the same for every LR of a kind and seed), and the logits' scale."""
    runs = controls_runs(results.meta)
    styles = kind_styles(runs)
    first = runs[runs.best][["arm", "seed", "kind"]]
    probes = results.tables["probes"].query("probe == @weights.PROBE and step == 0")
    grads = weights_summary(probes, results.meta).merge(first, on=["arm", "seed"])
    logits = probes[probes.metric == weights.LOGIT_STD].merge(first, on=["arm", "seed"]).groupby("kind").value.mean()
    grads["label"] = grads.kind.map(lambda k: f"{styles.name[k]} (logit std {logits.get(k, np.nan):.3g})")
    palette = _label_palette(grads, styles)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for ax, column, ylabel in ((axes[0], "grad_norm", "‖g‖ at step 0"),
                               (axes[1], "eff_step", "η‖g‖/‖W‖ at step 0 (the best LR's η)")):
        sns.lineplot(grads, x="layer", y=column, hue="label", hue_order=list(palette), palette=palette,
                     errorbar=ERRORBAR, marker="o", ax=ax)
        ax.set(xlabel="weight layer (1 = input)", ylabel=ylabel, yscale="log")
        ax.legend(title=None, fontsize=8)
    return finish(fig, f"{results.experiment}: gradients at initialization, per layer", results.caption() +
                  " | logit std: standard deviation of the outputs on the first batch")
