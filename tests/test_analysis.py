"""Derived numbers on small hand-made frames."""
import math

import pandas as pd
import pytest

from bnstudy.analysis import landscape_summary, largest_trainable_lr, phase, phase_medians, sweep_table
from bnstudy.config import load_experiment


def probe_rows(arm, step, loss0, g_norm, per_eta):
    rows = [dict(arm=arm, seed=0, step=step, probe="landscape", layer=0, eta=0.0, metric="loss", value=loss0),
            dict(arm=arm, seed=0, step=step, probe="landscape", layer=0, eta=0.0, metric="grad_norm", value=g_norm)]
    for eta, loss, grad_diff in per_eta:
        rows += [dict(arm=arm, seed=0, step=step, probe="landscape", layer=0, eta=eta, metric=m, value=v)
                 for m, v in (("loss", loss), ("grad_diff", grad_diff), ("step_norm", eta * g_norm))]
    return rows


def test_landscape_summary_bands_and_beta():
    frame = pd.DataFrame(probe_rows("a", 0, 2.0, 4.0, [(0.1, 1.5, 0.8), (0.2, 1.9, 2.4)]))
    row = landscape_summary(frame).iloc[0]
    assert (row.loss_min, row.loss_max, row.grad_diff_min, row.grad_diff_max) == (1.5, 1.9, 0.8, 2.4)
    assert row.beta_eff == pytest.approx(max(0.8 / 0.4, 2.4 / 0.8))
    assert (row.loss_at_w, row.grad_norm) == (2.0, 4.0)


@pytest.mark.parametrize("curvature,cancels", [
    (1 / 0.05, True),    # a quadratic whose smallest step lands on grad L = 0: beta reads 1/eta_min
    (3.0, False),        # a gentle one: the smallest step changes the gradient by 15% of g
    (2.5 / 0.05, False), # a sharp one: the smallest step overshoots, the change is 2.5 ||g||
    (math.nan, False),   # a diverged probe
])
def test_a_probe_cancels_where_the_smallest_step_takes_the_whole_gradient_away(curvature, cancels):
    # along the gradient of a quadratic of curvature c: grad L(w - eta g) = (1 - c eta) g, so the change is c eta ||g||
    etas, g_norm = (0.05, 0.1, 0.2, 0.4), 2.0
    frame = pd.DataFrame(probe_rows("a", 0, 1.0, g_norm, [(eta, 1.0, curvature * eta * g_norm) for eta in etas]))
    row = landscape_summary(frame).iloc[0]
    assert bool(row.cancels) is cancels
    if cancels:
        assert row.beta_eff == pytest.approx(1 / min(etas))


def test_early_is_the_first_quarter_of_each_runs_configured_schedule():
    """Steps 0-24 of a 100-step schedule, whether the run went to the end (a) or stopped at step 50 (b): the
    first quarter of the schedule, not of the steps probed (b's would end at step 12)."""
    frame = pd.DataFrame({"arm": ["a"] * 11 + ["b"] * 6, "seed": 0,
                          "step": list(range(0, 101, 10)) + list(range(0, 51, 10)), "x": range(17)})
    meta = pd.DataFrame({"arm": ["a", "b"], "seed": 0, "steps": 100})
    assert list(phase(frame, meta)[:11]) == ["early"] * 3 + ["late"] * 8
    assert list(phase(frame, meta)[11:]) == ["early"] * 3 + ["late"] * 3
    medians = phase_medians(frame, ["x"], meta).set_index("arm")
    assert medians.loc["a", "early_x"] == 1 and medians.loc["a", "late_x"] == 6.5
    assert medians.loc["b", "early_x"] == 12 and medians.loc["b", "late_x"] == 15


