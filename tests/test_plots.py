"""The seed band: our vectorized bootstrap against seaborn's own ("ci", 95) aggregation. One name and one colour
per normalization in every figure, read back from the matplotlib artists."""
import colorsys
import io
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from seaborn._statistics import EstimateAggregator

from matplotlib.colors import to_rgb

from bnstudy import plots
from bnstudy.architectures import NORM_KINDS
from bnstudy.plots import N_BOOT, NORM_STYLES, bootstrap_band, kind_styles, shades
from bnstudy.reading import Results


@pytest.mark.parametrize("n", [3, 5, 20])
def test_band_matches_seaborns_bootstrap(n):
    values = np.random.default_rng(n).normal(1.0, 2.0, n)
    ours = bootstrap_band(values)
    theirs = EstimateAggregator("mean", ("ci", 95), n_boot=20 * N_BOOT, seed=1)(
        pd.DataFrame({"y": values}), "y")
    spread = values.max() - values.min()
    # two independent Monte-Carlo estimates of the same percentiles: close, not equal
    assert ours[0] == pytest.approx(theirs.ymin, abs=0.06 * spread)
    assert ours[1] == pytest.approx(theirs.ymax, abs=0.06 * spread)
    assert values.min() <= ours[0] < values.mean() < ours[1] <= values.max()


def test_band_is_deterministic_and_ignores_non_finite_values():
    values = [0.1, 0.4, 0.3, np.nan, np.inf]
    assert bootstrap_band(values) == bootstrap_band(values[:3])
    assert bootstrap_band(values) == bootstrap_band(list(values))


def test_one_seed_gives_no_band():
    assert bootstrap_band([0.7]) == (0.7, 0.7)
    low, high = bootstrap_band([np.nan])
    assert np.isnan(low) and np.isnan(high)


def test_caption_names_the_gpu_of_cuda_runs(tmp_path):
    from bnstudy.reading import Results

    from bnstudy.config import load_experiment, run_config
    from bnstudy.recording import RunDir

    def meta(arm, environment):
        run = RunDir(tmp_path, "noisy-bn", arm, 0)
        run.path.mkdir(parents=True)
        run.write_config(run_config(load_experiment("noisy-bn"), arm, 0, "paper"))
        run.write_meta({"arm": arm, "seed": 0, "preset": "paper", "dataset": "CIFAR-10", "status": "running",
                        "environment": environment})  # no tables yet

    meta("batchnorm", {"device": "cpu"})
    assert "GPU" not in Results(tmp_path, "noisy-bn", unfinished=True).caption()
    meta("standard", {"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3"})
    caption = Results(tmp_path, "noisy-bn", unfinished=True).caption()
    assert caption.endswith("| GPU: NVIDIA H100 80GB HBM3 (1 of 2 runs on a CPU)")


# ----------------------------------------------------------------------------------------------
# One name and one colour per normalization
# ----------------------------------------------------------------------------------------------
def synthetic_results(arms: dict[str, tuple[str, float]], seeds=(0, 1)) -> Results:
    """A Results of made-up runs, arm -> (norm, lr), with what the training, test, ics and lr_sweep figures read:
    training and test curves, one ICS probe and the final numbers. Arm names are not norm names, as a user's."""
    meta, metrics, probes = [], [], []
    rng = np.random.default_rng(0)
    for arm, (norm, lr) in arms.items():
        for seed in seeds:
            meta.append({"arm": arm, "seed": seed, "norm": norm, "lr": lr, "init": "glorot", "status": "complete",
                         "diverged_at": np.nan, "final_test_acc": 0.5, "final_train_acc_last100": rng.uniform(0.3, 0.9),
                         "preset": "smoke", "dataset": "synthetic"})
            metrics += [{"arm": arm, "seed": seed, "step": step, "split": "train", "metric": metric,
                         "value": rng.uniform(0.1, 1)} for step in range(20) for metric in ("acc", "loss")]
            metrics += [{"arm": arm, "seed": seed, "step": step, "split": "test", "metric": "acc",
                         "value": rng.uniform(0.1, 1)} for step in (9, 19)]
            probes += [{"arm": arm, "seed": seed, "step": step, "probe": "ics", "layer": 5, "eta": np.nan,
                        "metric": metric, "value": rng.uniform(0.1, 1)}
                       for step in (0, 4, 8) for metric in ("l2", "cosine")]
    results = Results.__new__(Results)  # no run folders: the tables themselves
    results.experiment, results.meta = "synthetic", pd.DataFrame(meta)
    results.tables = {"metrics": pd.DataFrame(metrics), "probes": pd.DataFrame(probes),
                      "activations": pd.DataFrame(columns=["arm", "seed", "step", "layer", "unit", "stat", "value"])}
    return results


