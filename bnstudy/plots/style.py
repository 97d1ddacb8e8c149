"""What every figure shares: the seed band, title and caption, legend labels, and one name and one colour per
normalization (NORM_STYLES), so that an arm without BN is "standard" and blue in every figure, whatever else the
figure shows and in whatever order."""
from __future__ import annotations

import colorsys
from typing import NamedTuple

import numpy as np
import pandas as pd
import seaborn as sns
from scipy import stats

from bnstudy.analysis import SMOOTH_STEPS
from bnstudy.reading import Results

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


def finish(fig, title: str, caption: str, right: float = 1.0):
    """Title, caption (experiment, preset, data, seeds) and layout, as every figure of bnstudy has them; `right` < 1
    leaves room for a colorbar."""
    fig.suptitle(title, fontsize=13)
    fig.text(0.5, 0.005, caption, ha="center", va="bottom", fontsize=8, color="0.3")
    fig.tight_layout(rect=(0, 0.03, right, 0.97))
    return fig


# ----------------------------------------------------------------------------------------------
# One name and one colour per normalization
# ----------------------------------------------------------------------------------------------
class NormStyle(NamedTuple):
    name: str  # what legends and titles call the norm (the paper's words where it has them)
    color: tuple[float, float, float]


# Seaborn's colorblind palette has ten colours; its light blue is left out: it has the hue of the blue, so it would
# read as a shade of "standard". Its grey goes to the norm drawn least (reference lines are dashed or dotted).
_COLORBLIND = sns.color_palette("colorblind")
NORM_STYLES = {  # architectures.NORM_KINDS, each once (a test checks)
    "none": NormStyle("standard", _COLORBLIND[0]),  # blue
    "batch": NormStyle("batchnorm", _COLORBLIND[1]),  # orange
    "noisy-batch": NormStyle("noisy batchnorm", _COLORBLIND[2]),  # green
    "noise-only": NormStyle("noise only", _COLORBLIND[3]),  # vermilion
    "l1": NormStyle("ℓ1 norm", _COLORBLIND[4]),  # mauve
    "l2": NormStyle("ℓ2 norm", _COLORBLIND[5]),  # tan
    "linf": NormStyle("ℓ∞ norm", _COLORBLIND[6]),  # pink
    "layer": NormStyle("layer norm", _COLORBLIND[8]),  # yellow
    "group": NormStyle("group norm", _COLORBLIND[7]),  # grey
}


def norm_name(norm: str) -> str:
    return NORM_STYLES[norm].name


def kind_name(norm: str, init: str) -> str:
    """A kind (analysis.arm_kind's 'none, kaiming') in words: 'standard, kaiming init'."""
    return f"{norm_name(norm)}, {init} init"


DARKEST, LIGHTEST = 0.28, 0.76  # the lightness (HLS) of the darkest and the lightest shade


def shades(color, n: int) -> list[tuple]:
    """n colours of `color`'s hue and saturation, dark to light, evenly spaced in lightness (so a pale norm's shades
    are as far apart as a dark one's); `color` itself where n is 1, so a norm drawn once has its own colour."""
    if n == 1:
        return [tuple(color)]
    hue, _, saturation = colorsys.rgb_to_hls(*color)
    return [colorsys.hls_to_rgb(hue, float(lightness), saturation) for lightness in np.linspace(DARKEST, LIGHTEST, n)]


def norm_colors(norms: dict) -> dict:
    """Key (an arm, a kind, a legend label) -> colour, given each key's norm: the norm's colour, or, where several
    keys share a norm, shades of it in the keys' order (dark first)."""
    keys_of: dict[str, list] = {}
    for key, norm in norms.items():
        keys_of.setdefault(norm, []).append(key)
    return {key: color for norm, keys in keys_of.items()
            for key, color in zip(keys, shades(NORM_STYLES[norm].color, len(keys)))}


def arm_colors(results: Results, arms: list[str]) -> dict[str, tuple]:
    """Arm -> colour by its norm (meta.json); arms that share a norm get its shades, darker for smaller LRs."""
    facts = results.meta.drop_duplicates("arm").set_index("arm")
    by_lr = sorted(arms, key=lambda arm: facts.lr[arm])  # stable: arms at one LR keep the figure's order
    return norm_colors({arm: facts.norm[arm] for arm in by_lr})


def kind_styles(runs: pd.DataFrame) -> pd.DataFrame:
    """Per kind (norm and init, analysis.arm_kind), sorted: its norm, its name in words and its colour, from a table
    of runs with kind, norm and init columns. A norm's kinds are shades of its colour."""
    kinds = runs.drop_duplicates("kind").sort_values("kind").set_index("kind")[["norm", "init"]]
    colors = norm_colors(dict(zip(kinds.index, kinds.norm)))
    return kinds.assign(name=[kind_name(norm, init) for norm, init in zip(kinds.norm, kinds.init)],
                        color=[colors[kind] for kind in kinds.index])


# ----------------------------------------------------------------------------------------------
# Legend labels
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
