"""A GPU lease in as few calls as fit: the paper preset's eleven trainings, side by side, within a time budget.

A lent GPU machine comes for minutes, bare, without a network, and each call to it ships the checkout plus at most
what fits under a size cap. So the work is a few calls back to back (docs/gpu.md, "A GPU lease, call by call"):

    python3 -m bnstudy.lease parts ARCHIVE_PARTS... --into .lease       here: the data in call-sized parts
    python3 -m bnstudy.lease plan --into .lease                         here: each call's command and carry
    python3 -m bnstudy.lease stage .lease/call-1/*                      there, calls 1..n-1: keep a part
    python3 -m bnstudy.lease stage .lease/call-n/* && make gpu-paper NOVENV=1 MINUTES=8     there, the last call

`paper` (what make gpu-paper runs) joins the staged parts and unpacks CIFAR-10, runs the CUDA tests (it stops if one
fails), the device's bench rows, measures training steps per second for one process against several side by side,
trains paper-figures' runs in the order of docs/long.md with the fastest of those counts under --stop-after, and
packs into $OUT every finished run and every unfinished run's tables (with its checkpoint where the return limit
leaves room), in parts of at most 16 MB, beside a log. Back here: `cat paper.tar.xz.part* | tar -xJf -`.

It needs only what a GPU image's system Python has (torch, numpy, pandas, ...: tests/test_portable.py).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import re
import tarfile
import time
from pathlib import Path

STORE = Path(os.environ.get("BNSTUDY_LEASE_STORE", "/tmp/bnstudy-lease"))  # outside the checkout: kept while warm
CALL_LIMIT = 64 * 2**20  # what one call ships: the working tree and what it carries
MARGIN = 2 * 2**20  # for files the tree gains before the calls (a log, a results folder)
RETURN_FILES, RETURN_BYTES, PART_BYTES = 8, 64 * 2**20, 16_000_000  # what $OUT brings back: files, total, each
ORDER = ["standard", "batchnorm", "standard-lr0.01", "batchnorm-lr0.01", "noisy-batchnorm", "noise-only",
         "standard-lr0.5", "batchnorm-lr0.5", "l1", "l2", "linf"]  # docs/long.md's groups 1-5
RESERVE_S = 75  # of the budget, kept for stopping at a log interval, the last checkpoints and packing


class LeaseError(Exception):
    """One line for the log and exit code 2."""


# ----------------------------------------------------------------------------------------------
# Here: the data in call-sized parts, and the calls
# ----------------------------------------------------------------------------------------------
def tree_bytes(root: Path) -> int:
    """Bytes of what a call ships of the checkout: tracked files and untracked ones git does not ignore."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                           capture_output=True, check=True).stdout.split(b"\0")
    return sum((root / n.decode()).stat().st_size for n in names if n and (root / n.decode()).is_file())


def split_parts(sources: list[Path], into: Path, room: int) -> list[Path]:
    """The archive the `sources` make when joined, cut into parts of at most `room` bytes, each in a folder
    `into/call-K/` of its own (one call carries one folder). Returns the folders."""
    if room <= 0:
        raise LeaseError(f"the checkout alone leaves no room under a call's {CALL_LIMIT / 2**20:g} MiB")
    name = sources[0].name.split(".part")[0]
    shutil.rmtree(into, ignore_errors=True)
    folders, buffer = [], b""
    for chunk in _chunks(sources):
        buffer += chunk
        while len(buffer) >= room:
            folders.append(_write_part(into, len(folders), name, buffer[:room]))
            buffer = buffer[room:]
    if buffer or not folders:
        folders.append(_write_part(into, len(folders), name, buffer))
    return folders


def _chunks(sources: list[Path], size: int = 8 * 2**20):
    for source in sources:
        with open(source, "rb") as f:
            while chunk := f.read(size):
                yield chunk


def _write_part(into: Path, index: int, name: str, data: bytes) -> Path:
    folder = into / f"call-{index + 1}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.part{index}").write_bytes(data)
    return folder


def call_number(folder: Path) -> int | None:
    """K of a folder named call-K; None for anything else."""
    match = re.fullmatch(r"call-(\d+)", folder.name)
    return int(match.group(1)) if match and folder.is_dir() else None