# not in NORM_KINDS' order: a colour taken from an arm's place in the figure would differ from its norm's
ONE_ARM_PER_NORM = {"vgg-bn": ("batch", 0.1), "vgg-l1": ("l1", 0.1), "vgg-plain": ("none", 0.1)}


def legend_entries(fig) -> list[tuple[str, tuple]]:
    """(text, colour) of every legend entry of the figure, each the colour of a line its axes draw."""
    entries = []
    for ax in fig.axes:
        if legend := ax.get_legend():
            lines = {to_rgb(line.get_color()) for line in ax.lines}
            entries += [(text.get_text(), to_rgb(handle.get_color())) for handle, text in
                        zip(legend.legend_handles, legend.texts)]
            assert {color for _, color in entries[-len(legend.texts):]} <= lines
    return entries


def norm_of_entry(text: str, results: Results) -> str | None:
    """The norm a legend entry stands for: its arm's (arm-labelled figures) or the norm its name in words is
    (norm- and kind-labelled figures); None for reference lines."""
    for arm, norm in zip(results.meta.arm, results.meta.norm):
        if text == arm or text.startswith(arm + " ("):
            return norm
    return next((norm for norm, style in NORM_STYLES.items() if re.match(re.escape(style.name) + r"($|,| \()", text)),
                None)


def drawn(kind: str, results: Results):
    fig = plots.FIGURES[kind](results, tuple(results.meta.arm.unique()))
    plt.close(fig)
    return fig


def test_every_normalization_has_one_name_and_one_colour():
    assert list(NORM_STYLES) == list(NORM_KINDS)
    assert len({style.name for style in NORM_STYLES.values()}) == len(NORM_KINDS)
    assert len({tuple(style.color) for style in NORM_STYLES.values()}) == len(NORM_KINDS)
    assert not {style.name for style in NORM_STYLES.values()} & set(NORM_KINDS)  # the words, never the raw value


@pytest.mark.parametrize("n", range(1, 9))
def test_shades_keep_the_hue_differ_from_each_other_and_from_every_other_norms_colour(n):
    for norm, style in NORM_STYLES.items():
        colors = shades(style.color, n)
        assert len(colors) == n and (n > 1 or colors == [tuple(style.color)])
        hue, saturation, _ = colorsys.rgb_to_hsv(*style.color)
        for color in colors:
            if saturation:  # the grey's shades are greys
                assert colorsys.rgb_to_hsv(*color)[0] == pytest.approx(hue, abs=1e-6)
            others = [other.color for other_norm, other in NORM_STYLES.items() if other_norm != norm]
            assert min(np.linalg.norm(np.subtract(color, other)) for other in others) > 0.1
        distances = [np.linalg.norm(np.subtract(a, b)) for i, a in enumerate(colors) for b in colors[i + 1:]]
        assert not distances or min(distances) > 0.1
        assert [sum(color) for color in colors] == sorted(sum(color) for color in colors)  # dark to light


def test_a_norm_has_its_colour_in_every_figure_kind():
    results = synthetic_results(ONE_ARM_PER_NORM)
    seen = {}  # norm -> {figure kind: colours}
    for kind in ("training", "test", "ics", "lr_sweep"):
        entries = [(norm_of_entry(text, results), color) for text, color in legend_entries(drawn(kind, results))]
        for norm, color in entries:
            if norm is not None:
                seen.setdefault(norm, {}).setdefault(kind, set()).add(color)
        assert {norm for norm, _ in entries} - {None} == {"none", "batch", "l1"}, kind
    for norm, by_kind in seen.items():
        assert set().union(*by_kind.values()) == {to_rgb(NORM_STYLES[norm].color)}, norm


