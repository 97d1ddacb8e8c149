"""CSVs -> figures. Reads only tidy files and meta.json; never trains, never touches a model.

Every figure aggregates over all seeds present (mean line, 95% bootstrap band: `bootstrap_band`) and
carries a caption naming the experiment, preset, dataset and seeds.
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from PIL import Image  # noqa: E402  (matplotlib's own dependency)
from scipy import stats  # noqa: E402

from bnstudy.analysis import (  # noqa: E402
    CHANCE, DENSITY, FILTER, PLAIN, SMOOTH_STEPS, TRAINS_MARGIN, controls_runs, controls_summary, curvature_summary,
    landscape_summary, largest_trainable_lr, moment_changes, smoothed_density, smoothed_training, spectrum_quadrature,
    spectrum_summary, sweep_table, weights_per_step, weights_summary)
from bnstudy import config  # noqa: E402  (FIGURE_KINDS, which register_figure extends)
from bnstudy.config import load_experiment  # noqa: E402
from bnstudy.recording import atomic_write_bytes  # noqa: E402
from bnstudy.reading import Results  # noqa: E402

N_BOOT = 1000  # resamples of the bootstrap band (seaborn's default)


def bootstrap_band(values) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean over seeds: what seaborn's ("ci", 95) computes, drawn
    by scipy in one vectorized call. Seaborn's own bootstrap loops over its 1,000 resamples in Python,
    about 15 ms per x position: 35 of the 40 s that the noisy-bn figures took with two seeds."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]  # a diverged run's last (NaN/inf) value draws no band
    if finite.size < 2:  # one seed: no spread to show
        center = finite.mean() if finite.size else np.nan
        return center, center
    interval = stats.bootstrap((finite,), np.mean, n_resamples=N_BOOT, method="percentile", vectorized=True,
                               rng=0).confidence_interval  # a fixed stream: the same figure every time
    return interval.low, interval.high


ERRORBAR = bootstrap_band  # seaborn draws mean line + this band for every x position


def _finish(fig, title: str, caption: str, right: float = 1.0):
    """Title, caption (experiment, preset, data, seeds) and layout; `right` < 1 leaves room for a colorbar."""
    fig.suptitle(title, fontsize=13)
    fig.text(0.5, 0.005, caption, ha="center", va="bottom", fontsize=8, color="0.3")
    fig.tight_layout(rect=(0, 0.03, right, 0.97))
    return fig


def _palette(arms: list[str]) -> dict[str, tuple]:
    return dict(zip(arms, sns.color_palette("colorblind", len(arms))))


# ----------------------------------------------------------------------------------------------
# Figure kinds; each takes Results and returns a matplotlib Figure
# ----------------------------------------------------------------------------------------------
def arm_labels(results: Results) -> dict[str, str]:
    """Arm -> legend label with its final test accuracy (mean over seeds), and divergence if any."""
    labels = {}
    for arm, meta in results.meta.groupby("arm"):
        parts = []
        if meta.final_test_acc.notna().any():
            parts.append(f"test {100 * meta.final_test_acc.mean():.1f}%")
        if "final_test_acc_recal" in meta and meta.final_test_acc_recal.notna().any():
            parts.append(f"recalibrated {100 * meta.final_test_acc_recal.mean():.1f}%")
        if (meta.status == "diverged").any():
            parts.append(f"diverged in {(meta.status == 'diverged').sum()}/{len(meta)} seeds")
        labels[arm] = f"{arm} ({', '.join(parts)})" if parts else arm
    return labels


TRAIN_LABELS = {"acc": "training accuracy (%d-step mean)" % SMOOTH_STEPS,
                "loss": "training loss (%d-step mean)" % SMOOTH_STEPS}


def training_curves(results: Results, order: tuple[str, ...] = ()):
    """Training accuracy (where it means something) and loss against step per arm (Fig. 1, 2 left, 3b, 5)."""
    arms = results.arms(order)
    data = smoothed_training(results.tables["metrics"])
    labels = arm_labels(results)
    metrics = [m for m in ("acc", "loss") if (data.metric == m).any()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sub = data[data.metric == metric].assign(arm=lambda d: d.arm.map(labels))
        sns.lineplot(sub, x="step", y="value", hue="arm", hue_order=[labels[a] for a in arms], errorbar=ERRORBAR,
                     palette=[_palette(arms)[a] for a in arms], ax=ax)
        _mark_divergence(ax, results, data[data.metric == metric], labels, arms)
        ax.set(xlabel="training step", ylabel=TRAIN_LABELS[metric], yscale="log" if metric == "loss" else "linear")
        ax.legend(title=None, fontsize=8)
    return _finish(fig, f"{results.experiment}: training {' and '.join(metrics).replace('acc', 'accuracy')}",
                   results.caption())


def _mark_divergence(ax, results, data, labels, arms) -> None:
    """A cross where a run's loss stopped being finite."""
    colors = _palette(arms)
    for _, meta in results.meta[results.meta.status == "diverged"].iterrows():
        run = data[(data.arm == meta.arm) & (data.seed == meta.seed)]
        finite = run[np.isfinite(run.value)]
        y = finite.value.iloc[-1] if len(finite) else np.nan
        ax.plot([meta.diverged_at], [y], marker="x", markersize=12, mew=3, color=colors[meta.arm], linestyle="none")


