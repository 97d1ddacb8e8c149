"""What every rule shares: verdicts and claims, finding runs by what they are (never by an arm's name), pairing
seeds, and the summaries a rule reads (`needs`, `Sources`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from bnstudy.analysis import StepTable, experiment_of, matches

HOLDS, FAILS, TIE, NOT_MEASURED = "holds", "does not hold", "tie", "not measured"


@dataclass(frozen=True)
class Verdict:
    verdict: str
    measured: str  # the numbers, with their spread over seeds
    basis: str = ""  # preset, data and seeds behind it
    presets: tuple[str, ...] = ()  # the presets of the runs behind it: a verdict is never carried across scales
    values: pd.Series | None = field(default=None, compare=False)  # per seed, the number the rule compared with
    # its claim's Statistic's threshold (claims that have one): what the width ladder plots


@dataclass(frozen=True)
class Statistic:
    """The one number per seed a claim's rule compares with a threshold, as the width ladder draws it: its name on
    the axis, the threshold and its side, and the paper's own value where the paper gives a number."""
    name: str
    threshold: float
    holds_above: bool = True  # the rule asks for >= threshold (else <=)
    paper: float | None = None
    paper_words: str = ""
    log: bool = True  # a ratio (log axis); shares and step ratios that may be 0 are drawn on a linear one


@dataclass(frozen=True)
class Claim:
    number: str
    statement: str  # the paper's
    rule: str  # written out: what decides the verdict
    experiments: tuple[str, ...]
    check: Callable[[dict[str, pd.DataFrame]], Verdict]
    presets: tuple[str, ...] = ("quick", "long", "paper")  # scales whose runs the rule accepts (smoke: tests only)
    reads: str = "whole run"  # WHOLE_RUN or FIRST_QUARTER of each run's configured schedule: what a stopped run
    # (--until-step) must have covered for a verdict
    statistic: Statistic | None = None  # the number its rule decides by, where it is one per seed


WHOLE_RUN, FIRST_QUARTER = "whole run", "first quarter"


# ----------------------------------------------------------------------------------------------
# Helpers: runs found by what they are (their norm, their LR), never by an arm's name
# ----------------------------------------------------------------------------------------------
class Missing(Exception):
    """What a rule needs is not in the results; the message says what."""


STANDARD, BN, NOISY, NOISE_ONLY = {"norm": "none"}, {"norm": "batch"}, {"norm": "noisy-batch"}, {"norm": "noise-only"}
# What the measured text calls the runs of each norm (the paper's words)
WORDS = {"none": "standard", "batch": "batchnorm", "noisy-batch": "noisy", "noise-only": "noise-only"}


def lp(p: str) -> dict:
    return {"norm": p}


def at_lr(query: dict, lr: float) -> dict:
    return query | {"lr": lr}


def word(query: dict) -> str:
    return WORDS.get(query["norm"], query["norm"])


def describe(query: dict) -> str:
    return ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in query.items())


def runs_of(summary: pd.DataFrame, query: dict) -> pd.DataFrame:
    """The runs whose configuration matches every key of `query` (norm, lr, ...: columns of the summary)."""
    absent = [key for key in query if key not in summary]
    if absent:
        raise Missing(f"no '{absent[0]}' in the results")
    return summary[matches(summary, query)]


def paired(summary: pd.DataFrame, column: str, groups: dict) -> pd.DataFrame:
    """Seeds x groups table of `column`, one run per seed for each group's query; only seeds where every
    group has a value. A query that matches two runs of one seed is ambiguous: it says so."""
    if column not in summary:
        raise Missing(f"no '{column}' in the results")
    frames = []
    for label, query in groups.items():
        runs = runs_of(summary, query)
        if runs.empty:
            raise Missing(f"no runs with {describe(query)}")
        if runs.seed.duplicated().any():
            raise Missing(f"several runs of one seed have {describe(query)}: the rule must name more of them")
        frames.append(runs.set_index("seed")[column].rename(label))
    table = pd.concat(frames, axis=1).dropna()
    if table.empty:
        raise Missing(f"no seed with '{column}' for every one of {', '.join(map(str, groups))}")
    return table


ONE_SEED = "(n=1)"
TIMES = "{:.3g}x"  # a ratio's format for spread: '2.47x (1.9x..2.8x, n=3)', '0.904x (n=1)'


