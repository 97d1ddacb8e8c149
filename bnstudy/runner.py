"""An experiment's runs (arms x seeds): skip finished ones, resume partial ones, run the rest here."""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from bnstudy.config import ConfigError, Experiment, RunConfig, config_differences, load_experiment, run_config
from bnstudy.data import Dataset, data_kind
from bnstudy.manifest import write_manifest
from bnstudy.recording import STOPPED, RecordError, ResultsLock, RunDir, pooling_differences
from bnstudy.train import Registrations, own_registrations, train_run


def resolve_device(name: str) -> torch.device:
    """auto | cpu | cuda | cuda:N -> a device torch can use here, or a ConfigError saying why not."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    kind, _, index = name.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ConfigError(f"unknown device '{name}'; known: auto, cpu, cuda, cuda:N (N a GPU index)")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA GPU is visible to torch on this machine; use --device cpu or auto")
    if index and int(index) >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s), cuda:0 to "
                          f"cuda:{torch.cuda.device_count() - 1}")
    return torch.device(name)


def resolve_data_dir(data_dir: str | None) -> Path:
    return Path(data_dir or os.environ.get("BNSTUDY_DATA") or "data")


def check_run(run: RunDir, config: RunConfig) -> None:
    """What a run folder already holds must fit this run: its configuration, its arm's other seeds, and if
    finished, every file."""
    if not run.read_meta() and run.has_packed_tables():
        raise RecordError(f"{run.path}: meta.json is missing or empty, but the folder holds a finished run's "
                          f"compressed tables; restore meta.json, or remove the folder to train the run again")
    check_same_config(run, config)
    check_pooled(run, config)
    why = run.incomplete()
    if why:
        raise RecordError(f"{run.path}: finished, but {why}; restore it, or remove the folder to train the run again")


def check_same_config(run: RunDir, config: RunConfig) -> None:
    """A run folder belongs to one configuration: refuse to mix another into it.

    The stored config is rebuilt by `RunDir.stored_config` (config.build, the one loader), so a field added to
    RunConfig since the run was written takes its default, which keeps the behaviour from before it existed
    (a new probe section is off); a value the run did store always decides.
    """
    differences = stored_differences(run, config)
    if differences:
        raise ConfigError(f"{run.path} holds a run with another configuration ({'; '.join(differences)}); "
                          f"use another --results-dir or remove that folder")


def check_pooled(run: RunDir, config: RunConfig) -> None:
    """Figures and claims pool an arm's seeds: a new seed must share the configuration of the seeds there."""
    for sibling in run.seeds_beside():
        if sibling.read_config() is None:
            continue
        try:
            differences = pooling_differences(sibling.stored_config(), config, ("there", "now"))
        except (ConfigError, RecordError) as error:  # a field since removed, or of another type: not this configuration
            differences = [str(error)]
        if differences:
            raise ConfigError(f"{config.arm}: seed {config.seed} would be pooled with {sibling.path} of another "
                              f"configuration ({'; '.join(differences)}); use another --results-dir")
        return  # the seeds there agree among themselves: each was checked when it was added


def stored_differences(run: RunDir, config: RunConfig) -> list[str]:
    """How `config` differs from the configuration stored in `run`'s folder ([] if none is stored)."""
    try:
        stored = run.stored_config()
        return [] if stored is None else config_differences(stored, config)
    except (ConfigError, RecordError) as error:  # a field since removed, or of another type: not this configuration
        return [str(error)]


def plan(exp: Experiment, preset: str, seeds: list[int], arms: list[str] | None,
         overrides: list[str]) -> list[RunConfig]:
    """Every run of the experiment as a validated RunConfig, arms-major so paired seeds sit together."""
    arms, seeds = dict.fromkeys(arms or exp.arms_for(preset)), dict.fromkeys(seeds)  # `3 3`: one run, order kept
    return [run_config(exp, arm, seed, preset, overrides) for arm in arms for seed in seeds]