def activation_distributions(results: Results, order: tuple[str, ...] = ()):
    """Percentile bands (5/15/50/85/95) of one unit per layer over training, per arm (Fig. 1c, 2, 6, 9)."""
    acts = results.tables["activations"]
    arms = results.arms(order)
    seed = int(acts.seed.min())
    acts = acts[(acts.seed == seed)]
    acts = acts[acts.step.isin(_interval_steps(acts.step))]
    layers = sorted(acts.layer.unique())
    fig, axes = plt.subplots(len(layers), len(arms), figsize=(3.6 * len(arms), 2.6 * len(layers) + 1.0),
                             squeeze=False, sharex=True)
    for i, layer in enumerate(layers):
        for j, arm in enumerate(arms):
            _percentile_band(axes[i][j], acts[(acts.layer == layer) & (acts.arm == arm)], _palette(arms)[arm])
            axes[i][j].set_title(f"{arm}, layer #{layer}", fontsize=10)
            axes[i][j].set(xlabel="training step" if i == len(layers) - 1 else None,
                           ylabel="pre-ReLU activation" if j == 0 else None)
    caption = results.caption() + f" | distribution of one random unit per layer, seed {seed}"
    return _finish(fig, f"{results.experiment}: activation distributions over training (5/15/50/85/95th percentiles)",
                   caption)


def densities(results: Results, order: tuple[str, ...] = ()):
    """Fig. 6: the distribution of one unit per layer at the `density_at` steps: a Gaussian kernel density of its
    1st..99th percentiles, which are a stratified sample of that distribution (1% of the mass each)."""
    acts = results.tables["activations"]
    acts = acts[acts.stat.isin(DENSITY) & (acts.seed == acts.seed.min())]
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
            ax.set(title=f"{arm}, layer #{layer}", xlabel="pre-ReLU activation", ylabel="density" if j == 0 else None)
            ax.legend(fontsize=7)
    caption = results.caption() + f" | one random unit per layer, seed {int(acts.seed.min()) if len(acts) else '—'}"
    return _finish(fig, f"{results.experiment}: activation densities (Fig. 6)", caption)


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
                         palette=_palette(arms), errorbar=ERRORBAR, ax=ax, legend=(i == 0 and j == 0))
            ax.set_yscale("log")
            ax.set(title=f"layer #{layer}" if i == 0 else None, ylabel=ylabel if j == 0 else None,
                   xlabel="training step" if i == len(MOMENT_ROWS) - 1 else None)
    caption = results.caption() + " | mean over the recorded units"
    return _finish(fig, f"{results.experiment}: change of activation moments (Fig. 8)", caption)


def _band_over_seeds(ax, frame: pd.DataFrame, low: str, high: str, color, label: str) -> None:
    """The [min over eta, max over eta] band, averaged over seeds, with its edges drawn as lines."""
    mean = frame.groupby("step")[[low, high]].mean()
    ax.fill_between(mean.index, mean[low], mean[high], color=color, alpha=0.3, lw=0, label=label)
    ax.plot(mean.index, mean[low], color=color, lw=0.8)
    ax.plot(mean.index, mean[high], color=color, lw=0.8)


