"""The rules of claims 12a-e (ours): the controls experiment, arms by norm and init, each at its own grid of LRs."""
from __future__ import annotations

import numpy as np
import pandas as pd

from bnstudy.analysis.common import EARLY_PHASE, KEYS, LATE_PHASE, phase_column
from bnstudy.analysis.curvature import ETA_LAMBDA
from bnstudy.analysis.landscape import BETA_EFF_MEDIAN, GRAD_DIFF_MAX
from bnstudy.analysis.training import LEFT_CHANCE_AT, best_lr, kind_label, largest_trainable_lr, sweep_table
from bnstudy.analysis.weights import EFF_STEP, IDENTITY_ERROR_MEDIAN
from bnstudy.claims.rules import (FAILS, HOLDS, TIMES, Missing, Verdict, at_lr, basis, describe, needs, paired, pct,
                                  runs_of, spread, word)

INITS = ("glorot", "kaiming")
LEAVES_WITHIN = 0.05  # (a): "within the first 5% of training"
SMOOTHER_BY = 3.0  # (b): no-BN's early gradient change at least this many times BN's
EOS_SLACK = 1.1  # (d): eta * lambda_max "settles at <= 2 (within 10%)"
IDENTITY_RTOL = 0.01  # (e): the scale-invariance identity "to within 1%"
LATE_ETA_LAMBDA = phase_column(LATE_PHASE, ETA_LAMBDA)  # (d)
EARLY_EFF_STEP, LATE_EFF_STEP = phase_column(EARLY_PHASE, EFF_STEP), phase_column(LATE_PHASE, EFF_STEP)  # (e)


def arm(norm: str, init: str) -> dict:
    return {"norm": norm, "init": init}


def kind_name(query: dict) -> str:
    return f"{word(query)}-{query['init']}"


def kind_key(query: dict) -> str:
    return kind_label(query["norm"], query["init"])


