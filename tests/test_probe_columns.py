"""The names that hold probes, analysis and claims together: every probe's rows pinned (names and order: results
folders already written must read the same), and every column a claim reads made by run_summary from those rows."""
import math

import pandas as pd
import pytest

from bnstudy.analysis import StepTable, run_summary, step_tables
from bnstudy.claims import CLAIMS, FAILS, HOLDS, TIE, evaluate
from bnstudy.probes.curvature import curvature_records
from bnstudy.probes.ics import ics_records
from bnstudy.probes.landscape import landscape_records
from bnstudy.probes.spectrum import spectrum_records
from bnstudy.probes.weights import weights_records

NAN = float("nan")
COLUMNS = ["step", "probe", "layer", "eta", "metric", "value"]


def flat(rows: list[dict]) -> list[tuple]:
    assert all(list(r) == COLUMNS for r in rows)  # probes.csv's columns, in its order
    return [tuple(r.values()) for r in rows]


def test_the_landscape_rows_are_the_loss_and_gradient_at_w_then_three_metrics_per_eta():
    measured = [{"eta": eta, "loss": 1.0 + eta, "grad_diff": 2.0 + eta, "grad_norm": 3.0, "step_norm": 10 * eta,
                 "loss0": 4.0} for eta in (0.1, 0.2)]
    assert flat(landscape_records(7, measured, "landscape-filter")) == [
        (7, "landscape-filter", 0, 0.0, "loss", 4.0), (7, "landscape-filter", 0, 0.0, "grad_norm", 3.0),
        (7, "landscape-filter", 0, 0.1, "loss", 1.1), (7, "landscape-filter", 0, 0.1, "grad_diff", 2.1),
        (7, "landscape-filter", 0, 0.1, "step_norm", 1.0), (7, "landscape-filter", 0, 0.2, "loss", 1.2),
        (7, "landscape-filter", 0, 0.2, "grad_diff", 2.2), (7, "landscape-filter", 0, 0.2, "step_norm", 2.0)]


def test_the_ics_curvature_and_weights_rows():
    shift = [{"layer": 5, "l2": 1.0, "cosine": 0.5, "rel_l2": 0.1}, {"layer": 10, "l2": 2.0, "cosine": 0.6,
                                                                      "rel_l2": 0.2}]
    assert flat(ics_records(3, shift)) == [
        (3, "ics", 5, None, "l2", 1.0), (3, "ics", 5, None, "cosine", 0.5), (3, "ics", 5, None, "rel_l2", 0.1),
        (3, "ics", 10, None, "l2", 2.0), (3, "ics", 10, None, "cosine", 0.6), (3, "ics", 10, None, "rel_l2", 0.2)]
    rows = flat(curvature_records(3, [9.0, NAN], 21))
    assert rows[0] == (3, "curvature", 0, None, "eig1", 9.0) and rows[2] == (3, "curvature", 0, None, "hvps", 21)
    assert rows[1][:5] == (3, "curvature", 0, None, "eig2") and math.isnan(rows[1][5])
    assert flat(weights_records(3, [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]], 0.5)) == [
        (3, "weights", 1, None, "w_norm", 1.0), (3, "weights", 1, None, "grad_norm", 2.0),
        (3, "weights", 1, None, "grad_dot_w", 3.0), (3, "weights", 1, None, "sq_norm_change", 4.0),
        (3, "weights", 2, None, "w_norm", 5.0), (3, "weights", 2, None, "grad_norm", 6.0),
        (3, "weights", 2, None, "grad_dot_w", 7.0), (3, "weights", 2, None, "sq_norm_change", 8.0),
        (3, "weights", 0, None, "logit_std", 0.5)]


def test_the_spectrum_rows_are_each_vectors_quadrature_then_the_top_k():
    density = {"ritz": [[0.0, 1.0], [0.5, 2.0]], "weights": [[0.6, 0.4], [0.7, 0.3]], "hvps": 8}
    top = {"eigenvalues": [2.0, 1.0], "share": 0.7, "converged": True, "hvps": 5}
    probe = "spectrum-eval"
    assert flat(spectrum_records(300, probe, density, top, k=2)) == [
        (300, probe, 1, None, "theta_000", 0.0), (300, probe, 1, None, "tau_000", 0.6),
        (300, probe, 1, None, "theta_001", 1.0), (300, probe, 1, None, "tau_001", 0.4),
        (300, probe, 2, None, "theta_000", 0.5), (300, probe, 2, None, "tau_000", 0.7),
        (300, probe, 2, None, "theta_001", 2.0), (300, probe, 2, None, "tau_001", 0.3),
        (300, probe, 0, None, "top1", 2.0), (300, probe, 0, None, "top2", 1.0),
        (300, probe, 0, None, "share_top2", 0.7), (300, probe, 0, None, "converged", 1.0),
        (300, probe, 0, None, "hvps", 13)]


# ----------------------------------------------------------------------------------------------
# Every claim reaches a verdict on run summaries built from the rows the probes write
# ----------------------------------------------------------------------------------------------
STEPS = 40  # each run's length; probes every 10 steps, so each has an early and a late phase
PROBED = range(0, STEPS + 1, 10)