LANDSCAPE_PANELS = {  # probe -> (band or line columns, y label) of panels (a), (b), (c)
    PLAIN: ((("loss_min", "loss_max"), "L(w − η g): range over η"),
            (("grad_diff_min", "grad_diff_max"), "‖∇L(w − η g) − g‖₂: range over η"),
            ("beta_eff", "max over η of ‖∇L(w − η g) − g‖ / ‖η g‖")),
    FILTER: ((("loss_min", "loss_max"), "L(w − η d): range over η"),
             (("rel_grad_diff_min", "rel_grad_diff_max"), "‖∇L(w − η d) − g‖ / ‖g‖: range over η"),
             ("beta_rel", "max over η of (‖∇L(w − η d) − g‖ / ‖g‖) / η")),
}


def landscape(results: Results, order: tuple[str, ...] = (), yscales=("log", "log", "log"), probe: str = PLAIN):
    """Fig. 4: (a) loss along the gradient, (b) gradient predictiveness, (c) effective beta-smoothness. With
    probe=FILTER the same along the filter-normalized gradient d, in scale-free terms (claims 13a-c)."""
    arms = results.arms(order)
    summary = landscape_summary(results.tables["probes"], probe)
    colors = _palette(arms)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    (band_a, label_a), (band_b, label_b), (line_c, label_c) = LANDSCAPE_PANELS[probe]
    for arm in arms:
        frame = summary[summary.arm == arm]
        _band_over_seeds(axes[0], frame, *band_a, colors[arm], arm)
        _band_over_seeds(axes[1], frame, *band_b, colors[arm], arm)
    sns.lineplot(summary, x="step", y=line_c, hue="arm", hue_order=arms, palette=colors, errorbar=ERRORBAR, ax=axes[2])
    titles = ("(a) loss landscape", "(b) gradient predictiveness", "(c) effective β-smoothness")
    for ax, title, ylabel, yscale in zip(axes, titles, (label_a, label_b, label_c), yscales):
        ax.set(title=title, xlabel="training step", ylabel=ylabel + (" (log)" if yscale == "log" else ""),
               yscale=yscale)
        ax.legend(fontsize=8, title=None)
    etas = sorted(results.tables["probes"].query("probe == @probe and eta > 0").eta.unique())
    unit = " of each filter's norm" if probe == FILTER else ""
    caption = results.caption() + (f" | η from {etas[0]:.3g} to {etas[-1]:.3g}{unit} ({len(etas)} points) | band: mean "
                                   f"over seeds of min and max over η")
    direction = "the filter-normalized gradient d" if probe == FILTER else "the gradient (Fig. 4)"
    return _finish(fig, f"{results.experiment}: the loss landscape along {direction}", caption)


def landscape_filter(results: Results, order: tuple[str, ...] = (), yscales=("log", "log", "log")):
    """Fig. 4 along the filter-normalized gradient: what is left of the smoothing without BN's free scale."""
    return landscape(results, order, yscales, probe=FILTER)


def grad_diff_vs_eta(results: Results, order: tuple[str, ...] = (), xscale: str = "linear"):
    """Fig. 11: gradient change against step size, one line per probed step, coloured by step."""
    arms = results.arms(order)
    land = results.tables["probes"].query("probe == 'landscape' and metric == 'grad_diff' and eta > 0")
    seed = int(land.seed.min())
    land = land[land.seed == seed]
    fig, axes = plt.subplots(1, len(arms), figsize=(5 * len(arms), 4.2), squeeze=False, sharey=True)
    norm = matplotlib.colors.Normalize(land.step.min(), land.step.max())
    for ax, arm in zip(axes[0], arms):
        for step, g in land[land.arm == arm].groupby("step"):
            ax.plot(g.eta, g.value, color=plt.cm.viridis(norm(step)), lw=1, alpha=0.8)
        ax.set(title=arm, xlabel="step size η" + (" (log)" if xscale == "log" else ""), xscale=xscale, yscale="log")
    axes[0][0].set_ylabel("‖∇L(w − η g) − g‖₂")
    _finish(fig, f"{results.experiment}: gradient change against step size (Fig. 11)",
            results.caption() + f" | seed {seed}", right=0.92)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), cax=fig.add_axes((0.935, 0.2, 0.012, 0.65)),
                 label="training step")
    return fig


