"""The README and docs/: every link resolves, the README stays short, nothing cites a file outside the repository,
and no number that comes from results is typed by hand.

A number from results sits between markers, `<!-- n:KEY -->VALUE<!-- /n -->`; FACTS computes each KEY's value
from the committed results (summary.csv, meta.json, probes.csv.xz, bench.csv), and the test fails when a page
says anything else. The benchmark table in docs/benchmarks.md is rendered from results/bench/bench.csv the same
way. After new results: `python tests/test_docs.py --write` rewrites every marked value and the table, and the
diff shows what moved (the prose around a changed number may then need reading again). Pages whose prose reads
results (PROSE_CHECKED) may hold no other number than those marked, apart from the names and settings that
ALLOWED lists.
"""
from __future__ import annotations

import csv
import functools
import importlib
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 150

MARK = re.compile(r"<!-- n:([\w.-]+) -->(.*?)<!-- /n -->", re.S)
BENCH_BLOCK = re.compile(r"(<!-- bench:begin[^>]*-->\n)(.*?)(<!-- bench:end -->)", re.S)
BENCH_CSV = RESULTS / "bench" / "bench.csv"


def text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def rel(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


# ----------------------------------------------------------------------------------------------
# Links, length, and nothing outside the repository
# ----------------------------------------------------------------------------------------------
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def without_code(markdown: str) -> str:
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", markdown))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (letters of any script kept), spaces to '-'."""
    heading = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen, out = {}, set()
    for line in FENCE.sub("", text(page)).splitlines():
        if match := re.match(r"#{1,6} (.+)", line):
            base = slug(match.group(1))
            out.add(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    return out


def links(page: Path) -> list[str]:
    return [target for target in LINK.findall(without_code(text(page)))
            if not re.match(r"[a-z][a-z0-9+.-]*:", target)]  # http:, https:, mailto: are not checked here


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with the anchor #{anchor} in {rel(file)}")
    assert not broken, f"{rel(page)}: " + "; ".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in links(README)}
    assert not [rel(p) for p in PAGES[1:] if p.resolve() not in linked]


def test_the_readme_is_short_and_starts_with_the_two_commands():
    lines = text(README).splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    head = "\n".join(lines[:8])
    assert "make noisy-bn" in head and "make test" in head


def test_the_readme_example_runs():
    """The README's probe example, as printed: it is how a reader first calls a probe on their own model."""
    (example,) = re.findall(r"^```python\n(.*?)^```", text(README), re.S | re.M)
    exec(compile(example, "README.md", "exec"), {})


# Built, not written: this file must not name them either.
OUTSIDE = [name + ".md" for name in ("PAPER", "DESIGN", "STYLE")] + ["../" + "shared"]
CHECKED_FOR_OUTSIDE = ["bnstudy", "tests", "docs", "experiments", "README.md", "Makefile"]
# The Makefile may look for a local copy of CIFAR-10 beside the checkout (where this project's machines keep one):
# a place to find data, not a page cited
DATA_PLACES = {("Makefile", "../" + "shared")}


def test_nothing_cites_a_file_outside_the_repository():
    files = [f for entry in CHECKED_FOR_OUTSIDE for f in ([ROOT / entry] if (ROOT / entry).is_file() else
                                                            sorted((ROOT / entry).rglob("*")))
             if f.is_file() and "__pycache__" not in f.parts and f.suffix in ("", ".py", ".md", ".toml", ".txt")]
    found = [f"{rel(f)}: {name}" for f in files for name in OUTSIDE
             if name in f.read_text(encoding="utf-8") and (rel(f), name) not in DATA_PLACES]
    assert not found, "the repository's own page is docs/protocol.md: " + "; ".join(found)


DOTTED = re.compile(r"`(bnstudy(?:\.\w+)+)")


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_bnstudy_name_the_docs_give_exists(page):
    """`bnstudy.module.name` in a page imports: a module split or renamed shows here, not in a reader's shell."""
    missing = []
    for dotted in sorted(set(DOTTED.findall(text(page)))):
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):  # the longest importable module, then attributes
            try:
                found = importlib.import_module(".".join(parts[:i]))
            except ModuleNotFoundError:
                continue
            for attribute in parts[i:]:
                found = getattr(found, attribute, None)
            if found is None:
                missing.append(dotted)
            break
    assert not missing, f"{rel(page)} names what does not exist: {missing}"


# ----------------------------------------------------------------------------------------------
# Reading the committed results
# ----------------------------------------------------------------------------------------------
FINISHED = ("complete", "diverged")


@functools.cache
def summary(experiment: str) -> pd.DataFrame:
    frame = pd.read_csv(RESULTS / experiment / "summary.csv")
    frame = frame[frame.status.isin(FINISHED)].copy()
    frame["init"] = frame["init"].fillna("glorot") if "init" in frame else "glorot"
    from bnstudy.analysis import CHANCE, TRAINS_MARGIN
    frame["trains"] = (frame.status == "complete") & (frame.final_train_acc_last100 >= CHANCE + TRAINS_MARGIN)
    frame["scored"] = frame.final_train_acc_last100.where(frame.status == "complete", CHANCE)  # diverged: chance
    return frame


@functools.cache
def metas() -> pd.DataFrame:
    rows = [json.loads(path.read_text(encoding="utf-8")) for path in sorted(RESULTS.glob("*/*/seed-*/meta.json"))]
    return pd.DataFrame([r for r in rows if r.get("status") in FINISHED])


def of(frame: pd.DataFrame, norm: str, init: str | None = None, lr: float | None = None) -> pd.DataFrame:
    chosen = frame[(frame.norm == norm) & ((frame.init == init) if init else True)]
    return chosen[np.isclose(chosen.lr, lr)] if lr is not None else chosen


def best_lr(frame: pd.DataFrame, norm: str, init: str) -> float:
    """The LR whose final training accuracy, averaged over seeds, is highest (analysis.best_lr)."""
    return float(of(frame, norm, init).groupby("lr").scored.mean().idxmax())


def largest_lr(frame: pd.DataFrame, norm: str, init: str) -> float | None:
    """The largest LR at which every seed trains (analysis.largest_trainable_lr); None if there is none."""
    per_lr = of(frame, norm, init).groupby("lr").trains.all()
    return float(per_lr[per_lr].index.max()) if per_lr.any() else None


def paired(a: pd.DataFrame, b: pd.DataFrame, column: str) -> tuple[pd.Series, pd.Series]:
    a, b = a.set_index("seed")[column], b.set_index("seed")[column]
    seeds = a.index.intersection(b.index)
    return a[seeds], b[seeds]


