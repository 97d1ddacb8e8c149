"""The seed band: our vectorized bootstrap against seaborn's own ("ci", 95) aggregation."""
import numpy as np
import pandas as pd
import pytest
from seaborn._statistics import EstimateAggregator

from bnstudy.plots import N_BOOT, bootstrap_band


@pytest.mark.parametrize("n", [3, 5, 20])
def test_band_matches_seaborns_bootstrap(n):
    values = np.random.default_rng(n).normal(1.0, 2.0, n)
    ours = bootstrap_band(values)
    theirs = EstimateAggregator("mean", ("ci", 95), n_boot=20 * N_BOOT, seed=1)(
        pd.DataFrame({"y": values}), "y")
    spread = values.max() - values.min()
    # two independent Monte-Carlo estimates of the same percentiles: close, not equal
    assert ours[0] == pytest.approx(theirs.ymin, abs=0.06 * spread)
    assert ours[1] == pytest.approx(theirs.ymax, abs=0.06 * spread)
    assert values.min() <= ours[0] < values.mean() < ours[1] <= values.max()


def test_band_is_deterministic_and_ignores_non_finite_values():
    values = [0.1, 0.4, 0.3, np.nan, np.inf]
    assert bootstrap_band(values) == bootstrap_band(values[:3])
    assert bootstrap_band(values) == bootstrap_band(list(values))


def test_one_seed_gives_no_band():
    assert bootstrap_band([0.7]) == (0.7, 0.7)
    low, high = bootstrap_band([np.nan])
    assert np.isnan(low) and np.isnan(high)


def test_caption_names_the_gpu_of_cuda_runs(tmp_path):
    from bnstudy.reading import Results

    from bnstudy.config import load_experiment, run_config
    from bnstudy.recording import RunDir

    def meta(arm, environment):
        run = RunDir(tmp_path, "noisy-bn", arm, 0)
        run.path.mkdir(parents=True)
        run.write_config(run_config(load_experiment("noisy-bn"), arm, 0, "paper"))
        run.write_meta({"arm": arm, "seed": 0, "preset": "paper", "dataset": "CIFAR-10", "status": "running",
                        "environment": environment})  # no tables yet

    meta("batchnorm", {"device": "cpu"})
    assert "GPU" not in Results(tmp_path, "noisy-bn", unfinished=True).caption()
    meta("standard", {"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3"})
    caption = Results(tmp_path, "noisy-bn", unfinished=True).caption()
    assert caption.endswith("| GPU: NVIDIA H100 80GB HBM3 (1 of 2 runs on a CPU)")


def test_kind_palette_has_a_colour_for_every_kind_however_often_it_repeats():
    from bnstudy.plots import _kind_palette

    palette = _kind_palette(["none, glorot"] * 5 + ["batch, kaiming", "none, kaiming", "batch, kaiming"])
    assert set(palette) == {"none, glorot", "batch, kaiming", "none, kaiming"}
    assert len(set(palette.values())) == 3
