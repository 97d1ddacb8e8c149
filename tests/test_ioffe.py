"""Ioffe & Szegedy's MNIST experiment: the MLP, the measures its claims read (test accuracy reached, the sigmoid
input's drift) against hand-computed values, and the rules of claims 14a-d on hand-made summaries."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from bnstudy.analysis import StepTable
from bnstudy.analysis.activations import percentile_drift
from bnstudy.analysis.training import test_reached_at as reached_on_test
from bnstudy.claims import CLAIMS, FAILS, HOLDS, NOT_MEASURED, evaluate
from bnstudy.config import ModelConfig
from bnstudy.models import build_model

from test_claims import frame


def test_the_mlp_is_ioffe_and_szegedys_network():
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="mlp", norm="batch", init="lecun"))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 100), (100, 100), (100, 100), (100, 10)]
    assert isinstance(model.preactivation(3), nn.BatchNorm1d) and model.preactivation(4) is linears[-1]
    assert sum(isinstance(m, nn.Sigmoid) for m in model.modules()) == 3
    assert model(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    with pytest.raises(IndexError, match="layer #5 out of range"):
        model.preactivation(5)
    # "small random Gaussian values": N(0, 1/fan_in), biases zero
    assert linears[0].weight.std().item() == pytest.approx(784 ** -0.5, rel=0.02)
    assert linears[1].weight.std().item() == pytest.approx(0.1, rel=0.05) and not linears[1].bias.any()
    small = build_model(ModelConfig(kind="mlp", norm="none", init="small"))  # the literal "small" Gaussian
    assert all(m.weight.std().item() == pytest.approx(0.01, rel=0.1) for m in small.modules()
               if isinstance(m, nn.Linear))


def test_test_reached_at_is_the_first_evaluation_at_the_level():
    metrics = pd.DataFrame({"arm": "a", "seed": 0, "split": "test", "metric": "acc",
                            "step": [500, 1000, 1500, 2000], "value": [0.90, 0.951, 0.94, 0.97]})
    assert reached_on_test(metrics).test_reached_at.tolist() == [1000]
    assert np.isnan(reached_on_test(metrics.assign(value=0.5)).test_reached_at.iloc[0])


def percentiles(arm: str, median, spread: float = 1.0) -> pd.DataFrame:
    """One unit's p15, p50, p85 at steps 0, 100, ...: its median following `median`, its 15-85 spread constant."""
    rows = []
    for i, m in enumerate(median):
        for stat, v in (("p15", m - spread / 2), ("p50", m), ("p85", m + spread / 2)):
            rows.append({"arm": arm, "seed": 0, "step": 100 * i, "layer": 3, "unit": 7, "stat": stat, "value": v})
    return pd.DataFrame(rows)


def test_the_drift_is_how_far_the_median_travels_in_its_own_spreads():
    moving = percentiles("standard", [0.0, 1.0, -1.0, 2.0], spread=2.0)  # travels from -1 to 2: 3 / 2
    still = percentiles("batchnorm", [0.5, 0.5, 0.5], spread=4.0)
    drift = percentile_drift(pd.concat([moving, still])).set_index("arm").p50_drift
    assert drift.standard == pytest.approx(1.5) and drift.batchnorm == 0


def claim(number):
    return next(c for c in CLAIMS if c.number == number)


def ioffe(standard: dict, batchnorm: dict) -> dict:
    runs = frame({"standard": standard, "batchnorm": batchnorm}).assign(lr=0.5)
    return {"ioffe-mnist": runs}


def test_claim_14a():
    assert evaluate(claim("14a"), ioffe({"test_reached_at": 3000.0}, {"test_reached_at": 1000.0})).verdict == HOLDS
    assert evaluate(claim("14a"), ioffe({"test_reached_at": np.nan}, {"test_reached_at": 1000.0})).verdict == HOLDS
    assert evaluate(claim("14a"), ioffe({"test_reached_at": 1000.0}, {"test_reached_at": 1000.0})).verdict == FAILS
    never = evaluate(claim("14a"), ioffe({"test_reached_at": 1000.0}, {"test_reached_at": np.nan}))
    assert never.verdict == FAILS and "batchnorm never (n=2)" in never.measured


def test_claim_14b():
    assert evaluate(claim("14b"), ioffe({"p50_drift_L3": 2.0}, {"p50_drift_L3": 0.5})).verdict == HOLDS
    assert evaluate(claim("14b"), ioffe({"p50_drift_L3": 0.8}, {"p50_drift_L3": 0.1})).verdict == FAILS  # no drift
    assert evaluate(claim("14b"), ioffe({"p50_drift_L3": 2.0}, {"p50_drift_L3": 1.5})).verdict == FAILS  # BN's too
    assert evaluate(claim("14b"), ioffe({"x": 1}, {"x": 1})).verdict == NOT_MEASURED


def ics(l2_std, cos_std, l2_bn, cos_bn) -> dict:
    columns = lambda l2, cos: {f"ics_l2_median_L{k}": l2 for k in (1, 2, 3)} | {
        f"ics_cosine_median_L{k}": cos for k in (1, 2, 3)} | {"ics_l2_median_L1": 0.0, "ics_cosine_median_L1": 1.0}
    return ioffe(columns(l2_std, cos_std), columns(l2_bn, cos_bn))


def test_claim_14c_reads_the_hidden_layers_past_the_first():
    assert evaluate(claim("14c (ours)"), ics(0.5, 0.8, 0.1, 0.95)).verdict == HOLDS  # layer #1's 0 = 0 is not read
    verdict = evaluate(claim("14c (ours)"), ics(0.01, 0.999, 0.1, 0.9))
    assert verdict.verdict == FAILS and "#2:" in verdict.measured and "#1:" not in verdict.measured


def test_claim_14d_needs_both_claim_7s_and_claim_8s_rules():
    def runs(change_std, beta_std):
        summary = ioffe({"early_grad_diff_max": change_std}, {"early_grad_diff_max": 1.0})
        steps = pd.DataFrame([{"arm": arm, "seed": seed, "step": step, "beta_eff": beta}
                              for seed in (0, 1) for step in (0, 500, 1000, 1500)
                              for arm, beta in (("standard", beta_std), ("batchnorm", 2.0))])
        return summary | {StepTable("ioffe-mnist", "steps"): steps}

    assert evaluate(claim("14d (ours)"), runs(4.0, 5.0)).verdict == HOLDS
    assert evaluate(claim("14d (ours)"), runs(2.0, 5.0)).verdict == FAILS  # gradient change under 3x
    assert evaluate(claim("14d (ours)"), runs(4.0, 1.0)).verdict == FAILS  # BN's beta not below
