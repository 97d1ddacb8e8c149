"""The width ladder: each claim's deciding number per seed and width, read from the rules' own verdicts, one width at a
time; its REPORT.md table and figures."""
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from bnstudy.claims import CLAIMS, HOLDS, evaluate
from bnstudy.claims.ladder import ladder_points, ladder_scales, width_label, width_of
from bnstudy.report import by_preset, column_head, judge, ladder_section, preset_of
from figure_layout import layout_defects
from test_claims import frame, landscape_runs, stopped


def claim(number: str):
    return next(c for c in CLAIMS if c.number == number)


def two_widths(narrow_ratio: float, wide_ratio: float) -> dict:
    """Claim 7's statistic at width 1/8 (preset long) and width 1 (preset paper, stopped at 3,750 of 15,000)."""
    narrow = landscape_runs(narrow_ratio, 1.0, "early_grad_diff_max")["landscape"].assign(width=0.125, preset="long")
    wide = stopped(landscape_runs(wide_ratio, 1.0, "early_grad_diff_max"), 3750)["landscape"]
    return {"landscape": pd.concat([narrow, wide.assign(width=1.0, preset="paper")], ignore_index=True)}


def rungs_and_verdicts(summaries: dict):
    split = by_preset(summaries)
    judged = judge(split)
    return split, judged, ladder_scales({s: width_of(c) for s, c in split.items()}, preset_of)


def test_each_width_is_judged_and_plotted_on_its_own_runs():
    split, judged, rungs = rungs_and_verdicts(two_widths(50.0, 2.0))
    assert rungs == {"long": 0.125, "paper": 1.0}
    points = ladder_points(judged, rungs, preset_of)
    seven = points[points.claim == "7"].set_index(["width", "seed"])
    assert seven.value.to_dict() == {(0.125, 0): 50.0, (0.125, 1): 50.0, (1.0, 0): 2.0, (1.0, 1): 2.0}
    assert seven.verdict.xs(0.125).eq(HOLDS).all() and not seven.verdict.xs(1.0).eq(HOLDS).any()
    assert set(points.claim) == {"7"}  # the other claims are not measured on these runs: no points


@pytest.mark.parametrize("number, column, holding, failing", [
    ("6", "early_loss_ratio", (1.5, 1.1), (1.05, 1.1)),
    ("7", "early_grad_diff_max", (30.0, 1.0), (2.0, 1.0)),
    ("13a (ours)", "filter_early_loss_ratio", (1.5, 1.1), (1.0, 1.1)),
    ("13b (ours)", "filter_early_rel_grad_diff_max", (4.0, 1.0), (2.9, 1.0)),
])
def test_the_plotted_statistic_is_the_one_the_rule_compares_with_its_threshold(number, column, holding, failing):
    for (std, bn), expected in ((holding, True), (failing, False)):
        verdict = evaluate(claim(number), landscape_runs(std, bn, column))
        stat = claim(number).statistic
        assert np.allclose(verdict.values, std / bn)
        assert (verdict.verdict == HOLDS) == bool((verdict.values >= stat.threshold).all()) == expected


def test_claim_11s_statistic_is_standard_over_batchnorm():
    runs = {"curvature": frame({"standard": {"early_lambda_max": 30.0}, "batchnorm": {"early_lambda_max": 60.0}})}
    verdict = evaluate(claim("11 (ours, beyond the paper)"), runs)
    assert verdict.verdict != HOLDS and np.allclose(verdict.values, 0.5)


def test_claim_1bs_statistic_is_batchnorms_steps_over_standards_and_says_who_never_reached():
    reached = {"standard-lr0.1": {"reached_at": float("nan")}, "batchnorm-lr0.1": {"reached_at": 500.0}}
    verdict = evaluate(claim("1b (ours)"), {"lr": frame(reached)})
    assert verdict.verdict == HOLDS and (verdict.values == 0).all()  # standard never: 500 / inf
    reached = {"standard-lr0.1": {"reached_at": 400.0}, "batchnorm-lr0.1": {"reached_at": float("nan")}}
    assert np.isinf(evaluate(claim("1b (ours)"), {"lr": frame(reached)}).values).all()
    reached = {"standard-lr0.1": {"reached_at": 1000.0}, "batchnorm-lr0.1": {"reached_at": 600.0}}
    verdict = evaluate(claim("1b (ours)"), {"lr": frame(reached)})
    assert verdict.verdict != HOLDS and np.allclose(verdict.values, 0.6)