def plan_calls(into: Path, minutes: float) -> list[dict]:
    """Each call: the folder it carries and its command. The last one also trains and packs."""
    calls = {p: call_number(p) for p in into.glob("call-*")}
    strays = sorted(p.name for p, number in calls.items() if number is None)
    if strays:
        raise LeaseError(f"{into}: {', '.join(strays)} is no call's folder (call-K, K a number): remove it")
    folders = sorted(calls, key=calls.get)
    if not folders:
        raise LeaseError(f"no call-* folders in {into}: run `python3 -m bnstudy.lease parts` first")
    calls = [{"carry": [str(f)], "command": f"python3 -m bnstudy.lease stage {shlex.quote(str(f))}/*"}
             for f in folders]
    calls[-1]["command"] += f" && make gpu-paper NOVENV=1 MINUTES={minutes:g}"
    return calls


# ----------------------------------------------------------------------------------------------
# There: stage the parts, then the data, the checks, the runs and the packing
# ----------------------------------------------------------------------------------------------
def stage(files: list[Path], store: Path) -> str:
    """Copy each part into the store (a temporary name, then a rename: a cut call leaves no half part)."""
    store.mkdir(parents=True, exist_ok=True)
    for path in files:
        if path.is_dir():
            raise LeaseError(f"{path}: a folder; stage takes the files in it ({path}/*)")
        if not path.is_file():
            raise LeaseError(f"{path}: no such file to stage (was it carried?)")
        tmp = store / f".{path.name}.tmp"
        shutil.copyfile(path, tmp)
        tmp.replace(store / path.name)
    staged = [p.name for p in staged_parts(store)]
    return f"staged in {store}: {', '.join(staged)} ({sum((store / p).stat().st_size for p in staged):,} bytes)"


def prepare_data(store: Path, log) -> Path:
    """CIFAR-10 unpacked from the staged parts (once: a later call finds it), checked against the known copies."""
    from bnstudy.data import DataError, verify_cifar

    data = store / "data"
    try:
        log(f"CIFAR-10 in {data}: {verify_cifar(data / 'cifar-10-batches-py')}, checksums verified (already there)")
        return data
    except DataError:
        pass
    parts = staged_parts(store)
    numbers = [part_number(p) for p in parts]
    duplicated = sorted({n for n in numbers if numbers.count(n) > 1})
    if duplicated:
        raise LeaseError(f"staged parts in {store}: part {', '.join(map(str, duplicated))} duplicated (two archives' "
                         f"parts staged together?): {', '.join(p.name for p in parts)}; clear the store and stage "
                         f"one archive's parts")
    if not parts or numbers != list(range(len(parts))):
        raise LeaseError(f"staged parts in {store}: {numbers or 'none'}; a part is missing (stage every call's part, "
                         f"calls back to back while the machine is warm)")
    shutil.rmtree(data, ignore_errors=True)
    try:
        with tarfile.open(fileobj=_Joined(parts), mode="r|*") as archive:
            archive.extractall(data, filter="data")
        log(f"CIFAR-10 unpacked from {len(parts)} parts: {verify_cifar(data / 'cifar-10-batches-py')}, "
            f"checksums verified")
    except (tarfile.TarError, EOFError, OSError, DataError) as err:
        raise LeaseError(f"the {len(parts)} staged parts in {store} do not unpack to a known CIFAR-10 "
                         f"({type(err).__name__}: {err})") from None
    return data


def part_number(path: Path) -> int | None:
    """K of a part named NAME.partK; None for anything else (a temporary copy cut short, a stray file)."""
    match = re.fullmatch(r"[^.].*\.part(\d+)", path.name)
    return int(match.group(1)) if match else None


def staged_parts(store: Path) -> list[Path]:
    return sorted((p for p in store.glob("*.part*") if part_number(p) is not None), key=part_number)


class _Joined:
    """The parts read as one stream (tarfile's `r|*` reads forward only)."""

    def __init__(self, parts: list[Path]):
        self.chunks = _chunks(parts, 2**20)
        self.buffer = bytearray()  # deleting from its front is cheap: no copy of what remains

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.buffer += chunk
        size = len(self.buffer) if size < 0 else size
        out = bytes(self.buffer[:size])
        del self.buffer[:size]
        return out