def g(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}"


def span(values, fmt=g) -> str:
    values = [float(v) for v in values]
    low, high = fmt(min(values)), fmt(max(values))
    return low if low == high else f"{low}–{high}"


def pct(x: float) -> str:
    return g(100 * x) + "%"


def pct_span(values) -> str:
    return span([100 * float(v) for v in values]) + "%"


def steps(n) -> str:
    return f"{int(n):,}"


def seeds(frame: pd.DataFrame) -> str:
    found = sorted(set(int(s) for s in frame.seed))
    return f"{found[0]}–{found[-1]}" if found == list(range(found[0], found[-1] + 1)) and len(found) > 1 else \
        ", ".join(map(str, found))


def one_value(values, fmt=str) -> str:
    values = sorted(set(values))
    return fmt(values[0]) if len(values) == 1 else "one of " + ", ".join(fmt(v) for v in values)


def listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


WORDS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


# ----------------------------------------------------------------------------------------------
# FACTS: every marked number, computed. A fact that also states a fact's shape (the one run, every seed, the
# grid's top) returns other words when that no longer holds, so the page fails and is read again.
# ----------------------------------------------------------------------------------------------
FACTS: dict[str, callable] = {}
PATTERNS: list[tuple[re.Pattern, callable]] = []


def fact(key: str):
    def register(compute):
        if any(c in key for c in "(["):
            PATTERNS.append((re.compile(key), compute))
        else:
            FACTS[key] = compute
        return compute
    return register


def value_of(key: str) -> str:
    if key in FACTS:
        return FACTS[key]()
    for pattern, compute in PATTERNS:
        if match := pattern.fullmatch(key):
            return compute(*match.groups())
    raise KeyError(f"no fact computes <!-- n:{key} -->: add one to tests/test_docs.py, or drop the number")


# --- definitions shared by the figures and the claims
@fact("final-window")
def _final_window():
    column = next(c for c in summary("controls").columns if c.startswith("final_train_acc_last"))
    return column.removeprefix("final_train_acc_last")


@fact("trains-threshold")
def _trains_threshold():
    from bnstudy.analysis import CHANCE, TRAINS_MARGIN
    return f"{100 * (CHANCE + TRAINS_MARGIN):.0f}%"


@fact("left-chance-window")
def _left_chance_window():
    from bnstudy.analysis import LEAVES_WINDOW
    return str(LEAVES_WINDOW)


@fact("left-chance-level")
def _left_chance_level():
    from bnstudy.analysis import LEAVES_CHANCE
    return f"{100 * LEAVES_CHANCE:.0f}%"


# --- the presets
def vgg_steps(preset: str) -> str:
    runs = metas()
    runs = runs[(runs.preset == preset) & (runs.model == "vgg")]
    return span(runs.steps, steps)


@fact("(quick|long)-steps")
def _preset_steps(preset):
    return vgg_steps(preset)


@fact("long-wall-hours")
def _long_wall_hours():
    runs = summary("paper-figures")
    return span(runs[runs.preset == "long"].wall_time_s / 3600, lambda h: f"{h:.1f}")


# --- controls (claims 12a-12e)
@fact("(controls|spectrum|sweep|noisy)-steps")
def _experiment_steps(name):
    return one_value(summary(EXPERIMENT[name]).steps, steps)


@fact("(controls|spectrum|sweep|noisy)-seeds")
def _experiment_seeds(name):
    return seeds(summary(EXPERIMENT[name]))


EXPERIMENT = {"controls": "controls", "spectrum": "spectrum", "sweep": "lr-sweep", "noisy": "noisy-bn"}
INIT_WORD = {"glorot": "Glorot", "kaiming": "He"}


@fact("logit-std-(glorot|kaiming)")
def _logit_std(init):
    """The logits' standard deviation at step 0 without BN (the weights probe; every LR starts from one network)."""
    runs = of(summary("controls"), "none", init)
    values = []
    for arm, seed in runs[np.isclose(runs.lr, runs.lr.min())][["arm", "seed"]].itertuples(index=False):
        probes = pd.read_csv(RESULTS / "controls" / arm / f"seed-{seed}" / "probes.csv.xz")
        at_init = probes[(probes.probe == "weights") & (probes.step == 0) & (probes.metric == "logit_std")]
        values += at_init.value.tolist()
    return span(values, lambda x: g(x, 2))


@fact("best-lr-(none|batch)-(glorot|kaiming)")
def _best_lr(norm, init):
    return g(best_lr(summary("controls"), norm, init))


@fact(r"left-chance-none-glorot-lr([\d.]+)")
def _left_chance_at_lr(lr):
    runs = of(summary("controls"), "none", "glorot", float(lr))
    return first_steps(runs.left_chance_at)


def first_steps(values: pd.Series) -> str:
    """Per-seed first steps at which something happened (NaN: never), as a span, or how many seeds it happened in."""
    reached = values.dropna()
    if len(reached) == len(values):
        return span(reached, lambda x: str(int(x)))
    if not len(reached):
        return f"in none of {WORDS[len(values)]} seeds"
    return f"in {WORDS[len(reached)]} seed{'s' * (len(reached) != 1)} of {WORDS[len(values)]}, at step " + span(
        reached, lambda x: str(int(x)))


@fact("left-chance-none-kaiming-best")
def _left_chance_kaiming():
    runs = summary("controls")
    return first_steps(of(runs, "none", "kaiming", best_lr(runs, "none", "kaiming")).left_chance_at)


@fact("acc-none-kaiming-best")
def _acc_kaiming_best():
    runs = summary("controls")
    return pct_span(of(runs, "none", "kaiming", best_lr(runs, "none", "kaiming")).final_train_acc_last100)


@fact("acc-batch-best")
def _acc_batch_best():
    runs = summary("controls")
    return pct_span(pd.concat([of(runs, "batch", init, best_lr(runs, "batch", init)).final_train_acc_last100
                               for init in ("glorot", "kaiming")]))


@fact(r"acc-(none|batch)-(glorot|kaiming)-lr([\d.]+)")
def _acc_at(norm, init, lr):
    return pct_span(of(summary("controls"), norm, init, float(lr)).final_train_acc_last100)


