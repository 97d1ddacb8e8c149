"""`bnstudy reprobe`: the landscape along the gradient again, at a finished run's checkpoints, on a wider grid of
step sizes than the run probed with.

Why: β_eff = max over η of ‖∇L(w − ηg) − g‖ / ‖ηg‖ is read on a grid of η. Where the grid's smallest step already
cancels the gradient (∇L(w − ηg) ≈ 0, so ‖∇L(w − ηg) − g‖ = ‖g‖), β_eff reads 1/η_min whatever the landscape
beyond: late in a long run both networks sit there (docs/findings.md). The run's checkpoints keep its weights at
its last two checkpoint steps; this probes them on a log grid reaching far below the run's, on a few training
batches drawn by a fixed generator, with BN in train mode as the run's own probe. It trains nothing and writes
nothing into the run folders:

    <results>/<experiment>/reprobe/landscape.csv.xz  one row per (arm, seed, direction, step, batch, eta)
    <results>/<experiment>/figures/reprobe-<direction's probe name>.png

Along the gradient (the paper's direction) or the filter-normalized gradient (each filter's step a fraction of its
own norm): BN leaves a weight's scale free, and the raw β moves with it (docs/long.md); the second direction does
not.
"""
from __future__ import annotations

import hashlib
import lzma
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from tqdm import tqdm

from bnstudy.config import ConfigError
from bnstudy.data import Dataset, data_kind
from bnstudy.files import ResultsLock, atomic_write_bytes, previous
from bnstudy.models import build_model
from bnstudy.plots import png_bytes
from bnstudy.plots.landscape import reprobed_landscape
from bnstudy.probes.landscape import PROBE_NAMES, along_gradient, eta_grid
from bnstudy.recording import RecordError, Run, RunDir
from bnstudy.runner import shared_dataset
from bnstudy.train import foreign_checkpoint, tables_unlike

COLUMNS = ("arm", "seed", "direction", "step", "batch", "eta", "loss", "loss0", "grad_diff", "grad_norm",
           "step_norm")
BATCH_SEED = 20_181_203  # the batches' generator, offset by the run's seed: the same batches on every rerun
# Per direction: the default grid (eta_min, eta_max) and its unit. Along the gradient eta is a multiple of the run's
# LR, as the run's own grid (the paper's: 1/2 to 4); along the filter-normalized gradient a fraction of each
# filter's norm (the run's own: 0.005 to 0.04). Both defaults reach 4.6 decades below the top of the run's grid.
DIRECTIONS = {"gradient": ((1e-4, 4.0), "multiples of each run's LR"),
              "filter-gradient": ((1e-6, 0.04), "fractions of each filter's norm")}


@dataclass(frozen=True)
class Grid:
    """Step sizes from eta_min to eta_max (DIRECTIONS gives their unit and defaults), log-spaced."""

    direction: str = "gradient"
    eta_min: float | None = None
    eta_max: float | None = None
    points: int = 16
    batches: int = 3

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"--direction {self.direction}: one of {', '.join(DIRECTIONS)}")
        (low, high), _ = DIRECTIONS[self.direction]
        object.__setattr__(self, "eta_min", low if self.eta_min is None else self.eta_min)
        object.__setattr__(self, "eta_max", high if self.eta_max is None else self.eta_max)

    def check(self) -> None:
        unit = DIRECTIONS[self.direction][1]
        if not (math.isfinite(self.eta_min) and math.isfinite(self.eta_max) and 0 < self.eta_min < self.eta_max):
            raise ConfigError(f"reprobe needs 0 < --eta-min < --eta-max ({unit}), got "
                              f"{self.eta_min:g} and {self.eta_max:g}")
        if self.eta_max > 1e4:
            raise ConfigError(f"--eta-max {self.eta_max:g}: at most 1e4 ({unit}; a longer step leaves any loss "
                              f"surface)")
        if not 2 <= self.points <= 200:
            raise ConfigError(f"--points {self.points}: between 2 and 200")
        if not 1 <= self.batches <= 100:
            raise ConfigError(f"--batches {self.batches}: between 1 and 100")

    def etas(self, lr: float) -> list[float]:
        return eta_grid(lr if self.direction == "gradient" else 1.0, self.eta_min, self.eta_max, self.points, "log")

    @property
    def probe(self) -> str:
        """The name the run's own probe rows give this direction (landscape, landscape-filter)."""
        return PROBE_NAMES[self.direction]