def step(name: str, command: list[str], log, timeout: float, env: dict | None = None) -> bool:
    """One stage as a subprocess: its output into the log, its wall time and exit code after it."""
    started = time.time()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as err:
        output, code = f"{err.stdout or ''}{err.stderr or ''}", f"timed out after {timeout:.0f} s"
    log(output.rstrip())
    log(f"[{name}] exit {code}, {time.time() - started:.1f} s")
    return code == 0


def side_by_side(device: str, data: Path, jobs: list[int], width: float, batch: int, seconds: float,
                 settle: float, log) -> int:
    """Training steps per second of k processes at once, each timing the plain step of the runs' network, for each
    k of `jobs`; returns the k with the most steps per second in all (ties: the fewer)."""
    rates = {}
    for k in jobs:
        start_at = time.time() + settle  # every process has started CUDA and loaded its data by then
        command = [sys.executable, "-m", "bnstudy.lease", "steps", "--device", device, "--data-dir", str(data),
                   "--width", str(width), "--batch", str(batch), "--seconds", str(seconds), "--start-at", str(start_at)]
        procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(k)]
        each = [_rate(p) for p in procs]
        rates[k] = sum(each)
        log(f"side by side: {k} process(es), {rates[k]:.1f} training steps/s in all "
            f"({', '.join(f'{r:.1f}' for r in each)} each; 0 = failed), width {width:g}, batch {batch}, {device}")
    if not any(rates.values()):
        log(f"side by side: no count could be measured; training with {min(jobs)}")
        return min(jobs)
    return max(rates, key=lambda k: (rates[k], -k))