@fact(r"acc-gap-(glorot|kaiming)-ahead-lr([\d.]+)")
def _acc_gap(ahead, lr):
    """BN with one init against BN with the other at one LR, per seed, in points of training accuracy."""
    runs = summary("controls")
    other = "kaiming" if ahead == "glorot" else "glorot"
    a, b = paired(of(runs, "batch", ahead, float(lr)), of(runs, "batch", other, float(lr)), "final_train_acc_last100")
    gap = 100 * (a - b)
    return span(gap, lambda x: f"{x:.1f}") + ("" if (gap > 0).all() else " (not ahead in every seed)")


@fact("largest-lr-none-(glorot|kaiming)")
def _largest_none(init):
    largest = largest_lr(summary("controls"), "none", init)
    return "none of its LRs" if largest is None else g(largest)


@fact("largest-lr-batch")
def _largest_batch():
    found = {init: largest_lr(summary("controls"), "batch", init) for init in ("glorot", "kaiming")}
    if len(set(found.values())) == 1:
        return g(found["glorot"])
    return ", ".join(f"{g(v)} with {INIT_WORD[i]} init" for i, v in found.items())


@fact("grad-change-ratio-(glorot|kaiming)")
def _grad_change_ratio(init):
    """Claim 12b's number: no-BN's early gradient change over BN's, each at its own best LR, per seed."""
    runs = summary("controls")
    none, bn = (of(runs, norm, init, best_lr(runs, norm, init)) for norm in ("none", "batch"))
    a, b = paired(none, bn, "early_grad_diff_max")
    ratio = a / b
    if init == "kaiming" and not ((ratio > 1) & (ratio < 3)).all():  # the sentence: every seed, short of 3x
        return span(ratio) + " (not between 1 and 3 in every seed)"
    return span(ratio)


@fact("beta-ratio-kaiming")
def _beta_ratio():
    """Claim 12c's numbers: β_eff without BN over BN's at equal η, He init, up to no-BN's largest LR that trains."""
    runs = summary("controls")
    top = largest_lr(runs, "none", "kaiming")
    shared = sorted(set(of(runs, "none", "kaiming").lr) & set(of(runs, "batch", "kaiming").lr))
    parts = []
    for lr in [lr for lr in shared if top is not None and lr <= top]:
        a, b = paired(of(runs, "none", "kaiming", lr), of(runs, "batch", "kaiming", lr), "beta_eff_median")
        parts.append(f"{g((a / b).mean())}× at LR {g(lr)}")
    return listed(parts)


@fact("eta-lambda-(none|batch)-(glorot|kaiming)")
def _eta_lambda(norm, init):
    """The late median of η·λ_max in the runs that train (claim 12d)."""
    runs = of(summary("controls"), norm, init)
    values = runs[runs.trains].late_eta_lambda
    if norm == "none" and init == "glorot" and len(values) != 1:  # the sentence: "the one Glorot run ... that trains"
        return f"{span(values)} over {len(values)} runs"
    return span(values)


def bn_that_train() -> pd.DataFrame:
    runs = of(summary("controls"), "batch")
    return runs[runs.trains]


@fact("bn-runs-that-train")
def _bn_runs():
    return str(len(bn_that_train()))


@fact("identity-error-max")
def _identity_error():
    return g(100 * bn_that_train().identity_error_median.max(), 2) + "%"


@fact("eff-step-ratio")
def _eff_step_ratio():
    runs = bn_that_train()
    ratio = runs.late_eff_step / runs.early_eff_step
    return f"{span(ratio)} (median {g(ratio.median())})"


@fact("eff-step-rises")
def _eff_step_rises():
    runs = bn_that_train()
    rises = runs[runs.late_eff_step >= runs.early_eff_step]
    lowest = rises.groupby("init").lr.min()
    return (f"{len(rises)} of them, all at LR {g(lowest.get('glorot', np.nan))} or more with Glorot init and "
            f"{g(lowest.get('kaiming', np.nan))} or more with He")


@fact(r"eff-step-batch-glorot-lr([\d.]+)")
def _eff_step(lr):
    runs = of(summary("controls"), "batch", "glorot", float(lr))
    return (span(100 * runs.early_eff_step, lambda x: f"{x:.2f}") + "% early and "
            + span(100 * runs.late_eff_step, lambda x: f"{x:.2f}") + "% late")


# --- spectrum (claims 12f-12h), at mid-training
def spectrum_of(norm: str) -> pd.DataFrame:
    return of(summary("spectrum"), norm)


@functools.cache
def spectrum_steps() -> tuple[list[int], int]:
    """The probed steps (every run the same) and the one closest to half the steps (analysis.at_mid_training)."""
    found = set()
    for row in summary("spectrum").itertuples():
        probes = pd.read_csv(RESULTS / "spectrum" / row.arm / f"seed-{row.seed}" / "probes.csv.xz")
        found.add(tuple(sorted(probes[probes.probe.str.startswith("spectrum-")].step.unique().tolist())))
    (at,) = found
    total = int(one_value(summary("spectrum").steps))
    return list(at), min(at, key=lambda s: abs(s - total / 2))


@fact("spectrum-at")
def _spectrum_at():
    return listed([str(s) for s in spectrum_steps()[0]])


@fact("spectrum-mid")
def _spectrum_mid():
    return str(spectrum_steps()[1])


@fact("lambda-eval")
def _lambda_eval():
    return span(spectrum_of("batch").mid_lambda_max_eval)


@fact("lambda-train")
def _lambda_train():
    return span(spectrum_of("batch").mid_lambda_max_train)


@fact("lambda-eval-over-train")
def _lambda_ratio():
    bn = spectrum_of("batch")
    return span(bn.mid_lambda_max_eval / bn.mid_lambda_max_train)


@fact("lambda-standard")
def _lambda_standard():
    return span(spectrum_of("none").mid_lambda_max_train)


@fact("bulk-edge")
def _bulk_edge():
    """The bulk edge in every seed and mode; the sentence also says every top-k eigenvalue lies above it."""
    runs = summary("spectrum")
    edges = pd.concat([runs.mid_bulk_edge_train, runs.mid_bulk_edge_eval]).dropna()
    outliers = pd.concat([runs.mid_outliers_train, runs.mid_outliers_eval]).dropna()
    k = {json.loads((RESULTS / "spectrum" / row.arm / f"seed-{row.seed}" / "config.json").read_text())["spectrum"]["k"]
         for row in runs.itertuples()}
    return span(edges) + ("" if k == set(outliers) else " (not every count at the cap)")


@fact("share-(standard|batch-train|batch-eval)")
def _share(which):
    column = "mid_share_eval" if which == "batch-eval" else "mid_share_train"
    return pct_span(spectrum_of("none" if which == "standard" else "batch")[column])


