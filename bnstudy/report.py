"""CSVs -> results/<experiment>/summary.csv and results/REPORT.md: figures and every claim with its verdict.

Reads only what runs wrote (CSV, JSON); never trains. Redraws every experiment's figures first.
Experiments without results are listed as not run, and the claims that need them are "not measured".
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from bnstudy.analysis import StepTable, experiment_of, run_summary, step_tables
from bnstudy.claims import CLAIMS, NOT_MEASURED, evaluate
from bnstudy.claims.ladder import ladder_claims, ladder_path, ladder_points, ladder_scales, width_label, width_of
from bnstudy.claims.rules import ONE_SEED
from bnstudy.config import PRESETS, ConfigError, list_experiments, load_experiment
from bnstudy.manifest import describe
from bnstudy.recording import RunDir, atomic_write_text
from bnstudy.reading import Results

VERDICT_MARK = {"holds": "✅ holds", "does not hold": "❌ does not hold", "tie": "🟰 tie",
                "not measured": "➖ not measured"}


def collect(results_dir: Path) -> tuple[dict[str, pd.DataFrame], dict[str, Results]]:
    """Summaries (written to summary.csv) and Results of every experiment that has runs, in the results folder and
    in each results folder within it (results_trees), the latter named '<folder>/<experiment>'. The claims read an
    experiment's runs of every folder together: its runs of one preset and width come from one folder, and
    by_preset judges each preset and width apart.

    An experiment without runs is skipped (listed as not run); a malformed experiment file, like any other
    error, stops the report with its one line: it is never taken for "not run yet"."""
    summaries, found = {}, {}
    for tree in results_trees(results_dir):
        for experiment in experiments_with_runs(tree):
            results = Results(tree, experiment)
            summary = run_summary(results.meta, results.tables)
            atomic_write_text(results.root / "summary.csv", summary.to_csv(index=False, float_format="%.6g"))
            found[experiment if tree == Path(results_dir) else f"{tree.name}/{experiment}"] = results
            _pooled_into(summaries, results.experiment, summary)
            for table, steps in step_tables(results.tables["probes"], summary).items():  # claims 8, 13c: per probe
                _pooled_into(summaries, StepTable(results.experiment, table), steps)
    return summaries, found


def _pooled_into(summaries: dict, key, frame: pd.DataFrame) -> None:
    summaries[key] = pd.concat([summaries[key], frame], ignore_index=True) if key in summaries else frame


def results_trees(results_dir: Path) -> list[Path]:
    """The results folder, and each folder in it that holds experiments' runs of its own: a width of the ladder
    (results/width-0.125), the paper preset's runs a GPU trained (results/paper). Reported with the rest."""
    root = Path(results_dir)
    nested = [sub for sub in sorted(root.iterdir()) if sub.is_dir() and experiments_with_runs(sub)] \
        if root.is_dir() else []
    return [root] + nested


def by_preset(summaries: dict[str, pd.DataFrame], manifests: dict | None = None) -> dict[str, dict[str, pd.DataFrame]]:
    """scale -> the summaries of the runs that count at it: made at its preset, or at a preset that gives every arm
    the same configuration (Manifest.same_runs; `manifests` by experiment, else today's experiment files), and of
    its width. A scale is its preset's name where the preset's runs share one width, else 'preset (width W)' for
    each: claims are judged per preset and per width, never across scales or widths."""
    present = {p for table in summaries.values() for p in table.get("preset", ())}
    experiments = {name: (manifests or {}).get(name) or describe(load_experiment(name))
                   for name in summaries if not isinstance(name, StepTable)}
    split = {}
    for preset in [p for p in PRESETS if p in present]:
        chosen = {}
        for name, table in summaries.items():
            experiment = experiments.get(experiment_of(name))
            same = [p for p in set(table.preset) if experiment is None and p == preset
                    or experiment is not None and experiment.same_runs(p, preset)]
            if len(rows := table[table.preset.isin(same)]):
                chosen[name] = rows
        split |= by_width(preset, chosen)
    return split