def _rate(proc: subprocess.Popen) -> float:
    """One measuring process's steps per second (its last line), or 0 if it failed or hung."""
    try:
        return float(proc.communicate(timeout=120)[0].strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        proc.kill()
        return 0.0


def time_steps(device: str, data: Path, width: float, batch: int, seconds: float, start_at: float) -> float:
    """Steps per second of the plain training step (bench's), timed from `start_at` on for `seconds`."""
    import torch

    from bnstudy.bench.device import timed_step
    from bnstudy.config import BackendConfig

    dev = torch.device(device)
    timed_step(dev, data, width, batch, 0.01, BackendConfig())  # CUDA's start, the data and the autotuner
    time.sleep(max(0.0, start_at - time.time()))
    return 1 / timed_step(dev, data, width, batch, seconds, BackendConfig())[0]


# ----------------------------------------------------------------------------------------------
# Packing what comes back
# ----------------------------------------------------------------------------------------------
def pack(results: Path, out: Path, budget: int, log) -> list[Path]:
    """Every run folder's tables and meta (finished runs first), then unfinished runs' checkpoints in the order of
    ORDER while they fit `budget`; the tar.xz cut into parts of PART_BYTES in `out`."""
    priority = {run: _priority(run) for run in results.glob("*/*/seed-*")}  # each meta.json read once
    runs = sorted(priority, key=priority.get)

    def file_priority(path: Path) -> tuple:
        run = next((p for p in path.parents if p in priority), None)
        return (priority[run] if run else (False, -1, "")), str(path)

    files = sorted((f for f in results.rglob("*") if f.is_file() and not _is_checkpoint(f)), key=file_priority)
    size = sum(f.stat().st_size for f in files)
    for run in runs:
        checkpoint = run / "checkpoint.pt"
        if checkpoint.is_file() and priority[run][0]:  # unfinished: "running", or "stopped" as asked (--until-step)
            if size + checkpoint.stat().st_size <= budget:
                files.append(checkpoint)
                size += checkpoint.stat().st_size
            else:
                log(f"{run}: checkpoint left behind ({checkpoint.stat().st_size:,} bytes over the return limit): "
                    f"this run starts again from step 0 in a later lease")
    archive = out.parent / f".{out.name}.paper.tar.xz"
    with tarfile.open(archive, "w:xz", preset=1) as tar:  # checkpoints hardly compress: a light preset is as small
        for f in files:
            tar.add(f, arcname=str(f.relative_to(results.parent)))
    return cut(archive, out / "paper.tar.xz")


def _priority(run: Path) -> tuple:
    meta = json.loads((run / "meta.json").read_text()) if (run / "meta.json").is_file() else {}
    arm = run.parent.name
    resumable = meta.get("status") in ("running", "stopped")  # a later lease goes on from its checkpoint
    return (resumable, ORDER.index(arm) if arm in ORDER else len(ORDER), str(run))


def _is_checkpoint(path: Path) -> bool:
    """Checkpoints go only where they resume something; dotfiles are locks and temporaries."""
    return path.name.startswith("checkpoint.pt") or path.name.startswith(".")


def cut(archive: Path, stem: Path) -> list[Path]:
    parts = []
    with open(archive, "rb") as f:
        while chunk := f.read(PART_BYTES):
            parts.append(stem.with_name(f"{stem.name}.part{len(parts)}"))
            parts[-1].write_bytes(chunk)
    archive.unlink()
    return parts


# ----------------------------------------------------------------------------------------------
# `paper`: the whole lease
# ----------------------------------------------------------------------------------------------
def paper(args) -> int:
    started, out = time.time(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = _logger(out / "lease.log", started)
    deadline = started + 60 * args.minutes
    data = prepare_data(Path(args.store), log)
    env = dict(os.environ, BNSTUDY_DATA=str(data))
    if not args.skip_tests:  # on a CPU every CUDA test skips, saying why: the rehearsal runs the same command
        if not step("make test-gpu", ["make", "test-gpu", "NOVENV=1", f"PYTHON={sys.executable}"], log, 240, env):
            log("a CUDA test failed: no training in this lease")
            return 1
    results = Path(args.results_dir)
    try:
        measure_and_train(args, data, results, deadline, out, log, env)
    finally:  # whatever broke on the way, what trained comes back
        _log_runs(results, log)
        parts = pack(results, out, RETURN_BYTES - 3 * 2**20, log)
        log(f"packed {len(parts)} part(s) into {out}: {', '.join(p.name for p in parts)}; lease took "
            f"{(time.time() - started) / 60:.1f} minutes")
    return 0


def _logger(path: Path, started: float):
    def log(text: str) -> None:
        line = f"{time.time() - started:7.1f}s  {text}" if text else ""
        print(line, flush=True)
        with open(path, "a") as f:
            f.write(line + "\n")
    return log


def measure_and_train(args, data: Path, results: Path, deadline: float, out: Path, log, env: dict) -> None:
    """bench's device rows, the side-by-side measurement, then the runs until the deadline (less RESERVE_S)."""
    bench = [sys.executable, "-m", "bnstudy", "bench", "--device", args.device, "--levers-only", "--no-compile",
             "--min-run-time", str(args.bench_seconds), "--data-dir", str(data), "--results-dir", str(results)]
    step("bench", bench + (["--width", str(args.width)] if args.width else []), log, 180, env)
    config = _first_config(args)
    jobs = side_by_side(args.device, data, args.try_jobs, config.model.width, config.train.batch_size,
                        args.bench_seconds, args.settle_seconds, log)
    minutes_left = (deadline - time.time() - RESERVE_S) / 60
    log(f"training with {jobs} process(es) side by side for at most {minutes_left:.1f} minutes")
    if minutes_left <= 0:
        return
    gpu_log = _sample_gpu(out)
    try:
        step("run", [sys.executable, "-m", "bnstudy", "run", "paper-figures", "--preset", args.preset, "--seeds",
                     *map(str, args.seeds), "--arms", *ORDER, "--launcher", "processes", "--jobs", str(jobs),
                     "--stop-after", f"{minutes_left:.3f}", "--device", args.device, "--data-dir", str(data),
                     "--results-dir", str(results), "--no-progress", *_sets(args)],
             log, 60 * minutes_left + RESERVE_S, env)
    finally:
        if gpu_log:
            gpu_log.terminate()


def _sets(args) -> list[str]:
    return [item for value in args.set for item in ("--set", value)]


def _first_config(args):
    from bnstudy.config import load_experiment, run_config

    return run_config(load_experiment("paper-figures"), ORDER[0], args.seeds[0], args.preset, list(args.set))


def _sample_gpu(out: Path):
    """nvidia-smi's utilization every 5 s into gpu.csv while the runs train (absent on a CPU rehearsal)."""
    if not shutil.which("nvidia-smi"):
        return None
    return subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,utilization.gpu,memory.used", "--format=csv",
                             "-l", "5"], stdout=open(out / "gpu.csv", "w"), stderr=subprocess.DEVNULL)


