"""The rules of claims 1b and 13a-d (ours): companions to the paper's claims 1, 6-8 and 5, written before the long
runs (docs/long.md); 13a-c read the landscape probe along the filter-normalized gradient, blind to BN's free scale."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from bnstudy.analysis.common import EARLY_PHASE, phase_column
from bnstudy.analysis.ics import REL_L2, ics_column
from bnstudy.analysis.landscape import BETA_REL, FILTER_STEPS, LOSS_RATIO, REL_GRAD_DIFF_MAX, filter_column
from bnstudy.analysis.training import REACH_WINDOW, REACHED_AT, REACHES
from bnstudy.claims.paper import landscape_ratio, share_below
from bnstudy.claims.rules import (BN, BN01, FAILS, HOLDS, STANDARD, STANDARD01, Missing, Verdict, at_lr, basis, by_word,
                                  needs, paired, reach_words, spread)

FASTER_BY = 0.5  # 1b: batchnorm needs at most half the steps standard needs


def claim_1b(s) -> Verdict:
    lr = needs(s, "lr")
    if REACHED_AT not in lr:  # runs of another kind only (the DLN's): no training accuracy to reach
        raise Missing(f"no '{REACHED_AT}' in the results")
    steps = paired(lr.assign(reached=lr[REACHED_AT].fillna(np.inf)), "reached", by_word(STANDARD01, BN01))
    ok = bool((np.isfinite(steps.batchnorm) & (steps.batchnorm <= FASTER_BY * steps.standard)).all())
    stops = lr.stopped_at.dropna() if "stopped_at" in lr else pd.Series(dtype=float)
    # a run stopped as asked (--until-step) that has not reached the level: counted as never, said as far as it went
    never = f"not reached by step {int(stops.min()):,}" if len(stops) else "never"
    return Verdict(HOLDS if ok else FAILS, f"steps to reach {REACHES:.0%} training accuracy ({REACH_WINDOW}-step "
                   f"mean) at LR 0.1: batchnorm {reach_words(steps.batchnorm, never)}, standard "
                   f"{reach_words(steps.standard, never)}",
                   basis(lr, [STANDARD01, BN01]),
                   # the number the rule bounds: 0 where only batchnorm reached the level, inf where only standard did,
                   # NaN where neither did
                   values=steps.batchnorm / steps.standard)


def claim_13a(s) -> Verdict:
    return _filter_ratio(s, filter_column(phase_column(EARLY_PHASE, LOSS_RATIO)), 1.0,
                         "early median of max/min loss over η")


def claim_13b(s) -> Verdict:
    return _filter_ratio(s, filter_column(phase_column(EARLY_PHASE, REL_GRAD_DIFF_MAX)), 3.0,
                         "early median of max over η of ‖∇L(w−ηd)−g‖/‖g‖")


def _filter_ratio(s, column: str, threshold: float, name: str) -> Verdict:
    verdict = landscape_ratio(s, column, threshold, name)
    return dataclasses.replace(verdict, measured="along the filter-normalized gradient: " + verdict.measured)


def claim_13c(s) -> Verdict:
    verdict = share_below(s, BETA_REL, "scale-free β (‖Δg‖/‖g‖ per relative step)", FILTER_STEPS)
    return dataclasses.replace(verdict, measured="along the filter-normalized gradient: " + verdict.measured)


def claim_13d(s) -> Verdict:
    vgg = needs(s, "ics")
    parts, ok = [], True
    for lr in (0.1, 0.01):
        for layer in (5, 10):
            rel = paired(vgg, ics_column(REL_L2, layer), {"std": at_lr(STANDARD, lr), "bn": at_lr(BN, lr)})
            ok &= bool((rel.bn >= 0.5 * rel["std"]).all())
            parts.append(f"LR {lr:g} #{layer}: ‖G−G′‖/‖G‖ batchnorm {spread(rel.bn)}, standard {spread(rel['std'])}")
    return Verdict(HOLDS if ok else FAILS, "; ".join(parts), basis(vgg, [at_lr(STANDARD, 0.1), at_lr(BN, 0.01)]))