def run_experiment(experiment: str, preset: str, seeds: list[int], arms: list[str] | None = None,
                   device: str = "auto", data_dir: str | None = None, results_dir: str = "results",
                   overrides: list[str] = (), progress: bool = True, launcher: str = "local",
                   deadline: float | None = None, jobs: int = 2, until_step: int | None = None) -> list[dict]:
    """Every run of the experiment: finished ones skipped, the rest trained by the chosen launcher. With a
    `deadline` (a time.time() value), runs still training then checkpoint and stop, and runs not yet started
    stay so: the same call resumes them. `jobs`: runs at a time for the `processes` launcher. `until_step`: each
    run stops at that step of its schedule (train.train_run); a run stopped there already is skipped, and one
    stopped earlier, or any stopped run where no `until_step` is given, goes on."""
    if launcher not in LAUNCHERS:
        raise ConfigError(f"unknown launcher '{launcher}'; known: {', '.join(LAUNCHERS)}")
    exp = load_experiment(experiment)
    configs = plan(exp, preset, seeds, arms, list(overrides))
    dev = resolve_device(device)
    runs = [(config, RunDir(results_dir, config.experiment, config.arm, config.seed)) for config in configs]
    for config, run in runs:  # all checks before the first step of training
        check_run(run, config)
    folder = check_writable(Path(results_dir) / configs[0].experiment)
    with ResultsLock(folder):  # one process per experiment folder: rows never interleave
        for config, run in runs:  # checked again under the lock: the folder may have changed meanwhile
            check_run(run, config)
        write_manifest(folder, exp)  # what the experiment is, for plot and report (bnstudy.manifest)
        pending = []
        for config, run in runs:
            run.remove_stale_temporaries()
            if run.is_finished() or stopped_at_or_past(run, until_step):
                run.load()  # believed only when it checks out (before anything is packed), else one line saying why
                run.settle_interrupted()  # a finish a kill cut short, before or after its tables were compressed
                print(f"{config.experiment}/{config.run_name}: already {status_words(run.read_meta())}, skipped")
            else:
                pending.append((config, run))
        if pending:
            LAUNCHERS[launcher](pending, dev, data_dir, progress, Schedule(deadline, jobs, until_step))
    unfinished = sum(not run.is_settled() for _, run in pending)
    print(what_was_done(configs, len(runs) - len(pending), Path(results_dir), unfinished, until_step), flush=True)
    return [run.read_meta() for _, run in runs]


def stopped_at_or_past(run: RunDir, until_step: int | None) -> bool:
    """A run stopped as asked at `until_step` or later: nothing to do for a command that stops there."""
    meta = run.read_meta()
    return until_step is not None and meta.get("status") == STOPPED and meta.get("stopped_at", 0) >= until_step


def status_words(meta: dict) -> str:
    """A settled run's status as the closing lines say it."""
    if meta.get("status") == STOPPED:
        return f"stopped at step {meta.get('stopped_at')} of {meta.get('steps')} as asked (--until-step)"
    return meta["status"]


def what_was_done(configs: list[RunConfig], skipped: int, results_dir: Path, unfinished: int = 0,
                  until_step: int | None = None) -> str:
    """The closing line of `bnstudy run`: what was already there, what trained, what --stop-after left to resume,
    and how to train another seed (on a fresh clone the committed seed 0 is already there, and `make noisy-bn`
    only redraws its figures)."""
    first = configs[0]
    seeds = sorted({c.seed for c in configs})
    stopped = f"{unfinished} stopped or not started by --stop-after (the same command resumes them), " \
        if unfinished else ""
    until = f" until step {until_step:,}" if until_step else ""
    line = (f"{first.experiment} (preset {first.preset}, seed{'s' if len(seeds) > 1 else ''} "
            f"{', '.join(map(str, seeds))}): {len(configs) - skipped - unfinished} run(s) trained{until}, {stopped}"
            f"{skipped} already there and skipped; results in {results_dir / first.experiment}")
    if skipped == len(configs):
        line += f". A new seed trains with --seeds {max(seeds) + 1} (make {first.experiment} SEED={max(seeds) + 1})"
    return line


