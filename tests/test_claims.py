"""Every claim's rule on hand-made summaries: one case where it holds, one where it does not."""
import pandas as pd

from bnstudy.analysis import StepTable
from bnstudy.analysis.landscape import FILTER_STEPS, STEPS
from bnstudy.claims import CLAIMS, FAILS, HOLDS, NOT_MEASURED, TIE, evaluate, evaluate_claims


NORM_OF = {"standard": "none", "batchnorm": "batch", "noisy-batchnorm": "noisy-batch", "noise-only": "noise-only",
           "l1": "l1", "l2": "l2", "linf": "linf"}


def config_of(arm: str) -> dict:
    """What the experiment files make of an arm name: its norm, and its LR (a sweep's '-lr' suffix, else 0.1)."""
    name, _, lr = arm.partition("-lr")
    return {"norm": NORM_OF[name], "lr": float(lr) if lr else 0.1}


def frame(rows: dict[str, dict], seeds=(0, 1), preset="quick") -> pd.DataFrame:
    """rows: arm -> {column: value}; the same values for every seed, tagged as real runs would be."""
    return pd.DataFrame([{"arm": arm, "seed": seed, "preset": preset, "dataset": "CIFAR-10 (test)",
                          "status": "complete", **config_of(arm), **values}
                         for arm, values in rows.items() for seed in seeds])


def check(number: str, summaries: dict) -> str:
    claim = next(c for c in CLAIMS if c.number == number)
    return evaluate(claim, summaries).verdict


def lr_runs(std01, bn01, std05, bn05):
    return {"lr": frame({"standard-lr0.1": {"final_train_acc_last100": std01},
                         "batchnorm-lr0.1": {"final_train_acc_last100": bn01},
                         "standard-lr0.5": {"final_train_acc_last100": std05},
                         "batchnorm-lr0.5": {"final_train_acc_last100": bn05}})}


def test_claim_1():
    assert check("1", lr_runs(0.40, 0.70, 0.10, 0.65)) == HOLDS
    assert check("1", lr_runs(0.60, 0.62, 0.10, 0.65)) == FAILS  # not faster at 0.1


def test_claim_1_counts_a_diverged_run_as_chance():
    runs = lr_runs(0.40, 0.70, 0.30, 0.65)
    assert check("1", runs) == HOLDS
    lr = runs["lr"]
    lr.loc[lr.arm == "batchnorm-lr0.5", "status"] = "diverged"  # its accuracy before diverging no longer counts
    assert check("1", {"lr": lr}) == FAILS


def test_claim_2_needs_the_paper_preset():
    acc = {"batchnorm": {"final_test_acc": 0.83}, "standard": {"final_test_acc": 0.80}}
    assert check("2", {"noisy-bn": frame(acc, preset="paper")}) == HOLDS
    assert check("2", {"noisy-bn": frame(acc, preset="quick")}) == NOT_MEASURED
    low = {"batchnorm": {"final_test_acc": 0.70}, "standard": {"final_test_acc": 0.80}}
    assert check("2", {"noisy-bn": frame(low, preset="paper")}) == FAILS


def noisy_runs(noisy_acc, noisy_move):
    moves = lambda m: {"d_mean_L2": m, "d_mean_L9": m, "d_var_L9": m, "d_mean_L13": m, "d_var_L13": m, "d_var_L2": m}
    return {"noisy-bn": frame({"standard": {"final_train_acc_last100": 0.35, **moves(1e-3)},
                               "batchnorm": {"final_train_acc_last100": 0.70, **moves(1e-3)},
                               "noisy-batchnorm": {"final_train_acc_last100": noisy_acc, **moves(noisy_move)}})}


def test_claim_3():
    assert check("3", noisy_runs(0.65, 0.1)) == HOLDS
    assert check("3", noisy_runs(0.40, 0.1)) == FAILS  # trains no better than standard + 15
    assert check("3", noisy_runs(0.65, 1e-4)) == FAILS  # moves less than standard


def test_claim_4():
    runs = lambda acc: {"noisy-bn": frame({"noise-only": {"final_train_acc_last100": acc},
                                           "standard": {"final_train_acc_last100": 0.5}})}
    assert check("4", runs(0.1)) == HOLDS
    assert check("4", runs(0.45)) == FAILS


