"""An experiment's runs (arms x seeds): skip finished ones, resume partial ones, run the rest here."""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch

from bnstudy.config import ConfigError, RunConfig, load_experiment, run_config
from bnstudy.data import Dataset, gaussian_regression, load_images
from bnstudy.records import RunDir
from bnstudy.train import train_run


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible to torch on this machine; use --device cpu or auto")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"unknown device '{name}'; known: auto, cpu, cuda, cuda:N")
    return torch.device(name)


def resolve_data_dir(data_dir: str | None) -> Path:
    return Path(data_dir or os.environ.get("BNSTUDY_DATA") or "data")


def check_same_config(run: RunDir, config: RunConfig) -> None:
    """A run folder belongs to one configuration: refuse to mix another into it."""
    path = run.path / "config.json"
    if not path.exists():
        return
    stored = json.loads(path.read_text())
    wanted = json.loads(json.dumps(asdict(config)))  # tuples -> lists, as stored
    if stored != wanted:
        diff = sorted(_differences(stored, wanted))
        raise ConfigError(f"{run.path} holds a run with another configuration ({'; '.join(diff[:3])}); "
                          f"use another --results-dir or remove that folder")


def _differences(a: dict, b: dict, where: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{where}{key}.")
        elif x != y:
            out.append(f"{where}{key}: {x!r} there, {y!r} now")
    return out


def plan(experiment: str, preset: str, seeds: list[int], arms: list[str] | None, overrides: list[str]) -> list[RunConfig]:
    """Every run of the experiment as a validated RunConfig, arms-major so paired seeds sit together."""
    exp = load_experiment(experiment)
    return [run_config(exp, arm, seed, preset, overrides) for arm in (arms or exp.arms_for(preset)) for seed in seeds]


def run_experiment(experiment: str, preset: str, seeds: list[int], arms: list[str] | None = None,
                   device: str = "auto", data_dir: str | None = None, results_dir: str = "results",
                   overrides: list[str] = (), progress: bool = True) -> list[dict]:
    configs = plan(experiment, preset, seeds, arms, list(overrides))
    dev = resolve_device(device)
    runs = [(config, RunDir(results_dir, config.experiment, config.arm, config.seed)) for config in configs]
    for config, run in runs:  # all checks before the first step of training
        check_same_config(run, config)
    datasets: dict = {}
    metas = []
    for config, run in runs:
        if run.is_finished():
            print(f"{config.experiment}/{config.run_name}: already {run.read_meta()['status']}, skipped")
            metas.append(run.read_meta())
            continue
        key = (config.data, config.seed if config.data.dataset == "gaussian" else None)  # DLN data depend on the seed
        if key not in datasets:
            datasets[key] = load_dataset(config, data_dir, dev)
        dataset = datasets[key]
        meta = train_run(config, run, dataset, dev, progress=progress)
        print(summary_line(meta), flush=True)
        metas.append(meta)
    return metas


def load_dataset(config: RunConfig, data_dir: str | None, device: torch.device) -> Dataset:
    if config.data.dataset == "gaussian":
        return gaussian_regression(config.data, config.model.dln_width, config.seed, device)
    return load_images(config.data, resolve_data_dir(data_dir), device)


def summary_line(meta: dict) -> str:
    status = meta["status"] if meta["status"] != "diverged" else f"diverged at step {meta['diverged_at']}"
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
