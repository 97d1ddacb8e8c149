"""Nothing believed that does not belong to its run (reliability round 4): a checkpoint records whose it is and the
tables it saw, a table's rows name their folder's arm and seed, a finished run lists its files, a manifest names its
experiment, and a folder left out is said. Each case below was found by copying or editing a run folder's files."""
import json
import shutil
import signal
from pathlib import Path

import pytest
import torch

from bnstudy.recording import RunDir
from test_reliability import ARGS, bnstudy, csvs, run_folder, two_seeds


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    results = tmp_path_factory.mktemp("whole")
    assert bnstudy(results).returncode == 0
    return csvs(results)


def killed_seeds(tmp_path) -> tuple[Path, Path]:
    """Seeds 0 and 1 of one arm, each killed at step 14 (checkpoints at steps 8 and 12 there)."""
    for seed in ("0", "1"):
        killed = bnstudy(tmp_path, "train-step@14", args=[*ARGS, "--seeds", seed])
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    arm = tmp_path / "noisy-bn" / "noisy-batchnorm"
    return arm / "seed-0", arm / "seed-1"


def test_another_seeds_checkpoint_is_passed_over_for_the_runs_own(tmp_path, uninterrupted):
    """Found: seed 1's checkpoint.pt copied into seed 0 was resumed without a word; seed 0's tables were cut at seed
    1's byte sizes and seed 1's trajectory went on under seed 0's name."""
    own, other = killed_seeds(tmp_path)
    shutil.copy(other / "checkpoint.pt", own / "checkpoint.pt")
    resumed = bnstudy(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "the checkpoint of noisy-bn/noisy-batchnorm/seed-1, not of this run; passed over" in resumed.stdout
    assert "resuming from the previous checkpoint, checkpoint.pt.prev" in resumed.stdout
    assert csvs(tmp_path) == uninterrupted


def test_a_table_whose_first_bytes_changed_is_not_resumed_from(tmp_path, uninterrupted):
    """Same size, other bytes: a checkpoint's weights did not produce those rows (SHA-256 differs)."""
    assert bnstudy(tmp_path, "train-step@14").returncode == -signal.SIGKILL
    metrics = run_folder(tmp_path) / "metrics.csv"
    data = bytearray(metrics.read_bytes())
    row = data.index(b"\n") + 1  # the first row's step: '0' -> '7', the length unchanged
    data[row] = ord("7")
    metrics.write_bytes(bytes(data))
    resumed = bnstudy(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "(SHA-256 differs)" in resumed.stdout and "training again from step 0" in resumed.stdout
    assert csvs(tmp_path) == uninterrupted


def test_a_checkpoint_without_identity_is_an_older_format_and_passed_over(tmp_path, uninterrupted):
    assert bnstudy(tmp_path, "train-step@14").returncode == -signal.SIGKILL
    for name in ("checkpoint.pt", "checkpoint.pt.prev"):
        path = run_folder(tmp_path) / name
        ckpt = torch.load(path, weights_only=False)
        del ckpt["identity"]
        torch.save(ckpt, path)
    resumed = bnstudy(tmp_path)
    assert resumed.returncode == 0 and "without the run's identity" in resumed.stdout, resumed.stdout
    assert csvs(tmp_path) == uninterrupted


def test_a_checkpoint_is_refused_for_another_configuration_or_a_step_past_the_schedule():
    from bnstudy.config import load_experiment, run_config
    from bnstudy.train import checkpoint_identity, foreign_checkpoint

    exp = load_experiment("noisy-bn")
    config = run_config(exp, "batchnorm", 0, "smoke")
    other_lr = run_config(exp, "batchnorm", 0, "smoke", ["train.lr=0.2"])
    assert foreign_checkpoint({"identity": checkpoint_identity(config), "step": 4}, config) is None
    why = foreign_checkpoint({"identity": checkpoint_identity(other_lr), "step": 4}, config)
    assert why.startswith("saved under another configuration (train.lr: 0.2 in the checkpoint, 0.1 in this run")
    past = foreign_checkpoint({"identity": checkpoint_identity(config), "step": config.train.steps + 1}, config)
    assert past.startswith(f"its step {config.train.steps + 1} is not one of the run's")
    other_arm = run_config(exp, "standard", 0, "smoke")
    assert "noisy-bn/standard/seed-0, not of this run" in foreign_checkpoint(
        {"identity": checkpoint_identity(other_arm), "step": 4}, config)


def test_a_run_folder_copied_as_a_new_seed_is_not_pooled(tmp_path, capsys):
    """Found: seed 0's folder copied as seed 2, the seed edited in config.json and meta.json, was pooled as a third
    seed carrying seed 0's numbers. Its rows still name seed 0."""
    from bnstudy.reading import Results

    arm = two_seeds(tmp_path)
    shutil.copytree(arm / "seed-0", arm / "seed-2")
    for name in ("config.json", "meta.json"):
        path = arm / "seed-2" / name
        path.write_text(json.dumps(json.loads(path.read_text()) | {"seed": 2}))
    results = Results(tmp_path, "noisy-bn")
    assert set(results.meta.seed) == {0, 1}
    assert "row(s) of its metrics table name noisy-batchnorm/seed-0, not this folder's noisy-batchnorm/seed-2" in \
        results.left_out[str(arm / "seed-2")]


@pytest.mark.parametrize("files", [{}, None, 3, "metrics.csv.xz"])
def test_a_finished_run_must_list_its_tables(tmp_path, files):
    """An empty or missing 'files' is no off switch for the hashes; a number or a string there is one line."""
    from bnstudy.reading import Results

    arm = two_seeds(tmp_path)
    meta = json.loads((arm / "seed-1" / "meta.json").read_text())
    meta = {k: v for k, v in meta.items() if k != "files"} | ({} if files is None else {"files": files})
    (arm / "seed-1" / "meta.json").write_text(json.dumps(meta))
    why = Results(tmp_path, "noisy-bn").left_out[str(arm / "seed-1")]
    assert "meta.json" in why and any(said in why for said in ("lists none of its files", "not a table of files")), why


@pytest.mark.parametrize("edit, said", [({"status": "diverged", "diverged_at": 20}, "says diverged, but its training "
                                         "loss is finite at every step"),
                                        ({"final_train_acc_last100": None}, "final_train_acc_last100: null in "
                                         "meta.json"),
                                        ({"final_train_loss": None}, "final_train_loss: null in meta.json")])
def test_a_meta_json_edited_to_disagree_with_its_tables_is_caught(tmp_path, edit, said):
    from bnstudy.reading import Results

    arm = two_seeds(tmp_path)
    path = arm / "seed-1" / "meta.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | edit))
    assert said in Results(tmp_path, "noisy-bn").left_out[str(arm / "seed-1")]


def test_a_run_folder_without_meta_json_is_named_not_dropped(tmp_path, capsys):
    from bnstudy.cli import main

    arm = two_seeds(tmp_path)
    (arm / "seed-1" / "meta.json").unlink()
    assert main(["report", "--results-dir", str(tmp_path), "--no-figures"]) == 0
    err = capsys.readouterr().err
    assert f"left out {arm / 'seed-1'}: meta.json is missing or empty" in err
    assert f"{arm / 'seed-1'}: meta.json is missing or empty" in (tmp_path / "REPORT.md").read_text(encoding="utf-8")


def test_a_folder_that_cannot_be_read_is_named_not_dropped(tmp_path, capsys, monkeypatch):
    """As root a chmod stops nothing, so the refusal is the kernel's answer, made here."""
    from bnstudy.reading import Results

    arm = two_seeds(tmp_path)
    unreadable = arm / "seed-1"
    real_read_meta = RunDir.read_meta

    def read_meta(self):
        if self.path == unreadable:
            raise PermissionError(13, "Permission denied", str(self.meta_path))
        return real_read_meta(self)

    monkeypatch.setattr(RunDir, "read_meta", read_meta)
    results = Results(tmp_path, "noisy-bn")
    assert results.left_out[str(unreadable)] == f"{unreadable}: cannot read meta.json (Permission denied)"
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self == arm:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    assert RunDir.of_experiment(tmp_path, "noisy-bn") == []
    assert f"{arm}: cannot read (Permission denied): its runs are left out" in capsys.readouterr().err


def test_a_manifest_copied_from_another_experiment_is_refused(tmp_path, capsys):
    """Found: the landscape experiment's manifest in the noisy-bn folder gave its section the landscape's title and
    stopped its figures from being redrawn."""
    from bnstudy.cli import main
    from bnstudy.config import load_experiment
    from bnstudy.manifest import write_manifest

    two_seeds(tmp_path)
    elsewhere = tmp_path / "elsewhere" / "landscape"
    elsewhere.mkdir(parents=True)
    shutil.copy(write_manifest(elsewhere, load_experiment("landscape")), tmp_path / "noisy-bn" / "experiment.json")
    assert main(["report", "--results-dir", str(tmp_path), "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the manifest of experiment 'landscape', not of 'noisy-bn'" in err, err


@pytest.mark.parametrize("edit, said", [({"figures": "training"}, "'figures' is not a list of figure kinds"),
                                        ({"figures": ["training", "histogram"]}, "unknown figure kind(s) 'histogram'"),
                                        ({"plots": {"fig": {"kind": "training"}}}, "plots.fig needs kind and runs")])
def test_a_manifest_naming_what_cannot_be_drawn_is_one_line(tmp_path, capsys, edit, said):
    from bnstudy.cli import main

    two_seeds(tmp_path)
    path = tmp_path / "noisy-bn" / "experiment.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | edit))
    assert main(["plot", "noisy-bn", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said in err and "Traceback" not in err, err


# ----------------------------------------------------------------------------------------------
# What was a traceback, and a message that did not say what happened: one line, exit 2
# ----------------------------------------------------------------------------------------------
def test_a_report_of_dln_runs_alone_is_not_a_traceback(tmp_path, capsys):
    """Found: claim 1b read a training accuracy the DLN has not (KeyError 'reached_at')."""
    from bnstudy.cli import main

    assert main(["run", "dln", "--preset", "smoke", "--arms", "standard-lr1e-6", "--results-dir", str(tmp_path),
                 "--no-progress"]) == 0
    assert main(["report", "--results-dir", str(tmp_path), "--no-figures"]) == 0
    assert "no 'reached_at' in the results" in (tmp_path / "REPORT.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("edit, said", [({"lr": [0.1, 0.2]}, "lr: [0.1, 0.2] in meta.json, 0.1 in config.json"),
                                        ({"steps": "30"}, "steps: '30' in meta.json, 30 in config.json")])
def test_a_meta_json_value_of_another_type_is_left_out_in_one_line(tmp_path, edit, said):
    from bnstudy.reading import Results

    arm = two_seeds(tmp_path)
    path = arm / "seed-1" / "meta.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | edit))
    assert said in Results(tmp_path, "noisy-bn").left_out[str(arm / "seed-1")]


def test_a_step_past_int64_is_one_line(tmp_path):
    import lzma

    from bnstudy.reading import Results

    arm = two_seeds(tmp_path)
    lines = lzma.decompress((arm / "seed-1" / "metrics.csv.xz").read_bytes()).decode().splitlines()
    lines[3] = "99999999999999999999" + lines[3][lines[3].index(","):]
    (arm / "seed-1" / "metrics.csv").write_text("\n".join(lines) + "\n")
    RunDir.at(arm / "seed-1").settle()  # packed and listed as a finishing run does: a verified archive
    assert "unreadable as the metrics table (Overflow)" in Results(tmp_path, "noisy-bn").left_out[str(arm / "seed-1")]


def test_a_bad_config_json_names_its_run_folder(tmp_path, capsys):
    from bnstudy.cli import main

    arm = two_seeds(tmp_path)
    path = arm / "seed-1" / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"train": {"lr": "fast"}}))
    assert main(["report", "--results-dir", str(tmp_path), "--no-figures"]) == 0
    assert f"left out {path}: train.lr must be a number, got 'fast'" in capsys.readouterr().err


def test_a_file_where_the_figures_folder_should_be_is_named(tmp_path, capsys):
    from bnstudy.cli import main

    two_seeds(tmp_path)
    (tmp_path / "noisy-bn" / "figures").write_text("not a folder")
    assert main(["plot", "noisy-bn", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"bnstudy: error: {tmp_path / 'noisy-bn' / 'figures'}: a file where the figures' folder should " \
                  f"be; move it away and draw again\n"


def test_a_read_that_fails_says_cannot_read(tmp_path, monkeypatch):
    from bnstudy.files import read_json
    from bnstudy.recording import RecordError

    path = tmp_path / "meta.json"
    path.write_text("{}")

    def refused(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refused)
    with pytest.raises(RecordError, match=r"meta.json: cannot read \(Permission denied\)"):
        read_json(path)


def test_a_closed_pipe_ends_quietly():
    """`bnstudy list | head -1`: the reader took what it wanted; no 'Broken pipe' error, no traceback."""
    import subprocess
    import sys

    listing = subprocess.Popen([sys.executable, "-m", "bnstudy", "list"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parent.parent)
    listing.stdout.readline()
    listing.stdout.close()
    err = listing.stderr.read().decode()
    assert listing.wait(timeout=60) == 0 and err == "", err


def test_an_ascii_locale_and_a_results_folder_named_in_bytes_are_one_report(tmp_path):
    """Found: report on a folder whose name is not UTF-8, or under LC_ALL=POSIX with PYTHONUTF8=0, was a
    UnicodeEncodeError."""
    import os
    import subprocess
    import sys

    folder = Path(os.fsdecode(bytes(tmp_path) + b"/r\xff"))
    two_seeds(tmp_path / "plain")
    shutil.move(tmp_path / "plain", folder)
    (folder / "noisy-bn" / "noisy-batchnorm" / "seed-1" / "meta.json").unlink()  # its path, in bytes, in REPORT.md
    env = os.environ | {"LC_ALL": "POSIX", "PYTHONUTF8": "0"}
    for command in (["report", "--results-dir", str(folder), "--no-figures"], ["list"]):
        done = subprocess.run([sys.executable, "-m", "bnstudy", *command], capture_output=True, env=env,
                              cwd=Path(__file__).resolve().parent.parent, timeout=300)
        assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr[-1000:]
    report = (folder / "REPORT.md").read_bytes().decode("utf-8")  # valid UTF-8: the byte written as its escape
    assert "r\\udcff" in report


def test_an_archive_of_its_listed_size_but_other_bytes_says_sha256_differs(tmp_path):
    from bnstudy.reading import Results

    arm = two_seeds(tmp_path)
    archive = arm / "seed-1" / "probes.csv.xz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    assert "probes.csv.xz is not the file meta.json lists (SHA-256 differs at its listed size)" in \
        Results(tmp_path, "noisy-bn").left_out[str(arm / "seed-1")]