def test_a_claim_names_the_seeds_every_compared_arm_has():
    summary = pd.concat([frame({"noise-only": {"final_train_acc_last100": 0.1}}, seeds=(0,)),
                         frame({"standard": {"final_train_acc_last100": 0.5}}, seeds=(0, 1, 2))])
    claim = next(c for c in CLAIMS if c.number == "4")
    verdict = claim.check({"noisy-bn": summary})
    assert verdict.verdict == HOLDS and verdict.basis.endswith("seeds 0")


def ics_runs(bn_l2, bn_cos, dln_bn_cos):
    vgg = {}
    for lr in ("0.1", "0.01"):
        vgg[f"standard-lr{lr}"] = {f"ics_{m}_median_L{layer}": v
                                   for layer in (5, 10) for m, v in (("l2", 1.0), ("cosine", 0.9))}
        vgg[f"batchnorm-lr{lr}"] = {f"ics_{m}_median_L{layer}": v
                                    for layer in (5, 10) for m, v in (("l2", bn_l2), ("cosine", bn_cos))}
    dln = {"standard-lr1e-6": {"ics_cosine_median_L17": 0.99},
           "batchnorm-lr1e-6": {"ics_cosine_median_L17": dln_bn_cos}}
    return {"ics": frame(vgg), "dln": frame(dln)}


def test_claim_5():
    assert check("5", ics_runs(2.0, 0.5, 0.1)) == HOLDS
    assert check("5", ics_runs(0.1, 0.5, 0.1)) == FAILS  # BN reduced the shift
    assert check("5", ics_runs(2.0, 0.5, 0.95)) == FAILS  # DLN cosines alike


def landscape_runs(std, bn, column):
    return {"landscape": frame({"standard": {column: std}, "batchnorm": {column: bn}})}


def test_claims_6_and_7():
    assert check("6", landscape_runs(1.5, 1.1, "early_loss_ratio")) == HOLDS
    assert check("6", landscape_runs(1.05, 1.1, "early_loss_ratio")) == FAILS
    assert check("7", landscape_runs(30.0, 1.0, "early_grad_diff_max")) == HOLDS
    assert check("7", landscape_runs(2.0, 1.0, "early_grad_diff_max")) == FAILS


def test_claim_8():
    def runs(bn_below: int):
        steps = [{"arm": arm, "seed": 0, "step": s,
                  "beta_eff": (1.0 if (arm == "batchnorm") == (s < bn_below) else 2.0)}
                 for arm in ("standard", "batchnorm") for s in range(8)]
        return {"landscape": frame({"standard": {}, "batchnorm": {}}, seeds=(0,)),
                StepTable("landscape", STEPS): pd.DataFrame(steps)}
    assert check("8", runs(7)) == HOLDS  # 7 of 8 steps
    assert check("8", runs(4)) == FAILS


def test_claim_9():
    def runs(lp_acc, l1_loss):
        vgg = {"standard": {"final_train_acc_last100": 0.3}, "batchnorm": {"final_train_acc_last100": 0.7}}
        vgg |= {a: {"final_train_acc_last100": lp_acc} for a in ("l1", "l2", "linf")}
        dln = {"batchnorm": {"final_train_loss": 100.0}, "l1": {"final_train_loss": l1_loss}}
        return {"lp-norm": frame(vgg), "lp-norm-dln": frame(dln)}
    assert check("9", runs(0.6, 50.0)) == HOLDS
    assert check("9", runs(0.6, 500.0)) == FAILS
    assert check("9", runs(0.35, 50.0)) == FAILS
    assert check("9", runs(0.6, 99.95)) == TIE  # below batchnorm's 100 by 0.05%: within the 0.1% of a tie
    assert check("9", runs(0.6, 100.05)) == TIE
    assert check("9", runs(0.6, 100.2)) == FAILS


def test_claim_10():
    def runs(bn):
        cols = ("early_grad_diff_max", "late_grad_diff_max", "early_beta_eff", "late_beta_eff")
        return {"dln": frame({"standard-lr1e-6": {c: 10.0 for c in cols}, "batchnorm-lr1e-6": {c: bn for c in cols}})}
    assert check("10", runs(1.0)) == HOLDS
    assert check("10", runs(20.0)) == FAILS


