"""The paper's claims (docs/protocol.md, "The paper's claims"), each with a written rule that decides its verdict.

A rule reads the per-run summaries (analysis.run_summary) of the experiments it needs, by the column names the
analysis modules declare, and returns a Verdict: holds | does not hold | not measured (with why). Rules live in this
package and only here, by topic: rules (what they share), paper (claims 1-11), companions (1b, 13a-d), controls
(12a-e), spectrum (12f-h); here, the list of claims and `evaluate`. Each rule is tested on small hand-made frames
(tests/test_claims.py), one where the claim holds and one where not.
"""
from __future__ import annotations

import dataclasses

import pandas as pd

from bnstudy.claims.companions import claim_1b, claim_13a, claim_13b, claim_13c, claim_13d
from bnstudy.claims.ioffe import claim_14a, claim_14b, claim_14c, claim_14d
from bnstudy.claims.controls import claim_12a, claim_12b, claim_12c, claim_12d, claim_12e
from bnstudy.claims.paper import (claim_1, claim_2, claim_3, claim_4, claim_5, claim_6, claim_6b, claim_7, claim_8,
                                  claim_9, claim_10, claim_11)
from bnstudy.analysis.common import first_quarter_end
from bnstudy.claims.rules import (BY_CONFIGURATION, FAILS, FIRST_QUARTER, HOLDS, NOT_MEASURED, TIE, WHOLE_RUN, Claim,
                                  Missing, Sources, Statistic, Verdict, needs, pooled)
from bnstudy.claims.spectrum import claim_12f, claim_12g, claim_12h

__all__ = ["CLAIMS", "FAILS", "HOLDS", "NOT_MEASURED", "TIE", "Claim", "Missing", "Sources", "Verdict", "evaluate",
           "evaluate_claims", "needs"]