def checkpoints(run: RunDir) -> list[Path]:
    """The run's last checkpoint and the one before it, those present."""
    return [path for path in (previous(run.checkpoint_path), run.checkpoint_path) if path.exists()]


def chosen_runs(results_dir: str, experiment: str, arms: list[str] | None, seeds: list[int] | None) -> list[Run]:
    """The finished runs asked for that still have their checkpoints here; a line for each one left out."""
    runs = [r for r in RunDir.of_experiment(Path(results_dir), experiment)
            if (not arms or r.arm in arms) and (seeds is None or r.seed in seeds)]
    if not runs:
        raise ConfigError(f"{Path(results_dir) / experiment}: no run folders"
                          + (f" for arms {', '.join(arms)}" if arms else "") + (f", seeds {seeds}" if seeds else ""))
    chosen = []
    for run in runs:
        try:
            loaded = run.load()  # finished, and believed
        except RecordError as err:
            print(f"bnstudy: not reprobed: {err}")
            continue
        if not checkpoints(run):
            print(f"bnstudy: {run.path}: no checkpoint.pt here (checkpoints are never committed; they stay where "
                  f"the run trained): left out")
            continue
        chosen.append(loaded)
    if not chosen:
        raise ConfigError(f"{Path(results_dir) / experiment}: none of the chosen runs is finished with its "
                          f"checkpoints here (each said above)")
    return chosen


def own_checkpoints(run: Run, device: torch.device) -> list[tuple[Path, dict]]:
    """The run's checkpoints that are its own, loaded: saved by this run (experiment, arm, seed, configuration), at a
    step it took, beside the tables it went on to write (their first bytes, by SHA-256). One passed over is said;
    so is reprobing the previous checkpoint alone."""
    own = []
    for path in checkpoints(run.dir):
        state = read_weights(path, device)
        why = foreign_checkpoint(state, run.config) or unseen_tables(run, state)
        if why:
            print(f"bnstudy: {path}: not reprobed: {why}")
            continue
        own.append((path, state))
    if own and all(path != run.dir.checkpoint_path for path, _ in own):
        print(f"bnstudy: {run.dir.path}: reprobing its previous checkpoint alone ({own[0][0].name})")
    return own


def unseen_tables(run: Run, state: dict) -> str | None:
    """Why a finished run's tables did not grow from those the checkpoint saw (a step past the run's, or other
    first bytes: another run's), or None."""
    if state["step"] > run.meta.get("steps_done", run.config.train.steps):
        return f"its step {state['step']} is past the run's last, {run.meta.get('steps_done')}"
    tables = {name: lzma.decompress(run.dir.packed(name).read_bytes()) for name in state["log_sizes"]
              if run.dir.packed(name).exists()}
    return tables_unlike(state, {name: len(data) for name, data in tables.items()},
                         lambda name, size: hashlib.sha256(tables[name][:size]).hexdigest())


def probe_run(run: Run, grid: Grid, dataset: Dataset, device: torch.device) -> list[dict]:
    """along_gradient at each of the run's own checkpoints, on `grid.batches` training batches of the run's size
    (as stored: no augmentation), with the run's training objective."""
    config = run.config
    generator = torch.Generator().manual_seed(BATCH_SEED + config.seed)
    picks = [torch.randperm(len(dataset.train_x), generator=generator)[:config.train.batch_size]
             for _ in range(grid.batches)]
    etas = grid.etas(config.train.lr)
    objective = data_kind(config.data.dataset).task.objective  # the loss the run descended (the DLN's: squared error)
    rows = []
    for path, state in own_checkpoints(run, device):
        model = build_model(config.model).to(device)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError:  # missing or misshapen tensors: not this run's model
            raise RecordError(f"{path}: its weights are not those of the run's model; remove it") from None
        model.train()
        for b, pick in enumerate(picks):
            pick = pick.to(dataset.train_x.device)
            batch = (dataset.train_x[pick], dataset.train_y[pick])
            rows += [{"arm": run.dir.arm, "seed": run.dir.seed, "direction": grid.probe, "step": state["step"],
                      "batch": b, **row} for row in along_gradient(model, objective, batch, etas,
                                                                   bn_mode="train", direction=grid.direction)]
    return rows


