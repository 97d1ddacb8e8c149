"""What every figure shares: the seed band, title and caption, legend labels, and one name and one colour per
normalization (NORM_STYLES), so that an arm without BN is "standard" and blue in every figure, whatever else the
figure shows and in whatever order."""
from __future__ import annotations

import colorsys
import textwrap
from typing import NamedTuple

import matplotlib.ticker
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


TITLE_SIZE, CAPTION_SIZE = 13, 8  # points
CHAR_WIDTH = 0.6  # a character's mean width in DejaVu Sans, in ems: how many fit on a line of the figure
LINE_HEIGHT = 1.4  # a line of text's height, in ems


def wrapped(text: str, fig, fontsize: float) -> str:
    """`text` broken into lines as wide as the figure (at `fontsize`), so that no title or caption runs past its
    edges (a long caption was cut at both sides)."""
    per_line = max(20, int(fig.get_figwidth() * 72 / (fontsize * CHAR_WIDTH)))
    return "\n".join(textwrap.wrap(text, per_line, break_long_words=False, break_on_hyphens=False))


LEGEND_SIZE = 9  # points


def finish(fig, title: str, caption: str, right: float = 1.0, legend_from=None):
    """Title, caption (experiment, preset, data, seeds) and layout, as every figure of bnstudy has them; `right` < 1
    leaves room for a colorbar. Both wrap to the figure's width; the panels get what the lines leave. `legend_from`:
    an axes whose legend moves to one row under the title, where it hides no curve."""
    title, caption = wrapped(title, fig, TITLE_SIZE), wrapped(caption, fig, CAPTION_SIZE)
    height = fig.get_figheight() * 72  # points
    bottom = ((caption.count("\n") + 1) * CAPTION_SIZE * LINE_HEIGHT + 4) / height
    top = 1.0  # tight_layout keeps the panels clear of the title itself; a legend under it needs its own room
    if legend_from is not None and legend_from.get_legend() is not None:
        handles, labels = legend_from.get_legend_handles_labels()
        legend_from.get_legend().remove()
        under_title = 1 - ((title.count("\n") + 1) * TITLE_SIZE * LINE_HEIGHT + 10) / height
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, under_title), ncol=len(labels),
                   fontsize=LEGEND_SIZE, frameon=False)
        top = under_title - 1.2 * LEGEND_SIZE * LINE_HEIGHT / height
    fig.suptitle(title, fontsize=TITLE_SIZE)
    fig.text(0.5, 0.005, caption, ha="center", va="bottom", fontsize=CAPTION_SIZE, color="0.3")
    _plain_short_log_axes(fig)
    fig.tight_layout(rect=(0, bottom, right, top))
    if _fit_axis_labels(fig):
        fig.tight_layout(rect=(0, bottom, right, top))
    return fig


def _fit_axis_labels(fig) -> bool:
    """Break each y label longer than its axis into lines that fit it (at spaces outside $math$); whether any was."""
    renderer = fig.canvas.get_renderer()
    broken = False
    for ax in fig.axes:
        label = ax.yaxis.label
        text, height = label.get_text(), label.get_window_extent(renderer).height
        if "\n" in text or height <= ax.bbox.height:
            continue
        width = max(8, int(len(text) * ax.bbox.height / height * 0.9))  # characters a line of the axis' length holds
        label.set_text("\n".join(_lines_outside_math(text, width)))
        broken = True
    return broken


def _lines_outside_math(text: str, width: int) -> list[str]:
    """`text` in lines of about `width` characters, broken only at spaces outside $...$ (mathtext must stay whole)."""
    lines, line = [], ""
    for word in _words_outside_math(text):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + [line]


def _words_outside_math(text: str) -> list[str]:
    words, current = [], ""
    for char in text:
        if char == " " and current.count("$") % 2 == 0:
            words.append(current)
            current = ""
        else:
            current += char
    return [w for w in words + [current] if w]


def _plain_short_log_axes(fig) -> None:
    """Every log axis of two decades or less labelled in plain numbers (1, 2, 5): '2 x 10^0' reads slower than '2',
    and such an axis may hold no decade at all to label."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            # base 10 only: a log2 axis (the width ladder's) keeps the ticks its figure set
            if axis.get_scale() == "log" and axis.get_transform().base == 10 and 0 < low and high / low <= 100:
                plain_log_ticks(axis)


def plain_log_ticks(axis) -> None:
    """A log axis spanning a decade or two, labelled at 1, 2 and 5 x 10^k in plain numbers ('0.05', '0.2'):
    matplotlib's default labels its minor ticks too there ('2 x 10^-1', '3 x 10^-1', ...), which run together."""
    axis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


