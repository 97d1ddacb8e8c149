"""A week of GPU time must survive a crash, a typo and a second terminal.

Kill and resume: a run in a subprocess is killed with SIGKILL at chosen points (during training, while a
checkpoint is written, while CSV rows are appended, twice in a row), the same command is run again, and
the finished CSVs must equal an uninterrupted run's, byte for byte.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bnstudy.recording import FAULT_ENV, SCHEMAS, ResultsLock, RunDir, table_bytes

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["run", "noisy-bn", "--preset", "smoke", "--arms", "noisy-batchnorm", "--no-progress",
        "--set", "data.dataset=synthetic", "--set", "train.steps=30", "--set", "train.checkpoint_every=4",
        "--set", "train.log_every=3", "--set", "train.eval_every=10", "--set", "activations.every=4"]


def bnstudy(results: Path, fault: str | None = None, args=ARGS, threads: int = 1) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run([sys.executable, "-m", "bnstudy", *args, "--results-dir", str(results)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def csvs(results: Path) -> dict[str, bytes]:
    folder = results / "noisy-bn" / "noisy-batchnorm" / "seed-0"
    return {name: table_bytes(folder, name) for name in SCHEMAS}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    results = tmp_path_factory.mktemp("whole")
    assert bnstudy(results).returncode == 0
    return csvs(results)


KILL_POINTS = [
    ["train-step@2"],  # before the first checkpoint: starts again from step 0
    ["train-step@13"],  # during training, between checkpoints
    ["checkpoint-write@3"],  # while the third checkpoint is being written
    ["csv-append@5"],  # half-way through appending rows: a torn CSV tail
    ["csv-append@9", "checkpoint-write@2"],  # killed twice, the second time during the resumed run
]


@pytest.mark.parametrize("faults", KILL_POINTS, ids=["+".join(f) for f in KILL_POINTS])
def test_sigkill_then_rerun_gives_the_uninterrupted_numbers(tmp_path, uninterrupted, faults):
    for fault in faults:
        killed = bnstudy(tmp_path, fault)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        meta = json.loads((tmp_path / "noisy-bn" / "noisy-batchnorm" / "seed-0" / "meta.json").read_text())
        assert meta["status"] == "running"
    resumed = bnstudy(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert csvs(tmp_path) == uninterrupted


def test_a_run_resumed_by_a_launcher_of_another_thread_count_keeps_its_own(tmp_path, uninterrupted):
    """Killed under one thread (Ray's one core per run), resumed where the process gets two (the local launcher):
    the run goes on with one, ends with the uninterrupted numbers, and meta.json states one count."""
    assert bnstudy(tmp_path, "train-step@13").returncode == -signal.SIGKILL
    resumed = bnstudy(tmp_path, threads=2)
    assert resumed.returncode == 0 and "resuming on 1 thread(s), as the run trained so far" in resumed.stdout
    assert csvs(tmp_path) == uninterrupted
    meta = json.loads((tmp_path / "noisy-bn" / "noisy-batchnorm" / "seed-0" / "meta.json").read_text(encoding="utf-8"))
    assert meta["environment"]["threads"] == 1


def test_a_run_stopped_at_its_deadline_resumes_to_the_uninterrupted_numbers(tmp_path, uninterrupted):
    """A deadline (--stop-after, the end of a GPU lease) that passes during a run: the run checkpoints at its next
    log interval (step 3 here, between two checkpoints) and stops, still running; the same command ends it as if
    it had run whole."""
    from bnstudy.config import load_experiment, run_config
    from bnstudy.runner import load_dataset
    from bnstudy.train import train_run

    one_thread = ["--set", "train.threads=1"]  # as the uninterrupted run's process has (OMP_NUM_THREADS=1)
    overrides = [value for flag, value in zip(ARGS, ARGS[1:]) if flag == "--set"] + ["train.threads=1"]
    config = run_config(load_experiment("noisy-bn"), "noisy-batchnorm", 0, "smoke", overrides)
    run = RunDir(tmp_path, "noisy-bn", "noisy-batchnorm", 0)
    cpu = torch.device("cpu")
    meta = train_run(config, run, load_dataset(config, None, cpu), cpu, progress=False, deadline=time.time())
    assert (meta["status"], meta["steps_done"]) == ("running", 3)
    resumed = bnstudy(tmp_path, args=ARGS + one_thread)
    assert resumed.returncode == 0, resumed.stderr
    assert "1 run(s) trained" in resumed.stdout
    assert csvs(tmp_path) == uninterrupted


def test_past_the_deadline_no_run_starts_and_the_closing_line_says_so(tmp_path):
    stopped = bnstudy(tmp_path, args=ARGS + ["--stop-after", "1e-9"])
    assert stopped.returncode == 0, stopped.stderr
    assert "noisy-bn/noisy-batchnorm/seed-0: not started, the time given (--stop-after) is up" in stopped.stdout
    assert "0 run(s) trained, 1 stopped or not started by --stop-after" in stopped.stdout


def test_runs_side_by_side_in_processes_give_the_numbers_of_one_after_another(tmp_path, uninterrupted):
    """--launcher processes (several runs on one GPU, no Ray needed): two runs at once, one thread each, end with
    the numbers the local launcher gives."""
    args = [a for a in ARGS if a not in ("--arms", "noisy-batchnorm")] + ["--arms", "noisy-batchnorm", "standard"]
    both = bnstudy(tmp_path, args=args + ["--set", "train.threads=1", "--launcher", "processes", "--jobs", "2"])
    assert both.returncode == 0, both.stderr
    assert both.stdout.count(": complete,") == 2 and "2 run(s) trained" in both.stdout
    assert csvs(tmp_path) == uninterrupted


@pytest.mark.parametrize("fault, status, rerun_says", [("finish@1", "running", "1 run(s) trained"),
                                                       ("settle@1", "complete", "skipped")])
def test_a_kill_while_a_finished_run_is_compressed_loses_nothing(tmp_path, uninterrupted, fault, status, rerun_says):
    """Killed once the tables are packed: before meta.json says complete and lists them in the same write (the run
    is still running, and resumes), or after it (both forms, the plain ones dropped by the next run)."""
    assert bnstudy(tmp_path, fault).returncode == -signal.SIGKILL
    folder = tmp_path / "noisy-bn" / "noisy-batchnorm" / "seed-0"
    assert json.loads((folder / "meta.json").read_text())["status"] == status
    assert csvs(tmp_path) == uninterrupted  # readable in between, from the plain files
    rerun = bnstudy(tmp_path)
    assert rerun.returncode == 0 and rerun_says in rerun.stdout, rerun.stdout
    assert csvs(tmp_path) == uninterrupted
    assert sorted(p.name for p in folder.glob("*.csv*")) == sorted(f"{name}.csv.xz" for name in SCHEMAS)
    files = json.loads((folder / "meta.json").read_text())["files"]
    assert {name: entry["bytes"] for name, entry in files.items()} == {
        name: (folder / name).stat().st_size for name in files}


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, uninterrupted):
    assert bnstudy(tmp_path, "train-step@14").returncode == -signal.SIGKILL
    checkpoint = tmp_path / "noisy-bn" / "noisy-batchnorm" / "seed-0" / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # torn by a disk, not by us
    resumed = bnstudy(tmp_path)
    assert resumed.returncode == 0 and "unreadable checkpoint" in resumed.stdout
    assert csvs(tmp_path) == uninterrupted


def test_a_second_process_on_the_same_folder_refuses_and_changes_nothing(tmp_path):
    folder = tmp_path / "noisy-bn"
    with ResultsLock(folder):  # as if another bnstudy were running on this experiment folder
        second = bnstudy(tmp_path)
        assert second.returncode == 2
        assert "in use by another bnstudy run" in second.stderr and "Traceback" not in second.stderr
        assert str(folder / ".lock") in second.stderr and f"{os.getpid()}" in second.stderr
        assert not (folder / "noisy-batchnorm").exists()
    with ResultsLock(folder):  # released: taken again at once
        pass


def test_a_killed_run_that_is_still_a_zombie_holds_no_lock(tmp_path):
    """SIGKILLed, its parent never reaping it: its pid lives on as a zombie, its lock must not."""
    env = dict(os.environ, OMP_NUM_THREADS="1", **{FAULT_ENV: "train-step@3"})
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; child = subprocess.Popen(sys.argv[1:]); "
                               "print(child.pid, flush=True); time.sleep(300)",
         sys.executable, "-m", "bnstudy", *ARGS, "--results-dir", str(tmp_path)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        pid = int(parent.stdout.readline())
        status = Path(f"/proc/{pid}/status")
        deadline = time.monotonic() + 120
        while "State:\tZ" not in status.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "State:\tZ" in status.read_text()  # killed by its fault point, not reaped
        rerun = bnstudy(tmp_path)
        assert rerun.returncode == 0, rerun.stderr
    finally:
        parent.kill()
        parent.wait()


def test_a_stale_lock_is_taken_over(tmp_path):
    folder = tmp_path / "noisy-bn"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (folder / ".lock").write_text(f"{os.uname().nodename} {dead.stdout.strip()}\n")
    with ResultsLock(folder):
        assert (folder / ".lock").read_text().split()[1] == str(os.getpid())


def run_folder(results: Path) -> Path:
    return results / "noisy-bn" / "noisy-batchnorm" / "seed-0"


def test_a_csv_shorter_than_its_checkpoint_says_is_never_padded(tmp_path, uninterrupted):
    """An older or partly synced copy: no checkpoint fits it, so the run trains again from step 0."""
    assert bnstudy(tmp_path, "train-step@26").returncode == -signal.SIGKILL  # checkpoints at steps 20 and 24
    metrics = run_folder(tmp_path) / "metrics.csv"
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:11]))
    resumed = bnstudy(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "damaged run: metrics.csv has" in resumed.stdout and "training again from step 0" in resumed.stdout
    assert csvs(tmp_path) == uninterrupted and b"\0" not in csvs(tmp_path)["metrics"]


def test_a_checkpoint_that_holds_no_checkpoint_falls_back_to_the_previous_one(tmp_path, uninterrupted):
    import torch

    assert bnstudy(tmp_path, "train-step@14").returncode == -signal.SIGKILL
    torch.save({}, run_folder(tmp_path) / "checkpoint.pt")
    resumed = bnstudy(tmp_path)
    assert resumed.returncode == 0 and "not a bnstudy checkpoint" in resumed.stdout, resumed.stderr
    assert csvs(tmp_path) == uninterrupted


def final_numbers(results: Path) -> dict:
    meta = json.loads((run_folder(results) / "meta.json").read_text())
    return {k: v for k, v in meta.items() if k.startswith("final_")}


def test_a_run_killed_after_its_last_checkpoint_reports_every_final_number(tmp_path):
    whole = tmp_path / "whole"
    assert bnstudy(whole).returncode == 0
    assert bnstudy(tmp_path / "killed", "finishing@1").returncode == -signal.SIGKILL
    assert bnstudy(tmp_path / "killed").returncode == 0
    assert final_numbers(tmp_path / "killed") == final_numbers(whole)
    assert None not in final_numbers(whole).values()


@pytest.mark.parametrize("text", ['{"status": "compl', "", "null", "[1, 2]"])
@pytest.mark.parametrize("name", ["meta.json", "config.json"])
def test_an_unreadable_meta_or_config_json_stops_the_run_and_touches_nothing(tmp_path, name, text):
    assert bnstudy(tmp_path).returncode == 0
    folder = run_folder(tmp_path)
    (folder / name).write_text(text)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    rerun = bnstudy(tmp_path)
    assert rerun.returncode == 2 and "Traceback" not in rerun.stderr, rerun.stderr
    assert rerun.stderr.startswith("bnstudy: error:") and rerun.stderr.count("\n") == 1
    assert str(folder / name) in rerun.stderr and "finished run's compressed tables" in rerun.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def two_seeds(tmp_path) -> Path:
    assert bnstudy(tmp_path, args=[*ARGS, "--seeds", "0", "1"]).returncode == 0
    return tmp_path / "noisy-bn" / "noisy-batchnorm"


def test_a_finished_run_missing_a_file_is_left_out_of_figures_and_captions(tmp_path, capsys):
    from bnstudy.cli import main
    from bnstudy.reading import Results

    arm = two_seeds(tmp_path)
    (arm / "seed-1" / "activations.csv.xz").unlink()
    assert main(["plot", "noisy-bn", "--results-dir", str(tmp_path)]) == 0
    assert f"left out {arm / 'seed-1'}: finished, but activations.csv.xz missing" in capsys.readouterr().err
    results = Results(tmp_path, "noisy-bn")
    assert "seeds: 0 (n=1)" in results.caption() and set(results.tables["metrics"].seed) == {0}


def test_a_finished_run_missing_a_file_is_not_skipped_as_complete(tmp_path):
    arm = two_seeds(tmp_path)
    (arm / "seed-1" / "metrics.csv.xz").write_bytes(b"")  # there, but not whole
    rerun = bnstudy(tmp_path, args=[*ARGS, "--seeds", "0", "1"])
    assert rerun.returncode == 2 and rerun.stderr.count("\n") == 1, rerun.stderr
    assert f"{arm / 'seed-1'}: finished, but metrics.csv.xz is not the file meta.json lists" in rerun.stderr


def test_a_non_numeric_cell_stops_plot_with_one_line(tmp_path, capsys):
    import lzma

    from bnstudy.cli import main

    arm = two_seeds(tmp_path)
    text = lzma.decompress((arm / "seed-0" / "metrics.csv.xz").read_bytes()).decode().splitlines()
    text[3] = ",".join(text[3].split(",")[:-1] + ["abc"])
    (arm / "seed-0" / "metrics.csv").write_text("\n".join(text) + "\n")
    RunDir.at(arm / "seed-0").settle()  # packed and listed in meta.json as a finishing run does: a verified archive
    assert main(["plot", "noisy-bn", "--results-dir", str(tmp_path)]) == 0  # the other seed is drawn alone
    err = capsys.readouterr().err
    assert f"{arm / 'seed-0' / 'metrics.csv.xz'}: unreadable as the metrics table" in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_a_seed_of_another_configuration_is_never_pooled(tmp_path, capsys):
    from bnstudy.cli import main

    assert bnstudy(tmp_path, args=[*ARGS, "--seed", "7"]).returncode == 0
    other = bnstudy(tmp_path, args=[*ARGS, "--seed", "9", "--set", "train.steps=40", "--preset", "quick"])
    assert other.returncode == 2 and other.stderr.count("\n") == 1, other.stderr
    assert "seed 9 would be pooled with" in other.stderr
    assert (other.stderr.index("preset: 'smoke' there, 'quick' now")
            < other.stderr.index("train.steps: 30 there, 40 now"))
    assert not (tmp_path / "noisy-bn" / "noisy-batchnorm" / "seed-9").exists()
    # written behind run's back (another version, a copied folder): plot and report refuse too
    elsewhere = tmp_path / "elsewhere"
    assert bnstudy(elsewhere, args=[*ARGS, "--seed", "9", "--set", "train.steps=40"]).returncode == 0
    shutil.copytree(elsewhere / "noisy-bn" / "noisy-batchnorm" / "seed-9",
                    tmp_path / "noisy-bn" / "noisy-batchnorm" / "seed-9")
    for command in (["plot", "noisy-bn"], ["report", "--no-figures"]):
        assert main([*command, "--results-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "seeds 7 and 9 ran different configurations (train.steps: 30 in seed 7, 40 in seed 9)" in err, err


def test_a_non_finite_value_is_said_and_left_out_never_averaged(tmp_path, capsys):
    import lzma

    import numpy as np

    from bnstudy.reading import Results

    arm = two_seeds(tmp_path)
    lines = lzma.decompress((arm / "seed-0" / "activations.csv.xz").read_bytes()).decode().splitlines()
    lines[5] = ",".join(lines[5].split(",")[:-1] + ["inf"])
    (arm / "seed-0" / "activations.csv").write_text("\n".join(lines) + "\n")
    RunDir.at(arm / "seed-0").settle()  # packed and listed in meta.json as a finishing run does
    results = Results(tmp_path, "noisy-bn")
    assert results.non_finite == [f"noisy-bn/noisy-batchnorm/seed-0: 1 non-finite value(s) in activations left out "
                                  f"(first: inf at step {lines[5].split(',')[0]})"]
    assert "bnstudy: warning: noisy-bn/noisy-batchnorm/seed-0: 1 non-finite" in capsys.readouterr().err
    assert np.isfinite(results.tables["activations"].value).all()
    assert len(results.tables["activations"]) == 2 * (len(lines) - 1) - 1


@pytest.mark.parametrize("command", [["plot", "noisy-bn"], ["report", "--no-figures"], ["report"]])
def test_killing_plot_or_report_never_leaves_a_torn_file(tmp_path, command):
    assert bnstudy(tmp_path).returncode == 0
    assert bnstudy(tmp_path, args=["report"]).returncode == 0  # every figure, summary and the report there
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for n in (1, 2):  # the first and second file each command writes
        assert bnstudy(tmp_path, f"atomic-write@{n}", args=command).returncode == -signal.SIGKILL
        after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".tmp")}
        assert after == before


ENCODING_CHECK = """
import sys, warnings
from pathlib import Path
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import bnstudy
    from bnstudy.cli import main
    results, readme = sys.argv[1], sys.argv[2]
    assert main(["run", "noisy-bn", "--preset", "smoke", "--arms", "standard", "--results-dir", results,
                 "--no-progress", "--set", "data.dataset=synthetic"]) == 0
    assert main(["report", "--results-dir", results, "--readme", readme, "--no-figures"]) == 0
import json
print("PACKAGE", json.dumps(str(Path(bnstudy.__file__).resolve().parent)))
print("WARNED", json.dumps([w.filename for w in caught if issubclass(w.category, EncodingWarning)]))
"""


def own_files(filenames: list[str], package: str) -> list[str]:
    """The files of the package among `filenames`: found by where the package is, never by a word in the path (a
    checkout at '/tmp/my bnstudy/' holds torch's files under '.venv' too)."""
    return [name for name in filenames if Path(name).resolve().is_relative_to(Path(package))]


def test_the_package_own_files_are_found_by_its_location_not_by_its_name(tmp_path):
    checkout = tmp_path / "my bnstudy ü" / "bnstudy"
    package = checkout / "bnstudy"
    torch_file = checkout / ".venv" / "lib" / "python3.11" / "site-packages" / "torch" / "serialization.py"
    ours = package / "recording.py"
    assert own_files([str(torch_file), str(ours)], str(package)) == [str(ours)]


def test_every_text_file_is_read_and_written_as_utf8_whatever_the_locale(tmp_path):
    """Under a Latin-1 locale a text file opened without an encoding double-encodes every non-ASCII character
    (the README's outside the claims block); -X warn_default_encoding names each such open in bnstudy's code."""
    readme = tmp_path / "README.md"
    prose = "# β-smoothness — ‖∇L‖, η·λ_max, ℓ∞\n<!-- claims:start -->\nx\n<!-- claims:end -->\n## ℓp … ✅\n"
    readme.write_bytes(prose.encode("utf-8"))
    done = subprocess.run([sys.executable, "-X", "warn_default_encoding", "-c", ENCODING_CHECK, str(tmp_path / "r"),
                           str(readme)], capture_output=True, text=True, encoding="utf-8", timeout=600,
                          env=os.environ | {"PYTHONUTF8": "0"})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.startswith(("PACKAGE ", "WARNED ")))
    assert own_files(json.loads(lines["WARNED"]), json.loads(lines["PACKAGE"])) == [], done.stdout[-2000:]
    text = readme.read_bytes().decode("utf-8")
    assert text.startswith(prose.split("<!--")[0]) and text.endswith("<!-- claims:end -->\n## ℓp … ✅\n")
