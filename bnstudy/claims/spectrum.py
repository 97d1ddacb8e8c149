"""The rules of claims 12f-h (ours): the spectrum experiment, at mid-training (the probed step closest to half the
steps)."""
from __future__ import annotations

from bnstudy.analysis.spectrum import EVAL_MODE, OUTLIERS, SHARE, TRAIN_MODE, mid_column
from bnstudy.claims.rules import BN, FAILS, HOLDS, STANDARD, Verdict, basis, needs, paired, pct, spread

MANY_OUTLIERS, FEW_OUTLIERS = 5, 2
OF_TOP = "(of the top 10 computed: 10 is the count's cap)"  # the rule counts among the top-10 Ritz values
OUTLIERS_TRAIN, OUTLIERS_EVAL = mid_column(OUTLIERS, TRAIN_MODE), mid_column(OUTLIERS, EVAL_MODE)


def claim_12f(s) -> Verdict:
    runs = needs(s, "spectrum")
    count = paired(runs, OUTLIERS_TRAIN, {"std": STANDARD, "bn": BN})
    ok = bool((count["std"] >= MANY_OUTLIERS).all() and (count.bn <= FEW_OUTLIERS).all())
    return Verdict(HOLDS if ok else FAILS, f"outliers at mid-training: standard {spread(count['std'])}, batchnorm "
                                           f"(train mode) {spread(count.bn)} {OF_TOP}", basis(runs, [STANDARD, BN]))


def claim_12g(s) -> Verdict:
    runs = needs(s, "spectrum")
    both = paired(runs, mid_column(SHARE, TRAIN_MODE), {"std": STANDARD, "bn": BN})  # seeds where both have a share
    return Verdict(HOLDS if bool((both["std"] > both.bn).all()) else FAILS,
                   f"gradient's share in the top-10 eigenvectors at mid-training: standard {pct(both['std'])}, "
                   f"batchnorm (train mode) {pct(both.bn)}", basis(runs, [STANDARD, BN]))


def claim_12h(s) -> Verdict:
    runs = needs(s, "spectrum")
    modes = paired(runs, OUTLIERS_EVAL, {"eval": BN}).join(paired(runs, OUTLIERS_TRAIN, {"train": BN}))
    return Verdict(HOLDS if bool((modes["eval"] >= MANY_OUTLIERS).all()) else FAILS,
                   f"batchnorm's outliers at mid-training: eval mode {spread(modes['eval'])}, train mode "
                   f"{spread(modes['train'])} {OF_TOP}", basis(runs, [BN]))