@fact("share-means")
def _share_means():
    return f"{pct(spectrum_of('none').mid_share_train.mean())} and {pct(spectrum_of('batch').mid_share_train.mean())}"


@fact("share-exception")
def _share_exception():
    a, b = paired(spectrum_of("none"), spectrum_of("batch"), "mid_share_train")
    below = [seed for seed in a.index if a[seed] <= b[seed]]
    if not below:
        return "in no seed is it lower"
    return listed([f"in seed {seed} it is {pct(a[seed])} against {pct(b[seed])}" for seed in below])


# --- lr-sweep
@fact("sweep-largest-(none-glorot|none-kaiming|batch)")
def _sweep_largest(kind):
    norm, _, init = kind.partition("-")
    runs = summary("lr-sweep")
    largest = largest_lr(runs, norm, init or "glorot")
    if largest is None:
        return "none of the grid's LRs"
    top = of(runs, norm, init or "glorot").lr.max()
    return g(largest) + (", the grid's top" if np.isclose(largest, top) else "")


@fact("sweep-best-(none-kaiming|batch)")
def _sweep_best(kind):
    norm, _, init = kind.partition("-")
    runs = summary("lr-sweep")
    lr = best_lr(runs, norm, init or "glorot")
    acc = pct(of(runs, norm, init or "glorot", lr).scored.mean())
    return f"{g(lr)}, with {acc}" + (" training accuracy" if norm == "none" else "")


# --- noisy-bn
ACCURACY = {"train": "final_train_acc_last100", "test": "final_test_acc", "test-recal": "final_test_acc_recal"}


@fact("(noisy|bn)-(train|test|test-recal)")
def _noisy(arm, split):
    return pct(of(summary("noisy-bn"), "noisy-batch" if arm == "noisy" else "batch")[ACCURACY[split]].mean())


# --- paper-figures at the long preset: why claims 6-8, 11, 13a and 13c do not hold there
LONG_ARMS = {"standard": "none", "batch": "batch"}  # the fact keys' words, and the norm of each


def long_runs(norm: str | None = None, lr: float = 0.1) -> pd.DataFrame:
    runs = summary("paper-figures")
    runs = runs[(runs.preset == "long") & np.isclose(runs.lr, lr)]
    return runs[runs.norm.isin(list(LONG_ARMS.values()))] if norm is None else runs[runs.norm == norm]


@functools.cache
def long_probes() -> pd.DataFrame:
    """The probe rows of the long runs at LR 0.1 as bnstudy reads them (reading.Results): the filter-normalized
    probes whose direction was not are left out here as in every figure and claim."""
    from bnstudy.reading import Results
    probes = Results(RESULTS, "paper-figures").tables["probes"]
    return probes.merge(long_runs()[["arm", "seed"]], on=["arm", "seed"])


@functools.cache
def long_per_eta(probe: str) -> pd.DataFrame:
    """Every (run, step, eta) of the long standard and batchnorm runs at LR 0.1 along `probe` (analysis.landscape's
    per_eta_table), with its phase, whether eta is the grid's smallest, and whether beta is the probe's max there."""
    from bnstudy.analysis.common import phase
    from bnstudy.analysis.landscape import per_eta_table
    runs = long_runs()
    table = per_eta_table(long_probes(), probe).merge(runs[["arm", "seed", "norm"]], on=["arm", "seed"])
    by_probe = table.groupby(["arm", "seed", "step"])
    return table.assign(phase=phase(table, runs), at_min=table.eta == table.eta.min(),
                        is_max=table.beta_rel == by_probe.beta_rel.transform("max"))


def long_probe(probe: str) -> str:
    from bnstudy.analysis.landscape import FILTER, PLAIN
    return {"plain": PLAIN, "filter": FILTER}[probe]


@fact("long-seeds")
def _long_seeds():
    return seeds(long_runs())


@fact("long-inv-eta-min-(plain|filter)")
def _long_inv_eta_min(probe):
    return g(1 / long_per_eta(long_probe(probe)).eta.min())


@fact("long-(early|late)-fit-(plain|filter)-(standard|batch|both)")
def _long_fit(phase, probe, arm):
    """Per run, the median of L(w - eta_min d) / L(w) over the phase's probes."""
    rows = long_per_eta(long_probe(probe))
    rows = rows[rows.at_min & (rows.phase == phase) & (rows.norm.isin([LONG_ARMS[arm]]) if arm != "both" else True)]
    return pct_span(rows.assign(fit=rows.loss / rows.loss_at_w).groupby(["arm", "seed"]).fit.median())


@fact("long-late-rel-at-min")
def _long_late_rel_at_min():
    """Per run and direction, the late median of ||grad L(w - eta_min d) - g|| / ||g||."""
    rows = pd.concat([long_per_eta(long_probe(p)) for p in ("plain", "filter")], keys=["plain", "filter"],
                     names=["probe"]).reset_index(level=0)
    rows = rows[rows.at_min & (rows.phase == "late")]
    return span((rows.grad_diff / rows.grad_norm).groupby([rows.probe, rows.arm, rows.seed]).median(),
                lambda x: f"{x:.2f}")


@fact("long-late-max-at-min")
def _long_late_max_at_min():
    """Per run and direction, the share of late probes whose beta peaks at the grid's smallest step."""
    shares = [rows[rows.is_max & (rows.phase == "late")].groupby(["arm", "seed"]).at_min.mean()
              for rows in (long_per_eta(long_probe(p)) for p in ("plain", "filter"))]
    return pct_span(pd.concat(shares))


@fact("cancel-tol")
def _cancel_tol():
    from bnstudy.analysis.landscape import CANCEL_TOL
    return pct(CANCEL_TOL)


@fact("long-eta-max-plain")
def _long_eta_max_plain():
    """The plain grid's largest step, in multiples of the runs' LR."""
    return g(long_per_eta("landscape").eta.max() / 0.1)


def late_peaks() -> pd.DataFrame:
    """Per late probe along the gradient of the long runs: where its largest gradient change sits (at_top: the
    grid's largest eta), that change over ||g|| (rel), and ||g||."""
    rows = long_per_eta("landscape")
    late = rows[rows.phase == "late"]
    peak = late.loc[late.groupby(["arm", "seed", "step"]).grad_diff.idxmax()]
    return peak.assign(at_top=peak.eta == rows.eta.max(), rel=peak.grad_diff / peak.grad_norm)


