"""A GPU lease rehearsed here: the data in call-sized parts, the calls' commands run against a stand-in for the
device (a store folder and $OUT), the paper-figures runs side by side on the CPU at smoke, and what comes back."""
import json
import os
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bnstudy import lease

ROOT = Path(__file__).resolve().parent.parent


def test_parts_fit_a_call_each_and_join_to_the_archive(tmp_path):
    sources = []
    for i, size in enumerate((2500, 1700, 10)):
        sources.append(tmp_path / f"x.tar.xz.part{i}")
        sources[-1].write_bytes(os.urandom(size))
    folders = lease.split_parts(sources, tmp_path / ".lease", room=1000)
    parts = [next(f.iterdir()) for f in folders]
    assert [f.name for f in folders] == [f"call-{i}" for i in range(1, 6)]
    assert [p.name for p in parts] == [f"x.tar.xz.part{i}" for i in range(5)]
    assert all(p.stat().st_size <= 1000 for p in parts)
    assert b"".join(p.read_bytes() for p in parts) == b"".join(s.read_bytes() for s in sources)
    with pytest.raises(lease.LeaseError, match="leaves no room"):
        lease.split_parts(sources, tmp_path / ".lease", room=0)


def test_the_plan_carries_one_folder_a_call_and_the_last_call_trains(tmp_path):
    for i in (1, 2, 10):
        (tmp_path / f"call-{i}").mkdir()
    calls = lease.plan_calls(tmp_path, 7.5)
    assert [c["carry"] for c in calls] == [[str(tmp_path / f"call-{i}")] for i in (1, 2, 10)]
    assert all(c["command"].startswith("python3 -m bnstudy.lease stage ") for c in calls)
    assert calls[-1]["command"].endswith("&& make gpu-paper NOVENV=1 MINUTES=7.5")
    assert all(len(c["command"]) <= 2000 for c in calls)  # the device's limit on a command


def test_a_missing_or_foreign_part_is_one_line_and_no_data(tmp_path):
    store = tmp_path / "store"
    for i in (0, 2):
        (tmp_path / f"a.tar.part{i}").write_bytes(b"x" * 100)
    lease.stage([tmp_path / "a.tar.part0", tmp_path / "a.tar.part2"], store)
    lease.stage([tmp_path / "a.tar.part0"], store)  # a call repeated: the part is replaced, not appended
    assert (store / "a.tar.part0").stat().st_size == 100
    (store / ".a.tar.part1.tmp").write_bytes(b"z")  # a copy a cut call left: never taken for a part
    with pytest.raises(lease.LeaseError, match=r"staged parts in .*: \[0, 2\]; a part is missing"):
        lease.prepare_data(store, print)
    (tmp_path / "a.tar.part1").write_bytes(b"y" * 100)
    lease.stage([tmp_path / "a.tar.part1"], store)
    with pytest.raises(lease.LeaseError, match="do not unpack to a known CIFAR-10"):
        lease.prepare_data(store, print)
    with pytest.raises(lease.LeaseError, match="no such file to stage"):
        lease.stage([tmp_path / "absent.part3"], store)


def _run(folder: Path, status: str, files: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"status": status}))
    for name, size in files.items():
        (folder / name).write_bytes(os.urandom(size))
    return folder


def test_the_pack_takes_every_table_and_the_checkpoints_that_fit(tmp_path):
    """Finished runs' files and unfinished runs' tables always; unfinished runs' newest checkpoints in the runs'
    order while the return limit has room; never a .prev, a lock or a finished run's leftovers."""
    results = tmp_path / "paper"
    _run(results / "paper-figures" / "standard" / "seed-0", "complete", {"metrics.csv.xz": 500})
    _run(results / "paper-figures" / "batchnorm" / "seed-0", "running",
         {"metrics.csv": 300, "checkpoint.pt": 4000, "checkpoint.pt.prev": 4000})
    _run(results / "paper-figures" / "l1" / "seed-0", "running", {"metrics.csv": 300, "checkpoint.pt": 4000})
    (results / "paper-figures" / ".lock").write_text("1")
    logged = []
    out = tmp_path / "out"
    out.mkdir()
    parts = lease.pack(results, out, budget=6000, log=logged.append)
    with tarfile.open(fileobj=lease._Joined(parts), mode="r|*") as tar:
        names = sorted(m.name for m in tar)
    assert names == [f"paper/paper-figures/{name}" for name in (
        "batchnorm/seed-0/checkpoint.pt", "batchnorm/seed-0/meta.json", "batchnorm/seed-0/metrics.csv",
        "l1/seed-0/meta.json", "l1/seed-0/metrics.csv", "standard/seed-0/meta.json", "standard/seed-0/metrics.csv.xz")]
    assert len(logged) == 1 and "l1/seed-0: checkpoint left behind" in logged[0]