def probe_rows(scale: float, lr: float) -> list[dict]:
    """One run's rows of every probe, each number scaled by `scale` (a run's own numbers)."""
    rows = []
    for step in PROBED:
        for probe, etas in (("landscape", (0.1, 0.2)), ("landscape-filter", (0.01, 0.02))):
            rows += landscape_records(step, [{"eta": eta, "loss": 2.0 + scale * eta, "grad_diff": scale * (1 + eta),
                                              "grad_norm": 1.0, "step_norm": eta, "loss0": 2.0} for eta in etas],
                                      probe)
        rows += ics_records(step, [{"layer": layer, "l2": scale, "cosine": 0.5, "rel_l2": scale / 10}
                                   for layer in (5, 10, 17)])
        rows += curvature_records(step, [scale * 10, scale], 21)
        rows += weights_records(step, [[10.0 - step / 10, scale, 0.0, lr ** 2 * scale ** 2] for _ in range(3)], 1.0)
        for mode in ("train", "eval"):
            density = {"ritz": [[0.0, 1.0, 5.0 * scale]] * 2, "weights": [[0.5, 0.5, 1e-6]] * 2, "hvps": 3}
            top = {"eigenvalues": [5.0 * scale, 2.0, 0.5], "share": scale / 10, "converged": True, "hvps": 9}
            rows += spectrum_records(step, f"spectrum-{mode}", density, top, k=3)
    return rows


def run_tables(arm: str, seed: int, scale: float, lr: float) -> dict[str, list[dict]]:
    """probes, metrics and activations rows of one run, tagged with its arm and seed as reading tags them."""
    acc = [{"step": step, "split": "train", "metric": "acc", "value": min(0.9, 0.1 + step / STEPS)}
           for step in range(STEPS)]
    acc += [{"step": step, "split": "test", "metric": "acc", "value": min(0.99, 0.5 + step / STEPS)}
            for step in PROBED]
    offset = {"mean": 0.0, "var": 1.0, "p15": -1.0, "p50": 0.0, "p85": 1.0}
    acts = [{"step": step, "layer": layer, "unit": 0, "stat": stat, "value": scale * (step + 1) + offset[stat]}
            for step in (0, 1, 10, 11) for layer in (2, 9) for stat in offset]
    tables = {"probes": probe_rows(scale, lr), "metrics": acc, "activations": acts}
    return {name: [{"arm": arm, "seed": seed} | row for row in rows] for name, rows in tables.items()}


def summarized(configurations: list[dict]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """run_summary of two seeds of each configuration (norm, lr, init), and the landscape's step tables."""
    meta, tables = [], {"probes": [], "metrics": [], "activations": []}
    for i, config in enumerate(configurations):
        arm = f"{config['norm']}-{config['init']}-lr{config['lr']}"
        for seed in (0, 1):
            meta.append({"arm": arm, "seed": seed, "steps": STEPS, "preset": "paper", "dataset": "synthetic",
                         "status": "complete", "diverged_at": None, "final_train_acc_last100": 0.5 + i / 100,
                         "final_test_acc": 0.8, "final_train_loss": 1.0 + i} | config)
            for name, rows in run_tables(arm, seed, 1.0 + i, config["lr"]).items():
                tables[name] += rows
    frames = {name: pd.DataFrame(rows) for name, rows in tables.items()}
    frames["probes"] = frames["probes"].astype({"eta": "float64"})
    summary = run_summary(pd.DataFrame(meta), frames)
    return summary, step_tables(frames["probes"], summary)


def keyed(experiment: str, tables: tuple[pd.DataFrame, dict[str, pd.DataFrame]]) -> dict:
    """An experiment's summary and step tables, keyed as report.collect keys them."""
    summary, steps = tables
    return {experiment: summary} | {StepTable(experiment, name): table for name, table in steps.items()}


def grid(norms, lrs, inits=("glorot",)) -> list[dict]:
    return [{"norm": norm, "lr": lr, "init": init} for norm in norms for lr in lrs for init in inits]


@pytest.fixture(scope="module")
def summaries() -> dict:
    vgg = summarized(grid(("none", "batch", "noisy-batch", "noise-only", "l1", "l2", "linf"), (0.1, 0.5, 0.01)))
    found = {}
    for experiment in ("lr", "noisy-bn", "ics", "landscape", "lp-norm", "curvature"):
        found |= keyed(experiment, vgg)
    found |= keyed("dln", summarized(grid(("none", "batch"), (1e-6,))))
    found |= keyed("lp-norm-dln", summarized(grid(("batch", "l1"), (1e-6,))))
    found |= keyed("spectrum", summarized(grid(("none", "batch"), (0.1,))))
    found |= keyed("ioffe-mnist", summarized(grid(("none", "batch"), (0.5,), ("lecun",))))
    return found | keyed("controls", summarized(grid(("none", "batch"), (0.1, 0.5), ("glorot", "kaiming"))))


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda claim: claim.number)
def test_every_claim_finds_the_columns_it_reads_in_the_summaries_the_probes_rows_make(claim, summaries):
    """A column renamed on one side of analysis and claims (or a row's name on one side of a probe and analysis)
    makes its claim 'not measured' here, naming the column it could not find."""
    verdict = evaluate(claim, summaries)
    assert verdict.verdict in (HOLDS, FAILS, TIE), verdict.measured
