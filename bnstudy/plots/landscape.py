"""The loss landscape along the gradient (Fig. 4, 12; filter-normalized: claims 13a-c), gradient change against step
size (Fig. 11), and internal covariate shift by Definition 2.1 (Fig. 3)."""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from bnstudy.analysis import FILTER, PLAIN, landscape_summary, smoothed_training, window_ratios
from bnstudy.architectures import NORM_KINDS
from bnstudy.plots.style import (ERRORBAR, NORM_STYLES, TRAIN_LABELS, arm_colors, arm_dashes, finish, norm_colors,
                                 norm_name)
from bnstudy.reading import Results, caption_of


def _band_over_seeds(ax, frame: pd.DataFrame, low: str, high: str, color, label: str, dashes: tuple = ()) -> None:
    """The [min over eta, max over eta] band, averaged over seeds, with its edges drawn as lines (dashed where the
    norm's style says, and then with a paler fill: such arms lie on another's band)."""
    mean = frame.groupby("step")[[low, high]].mean()
    line = {"color": color, "lw": 1.5, "dashes": dashes} if dashes else {"color": color, "lw": 0.8}
    ax.fill_between(mean.index, mean[low], mean[high], color=color, alpha=0.12 if dashes else 0.3, lw=0)
    ax.plot(mean.index, mean[low], label=label, **line)
    ax.plot(mean.index, mean[high], **line)


LANDSCAPE_PANELS = {  # probe -> (band or line columns, y label) of panels (a), (b), (c)
    PLAIN: ((("loss_min", "loss_max"), "L(w − η g): range over η"),
            (("grad_diff_min", "grad_diff_max"), "‖∇L(w − η g) − g‖₂: range over η"),
            ("beta_eff", "max over η of ‖∇L(w − η g) − g‖ / ‖η g‖")),
    FILTER: ((("loss_min", "loss_max"), "L(w − η d): range over η"),
             (("rel_grad_diff_min", "rel_grad_diff_max"), "‖∇L(w − η d) − g‖ / ‖g‖: range over η"),
             ("beta_rel", "max over η of (‖∇L(w − η d) − g‖ / ‖g‖) / η")),
}


def landscape(results: Results, order: tuple[str, ...] = (), yscales=("log", "log", "log"), probe: str = PLAIN,
              references: int = 0):
    """Fig. 4: (a) loss along the gradient, (b) gradient predictiveness, (c) effective beta-smoothness. With
    probe=FILTER the same along the filter-normalized gradient d, in scale-free terms (claims 13a-c). Every panel on
    log axes, where the paper's Fig. 4 has linear ones (docs/protocol.md says why). `references` > 0: the first
    that many arms are drawn in every row, and each other arm has a row of its own beside them (Fig. 12: the l_p
    arms lie on BN's band, and in one row they hide each other)."""
    arms = results.arms(order)
    rows = [[arm] for arm in arms[references:]] if references else []
    rows = rows or [[]]  # no arm beyond the references, or none given: one row of every arm
    summary = landscape_summary(results.tables["probes"], probe)
    colors, dashes = arm_colors(results, arms), arm_dashes(results, arms)
    fig, axes = plt.subplots(len(rows), 3, figsize=(16, 4.2 * len(rows) + 0.4), squeeze=False)
    for row, extra in zip(axes, rows):
        shown = arms[:references] + extra if references else arms
        _landscape_row(row, summary, shown, colors, dashes, probe, yscales)
        for ax in row[:len(extra)] if extra else []:  # each row's arm, named once where the row starts
            ax.set_title(f"{ax.get_title()}: {extra[0]}")
        _cancelled_gradient_reading(row[2], results.tables["probes"], probe, shown, colors)
        for ax in row:
            ax.legend(fontsize=8, title=None)
    etas = sorted(results.tables["probes"].query("probe == @probe and eta > 0").eta.unique())
    unit = " of each filter's norm" if probe == FILTER else ""
    caption = results.caption() + (f" | η from {etas[0]:.3g} to {etas[-1]:.3g}{unit} ({len(etas)} points) | band: mean "
                                   f"over seeds of min and max over η")
    caption += results.unnormalized_words(arms) if probe == FILTER else ""
    direction = "the filter-normalized gradient d" if probe == FILTER else "the gradient"
    beside = f", each arm beside {' and '.join(arms[:references])}" if references else ""
    return finish(fig, f"{results.experiment}: the loss landscape along {direction}{beside}", caption)


