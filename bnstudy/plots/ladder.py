"""The width ladder's figures: one per claim with a deciding statistic, its value against the VGG's width on a log2
axis, each seed a point, the rule's threshold and the paper's number (where it gives one) as lines."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bnstudy.claims.ladder import ladder_claims, ladder_path, width_label
from bnstudy.files import atomic_write_bytes
from bnstudy.plots.style import finish

SEED_MARKERS = "osD^vP*X"
LEGEND_RIGHT = 0.76  # of the figure's width: the panel's share, the legend to its right
SEED_SPREAD = 0.05  # in log2 units: the seeds of one width side by side, not on top of each other


def ladder_figure(points: pd.DataFrame, claim, caption: str):
    """`points`: ladder_points' rows of this claim. Non-finite values (1b: a level only standard reached, or neither)
    are named in the caption, not drawn."""
    stat = claim.statistic
    fig, ax = plt.subplots(figsize=(9, 5.2))
    finite = points[np.isfinite(points.value)]
    seeds = sorted(points.seed.unique())
    for i, seed in enumerate(seeds):
        mine = finite[finite.seed == seed]
        shift = 2 ** (SEED_SPREAD * (i - (len(seeds) - 1) / 2))
        ax.scatter(mine.width * shift, mine.value, marker=SEED_MARKERS[i % len(SEED_MARKERS)], s=42, zorder=3,
                   color="C0", edgecolor="0.1", linewidth=0.6, label=f"seed {seed}")
    medians = finite.groupby("width").value.median()
    ax.plot(medians.index, medians.to_numpy(), color="0.55", lw=1, zorder=2, label="median over seeds")
    side = "≥" if stat.holds_above else "≤"
    ax.axhline(stat.threshold, color="0.2", ls="--", lw=1.2, label=f"rule: {side} {stat.threshold:g} in every seed")
    if stat.paper is not None:
        ax.axhline(stat.paper, color="C3", ls=":", lw=1.5, label=f"paper: ≈{stat.paper:g}\n({stat.paper_words})")
    widths = sorted(set(points.width) | {0.125, 0.25, 0.5, 1.0})
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths, [width_label(w) for w in widths])
    ax.minorticks_off()
    ax.set_xlim(min(widths) / 1.4, max(widths) * 1.4)
    if stat.log and (finite.value > 0).all():
        ax.set_yscale("log")
    else:  # a share or a step ratio: from 0, with room above the threshold line
        ax.set_ylim(0, 1.15 * max(finite.value.max(), stat.threshold))
    ax.set(xlabel="width: the VGG's channels as a fraction of the paper's (log₂ scale)", ylabel=stat.name)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the panel: it hides no point
    verdicts = "; ".join(f"{width_label(w)}: {v}" for w, v in points.groupby("width").verdict.first().items())
    undrawn = points[~np.isfinite(points.value)]
    missing = (" | not drawn (the level reached by standard alone, or by neither): " +
               ", ".join(f"width {width_label(w)} seed {s}" for w, s in zip(undrawn.width, undrawn.seed))
               if len(undrawn) else "")
    return finish(fig, f"Claim {claim.number}: {stat.name}, by width",
                  f"{caption} | verdict by width: {verdicts}{missing}", right=LEGEND_RIGHT)


def draw_ladder(points: pd.DataFrame, claims: list, caption: str, folder: Path) -> list[Path]:
    """ladder-claim-<number>.png in `folder` for each claim with a Statistic and points; the paths."""
    from bnstudy.plots import png_bytes

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for claim in ladder_claims(points, claims):
        fig = ladder_figure(points[points.claim == claim.number], claim, caption)
        path = ladder_path(folder, claim)
        atomic_write_bytes(path, png_bytes(fig))  # a kill while drawing leaves the previous figure
        plt.close(fig)
        paths.append(path)
    return paths