def spread(values: pd.Series | np.ndarray, fmt: str = "{:.3g}") -> str:
    """'mean (min..max, n=seeds)', or for one seed the value and '(n=1)': a number from one seed says so wherever it
    is quoted (the README's table keeps that aside, report._without_asides)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return f"{fmt.format(values[0])} {ONE_SEED}"
    return f"{fmt.format(values.mean())} ({fmt.format(values.min())}..{fmt.format(values.max())}, n={len(values)})"


def reach_words(steps: pd.Series, never: str = "never") -> str:
    """Steps at which each seed reached a level (inf: it did not), as the spread of those that did and how many did
    not: '746 (n=1)', '500 (1 of 2 never)', 'never (n=2)'."""
    reached = np.isfinite(steps)
    if not reached.any():
        return f"{never} (n={len(steps)})"
    missed = f" ({int((~reached).sum())} of {len(steps)} {never})" if (~reached).any() else ""
    return spread(steps[reached], "{:.0f}") + missed


def pct(values) -> str:
    return spread(np.asarray(values, dtype=float) * 100, "{:.1f}%")


def basis(summary: pd.DataFrame, queries: list[dict]) -> str:
    """Preset, data and the seeds that every one of `queries` has: the seeds `paired` compares."""
    groups = [runs_of(summary, q) for q in queries]
    seeds = set.intersection(*(set(g.seed) for g in groups))
    runs = pd.concat(groups)
    return (f"preset {', '.join(sorted(set(runs.preset)))}; {', '.join(sorted(set(runs.dataset)))}; "
            f"seeds {', '.join(map(str, sorted(seeds)))}")


# The experiments whose runs a rule may also find, by configuration, in any experiment's results of the same preset
# (e.g. paper-figures, which trains each configuration once with every probe): the VGG runs at LR 0.01-0.5 that the
# paper's figures need. Not the DLN's (its presets are one protocol: report.collect shares its runs across them) nor
# the controls' and spectrum's, whose rules read a whole grid of one experiment.
BY_CONFIGURATION = ("lr", "noisy-bn", "ics", "landscape", "lp-norm", "curvature")


class Sources(dict):
    """The summaries a rule reads (experiment -> runs; analysis.StepTable(experiment, table) -> one row per probed
    step), the presets of the runs it read, so that the verdict names them, and where runs it read stopped before
    the end of their schedule ((stopped_at, steps) pairs: runs stopped as asked, --until-step)."""

    presets: set
    stops: set

    def __init__(self, summaries: dict):
        super().__init__(summaries)
        self.presets, self.stops = set(), set()


def table_of(key: str | StepTable) -> str | None:
    """Which kind of table a key names: a StepTable's table, or None for an experiment's per-run summary."""
    return key.table if isinstance(key, StepTable) else None


def pooled(summaries: dict, table: str | None) -> pd.DataFrame:
    """Every experiment's table of one kind (table_of), with its experiment's name."""
    frames = [frame.assign(experiment=experiment_of(key)) for key, frame in summaries.items()
              if table_of(key) == table and len(frame)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def needs(summaries: dict, name: str | StepTable) -> pd.DataFrame:
    """The runs a rule reads for `name` (an experiment, or one of its StepTables): that experiment's where it has
    results; else, for BY_CONFIGURATION, every experiment's, which the rule's queries (norm, LR) then pick by
    configuration."""
    experiment = experiment_of(name)
    if name in summaries:
        table = summaries[name].assign(experiment=experiment)
    elif experiment in BY_CONFIGURATION and len(table := pooled(summaries, table_of(name))):
        pass
    elif isinstance(name, StepTable) and experiment in summaries:
        raise Missing(f"experiment '{experiment}' has no '{name.table}' table (its runs did not record that probe)")
    else:
        raise Missing(f"experiment '{experiment}' has no results")
    if isinstance(summaries, Sources) and "preset" in table:
        summaries.presets |= set(table.preset)
    if isinstance(summaries, Sources) and "stopped_at" in table:
        stopped = table[table.stopped_at.notna()]
        summaries.stops |= {(int(a), int(b)) for a, b in zip(stopped.stopped_at, stopped.steps)}
    return table


def by_word(*queries: dict) -> dict[str, dict]:
    return {word(q): q for q in queries}


VGG_LR = 0.1  # the paper's LR: where a VGG rule names none (runs found by configuration need it said)
STANDARD01, BN01, NOISY01, NOISE_ONLY01 = (at_lr(q, VGG_LR) for q in (STANDARD, BN, NOISY, NOISE_ONLY))
