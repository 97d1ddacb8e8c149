"""The paper's claims (PAPER.md, "The paper's claims"), each with a written rule that decides its verdict.

A rule reads the per-run summaries (analysis.run_summary) of the experiments it needs and returns
a Verdict: holds | does not hold | not measured (with why). Rules live here and only here; each is
tested on small hand-made frames (tests/test_claims.py), one where the claim holds and one where not.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from bnstudy.analysis import (CHANCE, REACH_WINDOW, REACHES, best_lr, kind_label, largest_trainable_lr, matches,
                              sweep_table)

HOLDS, FAILS, TIE, NOT_MEASURED = "holds", "does not hold", "tie", "not measured"


@dataclass(frozen=True)
class Verdict:
    verdict: str
    measured: str  # the numbers, with their spread over seeds
    basis: str = ""  # preset, data and seeds behind it
    presets: tuple[str, ...] = ()  # the presets of the runs behind it: a verdict is never carried across scales


@dataclass(frozen=True)
class Claim:
    number: str
    statement: str  # the paper's
    rule: str  # written out: what decides the verdict
    experiments: tuple[str, ...]
    check: Callable[[dict[str, pd.DataFrame]], Verdict]
    presets: tuple[str, ...] = ("quick", "long", "paper")  # scales whose runs the rule accepts (smoke: tests only)


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


def spread(values: pd.Series | np.ndarray, fmt: str = "{:.3g}") -> str:
    """'mean (min..max, n seeds)', or the one value for one seed."""
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(values.mean())} ({fmt.format(values.min())}..{fmt.format(values.max())}, n={len(values)})"


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
# '<experiment>:steps', '<experiment>:filter-steps': the per-probe landscape tables along the gradient and along the
# filter-normalized gradient (report.collect), beside the per-run summary '<experiment>'
STEPS, FILTER_STEPS = ":steps", ":filter-steps"


class Sources(dict):
    """The summaries a rule reads (experiment -> runs, '<experiment>:steps' -> probes), and the presets of the
    runs it read, so that the verdict names them."""

    presets: set

    def __init__(self, summaries: dict):
        super().__init__(summaries)
        self.presets = set()


def split_name(name: str) -> tuple[str, str]:
    """'landscape:steps' -> ('landscape', ':steps'); 'landscape' -> ('landscape', '')."""
    experiment, colon, table = name.partition(":")
    return experiment, colon + table


def pooled(summaries: dict, suffix: str) -> pd.DataFrame:
    """Every experiment's table of one kind (suffix '' for the per-run summaries), with its experiment's name."""
    frames = [table.assign(experiment=split_name(name)[0]) for name, table in summaries.items()
              if split_name(name)[1] == suffix and len(table)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def needs(summaries: dict, name: str) -> pd.DataFrame:
    """The runs a rule reads for `name`: that experiment's where it has results; else, for BY_CONFIGURATION, every
    experiment's, which the rule's queries (norm, LR) then pick by configuration."""
    experiment, suffix = split_name(name)
    if name in summaries:
        table = summaries[name].assign(experiment=experiment)
    elif experiment in BY_CONFIGURATION and len(table := pooled(summaries, suffix)):
        pass
    else:
        raise Missing(f"experiment '{name}' has no results")
    if isinstance(summaries, Sources) and "preset" in table:
        summaries.presets |= set(table.preset)
    return table


def by_word(*queries: dict) -> dict[str, dict]:
    return {word(q): q for q in queries}


# ----------------------------------------------------------------------------------------------
# The rules
# ----------------------------------------------------------------------------------------------
def claim_1(s) -> Verdict:
    lr = needs(s, "lr")
    groups = {(word(q), rate): at_lr(q, rate) for rate in (0.1, 0.5) for q in (STANDARD, BN)}
    scored = lr.assign(acc=lr.final_train_acc_last100.where(lr.status != "diverged", CHANCE))  # diverged = chance
    acc = paired(scored, "acc", groups)
    bn, std = word(BN), word(STANDARD)
    faster, worse = acc[(bn, 0.1)] - acc[(std, 0.1)], acc[(bn, 0.5)] - acc[(std, 0.5)]
    ok = bool((faster >= 0.05).all() and (worse >= 0.15).all())
    return Verdict(HOLDS if ok else FAILS, "; ".join(
        f"{'train acc at' if rate == 0.1 else 'at'} LR {rate:g}: {bn} {pct(acc[(bn, rate)])}, "
        f"{std} {pct(acc[(std, rate)])}"
        for rate in (0.1, 0.5)), basis(lr, list(groups.values())))


VGG_LR = 0.1  # the paper's LR: where a VGG rule names none (runs found by configuration need it said)
STANDARD01, BN01, NOISY01, NOISE_ONLY01 = (at_lr(q, VGG_LR) for q in (STANDARD, BN, NOISY, NOISE_ONLY))


def claim_2(s) -> Verdict:
    runs = needs(s, "noisy-bn")
    acc = paired(runs, "final_test_acc", by_word(BN01, STANDARD01))
    measured = f"test acc: batchnorm {pct(acc.batchnorm)}, standard {pct(acc.standard)}"
    ok = bool((acc.batchnorm > acc.standard).all() and abs(acc.batchnorm.mean() - 0.83) <= 0.03
              and abs(acc.standard.mean() - 0.80) <= 0.03)
    return Verdict(HOLDS if ok else FAILS, measured, basis(runs, [BN01, STANDARD01]))


def claim_3(s) -> Verdict:
    runs = needs(s, "noisy-bn")
    groups = by_word(STANDARD01, BN01, NOISY01)
    acc = paired(runs, "final_train_acc_last100", groups)
    layers = sorted(int(c.split("_L")[1]) for c in runs.columns if c.startswith("d_mean_L"))
    deeper = [layer for layer in layers if layer > 2] or layers
    moves = [paired(runs, f"{m}_L{layer}", by_word(NOISY01, STANDARD01))
             for m in ("d_mean", "d_var") for layer in deeper]
    less_stable = all((m.noisy > m.standard).all() for m in moves)
    trains = bool((acc.noisy >= acc.batchnorm - 0.10).all() and (acc.noisy >= acc.standard + 0.15).all())
    ratio = np.concatenate([(m.noisy / m.standard).to_numpy() for m in moves])
    return Verdict(HOLDS if trains and less_stable else FAILS,
                   f"train acc: noisy {pct(acc.noisy)}, batchnorm {pct(acc.batchnorm)}, standard "
                   f"{pct(acc.standard)}; noisy/standard step-to-step |Δμ|, |Δσ²| at layers "
                   f"{', '.join(f'#{layer}' for layer in deeper)}: {spread(ratio)}x",
                   basis(runs, list(groups.values())))


def claim_4(s) -> Verdict:
    runs = needs(s, "noisy-bn")
    acc = paired(runs, "final_train_acc_last100", by_word(NOISE_ONLY01, STANDARD01))
    diverged = runs_of(runs, NOISE_ONLY01).set_index("seed").status.eq("diverged").reindex(acc.index)
    stopped = (acc[word(NOISE_ONLY)] <= 0.15) | diverged
    return Verdict(HOLDS if bool(stopped.all()) else FAILS,
                   f"train acc: noise-only {pct(acc[word(NOISE_ONLY)])}, standard {pct(acc.standard)}",
                   basis(runs, [NOISE_ONLY01, STANDARD01]))


def claim_5(s) -> Verdict:
    vgg, dln = needs(s, "ics"), needs(s, "dln")
    parts, ok = [], True
    for lr in (0.1, 0.01):
        groups = {"std": at_lr(STANDARD, lr), "bn": at_lr(BN, lr)}
        for layer in (5, 10):
            l2 = paired(vgg, f"ics_l2_median_L{layer}", groups)
            cos = paired(vgg, f"ics_cosine_median_L{layer}", groups)
            ok &= bool((l2.bn >= 0.5 * l2["std"]).all() and (cos.bn <= cos["std"] + 0.05).all())
            parts.append(f"VGG LR {lr:g} #{layer}: ‖G−G′‖ bn/std {spread(l2.bn / l2['std'])}x, cos bn {spread(cos.bn)} "
                         f"vs std {spread(cos['std'])}")
    cos = paired(dln, "ics_cosine_median_L17", {"std": at_lr(STANDARD, 1e-6), "bn": at_lr(BN, 1e-6)})
    ok &= bool((cos["std"] > 0.9).all() and (cos["std"] - cos.bn >= 0.3).all())
    parts.append(f"DLN #17 cos: standard {spread(cos['std'])}, batchnorm {spread(cos.bn)}")
    return Verdict(HOLDS if ok else FAILS, "; ".join(parts), basis(vgg, [at_lr(STANDARD, 0.1)]) + " (VGG); " +
                   basis(dln, [at_lr(STANDARD, 1e-6)]) + " (DLN)")


def _landscape_ratio(s, column: str, threshold: float, name: str, above_one: bool = False) -> Verdict:
    """standard / batchnorm of `column` >= threshold in every seed (and, with above_one, standard's > 1)."""
    runs = needs(s, "landscape")
    values = paired(runs, column, by_word(STANDARD01, BN01))
    ratio = values.standard / values.batchnorm
    ok = bool((ratio >= threshold).all()) and (not above_one or bool((values.standard > 1).all()))
    return Verdict(HOLDS if ok else FAILS,
                   f"{name}, standard / batchnorm: {spread(ratio)}x (standard {spread(values.standard)}, "
                   f"batchnorm {spread(values.batchnorm)})", basis(runs, [STANDARD01, BN01]))


def claim_6(s) -> Verdict:
    return _landscape_ratio(s, "early_loss_ratio", 1.0, "early median of max/min loss over η")


def claim_6b(s) -> Verdict:
    return _landscape_ratio(s, "early_overshoot", 1.0, "early median of max over η of L(w−ηg)/L(w)", above_one=True)


def claim_7(s) -> Verdict:
    return _landscape_ratio(s, "early_grad_diff_max", 3.0, "early median of max over η of ‖∇L(w−ηg)−g‖")


def _share_below(s, column: str, name: str, steps_name: str = "landscape" + STEPS) -> Verdict:
    """batchnorm's `column` below standard's at >= 75% of the probed steps, in every seed."""
    runs = needs(s, "landscape")
    steps = needs(s, steps_name)  # per-probe rows (report.collect): runs by their experiment's and arm's names
    named = {word(q): set(zip(*[runs_of(runs, q)[k] for k in ("experiment", "arm")])) for q in (STANDARD01, BN01)}
    label = {run: w for w, runs_ in named.items() for run in runs_}
    group = pd.Series(list(zip(steps.experiment, steps.arm)), index=steps.index).map(label)
    wide = steps.assign(group=group).dropna(subset=["group"]).pivot_table(
        index=["seed", "step"], columns="group", values=column).dropna()
    if wide.empty or not set(named) <= set(wide.columns):
        raise Missing(f"no {column} at the probed steps of both standard and batchnorm")
    share = (wide.batchnorm < wide.standard).groupby(level="seed").mean()
    return Verdict(HOLDS if bool((share >= 0.75).all()) else FAILS,
                   f"share of probed steps with batchnorm's {name} below standard's: {pct(share)}",
                   basis(runs, [STANDARD01, BN01]))


def claim_8(s) -> Verdict:
    return _share_below(s, "beta_eff", "β_eff")


TIE_RTOL = 1e-3  # "beats" needs more than 0.1%: final losses that agree closer than that are a tie


def beats(lower: pd.Series, higher: pd.Series) -> str:
    """Per seed: `lower` below `higher` by more than TIE_RTOL (holds), within it (tie), or not (does not hold)."""
    gap = (higher - lower) / higher.abs()
    if (gap < -TIE_RTOL).any():
        return FAILS
    return HOLDS if bool((gap > TIE_RTOL).all()) else TIE


def claim_9(s) -> Verdict:
    vgg, dln = needs(s, "lp-norm"), needs(s, "lp-norm-dln")
    groups = by_word(STANDARD01, BN01, *(at_lr(lp(p), VGG_LR) for p in ("l1", "l2", "linf")))
    acc = paired(vgg, "final_train_acc_last100", groups)
    vgg_ok = all(bool((acc[a] >= acc.standard + 0.10).all()) for a in ("l1", "l2", "linf"))
    loss = paired(dln, "final_train_loss", by_word(BN, lp("l1")))
    verdict = beats(loss.l1, loss.batchnorm) if vgg_ok else FAILS
    gap = (loss.batchnorm - loss.l1) / loss.batchnorm.abs()
    return Verdict(verdict, "VGG train acc: " + ", ".join(f"{a} {pct(acc[a])}" for a in groups) +
                   f"; DLN final loss: l1 {spread(loss.l1)}, batchnorm {spread(loss.batchnorm)}, l1 below batchnorm "
                   f"by {spread(gap * 100, '{:.2g}')}%", basis(vgg, list(groups.values())) + " (VGG); " +
                   basis(dln, [lp("l1")]) + " (DLN)")


def claim_10(s) -> Verdict:
    dln = needs(s, "dln")
    groups = by_word(at_lr(STANDARD, 1e-6), at_lr(BN, 1e-6))
    parts, ok = [], True
    for column, name in (("early_grad_diff_max", "gradient change"), ("late_grad_diff_max", "gradient change (late)"),
                         ("early_beta_eff", "β_eff"), ("late_beta_eff", "β_eff (late)")):
        values = paired(dln, column, groups)
        ok &= bool((values.batchnorm < values.standard).all())
        parts.append(f"{name}: batchnorm {spread(values.batchnorm)}, standard {spread(values.standard)}")
    return Verdict(HOLDS if ok else FAILS, "; ".join(parts), basis(dln, list(groups.values())))


def claim_11(s) -> Verdict:
    runs = needs(s, "curvature")
    lam = paired(runs, "early_lambda_max", by_word(STANDARD01, BN01))
    return Verdict(HOLDS if bool((lam.batchnorm < lam.standard).all()) else FAILS,
                   f"early median λ_max: batchnorm {spread(lam.batchnorm)}, standard {spread(lam.standard)}",
                   basis(runs, [STANDARD01, BN01]))


# ----------------------------------------------------------------------------------------------
# Claims 1b, 6b and 13a-d (ours): companions to the paper's, written before the long runs (docs/long.md)
# ----------------------------------------------------------------------------------------------
FASTER_BY = 0.5  # 1b: batchnorm needs at most half the steps standard needs


def claim_1b(s) -> Verdict:
    lr = needs(s, "lr")
    steps = paired(lr.assign(reached=lr.reached_at.fillna(np.inf)), "reached", by_word(STANDARD01, BN01))
    ok = bool((np.isfinite(steps.batchnorm) & (steps.batchnorm <= FASTER_BY * steps.standard)).all())
    words = lambda v: spread(v[np.isfinite(v)], "{:.0f}") + (f" ({int(np.isinf(v).sum())} of {len(v)} never)"
                                                               if np.isinf(v).any() else "") if np.isfinite(v).any() \
        else f"never (n={len(v)})"
    return Verdict(HOLDS if ok else FAILS, f"steps to reach {REACHES:.0%} training accuracy ({REACH_WINDOW}-step "
                   f"mean) at LR 0.1: batchnorm {words(steps.batchnorm)}, standard {words(steps.standard)}",
                   basis(lr, [STANDARD01, BN01]))


def claim_13a(s) -> Verdict:
    return _filter_ratio(s, "filter_early_loss_ratio", 1.0, "early median of max/min loss over η")


def claim_13b(s) -> Verdict:
    return _filter_ratio(s, "filter_early_rel_grad_diff_max", 3.0, "early median of max over η of ‖∇L(w−ηd)−g‖/‖g‖")


def _filter_ratio(s, column: str, threshold: float, name: str) -> Verdict:
    verdict = _landscape_ratio(s, column, threshold, name)
    return dataclasses.replace(verdict, measured="along the filter-normalized gradient: " + verdict.measured)


def claim_13c(s) -> Verdict:
    verdict = _share_below(s, "beta_rel", "scale-free β (‖Δg‖/‖g‖ per relative step)", "landscape" + FILTER_STEPS)
    return dataclasses.replace(verdict, measured="along the filter-normalized gradient: " + verdict.measured)


def claim_13d(s) -> Verdict:
    vgg = needs(s, "ics")
    parts, ok = [], True
    for lr in (0.1, 0.01):
        for layer in (5, 10):
            rel = paired(vgg, f"ics_rel_l2_median_L{layer}", {"std": at_lr(STANDARD, lr), "bn": at_lr(BN, lr)})
            ok &= bool((rel.bn >= 0.5 * rel["std"]).all())
            parts.append(f"LR {lr:g} #{layer}: ‖G−G′‖/‖G‖ batchnorm {spread(rel.bn)}, standard {spread(rel['std'])}")
    return Verdict(HOLDS if ok else FAILS, "; ".join(parts), basis(vgg, [at_lr(STANDARD, 0.1), at_lr(BN, 0.01)]))


# ----------------------------------------------------------------------------------------------
# Claim 12 (ours): the controls experiment. Arms by norm and init; each at its own grid of LRs.
# ----------------------------------------------------------------------------------------------
INITS = ("glorot", "kaiming")
LEAVES_WITHIN = 0.05  # (a): "within the first 5% of training"
SMOOTHER_BY = 3.0  # (b): no-BN's early gradient change at least this many times BN's
EOS_SLACK = 1.1  # (d): eta * lambda_max "settles at <= 2 (within 10%)"
IDENTITY_RTOL = 0.01  # (e): the scale-invariance identity "to within 1%"


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
    return runs.merge(table[table.trains][["arm", "seed"]], on=["arm", "seed"])


def claim_12a(s) -> Verdict:
    runs = needs(s, "controls")
    fraction = (runs.left_chance_at / runs.steps).fillna(np.inf)  # never left chance: not within any fraction
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
        change = paired(runs, "early_grad_diff_max", groups)
        ratio = change["std"] / change.bn
        ok &= bool((ratio >= SMOOTHER_BY).all())
        parts.append(f"{init}: standard (LR {groups['std']['lr']:g}) / batchnorm (LR {groups['bn']['lr']:g}) "
                     f"{spread(ratio)}x")
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
        ratios = pd.concat({eta: (lambda t: t["std"] / t.bn)(paired(runs, "beta_eff_median", {
            "std": at_lr(std, eta), "bn": at_lr(bn, eta)})) for eta in etas}, axis=1)
        ok &= bool((ratios[etas[-1]] > ratios[etas[0]]).all())
        parts.append(f"{init} (standard trains up to LR {top:g}): β_eff standard/batchnorm " +
                     ", ".join(f"{spread(ratios[eta])}x at LR {eta:g}" for eta in etas))
    if not measured_any:
        raise Missing("; ".join(parts))
    return Verdict(HOLDS if ok else FAILS, "; ".join(parts), basis(runs, [arm("none", i) for i in INITS]))


def claim_12d(s) -> Verdict:
    runs = needs(s, "controls")
    trains = trained(runs)
    if trains.empty or "late_eta_lambda" not in trains:
        raise Missing("no controls run that trains has λ_max probes")
    over = trains[~(trains.late_eta_lambda <= 2 * EOS_SLACK)]  # NaN (Lanczos did not converge) is not "settled"
    parts = [f"{kind_name(arm(n, i))}: {spread(g.late_eta_lambda)} over {len(g)} runs"
             for (n, i), g in trains.groupby(["norm", "init"])]
    measured = "late median of η·λ_max in the runs that train: " + "; ".join(parts)
    if len(over):
        measured += "; above 2.2: " + ", ".join(f"{a}/seed-{s_} ({v:.3g})" for a, s_, v in
                                               zip(over.arm, over.seed, over.late_eta_lambda))
    return Verdict(HOLDS if over.empty else FAILS, measured, basis(trains, [{}]))


def claim_12e(s) -> Verdict:
    runs = needs(s, "controls")
    bn = runs_of(trained(runs), {"norm": "batch"})
    if bn.empty:
        raise Missing("no batchnorm run of controls trains")
    identity_ok = bn.identity_error_median <= IDENTITY_RTOL
    falls = bn.late_eff_step < bn.early_eff_step
    failing = bn[~(identity_ok & falls)]
    identity = spread(bn.identity_error_median * 100, "{:.2g}")
    measured = (f"batchnorm runs that train (n={len(bn)}): median identity error {identity}%;"
                f" late/early effective step {spread(bn.late_eff_step / bn.early_eff_step)}")
    if len(failing):
        measured += "; failing: " + ", ".join(f"{a}/seed-{s_}" for a, s_ in zip(failing.arm, failing.seed))
    return Verdict(HOLDS if failing.empty else FAILS, measured, basis(bn, [{}]))


# ----------------------------------------------------------------------------------------------
# Claims 12f-12h (ours): the spectrum experiment, at mid-training (the probed step closest to half the steps)
# ----------------------------------------------------------------------------------------------
MANY_OUTLIERS, FEW_OUTLIERS = 5, 2
OF_TOP = "(of the top 10 computed: 10 is the count's cap)"  # the rule counts among the top-10 Ritz values


def claim_12f(s) -> Verdict:
    runs = needs(s, "spectrum")
    count = paired(runs, "mid_outliers_train", {"std": STANDARD, "bn": BN})
    ok = bool((count["std"] >= MANY_OUTLIERS).all() and (count.bn <= FEW_OUTLIERS).all())
    return Verdict(HOLDS if ok else FAILS, f"outliers at mid-training: standard {spread(count['std'])}, batchnorm "
                                           f"(train mode) {spread(count.bn)} {OF_TOP}", basis(runs, [STANDARD, BN]))


def claim_12g(s) -> Verdict:
    runs = needs(s, "spectrum")
    both = paired(runs, "mid_share_train", {"std": STANDARD, "bn": BN})  # seeds where both have a share
    return Verdict(HOLDS if bool((both["std"] > both.bn).all()) else FAILS,
                   f"gradient's share in the top-10 eigenvectors at mid-training: standard {pct(both['std'])}, "
                   f"batchnorm (train mode) {pct(both.bn)}", basis(runs, [STANDARD, BN]))


def claim_12h(s) -> Verdict:
    runs = needs(s, "spectrum")
    modes = paired(runs, "mid_outliers_eval", {"eval": BN}).join(paired(runs, "mid_outliers_train", {"train": BN}))
    return Verdict(HOLDS if bool((modes["eval"] >= MANY_OUTLIERS).all()) else FAILS,
                   f"batchnorm's outliers at mid-training: eval mode {spread(modes['eval'])}, train mode "
                   f"{spread(modes['train'])} {OF_TOP}", basis(runs, [BN]))


CLAIMS = [
    Claim("1", "BN trains faster than standard at LR 0.1; at LR 0.5 standard trains much worse (Fig. 1).",
          "training accuracy (last 100 steps): batchnorm ≥ standard + 5 points at LR 0.1, and ≥ standard + 15 points "
          "at LR 0.5, in every seed (a diverged run counts as chance)", ("lr",), claim_1),
    Claim("1b (ours)", "BN trains faster: it needs fewer steps to reach a given training accuracy "
                       "(claim 1's rule reads the final accuracy, which both arms may reach on the paper's schedule).",
          "at LR 0.1: the first step at which the 100-step mean training accuracy reaches 60%: batchnorm reaches it, "
          "at ≤ 0.5 × standard's step, in every seed (a standard run that never reaches it counts as infinitely many "
          "steps)", ("lr",), claim_1b),
    Claim("2", "Test accuracy without augmentation: 83% with BN, 80% without.",
          "paper preset only: batchnorm's test accuracy > standard's in every seed, and the means within 3 points "
          "of 83% and 80%", ("noisy-bn",), claim_2, presets=("paper",)),
    Claim("3", "Noisy BN trains about as well as BN and far better than standard, though its activation "
               "distributions are less stable than standard's (Fig. 2, 8).",
          "training accuracy: noisy ≥ batchnorm − 10 points and ≥ standard + 15 points; mean step-to-step |Δμ| and "
          "|Δσ²| of noisy > standard's at every recorded layer past #2; in every seed", ("noisy-bn",), claim_3),
    Claim("4", "The same noise without BN stops training.",
          "noise-only's training accuracy ≤ 15% (or it diverged) in every seed (paper preset runs the noise-only arm)",
          ("noisy-bn",), claim_4),
    Claim("5", "BN does not reduce ICS: ‖G − G′‖ similar or larger, cosine similar or lower; in the DLN standard has "
               "cos ≈ 1, BN has G and G′ almost uncorrelated (Fig. 3).",
          "VGG, layers #5 and #10, LR 0.1 and 0.01: batchnorm's median ‖G − G′‖ ≥ 0.5 × standard's and its median "
          "cosine ≤ standard's + 0.05; DLN, layer #17, LR 1e-6: standard's median cosine > 0.9 and batchnorm's at "
          "least 0.3 lower; in every seed", ("ics", "dln"), claim_5),
    Claim("6", "Along the gradient, standard's loss varies over a much wider range, especially early (Fig. 4a).",
          "first quarter of training: median over probes of max/min loss over η, standard > batchnorm in every seed",
          ("landscape",), claim_6),
    Claim("6b (ours)", "Standard's wider loss range along the gradient is an overshoot: a step of η ≤ 4 LR raises its "
                       "loss above L(w), more than BN's (claim 6's max/min cannot tell overshoot from steep descent).",
          "first quarter of training: median over probes of max over η of L(w − ηg) / L(w), standard's > 1 and "
          "standard / batchnorm ≥ 1, in every seed", ("landscape",), claim_6b),
    Claim("7", "Gradient predictiveness: standard's gradient change is about two orders of magnitude larger, "
               "especially early (Fig. 4b).",
          "first quarter of training: median of the max over η of ‖∇L(w − ηg) − g‖, standard / batchnorm ≥ 3 in "
          "every seed", ("landscape",), claim_7),
    Claim("8", "Effective β-smoothness is lower with BN throughout (Fig. 4c).",
          "batchnorm's β_eff < standard's at ≥ 75% of the probed steps, in every seed", ("landscape",), claim_8),
    Claim("9", "ℓp normalizations train comparably to BN; on the DLN ℓ1 beats BN (Fig. 5).",
          "VGG: l1, l2, linf each ≥ standard + 10 points of training accuracy; DLN: l1's final training loss below "
          "batchnorm's by more than 0.1%, in every seed (within 0.1% in some seed, none worse: a tie)",
          ("lp-norm", "lp-norm-dln"), claim_9),
    Claim("10", "The smoothing shows in the DLN too, without nonlinearities (Fig. 10, 13).",
          "DLN at LR 1e-6: batchnorm's median gradient change and β_eff below standard's, early and late, "
          "in every seed",
          ("dln",), claim_10),
    Claim("11 (ours, beyond the paper)", "BN lowers λ_max, the top Hessian eigenvalue, early in training.",
          "first quarter of training: batchnorm's median λ_max < standard's in every seed", ("curvature",), claim_11),
    Claim("12a (ours)", "With He (Kaiming) init, the VGG without BN leaves chance within the first 5% of training "
                        "at its best LR: Glorot's plateau is the init's, not the missing BN's.",
          "standard-kaiming at its best LR (highest training accuracy, last 100 steps, mean over seeds; diverged = "
          "chance): the first step at which the 10-step mean training accuracy reaches 15% is ≤ 5% of the run's "
          "steps, in every seed (never reaching it fails)", ("controls",), claim_12a),
    Claim("12b (ours)", "At each arm's own best LR, no-BN's early gradient change is ≥ 3× BN's (the paper's picture, "
                        "controlled for LR).",
          "for each init: first-quarter median of the max over η of ‖∇L(w−ηg)−g‖, standard at its best LR / batchnorm "
          "at its best LR ≥ 3, in every seed", ("controls",), claim_12b),
    Claim("12c (ours)", "At equal η, the β_eff ratio (no-BN / BN) grows as η approaches no-BN's largest stable LR "
                        "(Jastrzebski et al. 2020: smoothing needs a high LR).",
          "for each init where standard trains (every seed complete, ≥ chance + 10 points) at ≥ 2 LRs that batchnorm "
          "ran too: the ratio of run medians of β_eff at the largest such LR > at the smallest, in every seed",
          ("controls",), claim_12c),
    Claim("12d (ours)", "η·λ_max settles at ≤ 2 (within 10%) in every arm that trains (edge of stability, Cohen et "
                        "al. 2021).",
          "every controls run that trains: the median of η·λ_max over its probes after the first quarter ≤ 2.2",
          ("controls",), claim_12d),
    Claim("12e (ours)", "BN-preceded weights are scale-invariant: ‖W_{t+1}‖² − ‖W_t‖² = η²‖g_t‖² to within 1%, and "
                        "their effective step η‖g‖/‖W‖ falls over training (Arora et al. 2019).",
          "every batchnorm run that trains: the median over probes and BN-preceded layers of |Δ‖W‖² − η²‖g‖²| / "
          "η²‖g‖² ≤ 1%, and the median effective step (mean over those layers) after the first quarter < in it",
          ("controls",), claim_12e),
    Claim("12f (ours)", "Without BN the Hessian has several outliers (isolated large eigenvalues); with BN (train "
                        "mode) hardly any (Ghorbani et al. 2019).",
          "at mid-training (the probed step closest to half the steps): standard has ≥ 5 outliers and batchnorm in "
          "train mode ≤ 2, in every seed. Outliers: the top-10 Ritz values (Lanczos to a 1e-3 residual, at most 150 "
          "products; unconverged ones are lower bounds) above the bulk edge, the largest Ritz value of the quadrature "
          "with weight ≥ 1e-3 (median over start vectors)",
          ("spectrum",), claim_12f),
    Claim("12g (ours)", "The gradient concentrates in the top Hessian eigen-directions without BN, less with it.",
          "at mid-training: the share of ‖g‖² in the span of the top-10 eigenvectors, standard > batchnorm (train "
          "mode), in every seed", ("spectrum",), claim_12g),
    Claim("12h (ours)", "With the same BN weights probed in eval mode (running statistics), the outliers come back.",
          "at mid-training: batchnorm probed in eval mode has ≥ 5 outliers (as 12f's rule counts them), in every seed",
          ("spectrum",), claim_12h),
    Claim("13a (ours)", "Along the filter-normalized gradient (each filter's step a fraction of its own norm, blind to "
                        "BN's free scale), standard's loss still varies over a wider range than BN's.",
          "first quarter of training, steps of 0.5–4% of each filter's norm: median over probes of max/min loss over "
          "the step, standard > batchnorm in every seed", ("landscape",), claim_13a),
    Claim("13b (ours)", "Along the filter-normalized gradient, standard's gradient changes more, relative to ‖g‖, "
                        "than BN's: claim 7 without BN's free scale.",
          "first quarter of training: median over probes of the max over the step of ‖∇L(w − ηd) − g‖ / ‖g‖, "
          "standard / batchnorm ≥ 3 in every seed", ("landscape",), claim_13b),
    Claim("13c (ours)", "A scale-free β-smoothness is lower with BN: claim 8 without BN's free scale.",
          "max over the step of (‖∇L(w − ηd) − g‖ / ‖g‖) / η along the filter-normalized gradient d (η the step as a "
          "fraction of each filter's norm): batchnorm's < standard's at ≥ 75% of the probed steps, in every seed",
          ("landscape",), claim_13c),
    Claim("13d (ours)", "BN does not reduce ICS in scale-free terms either: claim 5's ‖G − G′‖ relative to ‖G‖.",
          "VGG, layers #5 and #10, LR 0.1 and 0.01: batchnorm's median ‖G − G′‖ / ‖G‖ ≥ 0.5 × standard's, "
          "in every seed",
          ("ics",), claim_13d),
]


def evaluate_claims(summaries: dict[str, pd.DataFrame]) -> list[tuple[Claim, Verdict]]:
    return [(claim, evaluate(claim, summaries)) for claim in CLAIMS]


def evaluate(claim: Claim, summaries: dict[str, pd.DataFrame], preset: str | None = None) -> Verdict:
    """The claim's rule on the runs it finds (its experiments', or by configuration: `needs`), tagged with their
    presets; "not measured" where they have no results, or where a run's preset is not one the rule accepts (its
    numbers still shown)."""
    sources = Sources(summaries)
    try:
        verdict = claim.check(sources)
    except Missing as why:
        found_elsewhere = len(pooled(summaries, "")) > 0
        waiting = [name for name in claim.experiments
                   if name not in summaries and not (name in BY_CONFIGURATION and found_elsewhere)]
        return Verdict(NOT_MEASURED, f"waiting for {', '.join(waiting)} (no results yet)" if waiting else str(why))
    # judged at one preset (report.by_preset: the runs that count there, the DLN's shared ones included), or at
    # the presets of the runs the rule read
    presets = (preset,) if preset else tuple(sorted(sources.presets))
    foreign = [p for p in presets if p not in claim.presets]
    if foreign:
        return Verdict(NOT_MEASURED, f"{verdict.measured} (the rule accepts preset {' or '.join(claim.presets)}, "
                                     f"not {', '.join(foreign)})", verdict.basis, presets)
    return dataclasses.replace(verdict, presets=presets)