@fact("long-late-peak-at-top-(standard|batch)")
def _long_late_peak_at_top(arm):
    peaks = late_peaks()
    return pct_span(peaks[peaks.norm == LONG_ARMS[arm]].groupby("seed").at_top.mean())


@fact("long-late-rel-at-peak-(standard|batch)")
def _long_late_rel_at_peak(arm):
    peaks = late_peaks()
    return span(peaks[peaks.norm == LONG_ARMS[arm]].groupby("seed").rel.median(), lambda x: f"{x:.2f}")


@fact("long-late-(rel|grad_norm)-ratio")
def _long_late_ratio(column):
    """Per seed, standard's late median over BN's: of the largest change relative to ||g||, or of ||g|| itself."""
    medians = late_peaks().groupby(["norm", "seed"])[column].median()
    return span(medians["none"] / medians["batch"], lambda x: f"{x:.2g}")


@fact("long-late-cancels-(plain|filter)-(standard|batch)")
def _long_late_cancels(probe, arm):
    """Per run, the share of late probes that the project's test counts as cancelling the gradient (CANCELS)."""
    from bnstudy.analysis.common import phase
    from bnstudy.analysis.landscape import CANCELS, landscape_summary
    table = landscape_summary(long_probes(), long_probe(probe)).merge(long_runs()[["arm", "seed", "norm"]])
    late = table[(phase(table, long_runs()) == "late") & (table.norm == LONG_ARMS[arm])]
    return pct_span(late.groupby("seed")[CANCELS].mean())


@fact("long-(standard|batch)-(early_beta_eff|late_beta_eff|filter_late_beta_rel|early_overshoot|early_loss_ratio|"
      "filter_early_loss_ratio|early_lambda_max|late_lambda_max)")
def _long_column(arm, column):
    return span(long_runs(LONG_ARMS[arm])[column])


@fact("long-grad-change-ratio-(early|late)")
def _long_grad_change_ratio(phase):
    a, b = paired(long_runs("none"), long_runs("batch"), f"{phase}_grad_diff_max")
    return span(a / b, lambda x: f"{x:.2g}")


# --- the same runs window by window: standard over BN per seed (analysis.window_ratios)
@functools.cache
def long_windows() -> pd.DataFrame:
    from bnstudy.analysis import window_ratios
    runs = long_runs()
    arms = {norm: runs[runs.norm == norm].arm.iloc[0] for norm in LONG_ARMS.values()}
    return window_ratios(long_probes(), arms["none"], arms["batch"])


def window_names() -> list[str]:
    return list(long_windows().window.cat.categories)


WINDOW_WORD = "(grad_diff_max|loss_ratio|loss_width|loss_width_rel)"


@fact(r"window-bounds-(\d)")
def _window_bounds(index):
    return window_names()[int(index)]


@fact(f"window-{WINDOW_WORD}-" + r"(\d)")
def _window_ratio(quantity, index):
    table = long_windows()
    rows = table[(table.quantity == quantity) & (table.window == window_names()[int(index)])]
    return span(rows.ratio, lambda x: f"{x:.2g}")


def windows_where(quantity: str, holds) -> str:
    """The windows in which `holds(ratio)` is true for every seed, in words."""
    table = long_windows()
    rows = table[table.quantity == quantity]
    every = rows.assign(ok=holds(rows.ratio)).groupby("window", observed=True).ok.all()
    found = [name for name in window_names() if every.get(name, False)]
    return listed(found) if found else "none"


@fact(f"window-agree-{WINDOW_WORD}")
def _window_agree(quantity):
    return windows_where(quantity, lambda ratio: ratio > 1)


@fact("window-factor-(rule|paper)")
def _window_factor(which):
    """Claim 7's gradient change: the windows where every seed meets the rule's 3x, or the paper's 100x."""
    return windows_where("grad_diff_max", lambda ratio: ratio >= (3.0 if which == "rule" else 100.0))


@functools.cache
def long_lambda() -> pd.DataFrame:
    """lambda_max per probed step (rows) and run (columns: norm, seed) of the long runs at LR 0.1."""
    from bnstudy.analysis.curvature import PROBE, eig_metric
    frames = {}
    for row in long_runs().itertuples():
        probes = pd.read_csv(RESULTS / "paper-figures" / row.arm / f"seed-{row.seed}" / "probes.csv.xz")
        frames[(row.norm, row.seed)] = probes[(probes.probe == PROBE) & (probes.metric == eig_metric(1))].set_index(
            "step").value
    return pd.DataFrame(frames)


@fact("long-lambda-init-batch")
def _long_lambda_init_batch():
    return span(long_lambda()["batch"].iloc[0], lambda x: f"{x:,.0f}")


@fact("long-lambda-batch-above")
def _long_lambda_batch_above():
    """The first quarter's probed steps at which BN's lambda_max is above standard's in every seed."""
    from bnstudy.analysis.common import first_quarter_end
    table = long_lambda()
    early = table[table.index < first_quarter_end(long_runs().steps.max())]
    above = (early["batch"] > early["none"]).all(axis=1)
    return listed([steps(step) for step in above[above].index])


# --- paper-figures at the long preset: the noise with and without BN (claims 3 and 4)
NORM_OF = LONG_ARMS | {"noisy": "noisy-batch", "noise-only": "noise-only", "l1": "l1", "l2": "l2", "linf": "linf"}
ARM_WORD = "(" + "|".join(NORM_OF) + ")"  # a fact key's arm, as a pattern


def long_lr01(arm: str) -> pd.DataFrame:
    """The long runs at LR 0.1 of the fact key's arm (standard, batch, noisy, noise-only, l1, l2, linf)."""
    return long_runs(NORM_OF[arm])


@fact("long-left-chance-" + ARM_WORD)
def _long_left_chance(arm):
    return first_steps(long_lr01(arm).left_chance_at)


@fact("long-reached-" + ARM_WORD)
def _long_reached(arm):
    """The first step at which the arm's training accuracy (claim 1b's REACH_WINDOW-step mean) reaches its level."""
    return first_steps(long_lr01(arm).reached_at)


@fact("reached-level")
def _reached_level():
    from bnstudy.analysis.training import REACHES
    return f"{100 * REACHES:.0f}%"


@fact("long-(train|test)-" + ARM_WORD)
def _long_accuracy(split, arm):
    return pct_span(long_lr01(arm)[ACCURACY[split]])


def long_seeds(*arms: str) -> str:
    return seeds(pd.concat([long_lr01(arm) for arm in arms]))