def with_arm_facts(frame: pd.DataFrame, results: Results) -> pd.DataFrame:
    """Add each arm's norm and learning rate (from meta.json) to a tidy frame."""
    facts = results.meta.drop_duplicates("arm")[["arm", "norm", "lr"]]
    return frame.merge(facts, on="arm")


def ics(results: Results, order: tuple[str, ...] = ()):
    """Fig. 3: per learning rate, training progress, ||G - G'|| and cos(G, G') at each probed layer, per norm."""
    probes = with_arm_facts(results.tables["probes"].query("probe == 'ics'"), results)
    train = with_arm_facts(smoothed_training(results.tables["metrics"]), results)
    train_metric = "acc" if (train.metric == "acc").any() else "loss"
    lrs = sorted(probes.lr.unique(), reverse=True)
    layers = sorted(probes.layer.unique())
    panels = [("train", None)] + [("l2", layer) for layer in layers] + [("cosine", layer) for layer in layers]
    norms = sorted(probes.norm.unique(), key=lambda n: (n != "none", n))
    palette = dict(zip(norms, sns.color_palette("colorblind", len(norms))))
    fig, axes = plt.subplots(len(panels), len(lrs), figsize=(5.5 * len(lrs), 2.6 * len(panels)), squeeze=False,
                             sharex=True)
    for j, lr in enumerate(lrs):
        for i, (metric, layer) in enumerate(panels):
            ax = axes[i][j]
            if metric == "train":
                data, ylabel = train[(train.lr == lr) & (train.metric == train_metric)], TRAIN_LABELS[train_metric]
            else:
                data = probes[(probes.lr == lr) & (probes.metric == metric) & (probes.layer == layer)]
                ylabel = f"‖G − G′‖₂, layer #{layer}" if metric == "l2" else f"cos(G, G′), layer #{layer}"
            sns.lineplot(data, x="step", y="value", hue="norm", hue_order=norms, palette=palette, errorbar=ERRORBAR,
                         ax=ax, legend=(i == 0))
            log = metric == "l2" or (metric == "train" and train_metric == "loss")
            ax.set(ylabel=ylabel, yscale="log" if log else "linear", title=f"LR {lr:g}" if i == 0 else None,
                   xlabel="training step" if i == len(panels) - 1 else None)
    return _finish(fig, f"{results.experiment}: internal covariate shift, Definition 2.1 (Fig. 3)", results.caption())


def test_curves(results: Results, order: tuple[str, ...] = ()):
    """Test accuracy (eval mode) at the evaluation steps, per arm (Fig. 1 right)."""
    arms = results.arms(order)
    test = results.tables["metrics"].query("split == 'test' and metric == 'acc'")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.lineplot(test, x="step", y="value", hue="arm", hue_order=arms, palette=_palette(arms), errorbar=ERRORBAR,
                 marker="o", ax=ax)
    ax.set(xlabel="training step", ylabel="test accuracy (eval mode)")
    ax.legend(title=None, fontsize=8)
    return _finish(fig, f"{results.experiment}: test accuracy", results.caption())


def lr_sweep(results: Results, order: tuple[str, ...] = ()):
    """Final training accuracy against learning rate per kind (norm, init); crosses where a run diverged."""
    table = sweep_table(results.meta)
    largest = largest_trainable_lr(table)
    kinds = list(dict.fromkeys(table.kind))
    palette = dict(zip(kinds, sns.color_palette("colorblind", len(kinds))))
    fig, ax = plt.subplots(figsize=(8, 5))
    labels = {k: f"{k} init (trains up to LR {largest[k]:g})" if pd.notna(largest[k]) else f"{k} init (never trains)"
              for k in kinds}
    trained = table[table.status == "complete"].assign(kind=lambda d: d.kind.map(labels))
    sns.lineplot(trained, x="lr", y="final_train_acc_last100", hue="kind", hue_order=[labels[k] for k in kinds],
                 palette=[palette[k] for k in kinds], errorbar=ERRORBAR, marker="o", ax=ax)
    for _, run in table[table.status == "diverged"].iterrows():
        ax.plot([run.lr], [CHANCE], marker="x", markersize=12, mew=3, color=palette[run.kind], linestyle="none")
    ax.axhline(CHANCE + TRAINS_MARGIN, color="0.5", ls=":", lw=1, label="chance + 10 points")
    ax.set(xscale="log", xlabel="learning rate (constant, plain SGD)", ylabel="training accuracy, last 100 steps",
           ylim=(0, 1))
    ax.legend(title=None, fontsize=8)
    return _finish(fig, f"{results.experiment}: final training accuracy against learning rate (x: diverged)",
                   results.caption())


