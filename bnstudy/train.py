"""The one training loop: every experiment is this loop with a different model, data and callbacks.

Per step: callbacks see the batch and the pre-step weights (before_step), then one plain SGD step,
then callbacks see the result (after_step). Per-step loss and accuracy stay on the device and are
written at `log_every` intervals (no host sync per step). Test accuracy at `eval_every` and at the
end; checkpoints at `checkpoint_every`; a run resumes from its last checkpoint and ends with the
numbers an uninterrupted run would have (bit for bit on the CPU).

About 400 lines, kept in one module on purpose: the loop, its checkpoint and the environment record are what a
resume must agree on, and reading them side by side is how one checks that it does.
"""
from __future__ import annotations

import copy
import dataclasses
import errno
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from bnstudy.backends import backend_policy, memory_format
from bnstudy.config import ConfigError, RunConfig, config_differences
from bnstudy.data import CLASSIFICATION, BatchOrder, Dataset, Task, data_kind, summed_squared_error  # noqa: F401
from bnstudy.models import build_model, has_noise, set_noise
from bnstudy.probes import activations, curvature, ics, landscape, spectrum, weights
from bnstudy.probes.callback import Callback, Probe, StepContext, step_seed  # noqa: F401  (the callback protocol)
from bnstudy.files import fault_point, prefix_sha256, previous, removed_on_failure
from bnstudy import schema
from bnstudy.schema import register_options
from bnstudy.recording import CONFIGURED, STOPPED, ResultsLock, RunDir, final_numbers, read_table