# ----------------------------------------------------------------------------------------------
# One name and one colour per normalization
# ----------------------------------------------------------------------------------------------
class NormStyle(NamedTuple):
    name: str  # what legends and titles call the norm (the paper's words where it has them)
    color: tuple[float, float, float]
    dashes: tuple = ()  # its line's dash pattern where colour alone does not tell it apart (solid: empty)


# Seaborn's colorblind palette has ten colours; its light blue is left out: it has the hue of the blue, so it would
# read as a shade of "standard". Its grey goes to the norm drawn least (reference lines are dashed or dotted).
_COLORBLIND = sns.color_palette("colorblind")
NORM_STYLES = {  # architectures.NORM_KINDS, each once (a test checks)
    "none": NormStyle("standard", _COLORBLIND[0]),  # blue
    "batch": NormStyle("batchnorm", _COLORBLIND[1]),  # orange
    "noisy-batch": NormStyle("noisy batchnorm", _COLORBLIND[2]),  # green
    "noise-only": NormStyle("noise only", _COLORBLIND[3]),  # vermilion
    # the l_p norms train and probe as BN does, so their curves lie on BN's: dashes tell them apart (Fig. 12)
    "l1": NormStyle("ℓ1 norm", _COLORBLIND[4], (6, 2)),  # mauve, dashed
    "l2": NormStyle("ℓ2 norm", _COLORBLIND[5], (1.5, 1.5)),  # tan, dotted
    "linf": NormStyle("ℓ∞ norm", _COLORBLIND[6], (6, 2, 1.5, 2)),  # pink, dash-dotted
    "layer": NormStyle("layer norm", _COLORBLIND[8]),  # yellow
    "group": NormStyle("group norm", _COLORBLIND[7]),  # grey
}


def norm_name(norm: str) -> str:
    return NORM_STYLES[norm].name


def kind_name(norm: str, init: str) -> str:
    """A kind (analysis.arm_kind's 'none, kaiming') in words: 'standard, kaiming init'."""
    return f"{norm_name(norm)}, {init} init"


DARKEST, LIGHTEST = 0.2, 0.76  # the lightness (HLS) of the darkest and, at most, of the lightest shade
MIN_CONTRAST = 2.0  # the lightest shade's contrast against the white background (WCAG's ratio): pale LR 0.5 lines
                    # of Fig. 1 (1.4:1 for BN's orange at LIGHTEST) were hard to see
MIN_STEP = 0.06  # the least lightness between two shades: many shades take the room they need, contrast or not


def contrast_on_white(color) -> float:
    """WCAG's contrast ratio of an sRGB colour against white: 1 (invisible) to 21 (black)."""
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in color]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return 1.05 / (luminance + 0.05)


def shades(color, n: int) -> list[tuple]:
    """n colours of `color`'s hue and saturation, dark to light, evenly spaced in lightness (so a pale norm's shades
    are as far apart as a dark one's), the lightest no paler than MIN_CONTRAST allows unless n shades need more
    room (MIN_STEP apart: five or more of a pale hue); `color` itself where n is 1, so a norm drawn once has its own
    colour."""
    if n == 1:
        return [tuple(color)]
    hue, _, saturation = colorsys.rgb_to_hls(*color)
    lightest = next(float(light) for light in np.linspace(LIGHTEST, DARKEST, 113)
                    if contrast_on_white(colorsys.hls_to_rgb(hue, float(light), saturation)) >= MIN_CONTRAST)
    lightest = max(lightest, min(LIGHTEST, DARKEST + MIN_STEP * (n - 1)))
    return [colorsys.hls_to_rgb(hue, float(lightness), saturation) for lightness in np.linspace(DARKEST, lightest, n)]


def norm_colors(norms: dict) -> dict:
    """Key (an arm, a kind, a legend label) -> colour, given each key's norm: the norm's colour, or, where several
    keys share a norm, shades of it in the keys' order (dark first)."""
    keys_of: dict[str, list] = {}
    for key, norm in norms.items():
        keys_of.setdefault(norm, []).append(key)
    return {key: color for norm, keys in keys_of.items()
            for key, color in zip(keys, shades(NORM_STYLES[norm].color, len(keys)))}


def arm_dashes(results: Results, arms: list[str]) -> dict[str, tuple]:
    """Arm -> its norm's dash pattern (NORM_STYLES; empty: solid), for seaborn's `dashes` and matplotlib's."""
    norms = results.meta.drop_duplicates("arm").set_index("arm").norm
    return {arm: NORM_STYLES[norms[arm]].dashes for arm in arms}


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