def curvature(results: Results, order: tuple[str, ...] = ()):
    """lambda_max over training per arm with the stability line 2/eta; lambda_max / beta_eff where both were probed."""
    arms = results.arms(order)
    table = curvature_summary(results.tables["probes"], results.meta)
    colors = _palette(arms)
    has_beta = "lambda_over_beta" in table and table.lambda_over_beta.notna().any()
    fig, axes = plt.subplots(1, 2 if has_beta else 1, figsize=(13 if has_beta else 7, 4.6), squeeze=False)
    ax = axes[0][0]
    sns.lineplot(table, x="step", y="lambda_max", hue="arm", hue_order=arms, palette=colors, errorbar=ERRORBAR,
                 marker="o", ax=ax)
    for lr in sorted(table.lr.unique()):
        ax.axhline(2 / lr, color="0.4", ls="--", lw=1, label=f"2/η = {2 / lr:g}")
    ax.set(xlabel="training step", ylabel="λ_max of the Hessian (train-mode loss, step's batch)", yscale="log",
           title="top Hessian eigenvalue")
    ax.legend(fontsize=8, title=None)
    if has_beta:
        sns.lineplot(table, x="step", y="lambda_over_beta", hue="arm", hue_order=arms, palette=colors,
                     errorbar=ERRORBAR, marker="o", ax=axes[0][1])
        axes[0][1].set(xlabel="training step", ylabel="λ_max / β_eff (same step and batch)", yscale="log",
                       title="curvature against effective β-smoothness")
        axes[0][1].legend(fontsize=8, title=None)
    hvps = table.hvps.median()
    return _finish(fig, f"{results.experiment}: curvature over training (beyond the paper)",
                   results.caption() + f" | Lanczos, median {hvps:.0f} Hessian-vector products per probe")


# ----------------------------------------------------------------------------------------------
# The controls experiment: kinds (norm, init), each at its own grid of LRs
# ----------------------------------------------------------------------------------------------
def _kind_palette(kinds) -> dict:
    names = sorted(set(kinds))
    return dict(zip(names, sns.color_palette("colorblind", len(names))))


def controls_training(results: Results, order: tuple[str, ...] = ()):
    """Training accuracy and loss of each kind at its own best LR, one column per init."""
    runs = controls_runs(results.meta)
    best = runs[runs.best].assign(label=lambda d: d.norm + " (best LR " + d.lr.map("{:g}".format) + ")")
    data = smoothed_training(results.tables["metrics"]).merge(best[["arm", "seed", "init", "label"]],
                                                              on=["arm", "seed"])
    inits = sorted(best.init.unique())
    fig, axes = plt.subplots(2, len(inits), figsize=(6 * len(inits), 8), squeeze=False, sharex=True)
    for j, init in enumerate(inits):
        for i, metric in enumerate(("acc", "loss")):
            sub = data[(data.init == init) & (data.metric == metric)]
            sns.lineplot(sub, x="step", y="value", hue="label", hue_order=sorted(sub.label.unique()),
                         errorbar=ERRORBAR, ax=axes[i][j])
            axes[i][j].set(title=f"{init} init" if i == 0 else None, ylabel=TRAIN_LABELS[metric],
                           yscale="log" if metric == "loss" else "linear", xlabel="training step" if i else None)
            axes[i][j].legend(title=None, fontsize=8)
    return _finish(fig, f"{results.experiment}: training at each arm's own best LR", results.caption())