def test_missing_experiments_are_not_measured_with_a_reason():
    verdicts = evaluate_claims({})
    assert len(verdicts) == len(CLAIMS) and all(v.verdict == NOT_MEASURED for _, v in verdicts)
    assert verdicts[0][1].measured == "waiting for lr (no results yet)"


def test_a_claim_holds_only_if_every_seed_agrees():
    runs = lr_runs(0.40, 0.70, 0.10, 0.65)["lr"]
    runs.loc[(runs.arm == "batchnorm-lr0.1") & (runs.seed == 1), "final_train_acc_last100"] = 0.41
    assert check("1", {"lr": runs}) == FAILS


def test_claim_11():
    runs = lambda bn: {"curvature": frame({"standard": {"early_lambda_max": 50.0},
                                           "batchnorm": {"early_lambda_max": bn}})}
    assert check("11 (ours, beyond the paper)", runs(10.0)) == HOLDS
    assert check("11 (ours, beyond the paper)", runs(80.0)) == FAILS


def test_a_verdict_names_its_preset_and_is_never_given_at_a_scale_its_rule_does_not_accept():
    claim = next(c for c in CLAIMS if c.number == "1")
    quick = evaluate(claim, lr_runs(0.40, 0.70, 0.10, 0.65))
    assert quick.verdict == HOLDS and quick.presets == ("quick",)
    smoke = {"lr": lr_runs(0.40, 0.70, 0.10, 0.65)["lr"].assign(preset="smoke")}
    verdict = evaluate(claim, smoke)
    assert verdict.verdict == NOT_MEASURED and verdict.presets == ("smoke",)
    assert "not smoke" in verdict.measured and "train acc at LR 0.1" in verdict.measured  # the numbers still shown


def test_a_claim_says_which_experiment_it_waits_for():
    claim = next(c for c in CLAIMS if c.number == "5")
    assert evaluate(claim, {"ics": frame({})}).measured == "waiting for dln (no results yet)"


def test_claims_find_their_runs_by_configuration_whatever_the_arms_are_named():
    """A sweep would name arms 'batchnorm-lr1e-06' (and a user anything): rules ask for norm and LR, not names."""
    summaries = {"lr": lr_runs(0.40, 0.70, 0.10, 0.65)["lr"], **ics_runs(2.0, 0.5, 0.1), **noisy_runs(0.65, 0.1)}
    renamed = {name: table.assign(arm=table.arm.map(lambda a: f"renamed-{abs(hash(a)) % 10**6}"))
               for name, table in summaries.items()}
    for number in ("1", "3", "5"):
        assert check(number, summaries) == HOLDS and check(number, renamed) == HOLDS


def test_a_query_that_matches_two_runs_of_a_seed_is_not_guessed():
    lr = lr_runs(0.40, 0.70, 0.10, 0.65)["lr"]
    doubled = pd.concat([lr, lr[lr.arm == "batchnorm-lr0.1"].assign(arm="batchnorm-again")])
    verdict = evaluate(next(c for c in CLAIMS if c.number == "1"), {"lr": doubled})
    assert (verdict.verdict == NOT_MEASURED
            and "several runs of one seed have norm = batch, lr = 0.1" in verdict.measured)


# ----------------------------------------------------------------------------------------------
# Claim 12 (controls): arms by norm and init, each at its own LR grid
# ----------------------------------------------------------------------------------------------
GRIDS = {("none", "glorot"): (0.01, 0.03, 0.1), ("none", "kaiming"): (0.003, 0.01, 0.03),
         ("batch", "glorot"): (0.01, 0.03, 0.1, 1.0), ("batch", "kaiming"): (0.01, 0.03, 0.1, 1.0)}
WORD = {"none": "standard", "batch": "batchnorm"}