def test_arms_that_share_a_norm_get_its_shades_darker_for_the_smaller_lr():
    results = synthetic_results({"vgg-plain": ("none", 0.1), "vgg-bn": ("batch", 0.1), "vgg-plain-fast": ("none", 0.5),
                                 "vgg-bn-fast": ("batch", 0.5)})
    colors = {text.split(" (")[0]: color for text, color in legend_entries(drawn("training", results))}
    for norm, slow, fast in (("none", "vgg-plain", "vgg-plain-fast"), ("batch", "vgg-bn", "vgg-bn-fast")):
        assert [colors[slow], colors[fast]] == [to_rgb(c) for c in shades(NORM_STYLES[norm].color, 2)]
        assert sum(colors[slow]) < sum(colors[fast])
    assert len(set(colors.values())) == 4


def test_no_legend_or_title_shows_a_raw_norm_value():
    results = synthetic_results(ONE_ARM_PER_NORM | {"vgg-kaiming": ("none", 0.1)})
    results.meta.loc[results.meta.arm == "vgg-kaiming", "init"] = "kaiming"  # a kind 'none, kaiming' in lr_sweep
    for kind in ("training", "test", "ics", "lr_sweep"):
        fig = drawn(kind, results)
        texts = [text for text, _ in legend_entries(fig)] + [ax.get_title() for ax in fig.axes]
        texts += [ax.get_legend().get_title().get_text() for ax in fig.axes if ax.get_legend()]
        for text in texts:
            assert not set(part.strip() for part in re.split(r"[,()]", text)) & set(NORM_KINDS), (kind, text)


def test_a_kind_is_named_in_words_and_its_inits_are_shades_of_its_norm():
    runs = pd.DataFrame({"kind": ["none, glorot"] * 5 + ["batch, kaiming", "none, kaiming", "batch, kaiming"],
                         "norm": ["none"] * 5 + ["batch", "none", "batch"],
                         "init": ["glorot"] * 5 + ["kaiming", "kaiming", "kaiming"]})
    styles = kind_styles(runs)
    assert list(styles.index) == ["batch, kaiming", "none, glorot", "none, kaiming"]
    assert list(styles.name) == ["batchnorm, kaiming init", "standard, glorot init", "standard, kaiming init"]
    assert styles.color["batch, kaiming"] == tuple(NORM_STYLES["batch"].color)  # its norm's only kind
    assert [styles.color["none, glorot"], styles.color["none, kaiming"]] == shades(NORM_STYLES["none"].color, 2)


def quadratic_landscape(arms: dict[str, tuple[str, float]], curvature: dict[str, float]) -> Results:
    """Landscape probes of a quadratic along the gradient, curvature λ per arm: ∇L(w − ηg) = (1 − λη) g, so the
    gradient change is λη‖g‖ and β_eff is λ at every η; the grid is the paper's, [1/2, 4] × each arm's LR."""
    results = synthetic_results(arms, seeds=(0,))
    rows = []
    for arm, (_, lr) in arms.items():
        for step in (0, 5, 10):
            rows += [{"arm": arm, "seed": 0, "step": step, "probe": "landscape", "layer": 0, "eta": 0.0,
                      "metric": metric, "value": 1.0} for metric in ("loss", "grad_norm")]
            for eta in lr * np.linspace(0.5, 4, 8):
                lam = curvature[arm]
                rows += [{"arm": arm, "seed": 0, "step": step, "probe": "landscape", "layer": 0, "eta": eta,
                          "metric": metric, "value": value}
                         for metric, value in (("loss", 1 - eta + lam * eta ** 2 / 2), ("grad_diff", lam * eta),
                                               ("step_norm", eta))]
    results.tables["probes"] = pd.DataFrame(rows)
    return results


def reference_lines(ax) -> dict[float, tuple]:
    return {round(float(line.get_ydata()[0]), 9): to_rgb(line.get_color()) for line in ax.lines
            if line.get_linestyle() == "--"}