def controls_smoothness(results: Results, order: tuple[str, ...] = ()):
    """beta_eff (run median) and early gradient change against eta / eta_max, one line per kind."""
    summary = controls_summary(results.meta, results.tables)
    shown = summary[summary.eta_ratio.notna()]
    never = sorted(set(summary.kind) - set(shown.kind))
    palette = _kind_palette(summary.kind)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for ax, column, ylabel in ((axes[0], "beta_eff_median", "β_eff, median over the run's probes"),
                               (axes[1], "early_grad_diff_max", "‖∇L(w−ηg)−g‖, early median of max over η")):
        if shown.empty:
            ax.text(0.5, 0.5, "no arm trains at any of its LRs", ha="center", va="center", transform=ax.transAxes)
        else:
            sns.lineplot(shown, x="eta_ratio", y=column, hue="kind", palette=palette, errorbar=ERRORBAR, marker="o",
                         ax=ax)
            ax.legend(title=None, fontsize=8)
        ax.axvline(1, color="0.5", ls=":", lw=1)
        ax.set(xscale="log", yscale="log", xlabel="η / η_max (the arm's largest LR that trains)", ylabel=ylabel)
    note = f" | left out, never trains: {', '.join(never)}" if never else ""
    return _finish(fig, f"{results.experiment}: smoothness against each arm's own LR scale", results.caption() + note)


def controls_sharpness(results: Results, order: tuple[str, ...] = ()):
    """eta * lambda_max over training against the stability line at 2, one panel per kind, one line per LR."""
    runs = controls_runs(results.meta)
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
        sns.lineplot(sub, x="step", y="eta_lambda", hue="LR", palette="viridis", errorbar=ERRORBAR, marker="o", ax=ax)
        ax.axhline(2, color="0.2", ls="--", lw=1.2, label="2 (stability edge)")
        ax.set(title=kind, xlabel="training step", ylabel="η · λ_max", yscale="log")
        ax.legend(title="LR", fontsize=7)
    return _finish(fig, f"{results.experiment}: sharpness against the stability edge, η·λ_max = 2", results.caption())