@fact("long-lp-seeds")
def _long_lp_seeds():
    return long_seeds("l1", "l2", "linf")


@fact("long-lr05-(train|test)-(standard|batch)")
def _long_lr05_accuracy(split, arm):
    """Claim 1's other half: the long runs at LR 0.5."""
    return pct_span(long_runs(LONG_ARMS[arm], 0.5)[ACCURACY[split]])


@fact("long-lr05-seeds")
def _long_lr05_seeds():
    return seeds(long_runs(lr=0.5))


@fact("long-noise-seeds")
def _long_noise_seeds():
    return long_seeds("noisy", "noise-only")


@fact("quick-left-chance-noise-only")
def _quick_left_chance_noise_only():
    """The quick noisy-bn runs' left_chance_at, from their training curves (that summary has no such column)."""
    from bnstudy.analysis.training import LEFT_CHANCE_AT, left_chance_at
    runs = of(summary("noisy-bn"), "noise-only")
    at = [left_chance_at(pd.read_csv(RESULTS / "noisy-bn" / arm / f"seed-{seed}" / "metrics.csv.xz"))[LEFT_CHANCE_AT]
          for arm, seed in runs[["arm", "seed"]].itertuples(index=False)]
    return first_steps(pd.Series([a.iloc[0] if len(a) else np.nan for a in at], dtype=float))


@fact("quick-train-noise-only")
def _quick_train_noise_only():
    return pct_span(of(summary("noisy-bn"), "noise-only").final_train_acc_last100)


# --- bnstudy reprobe on those runs: beta on a grid reaching far below the runs' own, in both directions
@functools.cache
def reprobe_table(direction: str) -> pd.DataFrame:
    table = pd.read_csv(RESULTS / "paper-figures" / "reprobe" / "landscape.csv.xz")
    table = table[table.direction == long_probe(direction)]
    return table.merge(long_runs()[["arm", "seed", "norm", "lr"]], on=["arm", "seed"])


def reprobed(direction: str) -> pd.DataFrame:
    """Per run: the median over checkpoints and batches of beta = (||grad L(w - eta d) - g|| / ||g||) / eta, the max
    over the grid (along the plain gradient it is beta_eff's ||Delta g|| / ||eta g||)."""
    table = reprobe_table(direction)
    probes = (table.grad_diff / table.grad_norm / table.eta).groupby([table.arm, table.seed, table.step,
                                                                       table.batch]).max()
    runs = long_runs()[["arm", "seed", "norm"]]
    return probes.groupby(["arm", "seed"]).median().rename("beta").reset_index().merge(runs, on=["arm", "seed"])


@fact("reprobe-(steps|batches)")
def _reprobe_setting(which):
    table = reprobe_table("plain")
    if which == "steps":
        return listed([steps(step) for step in sorted(table.step.unique())])
    return WORDS[table.batch.nunique()]


@fact("reprobe-eta-min-(plain|filter)")
def _reprobe_eta_min(direction):
    """The grid's smallest step: along the gradient in multiples of the run's LR, else a fraction of filter norms."""
    table = reprobe_table(direction)
    return g((table.eta / (table.lr if direction == "plain" else 1)).min())


@fact("reprobe-beta-(plain|filter)-(standard|batch)")
def _reprobe_beta(direction, arm):
    runs = reprobed(direction)
    return span(runs[runs.norm == LONG_ARMS[arm]].beta, lambda x: f"{x:,.0f}")


@fact("reprobe-beta-ratio-(plain|filter)")
def _reprobe_beta_ratio(direction):
    runs = reprobed(direction)
    a, b = paired(runs[runs.norm == "none"], runs[runs.norm == "batch"], "beta")
    return span(a / b, lambda x: f"{x:.2g}")


def reprobe_ratios(direction: str) -> pd.DataFrame:
    """Per eta (rows) and seed (columns): standard's median beta over checkpoints and batches / batchnorm's."""
    table = reprobe_table(direction)
    table = table.assign(beta=table.grad_diff / table.grad_norm / table.eta)
    medians = table.groupby(["norm", "seed", "eta"]).beta.median().unstack("norm")
    return (medians["none"] / medians["batch"]).unstack("seed")


def eta_band(etas) -> str:
    return f"{g(min(etas))} to {g(max(etas))}"


def contiguous_band(flags: pd.Series) -> str:
    """'a to b' where the True steps of `flags` (indexed by eta, in order) are one run of the grid, else a count."""
    positions = [i for i, flag in enumerate(flags) if flag]
    if positions and positions == list(range(positions[0], positions[-1] + 1)):
        return eta_band(flags.index[positions])
    return f"{len(positions)} scattered steps"


def batch_larger(ratios: pd.DataFrame) -> pd.Series:
    """Below the runs' own filter grid, the steps where batchnorm's scale-free beta is the larger in every seed."""
    flags = (ratios < 1).all(axis=1)
    return flags[flags.index < 0.005]


@fact("reprobe-filter-batch-larger")
def _reprobe_filter_batch_larger():
    return contiguous_band(batch_larger(reprobe_ratios("filter")))


@fact("reprobe-filter-standard-larger")
def _reprobe_filter_standard_larger():
    """The steps below that band where standard's is the larger in every seed."""
    ratios = reprobe_ratios("filter")
    band = batch_larger(ratios)
    below = ratios[ratios.index < band[band].index.min()]
    return contiguous_band((below > 1).all(axis=1))


@fact("reprobe-filter-batch-larger-ratio")
def _reprobe_filter_batch_larger_ratio():
    ratios = reprobe_ratios("filter")
    below = ratios[(ratios < 1).all(axis=1) & (ratios.index < 0.005)]
    return span(below.to_numpy().ravel(), lambda x: f"{x:.2f}")


# ----------------------------------------------------------------------------------------------
# The checks
# ----------------------------------------------------------------------------------------------
def marks() -> list[tuple[Path, str, str]]:
    return [(page, key, value) for page in PAGES for key, value in MARK.findall(text(page))]


@pytest.mark.parametrize("page,key,value", marks(), ids=[f"{rel(p)}:{k}" for p, k, _ in marks()])
def test_every_marked_number_is_the_results(page, key, value):
    expected = value_of(key)
    assert value == expected, (f"{rel(page)} says <!-- n:{key} -->{value}<!-- /n -->, the results say {expected!r}: "
                               "`python tests/test_docs.py --write` rewrites it; read the sentence around it again")


def test_every_fact_is_used():
    used = {key for _, key, _ in marks()}
    assert not set(FACTS) - used