def test_panel_c_marks_where_the_smallest_step_cancels_the_gradient():
    # a curvature of 1/η_min: the smallest step lands where ∇L = 0, and β_eff sits on the line drawn for it
    one_lr = {"plain": ("none", 0.1), "bn": ("batch", 0.1)}
    results = quadratic_landscape(one_lr, {"plain": 1 / 0.05, "bn": 3.0})
    fig = drawn("landscape", results)
    assert reference_lines(fig.axes[2]) == {20.0: to_rgb("0.35")}
    plain = to_rgb(plots.arm_colors(results, ["plain", "bn"])["plain"])
    beta = [line.get_ydata() for line in fig.axes[2].lines
            if line.get_linestyle() == "-" and to_rgb(line.get_color()) == plain and len(line.get_ydata())]
    assert len(beta) == 1 and np.allclose(beta[0], 20.0)
    two_lrs = {"plain": ("none", 0.1), "bn-fast": ("batch", 1.0)}  # grids differ: a line per arm, in its colour
    results = quadratic_landscape(two_lrs, {"plain": 1.0, "bn-fast": 1.0})
    lines = reference_lines(drawn("landscape", results).axes[2])
    colors = plots.arm_colors(results, ["plain", "bn-fast"])
    assert lines == {20.0: to_rgb(colors["plain"]), 2.0: to_rgb(colors["bn-fast"])}


@pytest.mark.parametrize("n", range(2, 5))
def test_every_shade_stands_out_from_the_white_background(n):
    """Fig. 1's LR 0.5 lines were BN's orange at 1.4:1 against white: too pale to see. (Five or more shades of a pale
    hue need the room above it to stay apart, which the test of shades checks.)"""
    for style in NORM_STYLES.values():
        assert min(plots.contrast_on_white(color) for color in shades(style.color, n)) >= plots.MIN_CONTRAST


def test_contrast_on_white_is_wcags():
    assert plots.contrast_on_white((0.0, 0.0, 0.0)) == pytest.approx(21.0)
    assert plots.contrast_on_white((1.0, 1.0, 1.0)) == pytest.approx(1.0)
    assert plots.contrast_on_white((0.5, 0.5, 0.5)) == pytest.approx(3.98, abs=0.01)


def test_a_long_title_and_caption_wrap_inside_the_figure():
    """fig1-activations' title and caption ran past both edges."""
    from figure_layout import layout_defects

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([0, 1], [0, 1])
    ax.set_ylabel("a y label far too long for the axis it names, which is short " * 2)
    plots.finish(fig, "a title with many words " * 6, "experiment | preset: long | data: CIFAR-10 | seeds " * 8)
    assert layout_defects(fig) == []
    plt.close(fig)


def test_the_layout_check_sees_what_a_reader_sees():
    """figure_layout.layout_defects itself: text cut at an edge, tick labels that run together, a long y label."""
    from figure_layout import layout_defects

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.set_xticks(range(5), [f"{10000 + 2500 * i}" for i in range(5)])
    ax.set_ylabel("a y label far too long for the axis it names")
    fig.text(0.5, 0.0, "a caption far wider than this small figure, cut at both sides", ha="center")
    defects = " | ".join(layout_defects(fig))
    assert "runs past the figure's edge" in defects and "overlap" in defects and "longer than its axis" in defects
    plt.close(fig)


@pytest.mark.parametrize("experiment", ["paper-figures", "dln", "controls"])
def test_the_committed_figures_have_no_layout_defect(experiment):
    """Every figure of the committed runs, drawn again: nothing cut, overlapping or longer than its axis (the long
    runs' figures; the DLN's, whose eta axis spans decades; the controls', with a norm's many shades)."""
    from pathlib import Path

    from figure_layout import layout_defects

    results = Results(Path(__file__).resolve().parent.parent / "results", experiment)
    defects = {}
    for name, fig in plots.drawn_figures(results):
        defects[name] = layout_defects(fig)
        if name in ("fig2-activations", "fig6-densities", "fig11-grad-vs-eta"):  # one seed of three: said
            caption = fig.texts[-1].get_text().replace("\n", " ")
            assert "every panel: seed 0 alone (n=1)" in caption, name
            assert all("seed 0" in ax.get_title() for ax in fig.axes if ax.get_title()), name
        if name == "fig12-landscape":  # one row per l_p norm beside standard and batchnorm
            titles = [ax.get_title() for ax in fig.axes[::3]]
            assert titles == [f"(a) loss landscape: {arm}" for arm in ("l1", "l2", "linf")]
        plt.close(fig)
    assert not {name: found for name, found in defects.items() if found}


