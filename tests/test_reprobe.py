"""`bnstudy reprobe`: the landscape at finished runs' checkpoints on a wider grid. It probes the trained weights on
the grid asked for, leaves every run folder as it was, keeps other runs' rows on a rerun, and refuses bad input
with one line."""
import hashlib
import lzma

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from bnstudy.cli import main
from bnstudy.data import summed_squared_error
from bnstudy.models import build_model
from bnstudy.recording import RunDir
from bnstudy.reprobe import BATCH_SEED, Grid, checkpoints
from bnstudy.runner import load_dataset

SMOKE = ["--preset", "smoke", "--no-progress", "--set", "data.dataset=synthetic", "--set", "train.steps=6"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    assert main(["run", "noisy-bn", "--arms", "standard", "batchnorm", "--seeds", "0", "1",
                 "--results-dir", str(results), *SMOKE]) == 0
    return results


def folder_digests(results) -> dict[str, str]:
    return {str(p.relative_to(results)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(results.glob("noisy-bn/*/seed-*/*"))}


def losses_by_hand(run, loss_fn) -> tuple[int, float, float]:
    """The last checkpoint's step, and on the first batch reprobe draws: the loss of its weights and of a fresh
    model's, recomputed here without reprobe's code."""
    state = torch.load(checkpoints(run.dir)[-1], weights_only=False)
    dataset = load_dataset(run.config, None, torch.device("cpu"))
    pick = torch.randperm(len(dataset.train_x), generator=torch.Generator().manual_seed(BATCH_SEED + run.dir.seed))
    x, y = dataset.train_x[pick[:run.config.train.batch_size]], dataset.train_y[pick[:run.config.train.batch_size]]
    model = build_model(run.config.model)
    start = build_model(run.config.model).train()
    model.load_state_dict(state["model"])
    with torch.no_grad():
        return state["step"], loss_fn(model.train()(x), y).item(), loss_fn(start(x), y).item()


def reprobe(results, *extra) -> int:
    return main(["reprobe", "noisy-bn", "--results-dir", str(results), "--device", "cpu", "--no-progress",
                 "--points", "5", "--batches", "2", *extra])


def test_it_probes_the_trained_weights_on_the_grid_asked_for_and_touches_no_run(trained):
    before = folder_digests(trained)
    assert reprobe(trained, "--eta-min", "1e-3", "--eta-max", "2") == 0
    assert folder_digests(trained) == before
    table = pd.read_csv(trained / "noisy-bn" / "reprobe" / "landscape.csv.xz")
    assert set(zip(table.arm, table.seed)) == {(a, s) for a in ("standard", "batchnorm") for s in (0, 1)}
    run = RunDir(trained, "noisy-bn", "batchnorm", 1).load()
    rows = table[(table.arm == "batchnorm") & (table.seed == 1)]
    lr = run.config.train.lr
    assert np.allclose(sorted(rows.eta.unique()), lr * np.logspace(-3, np.log10(2), 5))
    assert np.allclose(rows.step_norm / rows.eta, rows.grad_norm)  # step_norm = eta * ||g||

    # loss0 is the loss of the checkpoint's weights on the batch the generator draws, not of the weights the run
    # started from
    step, trained_loss, start_loss = losses_by_hand(run, F.cross_entropy)
    first = rows[(rows.step == step) & (rows.batch == 0)]
    assert first.loss0.iloc[0] == pytest.approx(trained_loss, rel=1e-5)
    assert first.loss0.iloc[0] != pytest.approx(start_loss, rel=1e-5)

    figure = trained / "noisy-bn" / "figures" / "reprobe-landscape.png"
    assert figure.stat().st_size > 0


def test_a_rerun_replaces_its_runs_rows_and_keeps_the_others(trained):
    assert reprobe(trained) == 0
    out = trained / "noisy-bn" / "reprobe" / "landscape.csv.xz"
    before = pd.read_csv(out)
    assert reprobe(trained, "--arms", "standard", "--seeds", "0", "--points", "3") == 0
    after = pd.read_csv(out)
    mine = (after.arm == "standard") & (after.seed == 0)
    assert after[mine].eta.nunique() == 3
    others = (before.arm != "standard") | (before.seed != 0)
    assert after[~mine].reset_index(drop=True).equals(before[others].reset_index(drop=True))


def test_the_filter_normalized_direction_has_its_own_grid_rows_and_figure(trained):
    assert reprobe(trained) == 0
    out = trained / "noisy-bn" / "reprobe" / "landscape.csv.xz"
    plain = pd.read_csv(out).query("direction == 'landscape'")
    assert reprobe(trained, "--direction", "filter-gradient", "--eta-min", "1e-5", "--eta-max", "0.01") == 0
    table = pd.read_csv(out)
    assert table.query("direction == 'landscape'").reset_index(drop=True).equals(plain.reset_index(drop=True))
    filtered = table.query("direction == 'landscape-filter'")
    assert len(filtered) == len(plain)  # every run, checkpoint and batch, on a grid of as many points
    # fractions of each filter's norm, whatever the run's LR
    assert np.allclose(sorted(filtered.eta.unique()), np.logspace(-5, -2, 5))
    assert not np.allclose(filtered.grad_diff.to_numpy(), plain.grad_diff.to_numpy())
    assert (trained / "noisy-bn" / "figures" / "reprobe-landscape-filter.png").stat().st_size > 0


@pytest.mark.parametrize("content", [lzma.compress(b"arm,seed\nx,0\n"),  # foreign columns
                                     lzma.compress(b"arm,seed,direction\n" * 50)[:40],  # torn
                                     b"\x00\xff not xz at all"])
def test_a_damaged_table_is_one_line_and_exit_2_and_left_as_it_was(trained, capsys, content):
    out = trained / "noisy-bn" / "reprobe" / "landscape.csv.xz"
    out.parent.mkdir(parents=True, exist_ok=True)
    good = out.read_bytes() if out.exists() else None
    out.write_bytes(content)
    try:
        capsys.readouterr()
        assert reprobe(trained) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"bnstudy: error: {out}:") and "remove it and rerun" in err[0]
        assert out.read_bytes() == content
    finally:
        out.write_bytes(good) if good is not None else out.unlink()


def test_panel_c_draws_the_cancelled_gradient_line(trained, monkeypatch):
    from bnstudy import reprobe as module
    drawn = {}
    real = module.reprobed_landscape
    monkeypatch.setattr(module, "reprobed_landscape", lambda *a: drawn.setdefault("fig", real(*a)))
    assert reprobe(trained) == 0
    dashed = [line for line in drawn["fig"].axes[2].lines if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and np.allclose(dashed[0].get_ydata() * dashed[0].get_xdata(), 1.0)
    plt.close(drawn["fig"])


@pytest.mark.parametrize("extra,said", [
    (["--eta-min", "0"], "reprobe needs 0 < --eta-min < --eta-max (multiples of each run's LR)"),
    (["--direction", "filter-gradient", "--eta-max", "-1"], "(fractions of each filter's norm), got 1e-06 and -1"),
    (["--eta-min", "nan"], "reprobe needs 0 < --eta-min < --eta-max"),
    (["--eta-min", "3", "--eta-max", "2"], "reprobe needs 0 < --eta-min < --eta-max"),
    (["--eta-max", "1e9"], "--eta-max 1e+09: at most 1e4"),
    (["--points", "1"], "--points 1: between 2 and 200"),
    (["--batches", "0"], "--batches 0: between 1 and 100"),
    (["--arms", "nonesuch"], "no run folders for arms nonesuch"),
])
def test_bad_input_is_one_line_and_exit_2_and_writes_nothing(trained, capsys, extra, said):
    out = trained / "noisy-bn" / "reprobe" / "landscape.csv.xz"
    before = out.read_bytes() if out.exists() else None
    capsys.readouterr()
    assert reprobe(trained, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and said in err[0], err
    assert (out.read_bytes() if out.exists() else None) == before


def test_runs_without_checkpoints_are_named_and_none_at_all_is_exit_2(tmp_path, capsys):
    assert main(["run", "noisy-bn", "--arms", "standard", "--results-dir", str(tmp_path), *SMOKE]) == 0
    for path in checkpoints(RunDir(tmp_path, "noisy-bn", "standard", 0)):
        path.unlink()  # as in a fresh clone: checkpoints are never committed
    capsys.readouterr()
    assert reprobe(tmp_path) == 2
    out, err = capsys.readouterr()
    assert "no checkpoint.pt here" in out
    assert err.strip() == (f"bnstudy: error: {tmp_path / 'noisy-bn'}: none of the chosen runs is finished with its "
                           f"checkpoints here (each said above)")
    assert not (tmp_path / "noisy-bn" / "reprobe" / "landscape.csv.xz").exists()


def test_the_grid_defaults_reach_far_below_the_runs_own_and_end_at_its_top():
    grid = Grid()
    assert grid.eta_min <= 1e-3 and grid.eta_max == 4.0  # the paper's grid is [1/2, 4] x LR
    assert grid.etas(0.1)[0] == pytest.approx(1e-5) and grid.etas(0.1)[-1] == pytest.approx(0.4)
    filtered = Grid("filter-gradient")
    assert filtered.etas(0.1)[-1] == pytest.approx(0.04)  # the runs' own filter grid ends there, for any LR
    assert filtered.eta_max / filtered.eta_min == pytest.approx(grid.eta_max / grid.eta_min)
    grid.check()
    filtered.check()


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"not a checkpoint"])
def test_a_torn_checkpoint_is_one_line_and_exit_2(tmp_path, capsys, damage):
    assert main(["run", "noisy-bn", "--arms", "standard", "--results-dir", str(tmp_path), *SMOKE]) == 0
    path = checkpoints(RunDir(tmp_path, "noisy-bn", "standard", 0))[-1]
    path.write_bytes(damage(path.read_bytes()))
    capsys.readouterr()
    assert reprobe(tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"bnstudy: error: {path}: unreadable checkpoint"), err


def test_it_probes_a_run_with_the_loss_the_run_descended(tmp_path):
    # the DLN's objective is the summed squared error, not cross-entropy
    assert main(["run", "dln", "--preset", "smoke", "--arms", "standard-lr1e-6", "--results-dir", str(tmp_path),
                 "--no-progress"]) == 0
    assert main(["reprobe", "dln", "--results-dir", str(tmp_path), "--device", "cpu", "--no-progress",
                 "--points", "3", "--batches", "1"]) == 0
    run = RunDir(tmp_path, "dln", "standard-lr1e-6", 0).load()
    step, trained_loss, _ = losses_by_hand(run, lambda out, y: summed_squared_error(out, y, reduction="sum"))
    rows = pd.read_csv(tmp_path / "dln" / "reprobe" / "landscape.csv.xz")
    assert rows[rows.step == step].loss0.iloc[0] == pytest.approx(trained_loss, rel=1e-5)


def test_another_runs_checkpoint_is_not_reprobed_and_its_earlier_rows_stay(tmp_path, capsys):
    """Found: reprobe with another seed's checkpoint wrote rows for steps the run never took."""
    import shutil

    assert main(["run", "noisy-bn", "--arms", "standard", "--seeds", "0", "1", "--results-dir", str(tmp_path),
                 *SMOKE, "--set", "train.steps=8", "--set", "train.checkpoint_every=3"]) == 0
    assert reprobe(tmp_path) == 0
    before = pd.read_csv(tmp_path / "noisy-bn" / "reprobe" / "landscape.csv.xz")
    own, other = (RunDir(tmp_path, "noisy-bn", "standard", seed) for seed in (0, 1))
    shutil.copy(other.checkpoint_path, own.checkpoint_path)  # seed 1's last checkpoint in seed 0's folder
    capsys.readouterr()
    assert reprobe(tmp_path) == 0
    out = capsys.readouterr().out
    assert f"{own.checkpoint_path}: not reprobed: the checkpoint of noisy-bn/standard/seed-1, not of this run" in out
    assert f"{own.path}: reprobing its previous checkpoint alone (checkpoint.pt.prev)" in out
    after = pd.read_csv(tmp_path / "noisy-bn" / "reprobe" / "landscape.csv.xz")
    seed0 = after[after.seed == 0]
    assert set(seed0.step) == {int(torch.load(checkpoints(own)[0], weights_only=False)["step"])}
    assert len(after[after.seed == 1]) == len(before[before.seed == 1])
    for path in checkpoints(own):  # none of its own left: one line, and its earlier rows kept
        shutil.copy(other.checkpoint_path, path)
    assert main(["reprobe", "noisy-bn", "--results-dir", str(tmp_path), "--seeds", "0", "--device", "cpu",
                 "--no-progress", "--points", "3", "--batches", "1"]) == 2
    assert "none of the chosen runs has a checkpoint of its own" in capsys.readouterr().err
    assert pd.read_csv(tmp_path / "noisy-bn" / "reprobe" / "landscape.csv.xz").equals(after)