def check_writable(folder: Path) -> Path:
    """The experiment's results folder exists and takes files, or a clear error before any training."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"results folder {folder} is not writable ({err.strerror or err})") from None
    return folder


@dataclass(frozen=True)
class Schedule:
    """When launched runs must stop (a time.time() value, or None) and how many train at once where a launcher
    chooses (`processes`)."""
    deadline: float | None = None
    jobs: int = 2
    until_step: int | None = None  # each run's planned stop (train.train_run), or None: the schedule's end

    def expired(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline


def not_started(config: RunConfig) -> str:
    return f"{config.experiment}/{config.run_name}: not started, the time given (--stop-after) is up"


def run_local(pending: list[tuple[RunConfig, RunDir]], device: torch.device, data_dir: str | None,
              progress: bool, schedule: Schedule = Schedule()) -> None:
    """One run after another in this process; datasets loaded once and shared by the runs that use them."""
    datasets: dict = {}
    for config, run in pending:
        if schedule.expired():
            print(not_started(config), flush=True)
            continue
        dataset = shared_dataset(datasets, config, data_dir, device)
        meta = train_run(config, run, dataset, device, progress=progress, deadline=schedule.deadline,
                         until_step=schedule.until_step)
        print(summary_line(meta), flush=True)


def shared_dataset(datasets: dict, config: RunConfig, data_dir: str | None, device: torch.device) -> Dataset:
    """The run's dataset from `datasets`, loaded into it the first time: runs whose data agree share one copy."""
    key = data_kind(config.data.dataset).key(config)  # all the data depend on (the DLN's: seed and width too)
    if key not in datasets:
        datasets[key] = load_dataset(config, data_dir, device)
    return datasets[key]


def train_one(config: RunConfig, results_dir: str, device_name: str, data_dir: str | None, threads: int,
              registrations: Registrations = Registrations(), deadline: float | None = None,
              until_step: int | None = None) -> dict | None:
    """One run in a worker process (a Ray task, a `processes` worker): its own data, its own threads, the
    driver's own probes; returns meta.json, or None where the deadline passed before it started."""
    if deadline is not None and time.time() >= deadline:
        return None
    registrations.restore()
    torch.set_num_threads(config.train.threads or threads)
    device = torch.device(device_name)
    run = RunDir(results_dir, config.experiment, config.arm, config.seed)
    return train_run(config, run, load_dataset(config, data_dir, device), device, progress=False, deadline=deadline,
                     until_step=until_step)


def run_ray(pending: list[tuple[RunConfig, RunDir]], device: torch.device, data_dir: str | None,
            progress: bool, schedule: Schedule = Schedule(), cpus_per_run: int = 1) -> None:
    """One Ray task per run: a GPU each on CUDA, `cpus_per_run` cores each otherwise. Connects to RAY_ADDRESS
    when set (a cluster: run folders must be on a shared filesystem), else starts a local Ray on 127.0.0.1.
    A failed task is retried once; it resumes from the run's last checkpoint."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--launcher ray needs Ray: pip install -e '.[ray]' (or pip install 'ray[default]')") from None
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        check_reachable(address)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     **({} if address else {"_node_ip_address": "127.0.0.1"}))
        except Exception as err:  # an unwritable HOME or TMPDIR, a cluster of another version, ...: one line
            raise ConfigError(f"Ray did not start ({type(err).__name__}: {str(err).strip().splitlines()[0][:200]})"
                              ) from None
    resources = {"num_gpus": 1} if device.type == "cuda" else {"num_cpus": cpus_per_run}
    task = ray.remote(max_retries=1, retry_exceptions=True, **resources)(train_one)
    results_dir = str(pending[0][1].results_dir.resolve())
    data = str(resolve_data_dir(data_dir).resolve())
    registrations = shipped_by_value(own_registrations(), ray.cloudpickle)
    futures = {task.remote(config, results_dir, "cuda" if device.type == "cuda" else "cpu", data, cpus_per_run,
                           registrations, schedule.deadline, schedule.until_step): config
               for config, _ in pending}
    failed = 0
    with tqdm(total=len(futures), desc="runs", disable=not progress, dynamic_ncols=True) as bar:
        remaining = list(futures)
        while remaining:
            done, remaining = ray.wait(remaining, num_returns=1)
            try:
                print(outcome_line(ray.get(done[0]), futures[done[0]]), flush=True)
            except ray.exceptions.RayError as err:
                failed += 1
                print(failed_line(futures[done[0]], str(err).strip().splitlines()[-1]), flush=True)
            bar.set_postfix(finished=bar.n + 1 - failed, failed=failed)
            bar.update(1)
    if failed:
        raise ConfigError(f"{failed} of {len(futures)} runs failed on Ray (each retried once); rerun to resume them")


def run_processes(pending: list[tuple[RunConfig, RunDir]], device: torch.device, data_dir: str | None,
                  progress: bool, schedule: Schedule = Schedule()) -> None:
    """`schedule.jobs` runs at a time, each in a process of its own (spawned: CUDA cannot be forked), in the
    order given; on one GPU they share it, which keeps it busier than one small-batch run alone. Needs no Ray:
    what a GPU image without a network has is enough. Each process gets an equal share of the CPU threads."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    import multiprocessing

    jobs = max(1, min(schedule.jobs, len(pending)))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    results_dir = str(pending[0][1].results_dir.resolve())
    data = str(resolve_data_dir(data_dir).resolve())
    failed = 0
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=exit_with_parent,
                             initargs=(os.getpid(),)) as pool, \
            tqdm(total=len(pending), desc="runs", disable=not progress, dynamic_ncols=True) as bar:
        futures = {pool.submit(train_one, config, results_dir, str(device), data, threads, own_registrations(),
                               schedule.deadline, schedule.until_step): config for config, _ in pending}
        for future in as_completed(futures):
            try:
                print(outcome_line(future.result(), futures[future]), flush=True)
            except Exception as err:  # one run's failure is said; the others go on
                failed += 1
                print(failed_line(futures[future], f"{type(err).__name__}: {err}"), flush=True)
            bar.update(1)
    if failed:
        raise ConfigError(f"{failed} of {len(pending)} runs failed; rerun the same command to resume them")