def test_the_report_section_tables_every_width_and_draws_a_readable_figure_per_statistic(tmp_path):
    split, judged, _ = rungs_and_verdicts(two_widths(50.0, 2.0))
    text = "\n".join(ladder_section(judged, split, tmp_path, figures=True))
    assert "| # | claim | width 1/8 (long) | width 1 (paper, stopped at step 3,750) |" in text
    row = next(line for line in text.splitlines() if line.startswith("| 7 |"))
    assert "✅" in row.split("|")[3] and "❌" in row.split("|")[4]
    assert "| 10 |" not in text and "| 12a (ours) |" not in text  # no DLN-only claim, none measured at no width
    figure = tmp_path / "figures" / "ladder-claim-7.png"
    assert figure.is_file() and "(figures/ladder-claim-7.png)" in text
    assert [p.name for p in (tmp_path / "figures").iterdir()] == ["ladder-claim-7.png"]


def test_without_drawing_the_report_links_the_ladder_figures_already_drawn(tmp_path):
    """`bnstudy report --no-figures` keeps REPORT.md's links to the figures on disk, as it does each experiment's;
    a claim's figure that was never drawn is not linked."""
    split, judged, _ = rungs_and_verdicts(two_widths(50.0, 2.0))
    assert "ladder-claim-7" not in "\n".join(ladder_section(judged, split, tmp_path, figures=False))
    ladder_section(judged, split, tmp_path, figures=True)
    text = "\n".join(ladder_section(judged, split, tmp_path, figures=False))
    assert "![width ladder ladder-claim-7](figures/ladder-claim-7.png)" in text


def test_claims_on_networks_without_a_width_stay_off_the_ladder(tmp_path):
    """The MNIST MLP's runs (no VGG width) count at every width's scale, so claim 14a is measured at each: the ladder
    leaves it out rather than repeat one verdict as if width had been varied."""
    mlp = frame({"standard": {"test_reached_at": 3000.0}, "batchnorm": {"test_reached_at": 1000.0}})
    summaries = two_widths(50.0, 2.0) | {"ioffe-mnist": mlp.assign(lr=0.5, width=np.nan)}
    split, judged, rungs = rungs_and_verdicts(summaries)
    assert all(verdict.verdict == HOLDS for scale in rungs for c, verdict in judged[scale] if c.number == "14a")
    text = "\n".join(ladder_section(judged, split, tmp_path, figures=False))
    assert "| 7 |" in text and "| 14a |" not in text


def test_the_ladder_figure_is_laid_out_and_names_undrawn_values():
    from bnstudy.plots.ladder import ladder_figure

    points = pd.DataFrame({"claim": "1b (ours)", "width": [0.125, 0.125, 0.25], "preset": "long", "seed": [0, 1, 0],
                           "value": [0.2, math.inf, 0.3], "verdict": "does not hold"})
    fig = ladder_figure(points, claim("1b (ours)"), "a caption")
    try:
        assert layout_defects(fig) == []
        assert "width 1/8 seed 1" in fig.texts[-1].get_text().replace("\n", " ")
    finally:
        plt.close(fig)


def test_one_width_makes_no_ladder(tmp_path):
    narrow = landscape_runs(50.0, 1.0, "early_grad_diff_max")["landscape"].assign(width=0.125, preset="long")
    split, judged, rungs = rungs_and_verdicts({"landscape": narrow})
    assert rungs == {"long": 0.125} and ladder_section(judged, split, tmp_path, figures=True) == []


def test_width_labels_are_fractions_of_the_papers_channels():
    assert [width_label(w) for w in (0.125, 0.25, 0.5, 1.0)] == ["1/8", "1/4", "1/2", "1"]


def test_the_readmes_columns_name_each_scales_width_and_stop():
    split, _, _ = rungs_and_verdicts(two_widths(50.0, 2.0))
    assert [column_head(scale, split[scale]) for scale in split] == [
        "long (width 0.125)", "paper (width 1, stopped at step 3,750)"]
    assert column_head("quick", {}) == "quick"  # no runs with a width (the DLN's alone): the preset
