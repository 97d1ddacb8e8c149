"""The rules of the paper's claims 1-11 (and 6b, ours, beside claim 6), on the experiments that reproduce its
figures."""
from __future__ import annotations

import numpy as np
import pandas as pd

from bnstudy.analysis.activations import CHANGES, moment_column, moment_layers
from bnstudy.analysis.common import CHANCE, EARLY_PHASE, LATE_PHASE, phase_column
from bnstudy.analysis.curvature import LAMBDA_MAX
from bnstudy.analysis.ics import COSINE, L2, ics_column
from bnstudy.analysis.landscape import BETA_EFF, CANCELS, GRAD_DIFF_MAX, LOSS_RATIO, OVERSHOOT, STEPS
from bnstudy.claims.rules import (BN, BN01, FAILS, HOLDS, NOISE_ONLY, NOISE_ONLY01, NOISY01, STANDARD, STANDARD01,
                                  TIE, TIMES, VGG_LR, Missing, StepTable, Verdict, at_lr, basis, by_word, lp, needs,
                                  paired, pct, runs_of, spread, word)


def claim_1(s) -> Verdict:
    lr = needs(s, "lr")
    if "final_train_acc_last100" not in lr:  # runs that recorded no training accuracy (summaries of probes alone)
        raise Missing("no 'final_train_acc_last100' in the results")
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
    # the layers these two arms recorded: pooled runs of other experiments (the DLN's) add columns they lack
    compared = pd.concat([runs_of(runs, NOISY01), runs_of(runs, STANDARD01)]).dropna(axis=1, how="all")
    layers = moment_layers(compared.columns)
    if not layers:  # runs found by configuration in an experiment that recorded no activations
        raise Missing("no activation moments recorded by the noisy and standard runs")
    deeper = [layer for layer in layers if layer > 2] or layers
    moves = [paired(runs, moment_column(change, layer), by_word(NOISY01, STANDARD01))
             for change in CHANGES for layer in deeper]
    less_stable = all((m.noisy > m.standard).all() for m in moves)
    trains = bool((acc.noisy >= acc.batchnorm - 0.10).all() and (acc.noisy >= acc.standard + 0.15).all())
    ratio = np.concatenate([(m.noisy / m.standard).to_numpy() for m in moves])
    return Verdict(HOLDS if trains and less_stable else FAILS,
                   f"train acc: noisy {pct(acc.noisy)}, batchnorm {pct(acc.batchnorm)}, standard "
                   f"{pct(acc.standard)}; noisy/standard step-to-step |Δμ|, |Δσ²| at layers "
                   f"{', '.join(f'#{layer}' for layer in deeper)}: {spread(ratio, TIMES)}",
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
            l2 = paired(vgg, ics_column(L2, layer), groups)
            cos = paired(vgg, ics_column(COSINE, layer), groups)
            ok &= bool((l2.bn >= 0.5 * l2["std"]).all() and (cos.bn <= cos["std"] + 0.05).all())
            parts.append(f"VGG LR {lr:g} #{layer}: ‖G−G′‖ bn/std {spread(l2.bn / l2['std'], TIMES)}, "
                         f"cos bn {spread(cos.bn)} vs std {spread(cos['std'])}")
    cos = paired(dln, ics_column(COSINE, 17), {"std": at_lr(STANDARD, 1e-6), "bn": at_lr(BN, 1e-6)})
    ok &= bool((cos["std"] > 0.9).all() and (cos["std"] - cos.bn >= 0.3).all())
    parts.append(f"DLN #17 cos: standard {spread(cos['std'])}, batchnorm {spread(cos.bn)}")
    return Verdict(HOLDS if ok else FAILS, "; ".join(parts), basis(vgg, [at_lr(STANDARD, 0.1)]) + " (VGG); " +
                   basis(dln, [at_lr(STANDARD, 1e-6)]) + " (DLN)")


PAIR = (STANDARD01, BN01)  # the runs the landscape rules compare: standard and batchnorm at the paper's LR


def landscape_ratio(s, column: str, threshold: float, name: str, above_one: bool = False,
                    experiment: str = "landscape", pair: tuple[dict, dict] = PAIR) -> Verdict:
    """standard / batchnorm of `column` >= threshold in every seed (and, with above_one, standard's > 1), on the
    runs of `experiment` that `pair`'s queries find."""
    runs = needs(s, experiment)
    values = paired(runs, column, by_word(*pair))
    ratio = values.standard / values.batchnorm
    ok = bool((ratio >= threshold).all()) and (not above_one or bool((values.standard > 1).all()))
    return Verdict(HOLDS if ok else FAILS,
                   f"{name}, standard / batchnorm: {spread(ratio, TIMES)} (standard {spread(values.standard)}, "
                   f"batchnorm {spread(values.batchnorm)})", basis(runs, list(pair)), values=ratio)


def claim_6(s) -> Verdict:
    return landscape_ratio(s, phase_column(EARLY_PHASE, LOSS_RATIO), 1.0, "early median of max/min loss over η")


def claim_6b(s) -> Verdict:
    return landscape_ratio(s, phase_column(EARLY_PHASE, OVERSHOOT), 1.0, "early median of max over η of L(w−ηg)/L(w)",
                            above_one=True)


def claim_7(s) -> Verdict:
    return landscape_ratio(s, phase_column(EARLY_PHASE, GRAD_DIFF_MAX), 3.0,
                           "early median of max over η of ‖∇L(w−ηg)−g‖")


def share_below(s, column: str, name: str, table: str = STEPS, experiment: str = "landscape",
                pair: tuple[dict, dict] = PAIR) -> Verdict:
    """batchnorm's `column` in `experiment`'s StepTable `table` below standard's at >= 75% of the probed steps, in
    every seed."""
    runs = needs(s, experiment)
    steps = needs(s, StepTable(experiment, table))  # per-probe rows: runs by their experiment's and arm's names
    named = {word(q): set(zip(*[runs_of(runs, q)[k] for k in ("experiment", "arm")])) for q in pair}
    label = {run: w for w, runs_ in named.items() for run in runs_}
    group = pd.Series(list(zip(steps.experiment, steps.arm)), index=steps.index).map(label)
    steps = steps.assign(group=group).dropna(subset=["group"])
    wide = steps.pivot_table(index=["seed", "step"], columns="group", values=column).dropna()
    if wide.empty or not set(named) <= set(wide.columns):
        raise Missing(f"no {column} at the probed steps of both standard and batchnorm")
    share = (wide.batchnorm < wide.standard).groupby(level="seed").mean()
    return Verdict(HOLDS if bool((share >= 0.75).all()) else FAILS,
                   f"share of probed steps with batchnorm's {name} below standard's: {pct(share)}"
                   + decided_note(wide) + cancelled_note(steps), basis(runs, list(pair)), values=share)


DECIDED_RTOL = 0.05  # a difference of a few percent between two values at one ceiling: counted by the rule, said here


def decided_note(wide: pd.DataFrame) -> str:
    """How much of the share differences of more than DECIDED_RTOL decide, and how many steps are exact ties (the
    rule counts a tie as 'not below'): said beside the verdict, the rule unchanged."""
    gap = (wide.standard - wide.batchnorm).abs() / wide[["standard", "batchnorm"]].abs().max(axis=1)
    decided = (gap > DECIDED_RTOL).groupby(level="seed").mean()
    ties = (wide.standard == wide.batchnorm).groupby(level="seed").mean()
    return (f"; the two differ by more than {DECIDED_RTOL:.0%} at {pct(decided)} of the probed steps, and are equal "
            f"(a tie, counted as not below) at {pct(ties)}")


def cancelled_note(steps: pd.DataFrame) -> str:
    """Where the grid's smallest step cancels the gradient, beta reads 1/eta_min for both networks (a tie the rule
    counts as it falls): how often, per network, said beside the verdict (the rule itself is unchanged)."""
    if CANCELS not in steps or not steps[CANCELS].any():
        return ""
    shares = steps.groupby("group")[CANCELS].mean()
    return ("; β sat at 1/η_min (the grid's smallest step cancels the gradient) at " +
            " and ".join(f"{shares[g] * 100:.0f}% of {g}'s" for g in ("standard", "batchnorm") if g in shares) +
            " probed steps")


def claim_8(s) -> Verdict:
    return share_below(s, BETA_EFF, "β_eff")


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
    for phase, column, name in ((EARLY_PHASE, GRAD_DIFF_MAX, "gradient change"),
                                (LATE_PHASE, GRAD_DIFF_MAX, "gradient change (late)"),
                                (EARLY_PHASE, BETA_EFF, "β_eff"), (LATE_PHASE, BETA_EFF, "β_eff (late)")):
        values = paired(dln, phase_column(phase, column), groups)
        ok &= bool((values.batchnorm < values.standard).all())
        parts.append(f"{name}: batchnorm {spread(values.batchnorm)}, standard {spread(values.standard)}")
    return Verdict(HOLDS if ok else FAILS, "; ".join(parts), basis(dln, list(groups.values())))


def claim_11(s) -> Verdict:
    runs = needs(s, "curvature")
    lam = paired(runs, phase_column(EARLY_PHASE, LAMBDA_MAX), by_word(STANDARD01, BN01))
    return Verdict(HOLDS if bool((lam.batchnorm < lam.standard).all()) else FAILS,
                   f"early median λ_max: batchnorm {spread(lam.batchnorm)}, standard {spread(lam.standard)}",
                   basis(runs, [STANDARD01, BN01]), values=lam.standard / lam.batchnorm)
