"""The benchmark's own arithmetic: FLOPs counted from the model, GPU peaks, and its CUDA rows' code path."""
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bnstudy import bench


def test_step_flops_are_the_analytic_count_of_a_forward_and_backward():
    """Linear layers: forward 2 N in out each; backward the weight gradients (as much again) and the input
    gradients of every layer but the first (its input needs none)."""
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    n, sizes = 4, [(5, 7), (7, 3)]
    forward = sum(2 * n * i * o for i, o in sizes)
    backward = forward + sum(2 * n * i * o for i, o in sizes[1:])
    assert bench.step_flops(model, torch.randn(n, 5), torch.tensor([0, 1, 2, 0])) == forward + backward
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name, peak", [("NVIDIA H100 80GB HBM3", 494.7e12), ("NVIDIA H100 PCIe", 378e12),
                                        ("NVIDIA H200", 494.7e12), ("NVIDIA A100-SXM4-80GB", 156e12),
                                        ("NVIDIA L40S", 183e12), ("NVIDIA L4", 60e12), ("NVIDIA A10", 62.5e12),
                                        ("Tesla V100-SXM2-16GB", None)])
def test_tf32_peak_by_gpu_name(name, peak):
    assert bench.tf32_peak(name) == peak


def test_device_rows_run_and_give_finite_ratios(monkeypatch):
    """Their code path on the CPU (the bench shows them on CUDA alone); torch.compile is left out here."""
    monkeypatch.setattr(bench.device, "compile_row", lambda *args: bench.Row("compile", 1.0, "ratio"))
    rows = bench.device_rows(torch.device("cpu"), Path("/nonexistent"), 0.0625, 8, 0.01)  # the synthetic set
    names = [r.benchmark for r in rows]
    assert "training step, deterministic mode / policy" in names and "training images/s, VGG-16 width 0.0625" in names
    assert "training step, noisy-batch / batch (Algorithm 1's noise)" in names
    assert "training step, l1 / batch (ℓp normalization)" in names
    assert all(r.value > 0 for r in rows)
    assert not any("peak" in n for n in names)  # no peak known for a CPU: the row is absent, not made up


def test_levers_only_without_compile_is_the_devices_rows_alone(monkeypatch):
    """What a GPU lease measures in its minute (`bnstudy bench --levers-only --no-compile`): no policy, Hessian
    or peer row, and torch.compile never called."""
    monkeypatch.setattr(bench.device, "compile_row", lambda *args: pytest.fail("compiled"))
    for name in ("policy_rows", "hessian_rows", "peer_rows"):
        monkeypatch.setattr(bench, name, lambda *args, name=name: pytest.fail(name))
    rows = bench.run_bench(torch.device("cpu"), Path("/nonexistent"), 0.0625, 8, 0.01, levers_only=True,
                           with_compile=False)
    names = [r.benchmark for r in rows]
    assert names[1:] == ["training step, channels_last / eager",
                         "channels_last: largest relative loss difference to eager over 5 steps",
                         "training step, noisy-batch / batch (Algorithm 1's noise)",
                         "training step, l1 / batch (ℓp normalization)"]
    assert names[0].startswith("training step, eager NCHW, VGG-16 width 0.0625, batch 8")


def test_noise_draws_are_two_per_activation_each_batch_norm_layer_normalizes():
    """Counted independently: every output element of the batch model's BN layers, the same shapes the noisy
    model's noise layers see; plus a mean and a scale per unit. The hooks are gone afterwards."""
    from bnstudy.config import ModelConfig
    from bnstudy.models import build_model

    x = torch.randn(3, 3, 32, 32)
    batch_model = build_model(ModelConfig(width=0.0625, norm="batch"))
    sizes = []
    for m in batch_model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.register_forward_hook(lambda m, i, out: sizes.append((out.numel(), out.shape[1])))
    batch_model(x)
    noisy = build_model(ModelConfig(width=0.0625, norm="noisy-batch"))
    assert bench.device.noise_draws(noisy, x) == sum(2 * n + 2 * c for n, c in sizes) > 0
    assert not any(m._forward_hooks for m in noisy.modules())


def test_bench_times_the_loops_own_step(monkeypatch):
    """`ours` was a copy of the loop's step; it is now train.run_step itself, metrics flushed per interval."""
    from bnstudy import train
    from bnstudy.data import BatchOrder

    assert bench.common.run_step is train.run_step
    calls = []
    monkeypatch.setattr(bench.common, "run_step", lambda *args, **kw: calls.append(args) or train.run_step(*args, **kw))
    dataset, model, data = bench.bench_setup(torch.device("cpu"), Path("/nonexistent"), 0.0625)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    state = train.RunState(model, optimizer, BatchOrder(dataset.train_size, 8, seed=0))
    step = bench.our_step(state, dataset, bench.bench_config(data, 8, log_every=3))
    for _ in range(4):
        step()
    assert len(calls) == 4 and state.step == 4 and len(state.pending) == 1  # rows of steps 0..2 written at step 3


def test_bench_says_which_data_it_measured_on(tmp_path, capsys):
    """Without CIFAR-10 the bench fell back to the synthetic set silently: bench.csv and the header now say so."""
    import pandas as pd

    from bnstudy.cli import main

    assert main(["bench", "--device", "cpu", "--width", "0.0625", "--batch", "8", "--min-run-time", "0.01",
                 "--results-dir", str(tmp_path), "--data-dir", str(tmp_path / "no-data")]) == 0
    table = pd.read_csv(tmp_path / "bench" / "bench.csv")
    measured = table[table["value"].notna()]  # a row that measured nothing (PyHessian absent) names no data
    assert len(measured) >= 8 and (measured["data"] == "synthetic images (tests only)").all()
    header = capsys.readouterr().out.splitlines()[:2]
    assert "data synthetic images (tests only)" in header[0]
    assert header[1].startswith(f"note: no usable CIFAR-10 under {tmp_path / 'no-data'}")