def own_lrs(runs: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per kind (analysis.arm_kind): its best LR and its largest LR at which every seed trains."""
    table = sweep_table(runs)
    return best_lr(table), largest_trainable_lr(table)


def at_best(runs: pd.DataFrame, query: dict) -> dict:
    best, _ = own_lrs(runs)
    if kind_key(query) not in best:
        raise Missing(f"no runs with {describe(query)}")
    return at_lr(query, float(best[kind_key(query)]))


def trained(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that train: complete, and a final training accuracy at least 10 points above chance."""
    table = sweep_table(runs)
    return runs.merge(table[table.trains][KEYS], on=KEYS)


def claim_12a(s) -> Verdict:
    runs = needs(s, "controls")
    fraction = (runs[LEFT_CHANCE_AT] / runs.steps).fillna(np.inf)  # never left chance: not within any fraction
    parts, ok = [], False
    for init in INITS:
        query = at_best(runs, arm("none", init))
        table = paired(runs.assign(fraction=fraction), "fraction", {init: query})[init]
        never = int(np.isinf(table).sum())
        parts.append(f"{kind_name(query)} at its best LR {query['lr']:g}: left chance at "
                     f"{pct(table[np.isfinite(table)]) if never < len(table) else 'no step'} of training"
                     + (f" ({never} of {len(table)} seeds never did)" if never else ""))
        ok = bool((table <= LEAVES_WITHIN).all()) if init == "kaiming" else ok
    return Verdict(HOLDS if ok else FAILS, "; ".join(parts), basis(runs, [at_best(runs, arm("none", "kaiming"))]))


def claim_12b(s) -> Verdict:
    runs = needs(s, "controls")
    parts, ok = [], True
    for init in INITS:
        groups = {"std": at_best(runs, arm("none", init)), "bn": at_best(runs, arm("batch", init))}
        change = paired(runs, phase_column(EARLY_PHASE, GRAD_DIFF_MAX), groups)
        ratio = change["std"] / change.bn
        ok &= bool((ratio >= SMOOTHER_BY).all())
        parts.append(f"{init}: standard (LR {groups['std']['lr']:g}) / batchnorm (LR {groups['bn']['lr']:g}) "
                     + spread(ratio, TIMES))
    return Verdict(HOLDS if ok else FAILS, "early median of max over η of ‖∇L(w−ηg)−g‖, " + "; ".join(parts),
                   basis(runs, [arm("none", i) for i in INITS] + [arm("batch", i) for i in INITS]))


def claim_12c(s) -> Verdict:
    runs = needs(s, "controls")
    _, largest = own_lrs(runs)
    parts, ok, measured_any = [], True, False
    for init in INITS:
        std, bn = arm("none", init), arm("batch", init)
        top = largest.get(kind_key(std), np.nan)
        shared = sorted(set(runs_of(runs, std).lr) & set(runs_of(runs, bn).lr))
        etas = [eta for eta in shared if eta <= top]  # NaN top (never trains): none
        if len(etas) < 2:
            parts.append(f"{init}: not measured (standard trains at {len(etas)} LR(s) that batchnorm ran too)")
            continue
        measured_any = True
        ratios = pd.concat({eta: (lambda t: t["std"] / t.bn)(paired(runs, BETA_EFF_MEDIAN, {
            "std": at_lr(std, eta), "bn": at_lr(bn, eta)})) for eta in etas}, axis=1)
        ok &= bool((ratios[etas[-1]] > ratios[etas[0]]).all())
        parts.append(f"{init} (standard trains up to LR {top:g}): β_eff standard/batchnorm " +
                     ", ".join(f"{spread(ratios[eta], TIMES)} at LR {eta:g}" for eta in etas))
    if not measured_any:
        raise Missing("; ".join(parts))
    return Verdict(HOLDS if ok else FAILS, "; ".join(parts), basis(runs, [arm("none", i) for i in INITS]))


def claim_12d(s) -> Verdict:
    runs = needs(s, "controls")
    trains = trained(runs)
    if trains.empty or LATE_ETA_LAMBDA not in trains:
        raise Missing("no controls run that trains has λ_max probes")
    over = trains[~(trains[LATE_ETA_LAMBDA] <= 2 * EOS_SLACK)]  # NaN (Lanczos did not converge) is not "settled"
    parts = [f"{kind_name(arm(n, i))}: {spread(g[LATE_ETA_LAMBDA])} over {len(g)} runs"
             for (n, i), g in trains.groupby(["norm", "init"])]
    measured = "late median of η·λ_max in the runs that train: " + "; ".join(parts)
    if len(over):
        measured += "; above 2.2: " + ", ".join(f"{a}/seed-{s_} ({v:.3g})" for a, s_, v in
                                               zip(over.arm, over.seed, over[LATE_ETA_LAMBDA]))
    return Verdict(HOLDS if over.empty else FAILS, measured, basis(trains, [{}]))


def claim_12e(s) -> Verdict:
    runs = needs(s, "controls")
    bn = runs_of(trained(runs), {"norm": "batch"})
    if bn.empty:
        raise Missing("no batchnorm run of controls trains")
    identity_ok = bn[IDENTITY_ERROR_MEDIAN] <= IDENTITY_RTOL
    falls = bn[LATE_EFF_STEP] < bn[EARLY_EFF_STEP]
    failing = bn[~(identity_ok & falls)]
    identity = spread(bn[IDENTITY_ERROR_MEDIAN] * 100, "{:.2g}")
    measured = (f"batchnorm runs that train (n={len(bn)}): median identity error {identity}%;"
                f" late/early effective step {spread(bn[LATE_EFF_STEP] / bn[EARLY_EFF_STEP])}")
    if len(failing):
        measured += "; failing: " + ", ".join(f"{a}/seed-{s_}" for a, s_ in zip(failing.arm, failing.seed))
    return Verdict(HOLDS if failing.empty else FAILS, measured, basis(bn, [{}]))