def test_the_reprobe_figures_grey_box_names_the_grid_in_its_axis_units():
    """Along the filter-normalized gradient the runs' own grid is a fraction of each filter's norm, whatever the LR
    (the box said 'LR 0.1'); along the gradient it is the step sizes, with the LRs that give them."""
    from types import SimpleNamespace

    from bnstudy.plots.landscape import _grids

    def run(lr):
        grid = SimpleNamespace(filter_eta_min=0.005, filter_eta_max=0.04, eta_min=0.5, eta_max=4.0)
        return SimpleNamespace(config=SimpleNamespace(landscape=grid, train=SimpleNamespace(lr=lr)))

    facts = {"standard": run(0.1), "batchnorm": run(0.1), "fast": run(0.5)}
    assert _grids(list(facts), facts, "landscape-filter") == {(0.005, 0.04): "0.5–4% of each filter's norm"}
    assert _grids(list(facts), facts, "landscape") == {(0.05, 0.4): "η 0.05–0.4: LR 0.1",
                                                       (0.25, 2.0): "η 0.25–2: LR 0.5"}


def test_a_figure_of_references_and_no_other_arm_is_one_row():
    """Fig. 12 of a results folder that has only standard and batchnorm (the width ladder's): one row, no crash."""
    results = quadratic_landscape({"plain": ("none", 0.1), "bn": ("batch", 0.1)}, {"plain": 1.0, "bn": 3.0})
    fig = plots.landscape(results, ("plain", "bn"), references=2)
    assert len(fig.axes) == 3
    plt.close(fig)


def test_the_caption_names_the_networks_width():
    """A figure of the width ladder says its width: 'long' alone means width 1/4. The DLN's networks have none."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "results"
    assert "| preset: long | width: 0.125 | data:" in Results(root / "width-0.125", "paper-figures").caption()
    assert "width" not in Results(root, "dln").caption()


def test_the_caption_says_where_runs_stopped_as_asked():
    """Width 1's runs stopped at step 3,750 of the paper's 15,000 (--until-step): their figures end there and say
    why."""
    from pathlib import Path

    from bnstudy.reading import caption_of

    root = Path(__file__).resolve().parent.parent / "results"
    assert "| preset: paper | width: 1 | stopped at step 3,750 of 15,000 | data:" in Results(
        root / "paper", "paper-figures").caption()
    meta = pd.DataFrame({"arm": ["a", "b"], "seed": [0, 0], "preset": "paper", "dataset": "d", "steps": 15000,
                         "stopped_at": [3750, None]})
    assert "| stopped at step 3,750 of 15,000 (1 of 2 runs) |" in caption_of("e", meta)
    assert "stopped" not in caption_of("e", meta.assign(stopped_at=None))


@pytest.mark.parametrize("n_shades", [1, 4, 6])
def test_the_palette_png_keeps_every_lines_colour(n_shades):
    """png_bytes keeps 128 colours: each arm's line, however thin, must come back in its own colour, not merged into
    a neighbour's (every norm's colour and its shades, as the controls' figures draw them: up to 54 line colours)."""
    from PIL import Image

    colours = [c for style in NORM_STYLES.values() for c in shades(style.color, n_shades)]
    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.linspace(0, 1, 200)
    for i, colour in enumerate(colours):
        ax.plot(x, np.sin(8 * x + i) + i / 4, color=colour, lw=1.2)
    ax.fill_between(x, -1, 0, color=colours[0], alpha=0.25)  # a seed band: blends to colours of its own
    ax.set(title="a title", xlabel="training step")
    try:
        image = Image.open(io.BytesIO(plots.png_bytes(fig)))
    finally:
        plt.close(fig)
    assert image.mode == "P" and len(image.getcolors()) <= 128
    palette = np.array(image.convert("RGB").getcolors(1 << 16), dtype=object)
    found = np.array([rgb for _, rgb in palette], dtype=float) / 255
    for colour in colours:
        assert np.abs(found - to_rgb(colour)).max(axis=1).min() < 6 / 255, colour