def controls(values, seeds=(0, 1)) -> dict:
    """A controls summary: every (norm, init, lr) of GRIDS for every seed. `values(norm, init, lr, seed)` -> the
    run's columns; defaults: completes, trains best at the middle of its grid, and every probe column filled."""
    rows = []
    for (norm, init), grid in GRIDS.items():
        for lr in grid:
            for seed in seeds:
                base = {"arm": f"{WORD[norm]}-{init}-lr{lr:g}", "seed": seed, "norm": norm, "init": init, "lr": lr,
                        "steps": 500, "preset": "quick", "dataset": "CIFAR-10 (test)", "status": "complete",
                        "diverged_at": None, "final_train_acc_last100": 0.5 if lr == grid[1] else 0.3,
                        "left_chance_at": 10.0, "early_grad_diff_max": 1.0, "beta_eff_median": 1.0,
                        "late_eta_lambda": 1.9, "identity_error_median": 0.001, "early_eff_step": 0.1,
                        "late_eff_step": 0.05}
                rows.append(base | values(norm, init, lr, seed))
    return {"controls": pd.DataFrame(rows)}


def same(norm, init, lr, seed):
    return {}


def test_claim_12a_kaiming_no_bn_leaves_chance_early_at_its_best_lr():
    assert check("12a (ours)", controls(same)) == HOLDS  # step 10 of 500: 2%
    late = lambda norm, init, lr, seed: ({"left_chance_at": 40.0}
                                         if (norm, init, lr) == ("none", "kaiming", 0.01) else {})
    assert check("12a (ours)", controls(late)) == FAILS  # 8% at its best LR
    elsewhere = lambda norm, init, lr, seed: ({"left_chance_at": 40.0}
                                              if (norm, init, lr) == ("none", "kaiming", 0.03) else {})
    assert check("12a (ours)", controls(elsewhere)) == HOLDS  # not its best LR: not what the rule reads
    never = lambda norm, init, lr, seed: ({"left_chance_at": float("nan")}
                                          if (norm, init, lr, seed) == ("none", "kaiming", 0.01, 1) else {})
    assert check("12a (ours)", controls(never)) == FAILS


def test_claim_12a_best_lr_is_one_per_arm_and_a_diverged_run_counts_as_chance():
    # seed 1 would pick 0.03, but the mean over seeds picks 0.01: both seeds are judged at 0.01
    luck = lambda norm, init, lr, seed: ({"final_train_acc_last100": 0.6, "left_chance_at": 100.0}
                                         if (norm, init, lr, seed) == ("none", "kaiming", 0.03, 1) else
                                         {"left_chance_at": 100.0} if (norm, init, lr) == ("none", "kaiming", 0.03)
                                         else {})
    assert check("12a (ours)", controls(luck)) == HOLDS
    diverged = lambda norm, init, lr, seed: ({"status": "diverged", "final_train_acc_last100": 0.9}
                                             if (norm, init, lr) == ("none", "kaiming", 0.03) else
                                             {"left_chance_at": 100.0} if (norm, init, lr) == ("none", "kaiming", 0.01)
                                             else {})
    assert check("12a (ours)", controls(diverged)) == FAILS  # 0.9 before diverging does not make 0.03 the best


def test_claim_12b_needs_both_inits():
    bn_smooth = lambda norm, init, lr, seed: {"early_grad_diff_max": 0.2} if norm == "batch" else {}
    assert check("12b (ours)", controls(bn_smooth)) == HOLDS  # 5x
    only_glorot = lambda norm, init, lr, seed: ({"early_grad_diff_max": 0.2}
                                                if (norm, init) == ("batch", "glorot") else {})
    assert check("12b (ours)", controls(only_glorot)) == FAILS


def test_claim_12c_ratio_grows_toward_no_bn_largest_stable_lr():
    def growing(norm, init, lr, seed):
        # standard stops training above the middle of its grid: its largest stable LR is grid[1]
        stops = {"final_train_acc_last100": 0.1} if norm == "none" and lr > GRIDS[(norm, init)][1] else {}
        return stops | ({"beta_eff_median": 10 * lr} if norm == "none" else {"beta_eff_median": 0.01})
    assert check("12c (ours)", controls(growing)) == HOLDS
    shrinking = lambda norm, init, lr, seed: growing(norm, init, lr, seed) | (
        {"beta_eff_median": 1 / lr} if norm == "none" else {})
    assert check("12c (ours)", controls(shrinking)) == FAILS
    never = lambda norm, init, lr, seed: {"final_train_acc_last100": 0.1} if norm == "none" else {}
    assert check("12c (ours)", controls(never)) == NOT_MEASURED  # no init where standard trains at 2 shared LRs


