"""A run configured with its whole schedule stops at a planned step (--until-step), is read as whole up to there,
and goes on later to the end of its schedule as if it had never stopped."""
import json
import lzma

import pandas as pd

from bnstudy.recording import SCHEMAS, RunDir
from test_reliability import ARGS, bnstudy, csvs, run_folder

STOP = 13  # between two log intervals (every 3) and two checkpoints (every 4): the stop writes what is pending


def tables(folder) -> dict[str, pd.DataFrame]:
    return {name: pd.read_csv(folder / f"{name}.csv.xz") for name in SCHEMAS}


def test_a_run_stopped_at_a_step_agrees_with_one_trained_straight_through(tmp_path):
    whole = tmp_path / "whole"
    assert bnstudy(whole).returncode == 0
    stopped = bnstudy(tmp_path / "stopped", args=[*ARGS, "--until-step", str(STOP)])
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped at step {STOP} of 30 as asked (--until-step)" in stopped.stdout
    meta = json.loads((run_folder(tmp_path / "stopped") / "meta.json").read_text())
    assert (meta["status"], meta["stopped_at"], meta["steps_done"], meta["steps"]) == ("stopped", STOP, STOP, 30)
    straight, early = tables(run_folder(whole)), tables(run_folder(tmp_path / "stopped"))
    for name in SCHEMAS:  # metrics and every probe's rows, over the first STOP steps
        expected = straight[name][straight[name].step < STOP].reset_index(drop=True)
        pd.testing.assert_frame_equal(early[name], expected, check_exact=True)
    run = RunDir.at(run_folder(tmp_path / "stopped")).load()  # read as a whole run up to its stop
    assert run.meta["final_train_acc_last100"] == meta["final_train_acc_last100"]


def test_resumed_past_its_stop_it_ends_as_the_uninterrupted_run(tmp_path):
    whole = tmp_path / "whole"
    assert bnstudy(whole).returncode == 0
    assert bnstudy(tmp_path, args=[*ARGS, "--until-step", str(STOP)]).returncode == 0
    again = bnstudy(tmp_path, args=[*ARGS, "--until-step", str(STOP)])  # stopped there already: nothing to do
    assert again.returncode == 0 and f"already stopped at step {STOP} of 30 as asked" in again.stdout
    resumed = bnstudy(tmp_path)
    assert resumed.returncode == 0 and "1 run(s) trained" in resumed.stdout, resumed.stderr
    assert csvs(tmp_path) == csvs(whole)  # byte for byte
    meta, straight = (json.loads((run_folder(r) / "meta.json").read_text()) for r in (tmp_path, whole))
    assert meta["status"] == "complete" and "stopped_at" not in meta
    assert {k: v for k, v in meta.items() if k.startswith("final_")} == \
        {k: v for k, v in straight.items() if k.startswith("final_")}


def test_a_stop_resumed_to_a_later_stop_then_the_end(tmp_path):
    whole = tmp_path / "whole"
    assert bnstudy(whole).returncode == 0
    for step in (STOP, 22):
        assert bnstudy(tmp_path, args=[*ARGS, "--until-step", str(step)]).returncode == 0
    assert json.loads((run_folder(tmp_path) / "meta.json").read_text())["stopped_at"] == 22
    assert bnstudy(tmp_path).returncode == 0
    assert csvs(tmp_path) == csvs(whole)


def test_a_stopped_run_is_reported_and_a_bad_until_step_is_one_line(tmp_path):
    from bnstudy.reading import Results

    assert bnstudy(tmp_path, args=[*ARGS, "--until-step", str(STOP)]).returncode == 0
    results = Results(tmp_path, "noisy-bn")
    assert list(results.meta.status) == ["stopped"] and results.tables["metrics"].step.max() == STOP - 1
    report = bnstudy(tmp_path, args=["report", "--no-figures"])
    assert report.returncode == 0, report.stderr
    for bad in ("0", "-3"):
        refused = bnstudy(tmp_path, args=[*ARGS, "--until-step", bad])
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "--until-step" in refused.stderr
    archive = run_folder(tmp_path) / "metrics.csv.xz"
    assert lzma.decompress(archive.read_bytes())  # untouched by the refusals


def test_a_run_goes_on_under_another_checkpoint_and_log_cadence_and_ends_as_the_uninterrupted_run(tmp_path):
    """How often a run saves and flushes is bookkeeping (config.BOOKKEEPING): a slow run resumed with more frequent
    checkpoints keeps its checkpoint and its rows, ends byte for byte as the uninterrupted run, and its config.json
    says the cadence it went on with."""
    whole = tmp_path / "whole"
    assert bnstudy(whole).returncode == 0
    assert bnstudy(tmp_path, args=[*ARGS, "--until-step", str(STOP)]).returncode == 0
    cadence = ["--set", "train.checkpoint_every=5", "--set", "train.log_every=2"]
    resumed = bnstudy(tmp_path, args=[*ARGS, *cadence])
    assert resumed.returncode == 0 and "from step 0" not in resumed.stdout + resumed.stderr, resumed.stderr
    assert "passed over" not in resumed.stdout + resumed.stderr
    assert csvs(tmp_path) == csvs(whole)
    stored = json.loads((run_folder(tmp_path) / "config.json").read_text())["train"]
    assert (stored["checkpoint_every"], stored["log_every"]) == (5, 2)


def test_bookkeeping_is_no_difference_to_a_checkpoint_a_folder_or_pooling():
    import dataclasses

    from bnstudy.config import config_differences
    from bnstudy.schema import RunConfig

    base = RunConfig()
    cadence = dataclasses.replace(base, train=dataclasses.replace(base.train, checkpoint_every=7, log_every=3))
    assert config_differences(base, cadence) == []
    other_lr = dataclasses.replace(cadence, train=dataclasses.replace(cadence.train, lr=0.5))
    assert config_differences(base, other_lr) == ["train.lr: 0.1 there, 0.5 now"]