CLAIMS = [
    Claim("1", "BN trains faster than standard at LR 0.1; at LR 0.5 standard trains much worse (Fig. 1).",
          "training accuracy (last 100 steps): batchnorm ≥ standard + 5 points at LR 0.1, and ≥ standard + 15 points "
          "at LR 0.5, in every seed (a diverged run counts as chance)", ("lr",), claim_1),
    Claim("1b (ours)", "BN trains faster: it needs fewer steps to reach a given training accuracy "
                       "(claim 1's rule reads the final accuracy, which both arms may reach on the paper's schedule).",
          "at LR 0.1: the first step at which the 100-step mean training accuracy reaches 60%: batchnorm reaches it, "
          "at ≤ 0.5 × standard's step, in every seed (a standard run that never reaches it counts as infinitely many "
          "steps)", ("lr",), claim_1b, reads=FIRST_QUARTER,
          statistic=Statistic("steps to reach 60% training accuracy, batchnorm / standard", 0.5, holds_above=False,
                              log=False)),
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
          ("landscape",), claim_6, reads=FIRST_QUARTER,
          statistic=Statistic("early median of max / min loss over η, standard / batchnorm", 1.0)),
    Claim("6b (ours)", "Standard's wider loss range along the gradient is an overshoot: a step of η ≤ 4 LR raises its "
                       "loss above L(w), more than BN's (claim 6's max/min cannot tell overshoot from steep descent).",
          "first quarter of training: median over probes of max over η of L(w − ηg) / L(w), standard's > 1 and "
          "standard / batchnorm ≥ 1, in every seed", ("landscape",), claim_6b, reads=FIRST_QUARTER,
          statistic=Statistic("early median of max over η of L(w − ηg) / L(w), standard / batchnorm", 1.0)),
    Claim("7", "Gradient predictiveness: standard's gradient change is about two orders of magnitude larger, "
               "especially early (Fig. 4b).",
          "first quarter of training: median of the max over η of ‖∇L(w − ηg) − g‖, standard / batchnorm ≥ 3 in "
          "every seed", ("landscape",), claim_7, reads=FIRST_QUARTER,
          statistic=Statistic("early median of max over η of ‖∇L(w − ηg) − g‖, standard / batchnorm", 3.0,
                              paper=100.0, paper_words="about two orders of magnitude")),
    Claim("8", "Effective β-smoothness is lower with BN throughout (Fig. 4c).",
          "batchnorm's β_eff < standard's at ≥ 75% of the probed steps, in every seed", ("landscape",), claim_8,
          statistic=Statistic("share of probed steps with batchnorm's β_eff below standard's", 0.75, log=False)),
    Claim("9", "ℓp normalizations train comparably to BN; on the DLN ℓ1 beats BN (Fig. 5).",
          "VGG: l1, l2, linf each ≥ standard + 10 points of training accuracy; DLN: l1's final training loss below "
          "batchnorm's by more than 0.1%, in every seed (within 0.1% in some seed, none worse: a tie)",
          ("lp-norm", "lp-norm-dln"), claim_9),
    Claim("10", "The smoothing shows in the DLN too, without nonlinearities (Fig. 10, 13).",
          "DLN at LR 1e-6: batchnorm's median gradient change and β_eff below standard's, early and late, "
          "in every seed",
          ("dln",), claim_10),
    Claim("11 (ours, beyond the paper)", "BN lowers λ_max, the top Hessian eigenvalue, early in training.",
          "first quarter of training: batchnorm's median λ_max < standard's in every seed", ("curvature",), claim_11,
          reads=FIRST_QUARTER, statistic=Statistic("early median λ_max, standard / batchnorm", 1.0)),
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
          "the step, standard > batchnorm in every seed", ("landscape",), claim_13a, reads=FIRST_QUARTER,
          statistic=Statistic("filter-normalized: early median of max / min loss, standard / batchnorm", 1.0)),
    Claim("13b (ours)", "Along the filter-normalized gradient, standard's gradient changes more, relative to ‖g‖, "
                        "than BN's: claim 7 without BN's free scale.",
          "first quarter of training: median over probes of the max over the step of ‖∇L(w − ηd) − g‖ / ‖g‖, "
          "standard / batchnorm ≥ 3 in every seed", ("landscape",), claim_13b, reads=FIRST_QUARTER,
          statistic=Statistic("filter-normalized: early median of max ‖∇L(w − ηd) − g‖ / ‖g‖, standard / batchnorm",
                              3.0)),
    Claim("13c (ours)", "A scale-free β-smoothness is lower with BN: claim 8 without BN's free scale.",
          "max over the step of (‖∇L(w − ηd) − g‖ / ‖g‖) / η along the filter-normalized gradient d (η the step as a "
          "fraction of each filter's norm): batchnorm's < standard's at ≥ 75% of the probed steps, in every seed",
          ("landscape",), claim_13c,
          statistic=Statistic("share of probed steps with batchnorm's scale-free β below standard's", 0.75,
                              log=False)),
    Claim("13d (ours)", "BN does not reduce ICS in scale-free terms either: claim 5's ‖G − G′‖ relative to ‖G‖.",
          "VGG, layers #5 and #10, LR 0.1 and 0.01: batchnorm's median ‖G − G′‖ / ‖G‖ ≥ 0.5 × standard's, "
          "in every seed",
          ("ics",), claim_13d),
    Claim("14a", "Ioffe & Szegedy (2015, Fig. 1a), MNIST: the network with BN trains faster, reaching a given test "
                 "accuracy in fewer steps.",
          "the first evaluated step (every 500) at which the test accuracy is ≥ 95%: batchnorm's < standard's, in "
          "every seed (a standard run that never reaches it counts as infinitely many steps; batchnorm must reach it)",
          ("ioffe-mnist",), claim_14a),
    Claim("14b", "Ioffe & Szegedy (2015, Fig. 1b, c): without BN the distribution of a sigmoid's input drifts over "
                 "training; with BN it stays put.",
          "last hidden layer: per recorded unit, (max − min over training of its input's median) / (median over "
          "training of its 85th − 15th percentile), median over units; standard's ≥ 1 and batchnorm's ≤ 0.5 × "
          "standard's, in every seed", ("ioffe-mnist",), claim_14b),
    Claim("14c (ours)", "On Ioffe & Szegedy's MNIST network, BN reduces internal covariate shift as Santurkar et al. "
                        "define it (Definition 2.1): their reading of Fig. 1, measured by gradients.",
          "at each hidden layer after #1 (at #1 nothing before it moves): batchnorm's median ‖G − G′‖ < standard's "
          "and its median cos(G, G′) > standard's, in every seed (does not hold: BN does not reduce it)",
          ("ioffe-mnist",), claim_14c),
    Claim("14d (ours)", "On Ioffe & Szegedy's MNIST network, BN smooths the landscape as claims 7 and 8 measure it.",
          "first quarter of training: median of the max over η of ‖∇L(w − ηg) − g‖, standard / batchnorm ≥ 3 "
          "(claim 7's rule), and batchnorm's β_eff below standard's at ≥ 75% of the probed steps (claim 8's), in "
          "every seed", ("ioffe-mnist",), claim_14d),
]


def not_covered(claim: Claim, stops: set) -> str | None:
    """Why runs stopped before the end of their schedule (--until-step) cannot decide the claim, or None: a claim
    that reads the whole run needs runs that went to the end; one that reads the first quarter, runs that got there."""
    if not stops:
        return None
    stopped_at, steps = min(stops)
    if claim.reads == WHOLE_RUN:
        return f"stopped at {stopped_at:,} of {steps:,}"
    if stopped_at < first_quarter_end(steps):
        end = first_quarter_end(steps)
        return f"stopped at {stopped_at:,}, before the first quarter's end ({end:,.0f} of {steps:,})"
    return None


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
        found_elsewhere = len(pooled(summaries, None)) > 0  # any experiment's per-run summary
        waiting = [name for name in claim.experiments
                   if name not in summaries and not (name in BY_CONFIGURATION and found_elsewhere)]
        return Verdict(NOT_MEASURED, f"waiting for {', '.join(waiting)} (no results yet)" if waiting else str(why))
    if why := not_covered(claim, sources.stops):
        return Verdict(NOT_MEASURED, f"{why} ({verdict.measured})", verdict.basis)
    # judged at one preset (report.by_preset: the runs that count there, the DLN's shared ones included), or at
    # the presets of the runs the rule read
    presets = (preset,) if preset else tuple(sorted(sources.presets))
    foreign = [p for p in presets if p not in claim.presets]
    if foreign:
        return Verdict(NOT_MEASURED, f"{verdict.measured} (the rule accepts preset {' or '.join(claim.presets)}, "
                                     f"not {', '.join(foreign)})", verdict.basis, presets)
    return dataclasses.replace(verdict, presets=presets)
