"""The benchmark's own arithmetic: FLOPs counted from the model, GPU peaks, and its CUDA rows' code path."""
from pathlib import Path

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
    monkeypatch.setattr(bench, "compile_row", lambda *args: bench.Row("compile", 1.0, "ratio"))
    rows = bench.device_rows(torch.device("cpu"), Path("/nonexistent"), 0.0625, 8, 0.01)  # the synthetic set
    names = [r.benchmark for r in rows]
    assert "training step, deterministic mode / policy" in names and "training images/s, VGG-16 width 0.0625" in names
    assert all(r.value > 0 for r in rows)
    assert not any("peak" in n for n in names)  # no peak known for a CPU: the row is absent, not made up