def test_claim_12d_every_run_that_trains_settles_below_2_2():
    assert check("12d (ours)", controls(same)) == HOLDS
    above = lambda norm, init, lr, seed: {"late_eta_lambda": 2.5} if (norm, lr, seed) == ("batch", 1.0, 1) else {}
    assert check("12d (ours)", controls(above)) == FAILS
    untrained = lambda norm, init, lr, seed: ({"late_eta_lambda": 2.5, "final_train_acc_last100": 0.15}
                                              if (norm, lr, seed) == ("batch", 1.0, 1) else {})
    assert check("12d (ours)", controls(untrained)) == HOLDS  # a run that does not train is not judged
    unconverged = lambda norm, init, lr, seed: {"late_eta_lambda": float("nan")} if (norm, lr) == ("none", 0.01) else {}
    assert check("12d (ours)", controls(unconverged)) == FAILS  # no eigenvalue: not shown to settle


def test_claim_12e_identity_and_falling_effective_step():
    assert check("12e (ours)", controls(same)) == HOLDS
    off = lambda norm, init, lr, seed: {"identity_error_median": 0.02} if (norm, lr) == ("batch", 0.03) else {}
    assert check("12e (ours)", controls(off)) == FAILS
    rises = lambda norm, init, lr, seed: {"late_eff_step": 0.2} if (norm, init, lr) == ("batch", "kaiming", 1.0) else {}
    assert check("12e (ours)", controls(rises)) == FAILS
    no_bn = lambda norm, init, lr, seed: ({"identity_error_median": float("nan"), "late_eff_step": 0.2}
                                          if norm == "none" else {})
    assert check("12e (ours)", controls(no_bn)) == HOLDS  # the identity is BN's: runs without it are not judged


def spectrum(std_outliers, bn_train, bn_eval, std_share=0.6, bn_share=0.2) -> dict:
    return {"spectrum": frame({"standard": {"mid_outliers_train": std_outliers, "mid_share_train": std_share},
                               "batchnorm": {"mid_outliers_train": bn_train, "mid_outliers_eval": bn_eval,
                                             "mid_share_train": bn_share}})}


def test_claims_12f_to_12h():
    assert check("12f (ours)", spectrum(7, 1, 8)) == HOLDS
    assert check("12f (ours)", spectrum(4, 1, 8)) == FAILS  # too few without BN
    assert check("12f (ours)", spectrum(7, 3, 8)) == FAILS  # too many with BN
    assert check("12g (ours)", spectrum(7, 1, 8)) == HOLDS
    assert check("12g (ours)", spectrum(7, 1, 8, std_share=0.1)) == FAILS
    assert check("12h (ours)", spectrum(7, 1, 8)) == HOLDS
    assert check("12h (ours)", spectrum(7, 1, 4)) == FAILS
    assert check("12h (ours)", {}) == NOT_MEASURED


# ----------------------------------------------------------------------------------------------
# Claims 1b, 6b, 13a-d (ours), and runs found by configuration in any experiment
# ----------------------------------------------------------------------------------------------
def test_claim_1b_counts_steps_to_sixty_percent_and_never_as_infinitely_many():
    runs = lambda std, bn: {"lr": frame({"standard-lr0.1": {"reached_at": std}, "batchnorm-lr0.1": {"reached_at": bn}})}
    assert check("1b (ours)", runs(4000.0, 1500.0)) == HOLDS
    assert check("1b (ours)", runs(float("nan"), 9000.0)) == HOLDS  # standard never reaches it
    assert check("1b (ours)", runs(4000.0, 2500.0)) == FAILS
    assert check("1b (ours)", runs(float("nan"), float("nan"))) == FAILS


def test_claim_6b_needs_an_overshoot_not_only_a_wider_range():
    assert check("6b (ours)", landscape_runs(3.0, 1.2, "early_overshoot")) == HOLDS
    assert check("6b (ours)", landscape_runs(0.9, 0.8, "early_overshoot")) == FAILS  # a steep descent, no overshoot
    assert check("6b (ours)", landscape_runs(1.1, 1.3, "early_overshoot")) == FAILS


