"""CSVs -> figures. Reads only tidy files and meta.json; never trains, never touches a model.

Every figure aggregates over all seeds present (mean line, 95% bootstrap band: `bootstrap_band`), carries a caption
naming the experiment, preset, dataset and seeds, and draws each normalization in its one name and colour
(style.NORM_STYLES). One module per family of figures (training, activations, landscape, curvature, controls), what
they share in style; here the registry of figure kinds (FIGURES, NEEDS, register_figure) and the drawing of an
experiment's figures into its results folder.
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed. Before any pyplot import, which every module below makes
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402
from PIL import Image  # noqa: E402  (matplotlib's own dependency)

from bnstudy import config  # noqa: E402  (FIGURE_KINDS, which register_figure extends)
from bnstudy.analysis import FILTER, PLAIN  # noqa: E402
from bnstudy.config import ConfigError, load_experiment  # noqa: E402
from bnstudy.plots.activations import activation_distributions, densities, moments  # noqa: E402
from bnstudy.plots.controls import (controls_init, controls_sharpness, controls_smoothness,  # noqa: E402
                                    controls_training, controls_weights)
from bnstudy.plots.curvature import curvature, spectrum  # noqa: E402
from bnstudy.plots.ioffe import ioffe_fig1  # noqa: E402
from bnstudy.plots.landscape import (grad_diff_vs_eta, ics, landscape, landscape_filter,  # noqa: E402
                                    landscape_windows)
from bnstudy.plots.style import (ERRORBAR, MIN_CONTRAST, N_BOOT, NORM_STYLES, TRAIN_LABELS,  # noqa: E402
                                 arm_colors, arm_labels, bootstrap_band, contrast_on_white, finish, kind_styles,
                                 norm_colors, norm_name, shades)
from bnstudy.plots.training import lr_sweep, test_curves, training_curves  # noqa: E402
from bnstudy.recording import atomic_write_bytes  # noqa: E402
from bnstudy.reading import Results  # noqa: E402

__all__ = [
    "FIGURES", "NEEDS", "register_figure", "plot_experiment", "draw_figures", "drawn_figures", "missing_rows",
    "png_bytes",
    # what figures of one's own use (style)
    "ERRORBAR", "MIN_CONTRAST", "N_BOOT", "NORM_STYLES", "TRAIN_LABELS", "arm_colors", "arm_labels", "bootstrap_band",
    "contrast_on_white", "finish", "kind_styles", "norm_colors", "norm_name", "shades",
    # the figure kinds
    "activation_distributions", "controls_init", "controls_sharpness", "controls_smoothness", "controls_training",
    "controls_weights", "curvature", "densities", "grad_diff_vs_eta", "ics", "ioffe_fig1", "landscape",
    "landscape_filter",
    "landscape_windows",
    "lr_sweep", "moments", "spectrum", "test_curves", "training_curves",
]

# Figure kind (the name experiment files use) -> draw(results, arms, **options), returning a matplotlib figure
FIGURES = {"training": training_curves, "activations": activation_distributions, "moments": moments,
           "landscape": landscape, "landscape_filter": landscape_filter, "landscape_windows": landscape_windows,
           "densities": densities,
           "grad_vs_eta": grad_diff_vs_eta, "ics": ics, "test": test_curves,
           "lr_sweep": lr_sweep, "curvature": curvature, "controls_training": controls_training,
           "controls_smoothness": controls_smoothness, "controls_sharpness": controls_sharpness,
           "controls_weights": controls_weights, "controls_init": controls_init, "spectrum": spectrum,
           "ioffe_fig1": ioffe_fig1}


# What each figure kind reads: (table, the prefix of its rows' probe, stat or split); kinds not listed read training
# metrics, which every run has
NEEDS = {"activation_distributions": ("activations", "p"), "moments": ("activations", "mean"),
         "densities": ("activations", "q"), "landscape": ("probes", PLAIN), "landscape_filter": ("probes", FILTER),
         "landscape_windows": ("probes", PLAIN),
         "grad_diff_vs_eta": ("probes", PLAIN), "ics": ("probes", "ics"), "curvature": ("probes", "curvature"),
         "test_curves": ("metrics", "test"), "controls_smoothness": ("probes", PLAIN),
         "controls_sharpness": ("probes", "curvature"), "controls_weights": ("probes", "weights"),
         "controls_init": ("probes", "weights"), "spectrum": ("probes", "spectrum-"),
         "ioffe_fig1": ("activations", "p")}


def register_figure(kind: str, draw, needs: tuple[str, str] | None = None) -> None:
    """A figure kind of one's own: `draw(results, arms, **options)` returns a matplotlib figure (finish it with
    `finish`); `needs` = (table, prefix of its rows' probe or stat) skips it, saying why, where its rows are missing.
    Experiment files may name the kind from then on (in `figures` or a `[plots.NAME]` table)."""
    FIGURES[kind] = draw
    if needs is not None:
        NEEDS[draw.__name__] = needs
    if kind not in config.FIGURE_KINDS:
        config.FIGURE_KINDS = config.FIGURE_KINDS + (kind,)


def plot_experiment(experiment: str, results_dir: str = "results", unfinished: bool = False) -> list[Path]:
    """Draw every figure the experiment's results folder lists in its manifest (with `unfinished`, runs still
    training too); return the paths. `experiment` is a results folder's name, or a .toml file of one's own."""
    name = load_experiment(experiment).name if experiment.endswith(".toml") else experiment
    return draw_figures(Results(Path(results_dir), name, unfinished))


def draw_figures(results: Results, exp=None) -> list[Path]:
    """plot_experiment on results already read (the report has read them for its summaries). `exp` (a Manifest or
    an Experiment) overrides the description stored with the results."""
    out_dir = results.root / "figures"
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: a file where the figures' folder should be; move it away and draw again")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in drawn_figures(results, exp):
        path = out_dir / f"{name}.png"
        atomic_write_bytes(path, png_bytes(fig))  # a kill while drawing leaves the previous figure, never half of one
        plt.close(fig)
        paths.append(path)
    return paths


def drawn_figures(results: Results, exp=None):
    """(name, figure) for each figure the experiment's manifest (or `exp`) lists that has rows to draw, one at a
    time; the caller closes each figure."""
    exp = exp or results.manifest
    order = tuple(exp.arms)
    sns.set_theme(style="whitegrid", context="notebook")
    figures = [(name, FIGURES[name], results, order, {}) for name in exp.figures]
    figures += [(name, *_view(exp, name, spec, results)) for name, spec in exp.plots.items()]
    drawn = {}  # what each figure drew: two [plots] figures left with the same runs would be one picture twice
    for name, draw, shown, arms, options in figures:
        if why := missing_rows(draw, shown):
            print(f"bnstudy: warning: {results.experiment}: figure {name} not drawn: {why}", file=sys.stderr)
            continue
        same = (draw, tuple(shown.arms(arms)), tuple(sorted(options.items())), _layers(shown))
        if same in drawn:
            print(f"bnstudy: warning: {results.experiment}: figure {name} not drawn: its runs present are those of "
                  f"{drawn[same]}, which shows them", file=sys.stderr)
            (results.root / "figures" / f"{name}.png").unlink(missing_ok=True)  # an older drawing would disagree
            continue
        drawn[same] = name
        yield name, draw(shown, arms, **options)


def _layers(shown: Results) -> tuple:
    acts = shown.tables.get("activations")
    return tuple(sorted(set(acts.layer))) if acts is not None and len(acts) else ()


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


def png_bytes(fig, dpi: int = 110, colours: int = 128) -> bytes:
    """The figure as a palette PNG of `colours` colours, which keeps the repository small enough to travel: the
    committed figures took 4.05 MB so, against 5.35 MB as 256-colour median-cut PNGs. The octree quantizer keeps
    every line's colour, however few pixels it covers (median cut merges thin lines' colours into their neighbours':
    tests/test_plots.py draws 54 of them)."""
    rgba = io.BytesIO()
    fig.savefig(rgba, dpi=dpi, format="png")
    image = Image.open(rgba).convert("RGB").quantize(colours, method=Image.Quantize.FASTOCTREE,
                                                     dither=Image.Dither.NONE)
    out = io.BytesIO()
    image.save(out, format="png", optimize=True)
    return out.getvalue()