def bench_markdown(csv_text: str) -> str:
    """docs/benchmarks.md's table, from bench.csv: what it was measured on, then every row as written."""
    rows = list(csv.DictReader(io.StringIO(csv_text)))

    def cell(s: str) -> str:
        return s.replace("|", "\\|")

    def joined(field: str) -> str:
        return ", ".join(dict.fromkeys(r[field] for r in rows))

    lines = [f"Measured on {joined('device')}, VGG-16 at width {joined('width')}, batch {joined('batch')}, "
             f"{joined('data')}, torch {joined('torch')}:", "",
             "| benchmark | value | unit | target | meets | note |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(cell(r[f]) for f in ("benchmark", "value", "unit", "target", "meets", "note")) + " |"
              for r in rows]
    return "\n".join(lines) + "\n"


def test_the_benchmark_table_is_bench_csv():
    page = ROOT / "docs" / "benchmarks.md"
    block = BENCH_BLOCK.search(text(page))
    assert block is not None, "docs/benchmarks.md has no <!-- bench:begin --> ... <!-- bench:end --> block"
    assert block.group(2) == bench_markdown(BENCH_CSV.read_text(encoding="utf-8")), \
        "docs/benchmarks.md's table is not results/bench/bench.csv: `python tests/test_docs.py --write`"


# Prose that reads results holds no number but the marked ones, and these names and settings (regular expressions).
PROSE_CHECKED = ["README.md", "docs/findings.md", "docs/benchmarks.md"]
ALLOWED = [
    r"claims? \d+[a-h]?(?:(?:–|, | and | to )\d+[a-h]?)*", r"\b\d{1,2}[a-h]\b",  # claim numbers
    r"Fig(?:s?\.|ures?) \d+[a-c]?(?:(?:–|, | and )\d+[a-c]?)*", r"#\d+",  # the paper's figures, layer numbers
    r"\b(?:19|20)\d\d\b", r"arXiv \d+\.\d+", r"Algorithm \d", r"Definition \d\.\d",  # citations
    r"VGG-\d+", r"CIFAR-\d+", r"GPT-\d", r"ℓ\d", r"\bL\d\b", r"\dD\b",  # names
    r"[Ww]idth[ -]1(?:/\d+)?\b", r"top[ -]\d+", r"\bstep 0\b", r"TF32", r"2/η", r"\bLR [\d.]+",  # settings
    r"on \d+ of 2", r"\d-core", r"\b\d+% bootstrap", r"both sides of 2", r"pinned at 2", r"three times",
    r"‖W_\{t\+1\}‖² − ‖W_t‖² = η²‖g_t‖²", r"‖[^‖]*‖₂?", r"η/‖W‖²", r"[²₂]",
]


GENERATED = re.compile(r"<!-- (claims:start|crosscheck:begin|bench:begin).*?<!-- (claims|crosscheck|bench):end -->",
                       re.S)


def prose(markdown: str) -> str:
    markdown = MARK.sub(" ", markdown)
    markdown = GENERATED.sub(" ", markdown)
    markdown = re.sub(r"<!--.*?-->", " ", markdown, flags=re.S)
    markdown = re.sub(r"\]\([^)]*\)", "]", without_code(markdown))
    for allowed in ALLOWED:
        markdown = re.sub(allowed, " ", markdown)
    return markdown


@pytest.mark.parametrize("name", PROSE_CHECKED)
def test_prose_that_reads_results_types_no_number(name):
    stray = [m.group(0) for m in re.finditer(r"[^\s]*\d[^\s]*", prose(text(ROOT / name)))]
    assert not stray, f"{name}: numbers neither marked nor allowed (mark them and add a fact, or drop them): {stray}"


# --- the width ladder: paper-figures' standard and batchnorm at LR 0.1 on the paper's schedule, a results folder
# per width (docs/long.md); width 1/4's are results/paper-figures' long runs
LADDER_WIDTHS = {"w8": 0.125, "w4": 0.25, "w2": 0.5, "w1": 1.0}  # the fact keys' words for each width
WIDTH_WORD = "(" + "|".join(LADDER_WIDTHS) + ")"
LADDER_RATIOS = ("early_grad_diff_max", "early_loss_ratio", "early_overshoot", "early_lambda_max",
                 "filter_early_loss_ratio", "filter_early_rel_grad_diff_max", "reached_at")
LADDER_FOLDERS = {"w8": "width-0.125", "w4": ".", "w2": "width-0.5", "w1": "paper"}  # each width's results folder


@functools.cache
def ladder_runs(width: str) -> pd.DataFrame:
    runs = pd.concat([pd.read_csv(path) for path in sorted(RESULTS.glob("**/paper-figures/summary.csv"))])
    runs = runs[runs.status.isin(FINISHED + ("stopped",)) & runs.preset.isin(["long", "paper"])
                & np.isclose(runs.lr, 0.1) & runs.norm.isin(list(LONG_ARMS.values()))]
    return runs[np.isclose(runs.width, LADDER_WIDTHS[width])]


def ladder_arm(width: str, arm: str) -> pd.DataFrame:
    runs = ladder_runs(width)
    return runs[runs.norm == LONG_ARMS[arm]]


@fact("ladder-seeds-" + WIDTH_WORD)
def _ladder_seeds(width):
    return seeds(ladder_runs(width))


@fact(f"ladder-ratio-({'|'.join(LADDER_RATIOS)})-" + WIDTH_WORD)
def _ladder_ratio(column, width):
    """standard / batchnorm per seed, in seed order: the statistic of claims 6, 6b, 7, 11, 13a and 13b."""
    a, b = paired(ladder_arm(width, "standard"), ladder_arm(width, "batch"), column)
    return listed([f"{x:.2g}" for x in (a / b).sort_index()])


@fact("ladder-(reached|left-chance)-(standard|batch)-" + WIDTH_WORD)
def _ladder_steps(event, arm, width):
    return first_steps(ladder_arm(width, arm)[{"reached": "reached_at", "left-chance": "left_chance_at"}[event]])


@fact("ladder-(train|test)-(standard|batch)-" + WIDTH_WORD)
def _ladder_accuracy(split, arm, width):
    return pct_span(ladder_arm(width, arm)[ACCURACY[split]])


@fact("ladder-lambda-(standard|batch)-" + WIDTH_WORD)
def _ladder_lambda(arm, width):
    return span(ladder_arm(width, arm).early_lambda_max)