def _log_runs(results: Path, log) -> None:
    """Each run's status, steps and wall time, and what it ran on (the GPU's name where there was one)."""
    for meta_path in sorted(results.glob("*/*/seed-*/meta.json"), key=lambda p: _priority(p.parent)):
        meta = json.loads(meta_path.read_text())
        machine = meta.get("environment", {})
        log(f"{meta_path.parent}: {meta.get('status')}, {meta.get('steps_done', 0)} of {meta.get('steps')} steps in "
            f"{meta.get('wall_time_s', 0):.0f} s, on {machine.get('gpu', machine.get('device'))}")


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def minutes(text: str) -> float:
    """A wall-clock budget in minutes: a finite number above 0 ('nan' and 'inf' are no budget)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a finite number of minutes above 0")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m bnstudy.lease", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    parts = sub.add_parser("parts", help="here: the joined archive cut into call-sized parts, a folder per call")
    parts.add_argument("sources", nargs="+", type=Path, help="the archive's parts as they are (joined in this order)")
    parts.add_argument("--into", type=Path, default=Path(".lease"))
    plan = sub.add_parser("plan", help="here: each call's carry and command, as JSON")
    plan.add_argument("--into", type=Path, default=Path(".lease"))
    plan.add_argument("--minutes", type=minutes, default=8.0)
    st = sub.add_parser("stage", help="there: keep carried parts in the store until the last call")
    st.add_argument("files", nargs="+", type=Path)
    st.add_argument("--store", type=Path, default=STORE)
    pa = sub.add_parser("paper", help="there: data, CUDA tests, bench, the runs side by side, the packing")
    pa.add_argument("--out", default=os.environ.get("OUT"), required="OUT" not in os.environ)
    pa.add_argument("--store", type=Path, default=STORE)
    pa.add_argument("--minutes", type=minutes, default=8.0, help="the whole command's wall-clock budget")
    pa.add_argument("--device", default="cuda")
    pa.add_argument("--preset", default="paper")
    pa.add_argument("--seeds", type=int, nargs="+", default=[0])
    pa.add_argument("--try-jobs", type=int, nargs="+", default=[1, 4, 11], metavar="K",
                    help="process counts to measure side by side; training uses the fastest")
    pa.add_argument("--results-dir", default="results/paper")
    pa.add_argument("--bench-seconds", type=float, default=1.0, help="timing per bench row and per side-by-side count")
    pa.add_argument("--settle-seconds", type=float, default=15.0,
                    help="the side-by-side processes' start-up (CUDA, data) before they all time at once")
    pa.add_argument("--width", type=float, help="the bench's VGG width (default: bench's own)")
    pa.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    pa.add_argument("--skip-tests", action="store_true", help="no make test-gpu (a CPU rehearsal has none to run)")
    steps = sub.add_parser("steps", help="(internal) one process of the side-by-side measurement")
    for name, kind in (("--device", str), ("--data-dir", Path), ("--width", float), ("--batch", int),
                       ("--seconds", float), ("--start-at", float)):
        steps.add_argument(name, type=kind, required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "parts":
            room = CALL_LIMIT - tree_bytes(Path.cwd()) - MARGIN
            for folder in split_parts(args.sources, args.into, room):
                print(f"{folder}: {sum(f.stat().st_size for f in folder.iterdir()):,} bytes")
        elif args.command == "plan":
            print(json.dumps(plan_calls(args.into, args.minutes), indent=1))
        elif args.command == "stage":
            print(stage(args.files, args.store))
        elif args.command == "steps":
            print(time_steps(args.device, args.data_dir, args.width, args.batch, args.seconds, args.start_at))
        else:
            return paper(args)
    except LeaseError as err:
        print(f"bnstudy.lease: error: {err}", file=sys.stderr)
        if args.command == "paper":  # the log is what comes back from the device
            with open(Path(args.out) / "lease.log", "a") as f:
                f.write(f"error: {err}\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