def _landscape_row(axes, summary: pd.DataFrame, arms: list[str], colors: dict, dashes: dict, probe: str,
                   yscales) -> None:
    """Panels (a), (b), (c) of the arms: the bands over eta of (a) and (b), the line of (c) with its seed band."""
    (band_a, label_a), (band_b, label_b), (line_c, label_c) = LANDSCAPE_PANELS[probe]
    for arm in arms:
        frame = summary[summary.arm == arm]
        _band_over_seeds(axes[0], frame, *band_a, colors[arm], arm, dashes[arm])
        _band_over_seeds(axes[1], frame, *band_b, colors[arm], arm, dashes[arm])
    shown = summary[summary.arm.isin(arms)]
    sns.lineplot(shown, x="step", y=line_c, hue="arm", hue_order=arms, palette=colors, style="arm",
                 style_order=arms, dashes={arm: dashes[arm] for arm in arms}, errorbar=ERRORBAR, ax=axes[2])
    titles = ("(a) loss landscape", "(b) gradient predictiveness", "(c) effective β-smoothness")
    for ax, title, ylabel, yscale in zip(axes, titles, (label_a, label_b, label_c), yscales):
        ax.set(title=title, xlabel="training step", ylabel=ylabel + (" (log)" if yscale == "log" else ""),
               yscale=yscale)


WINDOW_PANELS = {  # quantity of analysis.WINDOW_QUANTITIES -> (title, reference lines: value -> label)
    "grad_diff_max": ("(a) gradient change: max over η of ‖∇L(w − ηg) − g‖",
                      {3.0: "claim 7's rule: 3×", 100.0: "the paper: about 100×"}),
    "loss_ratio": ("(b) loss range: max / min over η of L(w − ηg)", {}),
    "loss_width": ("(c) loss band's width: max − min over η", {}),
    "loss_width_rel": ("(d) the band's width over L(w)", {}),
}


def landscape_windows(results: Results, order: tuple[str, ...] = ()):
    """The paper's "especially early", window by window: per seed, the median over each window of training of the
    first arm's landscape numbers over the second's (standard over batchnorm), on a log axis; 1 is no difference."""
    arms = results.arms(order)
    table = window_ratios(results.tables["probes"], arms[0], arms[1])
    fig, axes = plt.subplots(1, len(WINDOW_PANELS), figsize=(18, 4.8), sharey=True)
    windows = list(table.window.cat.categories)
    for ax, (quantity, (title, references)) in zip(axes, WINDOW_PANELS.items()):
        rows = table[table.quantity == quantity]
        for seed, marker in zip(sorted(rows.seed.unique()), "osD^v"):
            one = rows[rows.seed == seed]
            ax.plot(one.window.cat.codes, one.ratio, marker=marker, ls="none", color="0.25", label=f"seed {seed}")
        means = rows.groupby("window", observed=False).ratio.mean()
        ax.plot(range(len(windows)), means.to_numpy(), color=arm_colors(results, arms)[arms[0]], lw=1.5,
                label="mean over seeds")
        ax.axhline(1.0, color="0.5", lw=1, label="no difference")
        for value, label in references.items():
            ax.axhline(value, color="0.35", ls="--" if value < 10 else ":", lw=0.9, label=label)
        ax.set_xticks(range(len(windows)), [w.replace("–", "–\n") for w in windows])  # two lines: no overlap
        ax.set(title=title, xlabel="window of training steps", yscale="log",
               ylabel=f"{arms[0]} / {arms[1]} (log)")
        ax.legend(fontsize=7)
    caption = results.caption() + (f" | per seed: the median over the window's probes along the gradient of "
                                   f"{arms[0]}'s number over {arms[1]}'s")
    return finish(fig, f"{results.experiment}: {arms[0]} over {arms[1]} along the gradient, window by window",
                  caption)


def _cancelled_gradient_reading(ax, probes: pd.DataFrame, probe: str, arms, colors) -> None:
    """Panel (c)'s 1/eta_min line: what beta reads when the grid's smallest step cancels the gradient
    (grad L(w - eta d) = 0, so ||grad L(w - eta d) - g|| = ||g||). On it, beta measures the grid, not the landscape:
    late in a long run both networks sit there (docs/findings.md). One grey line, or one per arm where arms'
    grids differ (along the gradient the grid is in multiples of each arm's LR)."""
    eta_min = probes[(probes.probe == probe) & (probes.eta > 0) & probes.arm.isin(arms)].groupby("arm").eta.min()
    for value, sharing in eta_min.groupby(eta_min):
        color = "0.35" if eta_min.nunique() == 1 else colors[sharing.index[0]]
        ax.axhline(1 / value, color=color, ls="--", lw=0.9, zorder=1,
                   label=f"1/η_min = {1 / value:.3g}: ∇L(w − η {'d' if probe == FILTER else 'g'}) = 0 at the "
                         f"smallest η")