def test_claims_13a_and_13b_read_the_filter_normalized_probe():
    assert check("13a (ours)", landscape_runs(2.0, 1.1, "filter_early_loss_ratio")) == HOLDS
    assert check("13a (ours)", landscape_runs(1.0, 1.1, "filter_early_loss_ratio")) == FAILS
    assert check("13b (ours)", landscape_runs(0.9, 0.2, "filter_early_rel_grad_diff_max")) == HOLDS
    assert check("13b (ours)", landscape_runs(0.5, 0.2, "filter_early_rel_grad_diff_max")) == FAILS
    assert check("13a (ours)", landscape_runs(2.0, 1.1, "early_loss_ratio")) == NOT_MEASURED  # no filter probe


def test_claim_13c_compares_the_scale_free_beta_step_by_step():
    def runs(bn_below: int):
        steps = [{"arm": arm, "seed": 0, "step": s, "preset": "quick",
                  "beta_rel": (1.0 if (arm == "batchnorm") == (s < bn_below) else 2.0)}
                 for arm in ("standard", "batchnorm") for s in range(8)]
        return {"landscape": frame({"standard": {}, "batchnorm": {}}, seeds=(0,)),
                StepTable("landscape", FILTER_STEPS): pd.DataFrame(steps)}
    assert check("13c (ours)", runs(7)) == HOLDS
    assert check("13c (ours)", runs(4)) == FAILS


def test_claim_13d_is_claim_5_relative_to_the_gradient():
    def runs(bn_rel):
        arms = {f"{a}-lr{lr}": {f"ics_rel_l2_median_L{layer}": (1.0 if a == "standard" else bn_rel)
                                for layer in (5, 10)}
                for a in ("standard", "batchnorm") for lr in ("0.1", "0.01")}
        return {"ics": frame(arms)}
    assert check("13d (ours)", runs(0.8)) == HOLDS
    assert check("13d (ours)", runs(0.3)) == FAILS


def test_claim_3_reads_the_layers_its_two_arms_recorded_not_those_of_pooled_runs():
    """At long, runs of every experiment are pooled: a DLN run's moments at layer #24 left noisy and standard
    without that column, and the claim said 'no seed with d_mean_L24'."""
    runs = noisy_runs(0.65, 0.1)["noisy-bn"]
    other = frame({"batchnorm-lr0.01": {"final_train_acc_last100": 0.5, "d_mean_L24": 1.0, "d_var_L24": 1.0}})
    assert check("3", {"noisy-bn": pd.concat([runs, other])}) == HOLDS


def test_a_rule_finds_its_runs_by_configuration_in_another_experiment():
    """paper-figures trains each configuration once: claim 1 finds LR 0.1 and 0.5 there, claim 3 finds noisy BN."""
    lr = lr_runs(0.40, 0.70, 0.10, 0.65)["lr"]
    both = pd.concat([noisy_runs(0.65, 0.1)["noisy-bn"], lr[lr.lr == 0.5]])  # one run per configuration
    summaries = {"paper-figures": both.assign(preset="long")}
    assert evaluate(next(c for c in CLAIMS if c.number == "1"), summaries).presets == ("long",)
    assert check("1", summaries) == HOLDS and check("3", summaries) == HOLDS
    controls_claim = next(c for c in CLAIMS if c.number == "12a (ours)")
    assert evaluate(controls_claim, summaries).measured == "waiting for controls (no results yet)"  # never pooled