@fact("ladder-(early_loss_ratio|early_overshoot)-(standard|batch)-" + WIDTH_WORD)
def _ladder_column(column, arm, width):
    return span(ladder_arm(width, arm)[column])


@functools.cache
def ladder_probes(width: str) -> pd.DataFrame:
    """The probe rows of one width's paper-figures runs as bnstudy reads them (reading.Results), read once."""
    from bnstudy.reading import Results
    return Results(RESULTS / LADDER_FOLDERS[width], "paper-figures").tables["probes"]


@functools.cache
def ladder_per_eta(width: str, probe: str) -> pd.DataFrame:
    """Every (run, step, eta) of one width's standard and batchnorm runs along `probe` (analysis.landscape's
    per_eta_table), computed once for the facts that read it."""
    from bnstudy.analysis.landscape import per_eta_table
    runs = ladder_runs(width)[["arm", "seed"]]
    return per_eta_table(ladder_probes(width).merge(runs, on=["arm", "seed"]), probe)


@fact("ladder-early-fit-(standard|batch)-" + WIDTH_WORD)
def _ladder_early_fit(arm, width):
    """Per run, the first quarter's median of L(w - eta_min g) / L(w): how far the grid's smallest step along the
    gradient takes the batch's loss (the long runs' long-early-fit, at one width of the ladder)."""
    from bnstudy.analysis.common import phase
    from bnstudy.analysis.landscape import PLAIN
    runs = ladder_arm(width, arm)
    rows = ladder_per_eta(width, PLAIN).merge(runs[["arm", "seed"]], on=["arm", "seed"])
    rows = rows[(rows.eta == rows.eta.min()) & (phase(rows, runs) == "early")]
    return pct_span(rows.assign(fit=rows.loss / rows.loss_at_w).groupby(["arm", "seed"]).fit.median())


@fact("ladder-share-(beta|beta_rel)-" + WIDTH_WORD)
def _ladder_share_below(beta, width):
    """Per seed, in seed order: the share of the probed steps at which batchnorm's max over eta of beta is below
    standard's, over the whole run: claim 8's statistic (beta along the plain gradient, beta_eff) and claim 13c's
    (beta_rel along the filter-normalized one), counted here from the per-eta rows."""
    from bnstudy.analysis.landscape import FILTER, PLAIN
    rows = ladder_per_eta(width, PLAIN if beta == "beta" else FILTER)
    peak = rows.groupby(["arm", "seed", "step"])[beta].max().unstack("arm")
    both = peak[["standard", "batchnorm"]].dropna()
    return listed([pct(share) for share in (both.batchnorm < both.standard).groupby(level="seed").mean()])


COLLAPSE_WINDOW = 250  # steps: the training accuracy's mean over each such window


def fell_back(width: str) -> dict[int, tuple[int, int]]:
    """Standard's seeds whose training accuracy, once it had left chance, fell back to it (a window mean below
    11%) for a while: seed -> (first, end) step of the windows at chance."""
    from bnstudy.analysis import CHANCE
    folder = LADDER_FOLDERS[width]
    found = {}
    for seed in sorted(ladder_arm(width, "standard").seed):
        metrics = pd.read_csv(RESULTS / folder / "paper-figures" / "standard" / f"seed-{seed}" / "metrics.csv.xz")
        acc = metrics[(metrics.split == "train") & (metrics.metric == "acc")]
        windows = acc.groupby(acc.step // COLLAPSE_WINDOW * COLLAPSE_WINDOW).value.mean()
        left = windows.index[windows > CHANCE + 0.01]
        at_chance = windows[(windows.index > left.min()) & (windows <= CHANCE + 0.01)] if len(left) else []
        if len(at_chance):
            found[int(seed)] = (int(at_chance.index.min()), int(at_chance.index.max()) + COLLAPSE_WINDOW)
    return found


@fact("ladder-fell-back-" + WIDTH_WORD)
def _ladder_fell_back(width):
    runs = fell_back(width)
    return listed([f"seed {seed}, steps {steps(a)}–{steps(b)}" for seed, (a, b) in runs.items()]) if runs else "none"


# --- Ioffe & Szegedy's MNIST experiment (claims 14a-d)
def ioffe_runs(arm: str) -> pd.DataFrame:
    runs = summary("ioffe-mnist")
    return runs[runs.norm == LONG_ARMS[arm]]


@fact("ioffe-seeds")
def _ioffe_seeds():
    return seeds(summary("ioffe-mnist"))


@fact("ioffe-(train|test)-(standard|batch)")
def _ioffe_accuracy(split, arm):
    return pct_span(ioffe_runs(arm)[ACCURACY[split]])


@fact("ioffe-reached-(standard|batch)")
def _ioffe_reached(arm):
    return first_steps(ioffe_runs(arm).test_reached_at)


@fact("ioffe-test-level")
def _ioffe_test_level():
    from bnstudy.analysis.training import TEST_REACHES
    return f"{100 * TEST_REACHES:.0f}%"


@fact("ioffe-(p50_drift_L3|early_lambda_max|late_lambda_max|early_grad_diff_max|beta_eff_median)-(standard|batch)")
def _ioffe_column(column, arm):
    return span(ioffe_runs(arm)[column])


@fact("ioffe-ratio-(early_grad_diff_max|late_grad_diff_max|early_lambda_max|beta_eff_median|p50_drift_L3)")
def _ioffe_ratio(column):
    """standard / batchnorm per seed, as a span."""
    a, b = paired(ioffe_runs("standard"), ioffe_runs("batch"), column)
    return span(a / b, lambda x: f"{x:.2g}")


@fact(r"ioffe-ics-(l2|cosine|rel_l2)-(standard|batch)-L(\d)")
def _ioffe_ics(metric, arm, layer):
    return span(ioffe_runs(arm)[f"ics_{metric}_median_L{layer}"])


# ----------------------------------------------------------------------------------------------
# python tests/test_docs.py --write: every marked value and the benchmark table from the results
# ----------------------------------------------------------------------------------------------
def write() -> None:
    for page in PAGES:
        old = text(page)
        new = MARK.sub(lambda m: f"<!-- n:{m.group(1)} -->{value_of(m.group(1))}<!-- /n -->", old)
        if page.name == "benchmarks.md":
            new = BENCH_BLOCK.sub(lambda m: m.group(1) + bench_markdown(BENCH_CSV.read_text(encoding="utf-8"))
                                  + m.group(3), new)
        if new != old:
            page.write_text(new, encoding="utf-8")
            print(f"rewrote {rel(page)}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_docs.py --write")
    write()
