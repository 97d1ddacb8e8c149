"""Ioffe & Szegedy's Fig. 1, as they draw it (2015, section 4.1): (a) test accuracy against training steps, with and
without BN; (b, c) the input to a typical sigmoid of the last hidden layer over training, as its 15th, 50th and 85th
percentiles over the step's batch, one panel per network."""
from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

from bnstudy.plots.activations import _interval_steps
from bnstudy.plots.style import ERRORBAR, arm_colors, finish
from bnstudy.reading import Results

PERCENTILE_LINES = {"p85": (":", "85th"), "p50": ("-", "50th"), "p15": ("--", "15th")}


def ioffe_fig1(results: Results, order: tuple[str, ...] = ()):
    arms = results.arms(order)
    colors = arm_colors(results, arms)
    fig, axes = plt.subplots(1, 1 + len(arms), figsize=(4.4 * (1 + len(arms)), 4.4), squeeze=False)
    test = results.tables["metrics"].query("split == 'test' and metric == 'acc'")
    sns.lineplot(test, x="step", y="value", hue="arm", hue_order=arms, palette=colors, errorbar=ERRORBAR, ax=axes[0][0])
    axes[0][0].set(xlabel="training step", ylabel="test accuracy", title="(a) test accuracy")
    axes[0][0].legend(title=None, fontsize=8)
    acts = results.tables["activations"]
    seed, layer = int(acts.seed.min()), int(acts.layer.max())
    acts = acts[(acts.seed == seed) & (acts.layer == layer)]
    acts = acts[acts.step.isin(_interval_steps(acts.step))]
    for letter, ax, arm in zip("bc", axes[0][1:], arms):
        mine = acts[acts.arm == arm]
        wide = mine[mine.unit == mine.unit.min()].pivot_table(index="step", columns="stat", values="value")
        for stat, (dashes, label) in PERCENTILE_LINES.items():
            ax.plot(wide.index, wide[stat], ls=dashes, color=colors[arm], lw=1.4, label=label)
        ax.set(xlabel="training step", ylabel=f"input to a sigmoid of layer #{layer}",
               title=f"({letter}) {arm}: one unit, seed {seed}")
        ax.legend(title="percentile", fontsize=8)
    caption = (results.caption() + f" | (b, c): seed {seed} alone, the first recorded unit of the last hidden layer; "
               "its percentiles over the step's batch")
    return finish(fig, f"{results.experiment}: Ioffe & Szegedy's Fig. 1 on these runs", caption)