def test_the_lease_rehearsed_on_the_cpu_at_smoke(tmp_path, cifar_dir):
    """The calls' own commands (docs/gpu.md), run against a stand-in device: a store folder and $OUT here, DEVICE=cpu
    and PRESET=smoke. The CIFAR-10 copy travels in three parts (a plain tar here: unpacking is the same)."""
    archive = tmp_path / "cifar.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(cifar_dir / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    folders = lease.split_parts([archive], tmp_path / ".lease", room=archive.stat().st_size // 3 + 1)
    assert len(folders) == 3
    out, results = tmp_path / "out", tmp_path / "results"
    env = dict(os.environ, OUT=str(out), BNSTUDY_LEASE_STORE=str(tmp_path / "store"), OMP_NUM_THREADS="1")
    python = tmp_path / "python"  # the checkout may lie under a path with spaces, which make's $(PYTHON) splits
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    python.chmod(0o755)
    rehearsal = (f" DEVICE=cpu PRESET=smoke PYTHON={python} LEASE_ARGS='--results-dir {results} "
                 f"--try-jobs 1 2 --settle-seconds 2 --bench-seconds 0.05 --width 0.0625 --set train.threads=1'")
    for call in lease.plan_calls(tmp_path / ".lease", minutes=6):
        command = call["command"].replace("python3 ", f"{python} ")
        done = subprocess.run(["bash", "-c", command + (rehearsal if "gpu-paper" in command else "")], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (out / "lease.log").read_text()
    for line in ("checksums verified", "[make test-gpu] exit 0", "[bench] exit 0", "side by side: 1 process(es)",
                 "side by side: 2 process(es)", "[run] exit 0", "packed 1 part(s)"):
        assert line in log, log
    back = tmp_path / "back"
    with tarfile.open(fileobj=lease._Joined(sorted(out.glob("paper.tar.xz.part*"))), mode="r|*") as tar:
        tar.extractall(back, filter="data")
    metas = [json.loads(p.read_text()) for p in (back / "results" / "paper-figures").glob("*/seed-0/meta.json")]
    assert sorted(m["arm"] for m in metas) == sorted(lease.ORDER)
    assert {m["status"] for m in metas} == {"complete"} and {m["preset"] for m in metas} == {"smoke"}
    assert (back / "results" / "bench" / "bench.csv").is_file()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_a_side_by_side_measurement_that_fails_trains_with_the_fewest_processes(tmp_path):
    """Measuring processes that crash (here: CUDA asked for on a CPU) count as 0 steps/s, said in the log; with no
    count measured the runs train one at a time rather than not at all."""
    logged = []
    assert lease.side_by_side("cuda", tmp_path, [2, 1], 0.0625, 8, 0.01, 0.0, logged.append) == 1
    assert "side by side: 2 process(es), 0.0 training steps/s in all (0.0, 0.0 each; 0 = failed)" in logged[0]
    assert logged[-1] == "side by side: no count could be measured; training with 1"


def test_the_lease_says_what_is_wrong_in_one_line(tmp_path, capsys):
    """Found: a stray folder call-x was a traceback for plan, a part staged twice under two archives' names was
    called missing, stage given a folder said 'no such file', and --minutes nan was taken."""
    (tmp_path / "call-1").mkdir()
    (tmp_path / "call-x").mkdir()
    assert lease.main(["plan", "--into", str(tmp_path)]) == 2
    assert "call-x is no call's folder (call-K, K a number): remove it" in capsys.readouterr().err
    store = tmp_path / "store"
    for name in ("a.tar.part0", "b.tar.part0", "a.tar.part1"):
        (tmp_path / name).write_bytes(b"x")
    lease.stage([tmp_path / "a.tar.part0", tmp_path / "b.tar.part0", tmp_path / "a.tar.part1"], store)
    with pytest.raises(lease.LeaseError, match=r"part 0 duplicated"):
        lease.prepare_data(store, print)
    assert lease.main(["stage", str(tmp_path / "call-1"), "--store", str(store)]) == 2
    assert "a folder; stage takes the files in it" in capsys.readouterr().err
    for bad in ("nan", "inf", "-1", "soon"):
        with pytest.raises(SystemExit) as refused:
            lease.main(["plan", "--into", str(tmp_path), "--minutes", bad])
        assert refused.value.code == 2
        err = capsys.readouterr().err
        assert "--minutes" in err and err.count("\n") <= 3 and "Traceback" not in err