def landscape_filter(results: Results, order: tuple[str, ...] = (), yscales=("log", "log", "log"),
                     references: int = 0):
    """Fig. 4 along the filter-normalized gradient: what is left of the smoothing without BN's free scale."""
    return landscape(results, order, yscales, probe=FILTER, references=references)


def reprobe_panels(probe: str) -> tuple:
    """(column, y label, title) of the reprobe figure's panels, along the gradient g or the filter-normalized d."""
    d = "d" if probe == FILTER else "g"
    return (("fit", f"L(w − η {d}) / L(w)", f"(a) loss along {'d' if probe == FILTER else 'the gradient'}"),
            ("rel", f"‖∇L(w − η {d}) − g‖ / ‖g‖", "(b) gradient change, relative"),
            ("beta", f"(‖∇L(w − η {d}) − g‖ / ‖g‖) / η", "(c) β at each step size"))


def own_grid(run, probe: str) -> tuple[float, float]:
    """The step sizes the run's own probe took in this direction: its grid's ends."""
    grid = run.config.landscape
    if probe == FILTER:
        return grid.filter_eta_min, grid.filter_eta_max
    return grid.eta_min * run.config.train.lr, grid.eta_max * run.config.train.lr


def reprobed_landscape(table: pd.DataFrame, runs: list, experiment: str, probe: str = PLAIN):
    """`bnstudy reprobe`'s figure: the landscape at runs' checkpoints against the step size, on a wider grid than
    the runs' own (shaded). Per (run, checkpoint, eta) the median over the probed batches; lines the mean over
    seeds and checkpoints with the seed band. On the dashed line of panel (c), β = 1/η: the step cancels the
    gradient, and β there reads the step size, not the landscape. Along the gradient β is β_eff's ‖Δg‖ / ‖η g‖;
    along the filter-normalized gradient it is the scale-free β of claim 13c."""
    facts = {run.dir.arm: run for run in runs}
    arms = sorted(set(table.arm), key=lambda arm: (NORM_KINDS.index(facts[arm].config.model.norm), arm))
    by_lr = sorted(arms, key=lambda arm: facts[arm].config.train.lr)  # shades of a norm: darker for smaller LRs
    colors = norm_colors({arm: facts[arm].config.model.norm for arm in by_lr})
    rel = table.grad_diff / table.grad_norm
    frame = table[table.arm.isin(arms)].assign(fit=table.loss / table.loss0, rel=rel, beta=rel / table.eta)
    frame = frame.groupby(["arm", "seed", "step", "eta"])[["fit", "rel", "beta"]].median().reset_index()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    xlabel = "η, a fraction of each filter's norm (log)" if probe == FILTER else "step size η (log)"
    for ax, (column, ylabel, title) in zip(axes, reprobe_panels(probe)):
        sns.lineplot(frame, x="eta", y=column, hue="arm", hue_order=arms, palette=colors, errorbar=ERRORBAR,
                     marker="o", markersize=3, ax=ax)
        for (low, high), lrs in _grids(arms, facts, probe).items():
            ax.axvspan(low, high, color="0.85", zorder=0, label=f"the runs' own grid ({lrs})")
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel + " (log)", xscale="log", yscale="log")
    etas = frame.eta.drop_duplicates().sort_values()
    axes[2].plot(etas, 1 / etas, color="0.35", ls="--", lw=0.9,
                 label=f"1/η: ∇L(w − η {'d' if probe == FILTER else 'g'}) = 0")
    for ax in axes:
        ax.legend(fontsize=8, title=None)
    steps = ", ".join(f"{s:,}" for s in sorted(set(table.step)))
    caption = (caption_of(experiment, pd.DataFrame([run.meta for run in runs])) + f" | checkpoints at steps {steps} | "
               f"{table.batch.nunique()} training batches each, BN in train mode | median over batches, mean and band "
               f"over seeds and checkpoints")
    direction = "the filter-normalized gradient" if probe == FILTER else "the gradient"
    return finish(fig, f"{experiment}: the landscape along {direction} at the runs' checkpoints, on a wider grid",
                  caption)