def exit_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """A `processes` worker ends when its launcher does, however the launcher ends (a kill included): left
    running, it would go on training for hours where nobody sees it, without the experiment's lock. It ends as a
    kill would, so its run resumes from its last checkpoint when the command is given again."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def outcome_line(meta: dict | None, config: RunConfig) -> str:
    return not_started(config) if meta is None else summary_line(meta)


def failed_line(config: RunConfig, why: str) -> str:
    return f"{config.experiment}/{config.run_name}: failed: {why}"


def shipped_by_value(registrations: Registrations, cloudpickle) -> Registrations:
    """The modules that define one's own probes travel with the tasks, so a cluster's nodes need not have them
    installed (bnstudy itself must be; __main__ is pickled by value anyway)."""
    for thing in [*registrations.probes, *(options for _, options in registrations.options)]:
        module = sys.modules.get(thing.__module__)
        if module is not None and module.__name__.partition(".")[0] not in ("__main__", "bnstudy"):
            cloudpickle.register_pickle_by_value(module)
    return registrations


RAY_CONNECT_TIMEOUT = 10  # seconds: ray.init waits on an address nothing answers at for more than 5 minutes


def check_reachable(address: str | None) -> None:
    """RAY_ADDRESS 'host:port' (or ray://host:port) answers within RAY_CONNECT_TIMEOUT, or one line saying not."""
    if not address or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"RAY_ADDRESS={address}: expected host:port (or ray://host:port, or auto)")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=RAY_CONNECT_TIMEOUT).close()
    except OSError as err:
        raise ConfigError(f"RAY_ADDRESS={address}: nothing answers there within {RAY_CONNECT_TIMEOUT} s "
                          f"({err.strerror or err}); start the cluster, or unset RAY_ADDRESS for a local Ray") from None


LAUNCHERS = {"local": run_local, "ray": run_ray, "processes": run_processes}


def load_dataset(config: RunConfig, data_dir: str | None, device: torch.device) -> Dataset:
    return data_kind(config.data.dataset).load(config, resolve_data_dir(data_dir), device)


def summary_line(meta: dict) -> str:
    status = {"diverged": f"diverged at step {meta.get('diverged_at')}",
              "running": f"stopped at step {meta.get('steps_done')} of {meta.get('steps')} (--stop-after), "
                         f"checkpointed; the same command resumes it",
              STOPPED: f"{status_words(meta)}, checkpointed; the command without --until-step resumes it"
              }.get(meta["status"], meta["status"])
    parts = [f"{meta['experiment']}/{meta['arm']}/seed-{meta['seed']}: {status}"]
    if meta.get("final_train_acc_last100") is not None:
        parts.append(f"train acc (last 100 steps) {meta['final_train_acc_last100']:.3f}")
    elif meta.get("final_train_loss") is not None:
        parts.append(f"train loss {meta['final_train_loss']:.4g}")
    if meta.get("final_test_acc") is not None:
        parts.append(f"test acc {meta['final_test_acc']:.3f}")
    if meta.get("final_test_acc_recal") is not None:
        parts.append(f"(recalibrated {meta['final_test_acc_recal']:.3f})")
    parts.append(f"{meta['steps_done']} steps in {meta['wall_time_s']:.0f} s")
    return ", ".join(parts)