def controls_weights(results: Results, order: tuple[str, ...] = ()):
    """Effective step and total weight norm over training, each kind at its best LR."""
    runs = controls_runs(results.meta)
    best = runs[runs.best].assign(label=lambda d: d.kind + " (LR " + d.lr.map("{:g}".format) + ")")
    per_step = weights_per_step(weights_summary(results.tables["probes"], results.meta)).merge(
        best[["arm", "seed", "label"]], on=["arm", "seed"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for ax, column, ylabel, log in ((axes[0], "eff_step", "η‖g‖/‖W‖, mean over layers before a norm", True),
                                    (axes[1], "w_norm_ratio", "‖W_t‖ / ‖W_0‖, all weight layers", False)):
        sns.lineplot(per_step, x="step", y=column, hue="label", hue_order=sorted(per_step.label.unique()),
                     errorbar=ERRORBAR, ax=ax)
        ax.set(xlabel="training step", ylabel=ylabel, yscale="log" if log else "linear")
        ax.legend(title=None, fontsize=8)
    return _finish(fig, f"{results.experiment}: effective step and weight norm, each arm at its best LR",
                   results.caption())


def controls_init(results: Results, order: tuple[str, ...] = ()):
    """Per-layer gradient norms at step 0 (the same for every LR of a kind and seed), and the logits' scale."""
    runs = controls_runs(results.meta)
    first = runs[runs.best][["arm", "seed", "kind"]]
    probes = results.tables["probes"].query("probe == 'weights' and step == 0")
    grads = weights_summary(probes, results.meta).merge(first, on=["arm", "seed"])
    logits = probes[probes.metric == "logit_std"].merge(first, on=["arm", "seed"]).groupby("kind").value.mean()
    grads["label"] = grads.kind.map(lambda k: f"{k} (logit std {logits.get(k, np.nan):.3g})")
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for ax, column, ylabel in ((axes[0], "grad_norm", "‖g‖ at step 0"),
                               (axes[1], "eff_step", "η‖g‖/‖W‖ at step 0 (the best LR's η)")):
        sns.lineplot(grads, x="layer", y=column, hue="label", hue_order=sorted(grads.label.unique()),
                     errorbar=ERRORBAR, marker="o", ax=ax)
        ax.set(xlabel="weight layer (1 = input)", ylabel=ylabel, yscale="log")
        ax.legend(title=None, fontsize=8)
    return _finish(fig, f"{results.experiment}: gradients at initialization, per layer", results.caption() +
                   " | logit std: standard deviation of the outputs on the first batch")


DENSITY_FLOOR = 1e-8  # of the panel's peak: the log axis shows the outliers' mass, not the kernel's far tails


def spectrum(results: Results, order: tuple[str, ...] = ()):
    """Hessian spectral densities (log density, as Ghorbani et al. draw them), one row per arm and BN mode, one column
    per probed step, a line per seed; lambda_max (solid) and 2/eta (dashed) marked; outliers and gradient share."""
    quadrature = spectrum_quadrature(results.tables["probes"])
    summary = spectrum_summary(results.tables["probes"]).merge(results.meta[["arm", "seed", "lr"]], on=["arm", "seed"])
    panels = [(arm, mode) for arm in results.arms(order) for mode in ("train", "eval")
              if ((quadrature.arm == arm) & (quadrature["mode"] == mode)).any()]
    steps = sorted(quadrature.step.unique())
    fig, axes = plt.subplots(len(panels), len(steps), figsize=(4.2 * len(steps), 2.8 * len(panels) + 0.8),
                             squeeze=False)
    for i, (arm, mode) in enumerate(panels):
        for j, step in enumerate(steps):
            ax = axes[i][j]
            here = quadrature[(quadrature.arm == arm) & (quadrature["mode"] == mode) & (quadrature.step == step)]
            peak = 0.0
            for _, run in here.groupby("seed"):
                ritz = [v.theta.tolist() for _, v in run.groupby("vector")]
                weights = [v.tau.tolist() for _, v in run.groupby("vector")]
                grid, density = smoothed_density(ritz, weights)
                ax.plot(grid, density, lw=0.9, color="C0", alpha=0.8)
                peak = max(peak, max(density))
            if peak > 0:
                ax.set_ylim(peak * DENSITY_FLOOR, peak * 3)  # the outliers' bumps sit about 1e-5 below the bulk
            facts = summary[(summary.arm == arm) & (summary["mode"] == mode) & (summary.step == step)]
            if len(facts):
                ax.axvline(facts.lambda_max.median(), color="C3", lw=1.2, label="λ_max")
                ax.axvline(2 / facts.lr.iloc[0], color="0.3", ls="--", lw=1, label="2/η")
                ax.set_title(f"{arm} ({mode} mode), step {step}\noutliers {facts.outliers.median():.0f}, "
                             f"grad share top-10 {100 * facts.share.median():.0f}%", fontsize=8)
            ax.set(yscale="log", xlabel="Hessian eigenvalue" if i == len(panels) - 1 else None,
                   ylabel="density (log)" if j == 0 else None)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    caption = results.caption() + " | Lanczos quadrature, Gaussian kernel 1% of the range; a line per seed"
    return _finish(fig, f"{results.experiment}: Hessian spectral density over training", caption)


FIGURES = {"training": training_curves, "activations": activation_distributions, "moments": moments,
           "landscape": landscape, "landscape_filter": landscape_filter, "densities": densities,
           "grad_vs_eta": grad_diff_vs_eta, "ics": ics, "test": test_curves,
           "lr_sweep": lr_sweep, "curvature": curvature, "controls_training": controls_training,
           "controls_smoothness": controls_smoothness, "controls_sharpness": controls_sharpness,
           "controls_weights": controls_weights, "controls_init": controls_init, "spectrum": spectrum}


# What each figure kind reads: (table, the prefix of its rows' probe, stat or split); kinds not listed read training
# metrics, which every run has
NEEDS = {"activation_distributions": ("activations", "p"), "moments": ("activations", "mean"),
         "densities": ("activations", "q"), "landscape": ("probes", PLAIN), "landscape_filter": ("probes", FILTER),
         "grad_diff_vs_eta": ("probes", PLAIN), "ics": ("probes", "ics"), "curvature": ("probes", "curvature"),
         "test_curves": ("metrics", "test"), "controls_smoothness": ("probes", PLAIN),
         "controls_sharpness": ("probes", "curvature"), "controls_weights": ("probes", "weights"),
         "controls_init": ("probes", "weights"), "spectrum": ("probes", "spectrum-")}


def register_figure(kind: str, draw, needs: tuple[str, str] | None = None) -> None:
    """A figure kind of one's own: `draw(results, arms, **options)` returns a matplotlib figure (finish it with
    `finish`); `needs` = (table, prefix of its rows' probe or stat) skips it, saying why, where its rows are missing.
    Experiment files may name the kind from then on (in `figures` or a `[plots.NAME]` table)."""
    FIGURES[kind] = draw
    if needs is not None:
        NEEDS[draw.__name__] = needs
    if kind not in config.FIGURE_KINDS:
        config.FIGURE_KINDS = config.FIGURE_KINDS + (kind,)


finish = _finish  # title, caption and layout, as every figure of bnstudy has them


def plot_experiment(experiment: str, results_dir: str = "results", unfinished: bool = False) -> list[Path]:
    """Draw every figure the experiment's results folder lists in its manifest (with `unfinished`, runs still
    training too); return the paths. `experiment` is a results folder's name, or a .toml file of one's own."""
    name = load_experiment(experiment).name if experiment.endswith(".toml") else experiment
    return draw_figures(Results(Path(results_dir), name, unfinished))


def draw_figures(results: Results, exp=None) -> list[Path]:
    """plot_experiment on results already read (the report has read them for its summaries). `exp` (a Manifest or
    an Experiment) overrides the description stored with the results."""
    exp = exp or results.manifest
    out_dir = results.root / "figures"
    out_dir.mkdir(parents=True, exist_ok=True)
    order = tuple(exp.arms)
    paths = []
    sns.set_theme(style="whitegrid", context="notebook")
    figures = [(name, FIGURES[name], results, order, {}) for name in exp.figures]
    figures += [(name, *_view(exp, name, spec, results)) for name, spec in exp.plots.items()]
    for name, draw, shown, arms, options in figures:
        if why := missing_rows(draw, shown):
            print(f"bnstudy: warning: {results.experiment}: figure {name} not drawn: {why}", file=sys.stderr)
            continue
        fig = draw(shown, arms, **options)
        path = out_dir / f"{name}.png"
        atomic_write_bytes(path, png_bytes(fig))  # a kill while drawing leaves the previous figure, never half of one
        plt.close(fig)
        paths.append(path)
    return paths


def missing_rows(draw, results: Results) -> str | None:
    """Why a figure kind has nothing to draw from these runs (its probe did not run, e.g. `--set
    activations.layers=[]`), or None."""
    table, prefix = NEEDS.get(draw.__name__, (None, ""))
    if results.meta.empty:
        return "none of its runs is there yet"
    if table is None:
        return None
    rows = results.tables[table]
    column = {"probes": "probe", "activations": "stat", "metrics": "split"}[table]
    return None if rows[column].astype(str).str.startswith(prefix).any() else f"no {prefix or table} rows in its runs"


def _view(exp, name: str, spec: dict, results: Results) -> tuple:
    """A [plots.NAME] figure: (its kind's function, the runs it shows found by configuration, their order, options).
    `layers` keeps the activation rows of those layers alone."""
    shown = results.matching(spec["runs"])
    if shown.missing:  # a configuration not trained yet: the figure shows the others, and says so
        print(f"bnstudy: warning: {results.experiment}: figure {name} without the runs of "
              f"{'; '.join(shown.missing)} (none yet)", file=sys.stderr)
    if "layers" in spec:
        acts = shown.tables["activations"]
        shown.tables = shown.tables | {"activations": acts[acts.layer.isin(spec["layers"])]}
    return FIGURES[spec["kind"]], shown, shown.order, spec.get("options", {})


def png_bytes(fig, dpi: int = 110) -> bytes:
    """The figure as a 256-colour palette PNG: line plots use far fewer colours, and the file is a third of
    matplotlib's RGBA one (5.2 -> 1.7 MB for the committed figures), which keeps the repository small."""
    rgba = io.BytesIO()
    fig.savefig(rgba, dpi=dpi, format="png")
    image = Image.open(rgba).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    image.save(out, format="png", optimize=True)
    return out.getvalue()