def by_width(preset: str, chosen: dict[str, pd.DataFrame]) -> dict[str, dict[str, pd.DataFrame]]:
    """The summaries of one preset, split by the width of their runs' network where they have more than one."""
    widths = sorted({w for table in chosen.values() if "width" in table for w in table.width.dropna()})
    if len(widths) <= 1:
        return {preset: chosen}
    def of_width(table: pd.DataFrame, width: float) -> pd.DataFrame:  # runs of no VGG width (the DLN's): in each
        return table[(table.width == width) | table.width.isna()] if "width" in table else table

    return {scale_name(preset, width): {name: rows for name, table in chosen.items()
                                        if len(rows := of_width(table, width))} for width in widths}


def scale_name(preset: str, width: float) -> str:
    return f"{preset} (width {width:g})"


def preset_of(scale: str) -> str:
    """The preset of a scale by_preset names."""
    return scale.split(" (width ", 1)[0]


def has_runs(results_dir: Path, experiment: str) -> bool:
    """Whether any run of the experiment has finished or stopped as asked (Results reads those alone; without one
    it raises)."""
    return any(run.is_settled() for run in RunDir.of_experiment(results_dir, experiment))


def experiments_with_runs(results_dir: Path) -> list[str]:
    """The results folders holding a finished run, in name order: what the report covers, whether or not an
    experiment file of that name exists today (each folder describes itself: bnstudy.manifest)."""
    folders = sorted(p.name for p in Path(results_dir).glob("*/") if p.is_dir())
    return [name for name in folders if has_runs(results_dir, name)]


def verdicts(summaries: dict[str, pd.DataFrame], manifests: dict | None = None) -> dict[str, list]:
    """preset -> [(claim, verdict)] for every claim, on the runs that count at that preset (at least one column,
    so that a report with no results still lists every claim)."""
    return judge(by_preset(summaries, manifests) or {"quick": {}})


def judge(split: dict[str, dict[str, pd.DataFrame]]) -> dict[str, list]:
    return {scale: [(claim, evaluate(claim, chosen, preset_of(scale))) for claim in CLAIMS]
            for scale, chosen in split.items()}