def _grids(arms, facts, probe: str) -> dict[tuple[float, float], str]:
    """Each distinct own grid of the arms, in the words of its axis: along the filter-normalized gradient the
    fractions of each filter's norm (the same at every LR), along the gradient the step sizes with the LRs that
    give them."""
    grids: dict[tuple[float, float], list[str]] = {}
    for arm in arms:
        grids.setdefault(own_grid(facts[arm], probe), []).append(f"LR {facts[arm].config.train.lr:g}")
    if probe == FILTER:
        return {(low, high): f"{100 * low:g}–{100 * high:g}% of each filter's norm" for low, high in grids}
    return {(low, high): f"η {low:g}–{high:g}: {', '.join(dict.fromkeys(lrs))}" for (low, high), lrs in grids.items()}


def grad_diff_vs_eta(results: Results, order: tuple[str, ...] = (), xscale: str = "linear"):
    """Fig. 11: gradient change against step size, one panel per arm, one line per probed step, coloured by step."""
    arms = results.arms(order)
    land = results.tables["probes"].query("probe == 'landscape' and metric == 'grad_diff' and eta > 0")
    seed = int(land.seed.min())
    land = land[land.seed == seed]
    fig, axes = plt.subplots(1, len(arms), figsize=(5 * len(arms), 4.2), squeeze=False, sharey=True)
    norm = matplotlib.colors.Normalize(land.step.min(), land.step.max())
    for ax, arm in zip(axes[0], arms):
        for step, g in land[land.arm == arm].groupby("step"):
            ax.plot(g.eta, g.value, color=plt.cm.viridis(norm(step)), lw=1, alpha=0.8)
        ax.set(title=f"{arm}, seed {seed}", xlabel="step size η" + (" (log)" if xscale == "log" else ""),
               xscale=xscale, yscale="log")  # a short log axis is labelled in plain numbers by `finish`
    axes[0][0].set_ylabel("‖∇L(w − η g) − g‖₂")
    finish(fig, f"{results.experiment}: gradient change against step size (Fig. 11)",
           results.caption(shown_seed=seed), right=0.86)
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), cax=fig.add_axes((0.875, 0.2, 0.012, 0.65)))
    bar.set_label("training step of the probe")
    bar.ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    return fig


def with_arm_facts(frame: pd.DataFrame, results: Results) -> pd.DataFrame:
    """Add each arm's norm (and its name in words, `normalization`) and learning rate (meta.json) to a tidy frame."""
    facts = results.meta.drop_duplicates("arm")[["arm", "norm", "lr"]]
    return frame.merge(facts.assign(normalization=facts.norm.map(norm_name)), on="arm")


def ics(results: Results, order: tuple[str, ...] = ()):
    """Fig. 3: per learning rate, training progress, ||G - G'|| and cos(G, G') at each probed layer, per norm."""
    probes = with_arm_facts(results.tables["probes"].query("probe == 'ics'"), results)
    train = with_arm_facts(smoothed_training(results.tables["metrics"]), results)
    train_metric = "acc" if (train.metric == "acc").any() else "loss"
    lrs = sorted(probes.lr.unique(), reverse=True)
    layers = sorted(probes.layer.unique())
    panels = [("train", None)] + [("l2", layer) for layer in layers] + [("cosine", layer) for layer in layers]
    norms = [norm for norm in NORM_KINDS if (probes.norm == norm).any()]  # standard first, as the paper draws it
    palette = {NORM_STYLES[norm].name: NORM_STYLES[norm].color for norm in norms}
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
            sns.lineplot(data, x="step", y="value", hue="normalization", hue_order=list(palette), palette=palette,
                         errorbar=ERRORBAR, ax=ax, legend=(i == 0))
            log = metric == "l2" or (metric == "train" and train_metric == "loss")
            if metric == "l2" and len(data) and (data.value == 0).all():  # layer #1: nothing upstream moves, G' = G
                log = False
                ax.text(0.5, 0.7, "0 at every probe: no layer before it moves, so G′ = G", transform=ax.transAxes,
                        ha="center", va="center", fontsize=9, color="0.3")
            if metric == "cosine" and len(data) and np.allclose(data.value, 1.0, atol=1e-4):
                ax.set_ylim(0.9, 1.1)  # cos = 1 to float32's last digits: shown as 1, not as 1e-5 offsets
            ax.set(ylabel=ylabel, yscale="log" if log else "linear", title=f"LR {lr:g}" if i == 0 else None,
                   xlabel="training step" if i == len(panels) - 1 else None)
    return finish(fig, f"{results.experiment}: internal covariate shift, Definition 2.1 (Fig. 3)", results.caption())