def read_weights(path: Path, device: torch.device) -> dict:
    """A checkpoint's step and weights, or RecordError in one line (a torn or foreign file fails in many ways)."""
    try:
        state = torch.load(path, map_location=device, weights_only=False)  # our own file: optimizer, RNG states
    except Exception as err:
        raise RecordError(f"{path}: unreadable checkpoint ({type(err).__name__}); remove it") from None
    if not isinstance(state, dict) or not {"model", "step"} <= set(state):
        raise RecordError(f"{path}: not a bnstudy checkpoint (no weights or step); remove it")
    return state


def table_path(experiment_folder: Path) -> Path:
    """Where the reprobe table lives: xz-compressed, as a finished run's tables are (pandas reads it directly)."""
    return experiment_folder / "reprobe" / "landscape.csv.xz"


def read_rows(out: Path) -> pd.DataFrame:
    """The table as an earlier call left it (none: empty), or RecordError in one line."""
    if not out.exists():
        return pd.DataFrame(columns=list(COLUMNS))
    try:
        before = pd.read_csv(out)
    except (ValueError, OSError, EOFError, lzma.LZMAError) as err:  # pandas' ParserError is a ValueError
        raise RecordError(f"{out}: unreadable ({str(err).splitlines()[0][:120]}); remove it and rerun") from None
    if tuple(before.columns) != COLUMNS:
        raise RecordError(f"{out}: columns {', '.join(map(str, before.columns))}, not reprobe's; remove it and rerun")
    return before


def write_rows(out: Path, rows: list[dict], replaced: set[tuple[str, int, str]]) -> pd.DataFrame:
    """The rows of this call, beside those already in `out` (a rerun replaces a run's rows in its direction)."""
    before = read_rows(out)
    keep = ~pd.Series(list(zip(before.arm, before.seed, before.direction)), dtype=object).isin(replaced).to_numpy()
    table = pd.concat([frame for frame in (before[keep], pd.DataFrame(rows, columns=list(COLUMNS))) if len(frame)],
                      ignore_index=True)
    table = table.sort_values(["direction", "arm", "seed", "step", "batch", "eta"], kind="stable")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, lzma.compress(table.to_csv(index=False).encode("utf-8")))
    return table


def reprobe(experiment: str, results_dir: str = "results", arms: list[str] | None = None,
            seeds: list[int] | None = None, grid: Grid = Grid(), data_dir: str | None = None,
            device: torch.device = torch.device("cpu"), progress: bool = True) -> list[Path]:
    """Probe the chosen runs' checkpoints on `grid`; write the table and its figure; return their paths."""
    grid.check()
    read_rows(table_path(Path(results_dir) / experiment))  # a damaged table: said before the work
    runs = chosen_runs(results_dir, experiment, arms, seeds)
    rows, datasets = [], {}
    for run in tqdm(runs, desc="reprobe", disable=not progress, dynamic_ncols=True):
        rows += probe_run(run, grid, shared_dataset(datasets, run.config, data_dir, device), device)
    if not rows:
        raise ConfigError(f"{Path(results_dir) / experiment}: none of the chosen runs has a checkpoint of its own "
                          f"(each said above); nothing written")
    root = Path(results_dir) / experiment
    probed_runs = {(row["arm"], row["seed"], grid.probe) for row in rows}  # a run passed over keeps its earlier rows
    with ResultsLock(root / "reprobe"):  # not the experiment's own lock: its runs may still be training
        table = write_rows(table_path(root), rows, probed_runs)
        table = table[table.direction == grid.probe]
        figure = root / "figures" / f"reprobe-{grid.probe}.png"
        figure.parent.mkdir(parents=True, exist_ok=True)
        probed = {(run.dir.arm, run.dir.seed): run for run in runs}  # loaded already; earlier calls' runs are read
        shown = [probed.get((arm, seed)) or RunDir(Path(results_dir), experiment, arm, seed).load()
                 for arm, seed in table[["arm", "seed"]].drop_duplicates().itertuples(index=False)]
        drawn = reprobed_landscape(table, shown, experiment, grid.probe)
        atomic_write_bytes(figure, png_bytes(drawn))
        plt.close(drawn)
    return [table_path(root), figure]
