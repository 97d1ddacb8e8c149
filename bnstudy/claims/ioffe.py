"""The rules of claims 14a-d: Ioffe & Szegedy's MNIST experiment (2015, section 4.1, Fig. 1), and Santurkar et al.'s
measures on the same runs (experiment ioffe-mnist; docs/protocol.md). Written before its runs."""
from __future__ import annotations

import dataclasses

import numpy as np

from bnstudy.analysis.activations import drift_column
from bnstudy.analysis.common import EARLY_PHASE, phase_column
from bnstudy.analysis.ics import COSINE, L2, ics_column
from bnstudy.analysis.landscape import BETA_EFF, GRAD_DIFF_MAX
from bnstudy.analysis.training import TEST_REACHED_AT, TEST_REACHES
from bnstudy.claims.paper import landscape_ratio, share_below
from bnstudy.claims.rules import (BN, FAILS, HOLDS, STANDARD, TIMES, Missing, Verdict, basis, by_word, needs, paired,
                                  reach_words, spread)

EXPERIMENT = "ioffe-mnist"
PAIR = (STANDARD, BN)  # one LR in the experiment: its runs are found by their norm alone
DRIFTS = 1.0  # 14b: the median of a sigmoid's input moves by at least the middle 70% of its values' span
STAYS = 0.5  # 14b: with BN, at most half as far as without


def claim_14a(s) -> Verdict:
    runs = needs(s, EXPERIMENT)
    if TEST_REACHED_AT not in runs:
        raise Missing(f"no '{TEST_REACHED_AT}' in the results")
    steps = paired(runs.assign(reached=runs[TEST_REACHED_AT].fillna(np.inf)), "reached", by_word(*PAIR))
    ok = bool((np.isfinite(steps.batchnorm) & (steps.batchnorm < steps.standard)).all())
    return Verdict(HOLDS if ok else FAILS, f"first evaluated step with {TEST_REACHES:.0%} test accuracy: batchnorm "
                   f"{reach_words(steps.batchnorm)}, standard {reach_words(steps.standard)}", basis(runs, list(PAIR)),
                   values=steps.batchnorm / steps.standard)


def claim_14b(s) -> Verdict:
    runs = needs(s, EXPERIMENT)
    prefix = drift_column("")
    layers = sorted(int(c.removeprefix(prefix)) for c in runs.columns if c.startswith(prefix))  # recorded layers
    if not layers:
        raise Missing("no activation percentiles recorded")
    drift = paired(runs, drift_column(layers[-1]), by_word(*PAIR))
    ok = bool(((drift.standard >= DRIFTS) & (drift.batchnorm <= STAYS * drift.standard)).all())
    return Verdict(HOLDS if ok else FAILS,
                   f"layer #{layers[-1]}: drift of the sigmoid input's median over training, in its own 15th-85th "
                   f"percentile spreads: standard {spread(drift.standard)}, batchnorm {spread(drift.batchnorm)}, "
                   f"batchnorm / standard {spread(drift.batchnorm / drift.standard, TIMES)}",
                   basis(runs, list(PAIR)), values=drift.batchnorm / drift.standard)


def ics_layers(columns) -> list[int]:
    """The hidden layers with layers before them: at layer #1 nothing before it moves, so G' = G by definition."""
    prefix = ics_column(L2, "")
    return sorted(n for c in columns if c.startswith(prefix) and (n := int(c.removeprefix(prefix))) > 1)


def claim_14c(s) -> Verdict:
    runs = needs(s, EXPERIMENT)
    layers = ics_layers(runs.columns)
    if not layers:
        raise Missing("no ICS recorded at a layer past #1")
    parts, ok = [], True
    for layer in layers:
        l2 = paired(runs, ics_column(L2, layer), by_word(*PAIR))
        cos = paired(runs, ics_column(COSINE, layer), by_word(*PAIR))
        ok &= bool(((l2.batchnorm < l2.standard) & (cos.batchnorm > cos.standard)).all())
        parts.append(f"#{layer}: ‖G−G′‖ batchnorm / standard {spread(l2.batchnorm / l2.standard, TIMES)}, cos "
                     f"batchnorm {spread(cos.batchnorm)} vs standard {spread(cos.standard)}")
    return Verdict(HOLDS if ok else FAILS, "; ".join(parts), basis(runs, list(PAIR)))


def claim_14d(s) -> Verdict:
    change = landscape_ratio(s, phase_column(EARLY_PHASE, GRAD_DIFF_MAX), 3.0,
                             "early median of max over η of ‖∇L(w−ηg)−g‖", experiment=EXPERIMENT, pair=PAIR)
    beta = share_below(s, BETA_EFF, "β_eff", experiment=EXPERIMENT, pair=PAIR)
    verdict = HOLDS if change.verdict == beta.verdict == HOLDS else FAILS
    return dataclasses.replace(change, verdict=verdict, measured=f"{change.measured}; {beta.measured}")