def test_sweep_table_and_largest_trainable_lr():
    meta = pd.DataFrame([
        dict(arm="s-0.1", seed=0, norm="none", lr=0.1, status="complete", diverged_at=None,
             final_train_acc_last100=0.4),
        dict(arm="s-1", seed=0, norm="none", lr=1.0, status="complete", diverged_at=None, final_train_acc_last100=0.1),
        dict(arm="b-0.1", seed=0, norm="batch", lr=0.1, status="complete", diverged_at=None,
             final_train_acc_last100=0.6),
        dict(arm="b-1", seed=0, norm="batch", lr=1.0, status="complete", diverged_at=None, final_train_acc_last100=0.5),
        dict(arm="b-10", seed=0, norm="batch", lr=10.0, status="diverged", diverged_at=3, final_train_acc_last100=0.1),
        dict(arm="n-0.1", seed=0, norm="noise-only", lr=0.1, status="complete", diverged_at=None,
             final_train_acc_last100=0.11),
    ])
    table = sweep_table(meta)
    largest = largest_trainable_lr(table)
    assert (largest["none, glorot"] == 0.1 and largest["batch, glorot"] == 1.0
            and math.isnan(largest["noise-only, glorot"]))


def test_sweep_expands_arms_by_value():
    exp = load_experiment("lr-sweep")
    assert "batchnorm-lr0.5" in exp.arms and "standard-lr2" in exp.arms
    assert exp.arms["batchnorm-lr0.5"] == {"model": {"norm": "batch"}, "train": {"lr": 0.5}}
    assert all(a.startswith(("standard-", "batchnorm-")) for a in exp.arms_for("quick"))
    assert len(exp.arms_for("quick")) == 24  # standard, batchnorm and standard-kaiming x 8 LRs


def test_curvature_rows_take_the_runs_lr_from_meta_not_from_eta():
    from bnstudy.analysis import curvature_summary

    probes = pd.DataFrame([dict(arm=arm, seed=0, step=step, probe="curvature", layer=0, eta=float("nan"), metric=m,
                                value=v)
                           for arm in ("a", "b") for step in (0, 10) for m, v in (("eig1", 3.0), ("hvps", 21))])
    meta = pd.DataFrame([{"arm": "a", "seed": 0, "lr": 0.1}, {"arm": "b", "seed": 0, "lr": 0.01}])
    table = curvature_summary(probes, meta)
    assert len(table) == 4 and dict(zip(table.arm, table.lr)) == {"a": 0.1, "b": 0.01}
    assert (table.lambda_max == 3.0).all()


def test_runs_from_before_init_was_recorded_read_their_init_from_config_json(tmp_path):
    import json

    from bnstudy.cli import main
    from bnstudy.reading import Results

    for init in ("glorot", "kaiming"):
        results = tmp_path / init
        assert main(["run", "noisy-bn", "--preset", "smoke", "--arms", "standard", "--results-dir", str(results),
                     "--no-progress", "--set", "data.dataset=synthetic", "--set", "train.steps=2",
                     "--set", f"model.init={init}"]) == 0
        meta_path = results / "noisy-bn" / "standard" / "seed-0" / "meta.json"
        meta = json.loads(meta_path.read_text())
        assert meta["init"] == init
        del meta["init"]  # as every run written before this field was
        meta_path.write_text(json.dumps(meta))
        assert list(Results(results, "noisy-bn").meta.init) == [init]


def test_spectrum_summary_counts_the_top_eigenvalues_above_the_bulk_edge():
    from bnstudy.analysis import spectrum_summary
    from bnstudy.probes.spectrum import spectrum_records

    # two start vectors: bulk nodes up to 1.0 (vector 1) and 1.2 (vector 2) with weight; isolated nodes above them
    # carry weight ~1e-6, as an outlier's Ritz value does: the bulk edge is the median of 1.0 and 1.2
    density = {"ritz": [[0.0, 0.5, 1.0, 9.0], [0.1, 1.2, 6.0, 9.0]],
               "weights": [[0.5, 0.3, 0.2 - 1e-6, 1e-6], [0.6, 0.4 - 2e-6, 1e-6, 1e-6]], "hvps": 8}
    top = {"eigenvalues": [9.0, 6.0, 1.05], "share": 0.7, "converged": False, "hvps": 5}
    rows = spectrum_records(300, "spectrum-eval", density, top, k=3)
    probes = pd.DataFrame([{"arm": "a", "seed": 0} | r for r in rows])
    summary = spectrum_summary(probes).iloc[0]
    assert summary["mode"] == "eval" and summary.step == 300
    assert summary.bulk_edge == pytest.approx(1.1) and summary.outliers == 2 and summary.lambda_max == 9.0
    assert summary.share == 0.7 and not summary.converged