def test_the_share_below_says_how_much_of_it_differences_beyond_a_few_percent_decide():
    """Claims 8 and 13c: beside the share, the steps whose two values differ by more than DECIDED_RTOL and the
    exact ties the rule counts as 'not below' (claim 8's late probes sit at one ceiling)."""
    import pandas as pd

    from bnstudy.claims.paper import decided_note

    index = pd.MultiIndex.from_tuples([(0, s) for s in range(4)] + [(1, s) for s in range(4)], names=["seed", "step"])
    wide = pd.DataFrame({"standard": [20, 20, 20, 30, 20, 20, 20, 20],
                         "batchnorm": [20, 19.5, 10, 20, 20, 20, 20, 25]}, index=index)
    # seed 0: 10->20 and 20->30 differ by > 5% (2 of 4), one tie; seed 1: 20 vs 25 (1 of 4), three ties
    assert decided_note(wide) == ("; the two differ by more than 5% at 37.5% (25.0%..50.0%, n=2) of the probed steps, "
                                  "and are equal (a tie, counted as not below) at 50.0% (25.0%..75.0%, n=2)")


def stopped(summaries: dict, at: int, steps: int = 15_000) -> dict:
    """The same runs, stopped as asked at step `at` of a `steps`-step schedule (--until-step)."""
    return {name: table.assign(status="stopped", stopped_at=at, steps=steps, steps_done=at)
            for name, table in summaries.items()}


def test_a_claim_reading_the_whole_run_is_not_measured_on_runs_stopped_before_their_end():
    verdict = evaluate(next(c for c in CLAIMS if c.number == "1"), stopped(lr_runs(0.40, 0.70, 0.10, 0.65), 3750))
    assert verdict.verdict == NOT_MEASURED and verdict.measured.startswith("stopped at 3,750 of 15,000 (")


def test_a_first_quarter_claim_is_judged_on_runs_that_reached_the_quarters_end():
    """Claims 6, 6b, 7, 11, 13a, 13b and 1b read the first quarter of the configured schedule: a run stopped at
    step 3,750 of 15,000 decides them, one stopped at 2,000 cannot."""
    runs = landscape_runs(0.5, 0.01, "early_grad_diff_max")
    assert check("7", stopped(runs, 3750)) == HOLDS
    early = evaluate(next(c for c in CLAIMS if c.number == "7"), stopped(runs, 2000))
    assert early.verdict == NOT_MEASURED and "stopped at 2,000, before the first quarter's end (3,750 of 15,000)" in \
        early.measured
    reads = {c.number: c.reads for c in CLAIMS}
    assert {n for n, r in reads.items() if r == "first quarter"} == {"1b (ours)", "6", "6b (ours)", "7",
                                                                     "11 (ours, beyond the paper)", "13a (ours)",
                                                                     "13b (ours)"}


def test_claim_1b_says_not_reached_by_the_step_a_stopped_run_got_to():
    runs = {"lr": frame({"standard-lr0.1": {"reached_at": float("nan")}, "batchnorm-lr0.1": {"reached_at": 500.0}})}
    verdict = evaluate(next(c for c in CLAIMS if c.number == "1b (ours)"), stopped(runs, 3750))
    assert verdict.verdict == HOLDS and "standard not reached by step 3,750 (n=2)" in verdict.measured


def test_no_claim_pools_two_widths():
    """Two widths at one preset are two scales, each judged on its own runs (report.by_preset)."""
    from bnstudy.report import by_preset

    narrow = landscape_runs(0.5, 0.01, "early_grad_diff_max")["landscape"].assign(width=0.125)
    wide = landscape_runs(0.01, 0.5, "early_grad_diff_max")["landscape"].assign(width=1.0)
    scales = by_preset({"landscape": pd.concat([narrow, wide], ignore_index=True)})
    assert sorted(scales) == ["quick (width 0.125)", "quick (width 1)"]
    assert check("7", scales["quick (width 0.125)"]) == HOLDS and check("7", scales["quick (width 1)"]) == FAILS
    assert list(by_preset({"landscape": narrow})) == ["quick"]  # one width: the preset's own name


def test_claim_3_without_recorded_moments_is_not_measured():
    """Found: a report of some experiments alone (noisy and standard runs of an experiment that recorded no
    activations) concatenated nothing and crashed."""
    accuracy = {"standard": 0.3, "batchnorm": 0.7, "noisy-batchnorm": 0.68}
    runs = {"noisy-bn": frame({arm: {"final_train_acc_last100": acc} for arm, acc in accuracy.items()})}
    verdict = evaluate(next(c for c in CLAIMS if c.number == "3"), runs)
    assert verdict.verdict == NOT_MEASURED and "no activation moments" in verdict.measured