@dataclass
class RunState:
    """Everything that changes during a run, i.e. everything a checkpoint must hold."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    order: BatchOrder
    step: int = 0  # the next step to run
    elapsed: float = 0.0  # training seconds before this process
    pending: list = field(default_factory=list)  # (step, loss, correct) tensors not yet written
    last_train: dict = field(default_factory=dict)  # the latest logged training loss and accuracy
    last_test: dict = field(default_factory=dict)  # the latest test evaluation


def accuracy_count(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(dim=1) == targets).sum()


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, task: Task = CLASSIFICATION) -> dict:
    """Loss (reduced as in training) and accuracy in eval mode (running statistics, no noise); mode restored."""
    was_training = model.training
    model.eval()
    loss_sum, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
    for start in range(0, len(x), batch):
        outputs = model(x[start:start + batch])
        loss_sum += task.loss(outputs, y[start:start + batch], reduction="sum")
        if task.classification:
            correct += accuracy_count(outputs, y[start:start + batch])
    model.train(was_training)
    result = {"loss": loss_sum.item() / (len(x) if task.reduction == "mean" else 1)}
    return result | ({"acc": correct.item() / len(x)} if task.classification else {})


def recalibrated(model: nn.Module, dataset: Dataset, batch_size: int, batches: int, seed: int) -> nn.Module:
    """A copy of `model` whose BN running statistics are recomputed on training batches with the noise off.

    The running statistics of a noisy network were gathered while earlier layers were noisy; a noise-free
    evaluation meets inputs they never saw (docs/protocol.md, "Evaluating the noisy network").
    """
    clone = copy.deepcopy(model)
    set_noise(clone, False)
    for module in clone.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the recalibration batches
    order = BatchOrder(dataset.train_size, batch_size, seed)
    clone.train()
    with torch.no_grad():
        for _ in range(batches):
            clone(dataset.train_x[order.next().to(dataset.train_x.device)])
    return clone


# The probes a run can carry: each entry builds, from the run's configuration and model, the callbacks its section
# asks for (none where it is off). They see a step in this order. LAST_PROBES come after every other: their hooks must
# see the training forward alone, after the probes' own passes. register_probe adds one of your own.
PROBES: list[Callable[[RunConfig, nn.Module], list[Callback]]] = [
    landscape.from_config, ics.from_config, curvature.from_config, spectrum.from_config]
LAST_PROBES: list[Callable[[RunConfig, nn.Module], list[Callback]]] = [weights.from_config, activations.from_config]


def register_probe(build: Callable[[RunConfig, nn.Module], list[Callback]],
                   options: tuple[str, type] | None = None) -> None:
    """Every run from now on carries the callbacks `build(config, model)` returns (before LAST_PROBES). `options`
    = (name, a frozen dataclass of schema.setting fields): experiment files set them in a [base.probes.<name>]
    table (--set probes.<name>.<field>=...), and `build` reads them with schema.probe_options(config, name)."""
    if options is not None:
        register_options(*options)
    if build not in PROBES:
        PROBES.append(build)


BUILT_IN_PROBES = tuple(PROBES)


@dataclass(frozen=True)
class Registrations:
    """The probes (and their options) registered in this process beyond the built-in ones. A worker process (a Ray
    task) starts from a fresh import of bnstudy: the launcher ships these and the worker registers them again."""

    probes: tuple = ()
    options: tuple = ()  # (name, dataclass) pairs

    def restore(self) -> None:
        for name, options in self.options:
            register_options(name, options)
        for build in self.probes:
            register_probe(build)


def own_registrations() -> Registrations:
    return Registrations(tuple(build for build in PROBES if build not in BUILT_IN_PROBES),
                         tuple(schema.PROBE_OPTIONS.items()))


def probe_callbacks(config: RunConfig, model: nn.Module) -> list[Callback]:
    """The probes a run's configuration asks for, as training callbacks, in the registries' order."""
    return [callback for build in PROBES + LAST_PROBES for callback in build(config, model)]


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------
def atomic_save(obj, path: Path, keep_previous: bool = False) -> None:
    """torch.save to a temporary name, then rename; with keep_previous the old file becomes `<name>.prev`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with removed_on_failure(tmp), open(tmp, "wb") as f:
        try:
            torch.save(obj, f)
        except RuntimeError as err:  # torch reports a failed write ("unexpected pos ...") as a RuntimeError
            raise OSError(errno.EIO, f"could not write a checkpoint ({str(err).splitlines()[0][:120]}); is the "
                                     f"disk full?", str(path)) from None
        f.flush()
        fault_point("checkpoint-write")  # a kill here leaves a half-written temporary file, never a torn checkpoint
        os.fsync(f.fileno())
    if keep_previous and path.exists():
        os.replace(path, previous(path))
    os.replace(tmp, path)


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, encoding="utf-8", timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(device: torch.device) -> dict:
    """What made the numbers: code version, libraries, hardware."""
    info = {"git_sha": git_sha(), "python": sys.version.split()[0], "torch": torch.__version__,
            "platform": platform.platform(), "device": str(device), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def save_checkpoint(run: RunDir, state: RunState, logs: dict, elapsed: float, config: RunConfig) -> None:
    for log in logs.values():
        log.flush()
    atomic_save({
        "identity": checkpoint_identity(config),  # whose it is: a checkpoint copied into another run is refused
        "step": state.step,
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "order": state.order.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "log_sizes": {name: log.size() for name, log in logs.items()},
        "log_sha256": {name: log.sha256() for name, log in logs.items()},  # the tables as they stood at this step
        "elapsed": elapsed,
        "threads": torch.get_num_threads(),  # a CPU run resumes on as many: its float sums then repeat bit for bit
    }, run.checkpoint_path, keep_previous=True)


CHECKPOINT_KEYS = {"identity", "step", "model", "optimizer", "order", "torch_rng", "cuda_rng", "log_sizes",
                   "log_sha256", "elapsed"}


def checkpoint_identity(config: RunConfig) -> dict:
    """What a checkpoint records of the run it belongs to: its experiment, arm, seed and whole configuration."""
    return {"experiment": config.experiment, "arm": config.arm, "seed": config.seed,
            "config": json.loads(json.dumps(dataclasses.asdict(config)))}


def foreign_checkpoint(ckpt: dict, config: RunConfig) -> str | None:
    """Why a checkpoint is not this run's (another run's, another configuration's, an older format, a step past
    the run's schedule), or None."""
    identity = ckpt.get("identity")
    if not isinstance(identity, dict) or not isinstance(identity.get("config"), dict):
        return "a checkpoint without the run's identity (an older format, or not bnstudy's)"
    theirs = (identity.get("experiment"), identity.get("arm"), identity.get("seed"))
    if theirs != (config.experiment, config.arm, config.seed):
        return f"the checkpoint of {theirs[0]}/{theirs[1]}/seed-{theirs[2]}, not of this run"
    differences = _config_differences(identity["config"], config)
    if differences:
        return f"saved under another configuration ({'; '.join(differences[:3])})"
    step = ckpt.get("step")
    if not isinstance(step, int) or not 0 <= step <= config.train.steps:
        return f"its step {step!r} is not one of the run's 0..{config.train.steps}"
    return None


def _config_differences(stored: dict, config: RunConfig) -> list[str]:
    try:
        there = schema.build(RunConfig, stored)
    except (ConfigError, TypeError, ValueError) as err:
        return [f"an unreadable configuration: {err}"]
    return config_differences(there, config, ("in the checkpoint", "in this run"))


def read_checkpoint(run: RunDir, logs: dict, config: RunConfig) -> dict | None:
    """The newest checkpoint that loads, is this run's and fits the CSVs on disk; else the previous one; None if
    neither (the run starts again from step 0). Each one passed over is said, with why; nothing is truncated
    before one is chosen, so a foreign checkpoint cannot cut the run's own rows.

    A CSV shorter than a checkpoint's recorded size (an older copy, a partial sync) cannot resume from it:
    truncating "up" would pad the file with NUL bytes; one whose first bytes are not those the checkpoint saw
    (SHA-256) holds other rows than the checkpoint's weights produced."""
    for path in (run.checkpoint_path, previous(run.checkpoint_path)):
        if not path.exists():
            continue
        problem, ckpt = _checkpoint_problem(path, logs, config)
        if problem is None:
            if path != run.checkpoint_path:
                print(f"{run.path}: resuming from the previous checkpoint, {path.name}", flush=True)
            return ckpt
        print(f"{path}: {problem}; passed over, trying an earlier checkpoint", flush=True)
    return None


def _checkpoint_problem(path, logs: dict, config: RunConfig) -> tuple[str | None, dict | None]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a damaged file fails in many ways (pickle, zip, EOF)
        return f"unreadable checkpoint ({type(err).__name__})", None
    if not isinstance(ckpt, dict) or not {"step", "model", "optimizer"} <= set(ckpt):
        return "not a bnstudy checkpoint (keys missing)", None
    if why := foreign_checkpoint(ckpt, config):
        return why, None
    if not CHECKPOINT_KEYS <= set(ckpt):
        return "not a bnstudy checkpoint (keys missing)", None
    return _tables_problem(ckpt, logs), ckpt


def _tables_problem(ckpt: dict, logs: dict) -> str | None:
    """Why the tables on disk are not those the checkpoint saw (shorter, or other bytes), or None."""
    why = tables_unlike(ckpt, {name: log.size() for name, log in logs.items()},
                        lambda name, size: prefix_sha256(logs[name].path, size))
    return f"damaged run: {why}" if why else None


def tables_unlike(ckpt: dict, sizes: dict[str, int], digest) -> str | None:
    """Why tables of these byte `sizes` did not grow from those the checkpoint saw: one shorter than it recorded,
    or whose first bytes are others (`digest(name, size)`: SHA-256 of a table's first `size` bytes), or None. The
    one check of a checkpoint's tables, on the plain CSVs a run resumes (train) or a finished run's archives
    (reprobe)."""
    problems = []
    for name, size in ckpt["log_sizes"].items():
        have = sizes.get(name)
        if have is None or have < size:
            problems.append(f"{name}.csv has {'no' if have is None else have} bytes, the checkpoint at step "
                            f"{ckpt['step']} recorded {size}")
        elif digest(name, size) != ckpt["log_sha256"].get(name):
            problems.append(f"{name}.csv's first {size} bytes are not those of the checkpoint at step "
                            f"{ckpt['step']} (SHA-256 differs)")
    return "; ".join(problems) or None


def keep_threads(ckpt: dict, config: RunConfig) -> None:
    """Resume on the thread count the run trained with so far (a checkpoint from before threads were recorded has
    none: the launcher's stands), unless train.threads sets one: the local launcher and Ray give a process
    different counts, and a CPU run's float sums, so its numbers, depend on it. meta.json then states one count."""
    if config.train.threads or not ckpt.get("threads") or ckpt["threads"] == torch.get_num_threads():
        return
    print(f"resuming on {ckpt['threads']} thread(s), as the run trained so far (this process had "
          f"{torch.get_num_threads()})", flush=True)
    torch.set_num_threads(ckpt["threads"])


def load_checkpoint(ckpt: dict, state: RunState, logs: dict) -> None:
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.order.load_state_dict(ckpt["order"])
    torch.set_rng_state(ckpt["torch_rng"])
    if ckpt["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
    for name, size in ckpt["log_sizes"].items():
        logs[name].truncate(size)  # rows written after the checkpoint are written again
    state.step, state.elapsed = ckpt["step"], ckpt["elapsed"]


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------
def tagged(rows: list[dict], config: RunConfig) -> list[dict]:
    return [{"arm": config.arm, "seed": config.seed} | row for row in rows]


def flush_train_metrics(state: RunState, logs: dict, config: RunConfig) -> int | None:
    """Write the pending per-step metrics; return the first step whose loss is not finite, if any."""
    if not state.pending:
        return None
    steps = [s for s, _, _ in state.pending]
    losses = torch.stack([loss for _, loss, _ in state.pending]).tolist()  # one host sync per interval
    counts = [c for _, _, c in state.pending if c is not None]
    accs = (torch.stack(counts).float() / config.train.batch_size).tolist() if counts else [None] * len(steps)
    state.pending.clear()
    diverged = next((s for s, loss in zip(steps, losses) if not math.isfinite(loss)), None)
    rows = []
    for s, loss, acc in zip(steps, losses, accs):
        if diverged is not None and s > diverged:
            break
        rows.append({"step": s, "split": "train", "metric": "loss", "value": loss})
        if acc is not None:
            rows.append({"step": s, "split": "train", "metric": "acc", "value": acc})
    logs["metrics"].append(tagged(rows, config))
    logs["metrics"].flush()
    state.last_train = {"loss": losses[-1]} | ({"acc": accs[-1]} if accs[-1] is not None else {})
    return diverged


def test_rows(result: dict, config: RunConfig, step: int, split: str = "test") -> list[dict]:
    return tagged([{"step": step, "split": split, "metric": k, "value": v} for k, v in result.items()], config)


def evaluate_test(model: nn.Module, dataset: Dataset, config: RunConfig) -> dict:
    return evaluate(model, dataset.test_x, dataset.test_y, config.data.eval_batch, data_kind(config.data.dataset).task)


def train_step(state: RunState, batch, task: Task) -> torch.Tensor:
    x, y = batch
    outputs = state.model(x)
    loss = task.objective(outputs, y)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    correct = accuracy_count(outputs.detach(), y) if task.classification else None
    state.pending.append((state.step, loss.detach(), correct))
    return loss


def make_state(config: RunConfig, dataset: Dataset, device: torch.device) -> RunState:
    torch.manual_seed(config.seed)  # same seed -> same initial weights in every arm (norms draw nothing)
    model = build_model(config.model).to(device, memory_format=memory_format(config.backend))
    optimizer = torch.optim.SGD(model.parameters(), lr=config.train.lr, momentum=0.0, weight_decay=0.0, foreach=True)
    order = BatchOrder(dataset.train_size, config.train.batch_size, config.seed)
    return RunState(model, optimizer, order)


def train_run(config: RunConfig, run: RunDir, dataset: Dataset, device: torch.device,
              callbacks: list | None = None, progress: bool = True, deadline: float | None = None,
              until_step: int | None = None) -> dict:
    """Train one run to completion (or divergence), resuming if a checkpoint exists; return meta.json.

    `deadline` (a time.time() value, e.g. the end of a GPU lease): at the first log interval past it the run
    checkpoints and returns, still "running" in meta.json with its `steps_done`; the same command resumes it.
    `until_step`: a planned stop. The run trains its configured schedule's first `until_step` steps, checkpoints
    there and ends "stopped" (its tables packed and listed, read as a whole run up to there); a later command
    without it resumes the run to the end of its schedule, here or on another machine."""
    threads = torch.get_num_threads()
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    try:
        with backend_policy(config.backend, device) as backend:
            state = make_state(config, dataset, device)  # checks the config against the data: bad input writes nothing
            # one writer per run folder, whoever launched it: a worker that outlived its launcher still holds its run
            with ResultsLock(run.path):
                return _train_run(config, run, dataset, device, state, callbacks, progress, backend, deadline,
                                  until_step)
    finally:
        torch.set_num_threads(threads)


def _train_run(config, run, dataset, device, state: RunState, callbacks, progress, backend: dict,
               deadline: float | None, until_step: int | None = None) -> dict:
    if run.read_meta().get("status") == STOPPED:  # resumed past its planned stop: its tables become plain again
        run.reopen()
    logs = run.open_logs()
    ckpt = read_checkpoint(run, logs, config) if run.read_meta().get("status") == "running" else None
    if ckpt is not None:
        load_checkpoint(ckpt, state, logs)
        keep_threads(ckpt, config)
    else:
        if run.read_meta().get("status") == "running":
            print(f"{run.path}: no checkpoint to resume from; training again from step 0", flush=True)
        for log in logs.values():
            log.clear()
    run.write_config(config)
    run.update_meta(status="running", experiment=config.experiment, arm=config.arm, seed=config.seed,
                    preset=config.preset, dataset=dataset.name, environment=environment(device), backend=backend,
                    norm=config.model.norm, init=config.model.init, lr=config.train.lr, model=config.model.kind,
                    steps=config.train.steps, width=CONFIGURED["width"](config))
    callbacks = list(callbacks or []) + probe_callbacks(config, state.model)
    end = min(config.train.steps, until_step or config.train.steps)
    diverged = _loop(config, run, dataset, state, logs, callbacks, progress, deadline, end)
    if diverged is None and state.step == end < config.train.steps:  # the planned stop
        return _stop(config, run, state, logs)
    if diverged is None and state.step < config.train.steps:  # stopped at the deadline, checkpointed
        run.update_meta(steps_done=state.step, wall_time_s=round(state.elapsed, 2))
        return run.read_meta()
    return _finish(config, run, dataset, state, logs, diverged)


def _stop(config, run, state, logs) -> dict:
    """The planned stop (train_run's `until_step`): a checkpoint at this step, and a run read as whole up to it."""
    save_checkpoint(run, state, logs, state.elapsed, config)
    numbers = final_numbers(read_table(run.table_path("metrics"), "metrics"))
    return run.finish({"status": STOPPED, "stopped_at": state.step, "steps_done": state.step, "diverged_at": None,
                       "wall_time_s": round(state.elapsed, 2), **numbers})


def _loop(config, run, dataset, state, logs, callbacks, progress, deadline: float | None = None,
          end: int | None = None) -> int | None:
    """Steps until `end` (the schedule's end, or a planned stop before it), divergence or the deadline; at `end`
    every pending row is written, so that a checkpoint there holds the run's whole state."""
    t = config.train
    end = t.steps if end is None else end
    started = time.perf_counter()
    bar = tqdm(total=end, initial=state.step, desc=f"{config.experiment}/{config.run_name}",
               disable=not progress, dynamic_ncols=True, mininterval=1.0)
    task = data_kind(config.data.dataset).task
    diverged = None
    while state.step < end and diverged is None:
        diverged = run_step(state, dataset, task, config, logs, callbacks)
        bar.update(1)
        eval_due, checkpoint_due = eval_due_at(t, state.step), checkpoint_due_at(t, state.step)
        if diverged is None and eval_due:
            state.last_test = evaluate_test(state.model, dataset, config)
            logs["metrics"].append(test_rows(state.last_test, config, state.step))
        bar.set_postfix(state.last_train | {"test_acc": state.last_test.get("acc")}, refresh=False)
        if diverged is None and checkpoint_due:
            save_checkpoint(run, state, logs, state.elapsed + time.perf_counter() - started, config)
        if diverged is None and state.step < t.steps and _stop_here(t, state.step, deadline):
            if not checkpoint_due:
                save_checkpoint(run, state, logs, state.elapsed + time.perf_counter() - started, config)
            break
    if diverged is None and state.step == end < t.steps:  # a planned stop between two log intervals
        diverged = flush_train_metrics(state, logs, config)
    bar.close()
    state.elapsed += time.perf_counter() - started
    return diverged


def run_step(state: RunState, dataset: Dataset, task: Task, config: RunConfig, logs: dict,
             callbacks: list) -> int | None:
    """One step of the loop, the one `bnstudy bench` times too: the next batch, callbacks before, one SGD step,
    callbacks after; the pending training metrics written (one host sync) when a log interval ends, or an
    evaluation or a checkpoint is due (a checkpoint holds no pending rows). Returns the first step whose loss
    is not finite, if that write found one."""
    t = config.train
    index = state.order.next().to(dataset.train_x.device, non_blocking=True)
    ctx = StepContext(state.step, state.model, dataset.train_batch(index, state.order.generator), task.objective,
                      t.lr, config)
    _emit(logs, config, [cb.before_step(ctx) for cb in callbacks])
    train_step(state, ctx.batch, task)
    fault_point("train-step")
    _emit(logs, config, [cb.after_step(ctx) for cb in callbacks])
    state.step += 1
    if state.step % t.log_every == 0 or eval_due_at(t, state.step) or checkpoint_due_at(t, state.step):
        return flush_train_metrics(state, logs, config)
    return None


def _stop_here(t, step: int, deadline: float | None) -> bool:
    """Past the deadline, at the end of a log interval: its metrics are written, so nothing is pending that a
    checkpoint would have to hold."""
    return deadline is not None and step % t.log_every == 0 and time.time() >= deadline


def eval_due_at(t, step: int) -> bool:
    """A test evaluation after `step` steps: every `eval_every`, and at the end."""
    return step % t.eval_every == 0 or step == t.steps


def checkpoint_due_at(t, step: int) -> bool:
    """A checkpoint after `step` steps: every `checkpoint_every`, and at the end."""
    return step % t.checkpoint_every == 0 or step == t.steps


def _emit(logs: dict, config: RunConfig, results: list[dict]) -> None:
    for result in results:
        for name, rows in result.items():
            logs[name].append(tagged(rows, config))


def final_training_numbers(run: RunDir) -> dict:
    """From metrics.csv, so a resumed run reports what an uninterrupted one would: the mean training accuracy
    over the last 100 logged steps (the paper's "training accuracy") and the last training loss
    (recording.final_numbers, which RunDir.load checks meta.json against)."""
    numbers = final_numbers(read_table(run.table_path("metrics"), "metrics"))
    return {key: numbers[key] for key in ("final_train_acc_last100", "final_train_loss")}


def _finish(config, run, dataset, state, logs, diverged: int | None) -> dict:
    fault_point("finishing")  # after the last checkpoint: a resumed run must still report every final number
    final = {}
    if diverged is None:
        final = state.last_test or evaluate_test(state.model, dataset, config)  # resumed after the last eval
        final = {"acc": None} | final
        if has_noise(state.model):
            # a stream per (seed, step), as the probes draw theirs; seed + 1 made seed s's recalibration batches
            # exactly seed s + 1's first training batches
            clone = recalibrated(state.model, dataset, config.train.batch_size, batches=50,
                                 seed=step_seed(config.seed, state.step))
            recal = evaluate_test(clone, dataset, config)
            logs["metrics"].append(test_rows(recal, config, state.step, split="test-recal"))
            final = final | {"recal_acc": recal["acc"]}
    for log in logs.values():
        log.flush()
    fields = {"status": "diverged" if diverged is not None else "complete", "diverged_at": diverged,
              **final_training_numbers(run), "steps_done": state.step, "wall_time_s": round(state.elapsed, 2),
              "final_test_acc": final.get("acc"), "final_test_acc_recal": final.get("recal_acc"),
              "final_test_loss": final.get("loss")}
    return run.finish(fields)