def _cells(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def claims_table(judged: dict[str, list]) -> str:
    """Every claim with, per preset side by side, its verdict, the numbers that decided it and the runs behind it."""
    presets = list(judged)
    head = ["#", "the paper says", "rule for the verdict"] + [f"{w} ({p})" for p in presets
                                                             for w in ("verdict", "measured", "runs")]
    lines = [_cells(head), _cells(["---"] * len(head))]
    for i, claim in enumerate(CLAIMS):
        cells = [claim.number, claim.statement, claim.rule]
        for preset in presets:
            verdict = judged[preset][i][1]
            cells += [VERDICT_MARK[verdict.verdict], verdict.measured, verdict.basis or "—"]
        lines.append(_cells(cells))
    return "\n".join(lines)


README_MARK = {"holds": "✅", "does not hold": "❌", "tie": "🟰", "not measured": "➖"}
# The clause of a rule's measured text (clauses joined by "; ") that holds the number deciding the claim, where it is
# not the first: the README shows that clause alone, REPORT.md every number.
DECIDING_CLAUSE = {"12a (ours)": 1, "12b (ours)": 1, "12c (ours)": 1, "12e (ours)": 1}


def _without_asides(text: str) -> str:
    """The text without its parenthesized asides (spreads over seeds, figure numbers), except ONE_SEED's: a number
    from one seed keeps saying so; L(w) keeps its brackets."""
    kept = "\x00"  # ONE_SEED without its brackets while the asides around it go
    text = text.replace(ONE_SEED, kept)
    while (shorter := re.sub(r" \([^()]*\)", "", text)) != text:
        text = shorter
    return text.replace(kept, ONE_SEED)


def deciding_number(claim, verdict) -> str:
    """The number that decides the claim at one preset, named by the last words before it
    ("standard / batchnorm: 0.624x"); empty where the claim is not measured."""
    if verdict.verdict == "not measured":
        return ""
    clauses = verdict.measured.split("; ")
    clause = _without_asides(clauses[min(DECIDING_CLAUSE.get(claim.number, 0), len(clauses) - 1)])
    label, colon, value = clause.rpartition(": ")
    return label.split(": ")[-1].split(", ")[-1] + colon + value if colon else clause


def verdicts_table(judged: dict[str, list], claims: list | None = None) -> str:
    """The README's compact table: per claim (every one, or those of `claims`), at each preset its verdict and the
    number that decided it (the rules, every number with its spread and the runs behind them are in REPORT.md)."""
    presets = list(judged)
    lines = [_cells(["#", "claim"] + presets), _cells(["---"] * (2 + len(presets)))]
    for i, claim in enumerate(CLAIMS):
        if claims is not None and claim not in claims:
            continue
        statement = _without_asides(claim.statement).split("; ")[0].rstrip(".")
        cells = [claim.number.replace(", beyond the paper", ""), statement]
        for preset in presets:
            verdict = judged[preset][i][1]
            cells.append(" ".join(filter(None, [README_MARK[verdict.verdict], deciding_number(claim, verdict)])))
        lines.append(_cells(cells))
    return "\n".join(lines)


LADDER_FIGURES = "figures"  # in the results folder: the ladder's figures read every tree's runs, no one experiment's


def ladder_section(judged: dict[str, list], split: dict, results_dir: Path, figures: bool) -> list[str]:
    """REPORT.md's width ladder: each claim's verdict at each width of the paper's schedule, and a figure per claim
    with a deciding statistic (plots.ladder); nothing where fewer than two widths have runs."""
    rungs = ladder_scales({scale: width_of(chosen) for scale, chosen in split.items()}, preset_of)
    if len(rungs) < 2:
        return []
    heads = {scale: f"width {width_label(width)} ({preset_of(scale)}{_summaries_stop_words(split[scale])})"
             for scale, width in rungs.items()}
    parts = ["## The width ladder", "",
             "Each claim at each width of the VGG trained on the paper's schedule (15,000 steps; docs/long.md, "
             "\"The width ladder\"): its verdict and the number that decided it, judged on that width's runs alone. "
             "Claims measured at no width, and those that read only networks without one (the deep linear network, the "
             "MNIST MLP), are left out.",
             "", verdicts_table({heads[scale]: judged[scale] for scale in rungs}, on_ladder(judged, split, rungs)), ""]
    points = ladder_points(judged, rungs, preset_of)
    for path in ladder_figures(points, split, rungs, results_dir, figures):
        parts += [f"![width ladder {path.stem}]({path.relative_to(results_dir).as_posix()})", ""]
    return parts


def ladder_figures(points: pd.DataFrame, split: dict, rungs: dict[str, float], results_dir: Path,
                   draw: bool) -> list[Path]:
    """The ladder's figures: drawn afresh, or (--no-figures) those already on disk for the claims with points, so
    REPORT.md keeps linking them, as it does each experiment's figures."""
    folder = results_dir / LADDER_FIGURES
    if not draw:
        return [path for claim in ladder_claims(points, CLAIMS) if (path := ladder_path(folder, claim)).is_file()]
    from bnstudy.plots.ladder import draw_ladder  # matplotlib only when figures are drawn

    return draw_ladder(points, CLAIMS, ladder_caption(points, split, rungs), folder) if len(points) else []


def on_ladder(judged: dict[str, list], split: dict, rungs: dict[str, float]) -> list:
    """The claims measured at some width that read a network with one (the VGG's): not those that read only
    experiments without a width (the deep linear network's, the MNIST MLP's), whose runs repeat at every width."""
    measured = {claim.number for scale in rungs for claim, verdict in judged[scale] if verdict.verdict != NOT_MEASURED}
    widthless = widthless_experiments(split, rungs)
    return [claim for claim in CLAIMS if claim.number in measured and not set(claim.experiments) <= widthless]


def widthless_experiments(split: dict, rungs: dict[str, float]) -> set[str]:
    """The experiments, at the ladder's scales, none of whose runs has a VGG width: known from the runs themselves,
    so that a family added later (bnstudy.models.register_model) needs no list kept here."""
    tables = [(experiment_of(name), table) for scale in rungs for name, table in split[scale].items()]
    with_width = {name for name, table in tables if "width" in table and table.width.notna().any()}
    return {name for name, _ in tables} - with_width


def column_head(scale: str, chosen: dict[str, pd.DataFrame]) -> str:
    """The README's column for one scale: its preset, the width of its VGG runs where they have one, and where its
    runs stopped (--until-step), e.g. 'paper (width 1, stopped at step 3,750)'."""
    preset, _, inner = scale.partition(" (")
    width = width_of(chosen)
    words = [inner.removesuffix(")")] if inner else [f"width {width:g}"] if width is not None else []
    stop = _summaries_stop_words(chosen).removeprefix(", ")
    words += [stop] if stop else []
    return f"{preset} ({', '.join(words)})" if words else preset


def _summaries_stop_words(chosen: dict[str, pd.DataFrame]) -> str:
    """', stopped at step 3,750' where a scale's summaries (one row a run) hold runs stopped as asked: the first such
    step. (A figure's caption says the same from its runs' meta, reading._stop_words.)"""
    stops = {int(s) for table in chosen.values() if "stopped_at" in table for s in table.stopped_at.dropna()}
    return f", stopped at step {min(stops):,}" if stops else ""


def ladder_caption(points: pd.DataFrame, split: dict, rungs: dict[str, float]) -> str:
    datasets = sorted({d for scale in rungs for t in split[scale].values() if {"width", "dataset"} <= set(t)
                       for d in t.dataset[t.width.notna()]})
    presets = "; ".join(f"width {width_label(w)}: {preset_of(scale)}{_summaries_stop_words(split[scale])}, seeds "
                        f"{', '.join(map(str, sorted(points[points.width == w].seed.unique())))}"
                        for scale, w in rungs.items())
    return f"the paper's schedule (15,000 steps), LR 0.1 | {presets} | data: {', '.join(datasets)}"


def runs_table(results: Results) -> str:
    meta = results.meta
    rows = ["| arm | seeds | status | train acc (last 100 steps) | test acc | final train loss | wall time per run |",
            "|---|---|---|---|---|---|---|"]
    for arm in results.arms():
        runs = meta[meta.arm == arm]
        stops = runs.get("stopped_at", pd.Series(index=runs.index, dtype=float))
        status = ", ".join(f"{s}" + (f" at step {int(d)}" if pd.notna(d) else "")
                           + (f" at step {int(stop):,} of {int(steps):,}" if pd.notna(stop) else "")
                           for s, d, stop, steps in zip(runs.status, runs.diverged_at, stops, runs.steps))
        rows.append(f"| {arm} | {', '.join(map(str, sorted(runs.seed)))} | {status} | "
                    f"{_mean_pct(runs.get('final_train_acc_last100'))} | {_mean_pct(runs.get('final_test_acc'))} | "
                    f"{_mean(runs.get('final_train_loss'))} | {_mean(runs.get('wall_time_s'), '{:.0f} s')} |")
    return "\n".join(rows)


def _mean(values, fmt: str = "{:.4g}") -> str:
    values = pd.to_numeric(values, errors="coerce").dropna() if values is not None else pd.Series(dtype=float)
    return fmt.format(values.mean()) if len(values) else "—"


def _mean_pct(values) -> str:
    values = pd.to_numeric(values, errors="coerce").dropna() if values is not None else pd.Series(dtype=float)
    return f"{100 * values.mean():.1f}%" if len(values) else "—"


KEY_FIGURES = ("noisy-bn/figures/training.png", "landscape/figures/landscape.png", "dln/figures/ics.png")
README_START, README_END = "<!-- claims:start -->", "<!-- claims:end -->"


def update_readme(readme: Path, results_dir: Path, table: str) -> None:
    """Replace the README's block between the claims markers with the claims table and the key figures."""
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        raise ConfigError(f"{readme} has no {README_START} ... {README_END} block to fill")
    prefix = Path(os.path.relpath(results_dir, readme.parent)).as_posix()
    figures = [f"![{f}]({prefix}/{f})" for f in KEY_FIGURES if (results_dir / f).exists()]
    intro = ("**What the committed results say**, per preset and width with runs (written by `make report` from "
             "the CSVs; ✅ holds, ❌ does not hold, 🟰 tie, ➖ not measured, beside the number that decided it; "
             "the rules, every number with its spread and the runs behind them are in "
             f"[`{prefix}/REPORT.md`]({prefix}/REPORT.md)):")
    block = "\n\n".join([intro, table, *figures])
    head, rest = text.split(README_START, 1)
    atomic_write_text(readme, head + README_START + "\n" + block + "\n" + README_END + rest.split(README_END, 1)[1])


def redraw_figures(found: dict[str, Results]) -> None:
    """Every figure drawn anew from the CSVs, so the report never shows a figure older than its numbers
    (seeds added by `bnstudy run` alone, without `plot`, would otherwise be missing from the bands)."""
    from bnstudy.plots import draw_figures  # matplotlib only when figures are drawn

    for results in tqdm(found.values(), desc="figures", unit="experiment", dynamic_ncols=True):
        draw_figures(results)


def write_report(results_dir: str | Path = "results", readme: Path | None = None, figures: bool = True) -> Path:
    results_dir = Path(results_dir)
    if readme is not None:  # checked before anything is written: a bad --readme leaves every file as it was
        if not Path(readme).is_file():
            raise ConfigError(f"--readme {readme}: no such file")
        if not all(marker in Path(readme).read_text(encoding="utf-8") for marker in (README_START, README_END)):
            raise ConfigError(f"{readme} has no {README_START} ... {README_END} block to fill")
    summaries, found = collect(results_dir)
    if not found:
        raise ConfigError(f"no results under {results_dir}; run an experiment first (e.g. make noisy-bn)")
    if figures:
        redraw_figures(found)
    split = by_preset(summaries, {r.experiment: r.manifest for r in found.values()}) or {"quick": {}}
    parts = ["# bnstudy report",
             "",
             "Santurkar et al., *How Does Batch Normalization Help Optimization?* (NeurIPS 2018), measured. "
             "Written by `bnstudy report` from the CSVs under this folder; every number below comes from them.",
             "",
             "## The paper's claims",
             "",
             claims_table(judged := judge(split)),
             ""]
    parts += ladder_section(judged, split, results_dir, figures)
    for name, results in found.items():
        title = results.manifest.title
        parts += [f"## {name}: {title}", "", results.caption(), "", runs_table(results), ""]
        parts += [f"- ⚠️ {note}" for note in [*results.left_out.values(), *results.non_finite,
                                                *results.unnormalized_notes]]
        for figure in sorted((results.root / "figures").glob("*.png")):
            parts += [f"![{name} {figure.stem}]({figure.relative_to(results_dir).as_posix()})", ""]
    not_run = [e for e in list_experiments() if e not in {r.experiment for r in found.values()}]
    if not_run:
        parts += ["## Not run yet", "", ", ".join(not_run), ""]
    path = results_dir / "REPORT.md"
    atomic_write_text(path, "\n".join(parts))
    if readme is not None:
        update_readme(Path(readme), results_dir,
                      verdicts_table({column_head(scale, split.get(scale, {})): v for scale, v in judged.items()}))
    return path