def test_bench_times_the_weights_probe_inside_the_loops_step():
    """The weights probe's cost row runs the probe as the loop does: before and after one real step, rows made."""
    from bnstudy import train
    from bnstudy.data import BatchOrder
    from bnstudy.probes.weights import WeightsProbe

    dataset, model, data = bench.bench_setup(torch.device("cpu"), Path("/nonexistent"), 0.0625)
    state = train.RunState(model, torch.optim.SGD(model.parameters(), lr=0.01), BatchOrder(dataset.train_size, 8, 0))
    made = []
    probe = WeightsProbe(every=1)
    after = probe.after_step
    probe.after_step = lambda ctx: (lambda rows: made.append(rows) or rows)(after(ctx))
    step = bench.our_step(state, dataset, bench.bench_config(data, 8), [probe])
    step()
    step()
    assert len(made) == 2 and len(made[1]["probes"]) == 16 * 4 + 1  # VGG-16: 16 layers x 4 metrics + the logits


def test_peer_rows_compare_lambda_max_with_pyhessian_or_say_it_is_missing(monkeypatch):
    import math
    import sys

    monkeypatch.setattr(bench.peers, "PEER", {"width": 0.0625, "steps": 2, "batch": 16, "tol": 1e-3})
    monkeypatch.setitem(sys.modules, "pyhessian", None)  # as where the bench extra is not installed
    (missing,) = bench.peer_rows(torch.device("cpu"), Path("/nonexistent"), 0.01)
    assert math.isnan(missing.value) and "not installed" in missing.note
    monkeypatch.delitem(sys.modules, "pyhessian")
    pytest.importorskip("pyhessian")
    timing, agreement, timing_tighter, agreement_tighter = bench.peer_rows(torch.device("cpu"), Path("/nonexistent"),
                                                                           0.01)
    assert timing.value > 0 and "equal tolerance" in timing.benchmark and "equal accuracy" in timing_tighter.benchmark
    assert agreement.value <= 1e-2  # the same top eigenvalue, each to its own 1e-3 criterion
    assert agreement_tighter.value <= agreement.value  # PyHessian at a tenth of the tolerance is nearer ours


def test_hvp_row_times_the_operator_against_a_plain_double_backward():
    dataset, model, _ = bench.bench_setup(torch.device("cpu"), Path("/nonexistent"), 0.0625)
    (row,) = bench.hvp_rows(model, dataset.train_x[:8], dataset.train_y[:8], 0.01)
    assert row.value > 0 and row.target == "<= 1.05"


def test_spectrum_rows_count_the_products_of_one_probe():
    dataset, model, _ = bench.bench_setup(torch.device("cpu"), Path("/nonexistent"), 0.0625)
    density, share = bench.spectrum_rows(model, dataset.train_x[:8], dataset.train_y[:8], 1.0, 0.01)
    assert "60 Hessian-vector products" in density.note and density.value > 0  # 3 vectors x 20 steps
    assert share.value > 0 and "products" in share.note


def test_the_hessian_rows_matrix_is_the_same_in_every_run_even_where_the_set_is_small():
    """A fixed number of SGD steps from a fixed init, around the synthetic set again (16 batches of 128 for 30
    steps): two setups give the same weights bit for bit, and a full batch for the probe."""
    def setup():
        dataset, model, _ = bench.bench_setup(torch.device("cpu"), Path("/nonexistent"), 0.0625)
        x, _ = bench.trained(model, dataset, 128, bench.CURVATURE["steps"], bench.CURVATURE["lr"])
        return model, x
    (first, x), (second, _) = setup(), setup()
    assert len(x) == 128
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_hessian_rows_time_lambda_max_against_arpack_which_finds_the_same_value():
    rows = bench.hessian_rows(torch.device("cpu"), Path("/nonexistent"), 0.0625, 8, 0.01)
    per_fwd_bwd, against_arpack = rows[0], rows[1]
    assert per_fwd_bwd.value > 0 and "ARPACK here" in per_fwd_bwd.note
    assert against_arpack.value > 0 and against_arpack.target == "<= 0.5"
    ours, theirs = (float(part.split("lambda_max ")[1].split(";")[0].split(",")[0])
                    for part in against_arpack.note.split("; ARPACK"))
    assert ours == pytest.approx(theirs, rel=2e-3)


def test_the_probe_share_row_counts_every_probe_of_a_group_one_run_at_its_cadence():
    """The probes' share of a paper-figures group-1 run: each probe the run carries, and the test evaluation."""
    from bnstudy.bench.share import group_one_config
    from bnstudy.train import probe_callbacks, make_state

    rows = bench.probe_share_rows(torch.device("cpu"), Path("/nonexistent"), 0.0625, 8, 0.01)
    assert len(rows) == 1 and np.isfinite(rows[0].value) and rows[0].value >= 1.0
    for part in ("landscape (gradient)", "landscape (filter-gradient)", "ics", "curvature", "weights", "activation",
                 "evaluation"):
        assert f"{part} " in rows[0].note, rows[0].note
    dataset, _, data = bench.bench_setup(torch.device("cpu"), Path("/nonexistent"), 0.0625)
    config = group_one_config(data, 0.0625, 8)
    probes = probe_callbacks(config, make_state(config, dataset, torch.device("cpu")).model)
    assert sorted(p.every for p in probes) == [100, 100, 100, 200, 200, 500]  # the long cadence, unchanged
