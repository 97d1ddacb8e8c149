"""Recording a run: its folder, which this module alone lays out, writes, and reads file by file (bnstudy.reading
reads an experiment's runs back through it). config.json, meta.json, tidy CSVs, checkpoint; schemas declared
once; every write atomic (bnstudy.files).

    <results>/<experiment>/experiment.json   what the experiment is: title, arms, figures (bnstudy.manifest)
    <results>/<experiment>/<arm>/seed-<n>/
        config.json      the RunConfig, as resolved
        meta.json        status (running | complete | diverged), git SHA, versions, device, preset,
                         dataset, timings, final numbers
        metrics.csv      per-step training loss/accuracy, test accuracy at intervals
        activations.csv  percentiles and moments of chosen units at chosen layers
        probes.csv       numbers from the probes (landscape, ICS, curvature, weights)
        checkpoint.pt    resume point (never committed)
        .lock            held while a process trains the run: one writer per run folder (never committed)

While a run is in progress its CSVs are plain text, appended to and truncated to a checkpoint's byte
sizes on resume. When it finishes (complete or diverged) meta.json says so, then each CSV is stored as
`<name>.csv.xz` (xz, which pandas reads directly; about a tenth of the size) by an atomic rename, meta.json
lists them with their sizes and SHA-256, and the plain files are removed (`RunDir.settle`). A kill at any
point leaves either a running run with its plain CSVs (it resumes), or a finished one with whole plain
CSVs, whole compressed ones, or both (the next `bnstudy run` settles it). Readers take the plain file
where both forms are present.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import lzma
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bnstudy.config import ConfigError, RunConfig, build, config_differences
from bnstudy.errors import RecordError
from bnstudy.files import (  # noqa: F401  (FAULT_ENV, ResultsLock: importers take a run's file tools from here)
    FAULT_ENV, CsvLog, ResultsLock, atomic_write_bytes, atomic_write_text, fault_point, json_safe, read_json)

# Every CSV's columns, declared once. A writer refuses rows with other columns.
SCHEMAS: dict[str, tuple[str, ...]] = {
    # split: train (per step, on the step's batch, train mode) | test (eval mode) | test-recal (noisy arms:
    # BN statistics recomputed on training batches with the noise off)
    "metrics": ("step", "arm", "seed", "split", "metric", "value"),
    # stat: p05 p15 p50 p85 p95 (percentiles over batch x H x W), mean, var
    "activations": ("step", "arm", "seed", "layer", "unit", "stat", "value"),
    "probes": ("step", "arm", "seed", "probe", "layer", "eta", "metric", "value"),
}
FINISHED = ("complete", "diverged")  # statuses of a run that will write nothing more
STOPPED = "stopped"  # a run that stopped where it was asked to (--until-step): whole up to there, resumable
SETTLED = FINISHED + (STOPPED,)  # a run whose tables are packed and listed, read like a finished one

# Every column's dtype, for every schema. Nullable integers: a probe row without a layer leaves it empty.
DTYPES = {"step": "int64", "arm": "str", "seed": "int64", "split": "str", "metric": "str", "value": "float64",
          "layer": "Int64", "unit": "Int64", "stat": "str", "probe": "str", "eta": "float64"}


PACKED_SUFFIX = ".xz"  # pandas infers the compression from it
PACKED_LEVEL = 6  # xz's default: a whole CSV fits its 8 MiB dictionary, so 9 would only cost memory


def _subfolders(folder: Path) -> list[Path]:
    """The folders in `folder`, in name order; one that cannot be listed is said on stderr and gives none."""
    try:
        return sorted(entry for entry in folder.iterdir() if entry.is_dir())
    except FileNotFoundError:
        return []
    except OSError as err:
        print(f"bnstudy: warning: {folder}: cannot read ({err.strerror}): its runs are left out", file=sys.stderr)
        return []


def table_path(folder: Path, name: str) -> Path | None:
    """Where one run folder keeps table `name`: the plain CSV if there is one (a run in progress, or a finish
    interrupted before the plain files were removed: then both hold the same rows), else the compressed one."""
    folder = Path(folder)
    for path in (folder / f"{name}.csv", folder / f"{name}.csv{PACKED_SUFFIX}"):
        if path.exists():
            return path
    return None


def read_table(path: Path, name: str) -> pd.DataFrame:
    """Table `name` from `path` (plain or compressed) with its schema's columns and numeric dtypes, or
    RecordError naming the file: a torn archive, a non-numeric cell or foreign columns never reach a figure."""
    try:
        frame = pd.read_csv(path, dtype={column: DTYPES[column] for column in SCHEMAS[name]})
    except OSError as err:  # there, but it may not be read (permissions), or the disk fails
        raise RecordError(f"{path}: cannot read ({err.strerror or err}); restore it, or remove its run "
                          f"folder") from None
    except (ValueError, OverflowError, EOFError, lzma.LZMAError) as err:  # ParserError is a ValueError; a number
        # past int64 (a step of 10**20) an OverflowError
        raise RecordError(f"{path}: unreadable as the {name} table ({str(err).splitlines()[0][:200]}); "
                          f"restore it, or remove its run folder") from None
    if tuple(frame.columns) != SCHEMAS[name]:
        raise RecordError(f"{path}: columns {', '.join(frame.columns)}; "
                          f"the {name} table has {', '.join(SCHEMAS[name])}")
    return frame


def table_bytes(folder: Path, name: str) -> bytes:
    """The CSV text of table `name` in a run folder, whichever form it is stored in (FileNotFoundError if none)."""
    path = table_path(folder, name)
    if path is None:
        raise FileNotFoundError(f"{folder}: no {name}.csv or {name}.csv{PACKED_SUFFIX}")
    data = path.read_bytes()
    return lzma.decompress(data) if path.suffix == PACKED_SUFFIX else data


SEED_FOLDER = re.compile(r"seed-(0|[1-9][0-9]*)")  # the one name a seed's folder has: 'seed-00', 'seed-0.bak' are not
# meta.json's copies of configuration values, each checked against config.json (which decides)
CONFIGURED = {"experiment": lambda c: c.experiment, "arm": lambda c: c.arm, "seed": lambda c: c.seed,
              "preset": lambda c: c.preset, "lr": lambda c: c.train.lr, "norm": lambda c: c.model.norm,
              "model": lambda c: c.model.kind, "init": lambda c: c.model.init, "steps": lambda c: c.train.steps,
              "width": lambda c: c.model.width if c.model.kind == "vgg" else None}  # the DLN's is dln_width


@dataclass
class Run:
    """A run folder that checked out (RunDir.load): meta.json with its configuration fields from config.json,
    the configuration, and the three tables read from the files meta.json lists."""

    dir: RunDir
    meta: dict
    config: RunConfig
    tables: dict[str, pd.DataFrame]
    notes: list[str]  # what the loader saw and set aside (a stray plain CSV beside a verified archive)


def pooling_differences(first: RunConfig, other: RunConfig, labels: tuple[str, str] | None = None) -> list[str]:
    """The pooling rule, the one place it is written: two runs are seeds of one arm (averaged together in every
    figure and number) when their configurations differ in nothing but the seed. Returns what else differs."""
    return config_differences(first, dataclasses.replace(other, seed=first.seed),
                              labels or (f"in seed {first.seed}", f"in seed {other.seed}"))


def final_numbers(metrics: pd.DataFrame, window: int = 100) -> dict:
    """meta.json's final numbers as the run's own metrics table gives them (train.final_training_numbers writes them
    from the same table): the mean training accuracy of the last `window` steps, the last training loss, and the
    test accuracy of the last evaluation."""
    train, test = metrics[metrics.split == "train"], metrics[metrics.split == "test"]
    acc, loss = train[train.metric == "acc"].value.tail(window), train[train.metric == "loss"].value
    test_acc = test[(test.metric == "acc") & (test.step == test.step.max())].value
    return {"final_train_acc_last100": round(float(acc.mean()), 5) if len(acc) else None,
            "final_train_loss": float(loss.iloc[-1]) if len(loss) else None,
            "final_test_acc": float(test_acc.iloc[-1]) if len(test_acc) else None}


def _disagreements(meta: dict, derived: dict, tolerance: float, source: str = "its tables",
                   null_ok: bool = True) -> list[str]:
    """'key: A in meta.json, B in <source>' for each derived value meta.json states otherwise; with null_ok=False a
    null (or missing) value there where `source` gives a finite one is one too (NaN is null in strict JSON)."""
    out = []
    for key, value in derived.items():
        said = meta.get(key)
        if said is None and not null_ok and value is not None and not (isinstance(value, float) and math.isnan(value)):
            out.append(f"{key}: null in meta.json, {value!r} in {source}")
            continue
        if said is None or value is None:
            continue
        if isinstance(value, float) and isinstance(said, (int, float)) and not isinstance(said, bool):
            both_nan = math.isnan(float(said)) and math.isnan(value)  # a diverged run's last loss
            same = both_nan or math.isclose(float(said), value, rel_tol=tolerance, abs_tol=tolerance)
        else:  # a string, a list or a table where a number belongs is no number (an edited meta.json)
            same = said == value and type(said) is type(value)
        if not same:
            out.append(f"{key}: {said!r} in meta.json, {value!r} in {source}")
    return out


class RunDir:
    """One run's folder and the files in it."""

    def __init__(self, results_dir: Path, experiment: str, arm: str, seed: int):
        self.results_dir = Path(results_dir)
        self.path = self.results_dir / experiment / arm / f"seed-{seed}"
        self.arm, self.seed = arm, seed

    @classmethod
    def of_experiment(cls, results_dir: Path, experiment: str) -> list[RunDir]:
        """Every run folder of an experiment (<arm>/seed-<n>), in name order, whether or not it holds a meta.json
        (`load` then says it has none: a folder never vanishes without a word). A folder that cannot be listed, or
        one named like a seed's that is none ('seed-00', 'seed-0.bak'), is said on stderr and never read."""
        runs = []
        for arm in _subfolders(Path(results_dir) / experiment):
            for folder in _subfolders(arm):
                if SEED_FOLDER.fullmatch(folder.name):
                    runs.append(cls.at(folder))
                elif folder.name.startswith("seed-"):
                    print(f"bnstudy: warning: {folder} is not a run folder (a seed's folder is seed-<n>): not read",
                          file=sys.stderr)
        return runs

    def seeds_beside(self) -> list[RunDir]:
        """The other seeds' folders of this run's arm (those a figure pools with it), in name order."""
        return [RunDir.at(f) for f in sorted(self.path.parent.glob("seed-*"))
                if SEED_FOLDER.fullmatch(f.name) and f != self.path]

    def load(self, unfinished: bool = False) -> Run:
        """The run, verified (`_load`), or RecordError saying in one line why not, a folder that cannot be read
        included."""
        try:
            return self._load(unfinished)
        except OSError as err:
            raise RecordError(f"{self.path}: cannot read {Path(err.filename).name if err.filename else 'it'} "
                              f"({err.strerror or err})") from None

    def _load(self, unfinished: bool = False) -> Run:
        """The run, verified, or RecordError saying in one line why not. The only reader of a run folder's files:
        meta.json must name this folder's experiment, arm and seed and agree with config.json on every
        configuration value it copies; a finished run's files must be the ones meta.json lists (size and SHA-256),
        its tables must reach its last step, and its final numbers must be its tables'. A plain CSV beside a
        verified archive is never read. With `unfinished`, a run still training is read as it stands."""
        meta = self.read_meta()
        where = f"{self.path}:"
        if not meta:
            raise RecordError(f"{where} meta.json is missing or empty; {self.damage_hint()}")
        finished = meta.get("status") in SETTLED
        if not finished and not unfinished:
            raise RecordError(f"{where} not finished ({meta.get('status', 'no status')}): left out of every figure "
                              f"and number until it is")
        config = self.stored_config()
        if config is None:
            raise RecordError(f"{where} no config.json, so what this run trained cannot be checked; restore it, or "
                              f"remove the folder")
        named = {"experiment": self.path.parent.parent.name, "arm": self.arm, "seed": self.seed}
        wrong = [f"{k}: {getattr(config, k)!r} in config.json, {v!r} by its folder" for k, v in named.items()
                 if getattr(config, k) != v]
        wrong += _disagreements(meta, {k: get(config) for k, get in CONFIGURED.items()}, 1e-12, "config.json")
        if wrong:
            raise RecordError(f"{where} {'; '.join(wrong)}: a run folder copied, renamed or edited is not believed")
        if finished and (why := self.incomplete()):
            raise RecordError(f"{where} finished, but {why}; restore it, or remove the folder to train the run again")
        tables, notes = self._verified_tables(meta, finished)
        self._check_rows_are_its_own(tables)
        if finished:
            self._check_against_tables(meta, config, tables["metrics"])
        return Run(self, meta | {k: get(config) for k, get in CONFIGURED.items()}, config, tables, notes)

    def _verified_tables(self, meta: dict, finished: bool) -> tuple[dict[str, pd.DataFrame], list[str]]:
        """The three tables: a settled run's from the archives meta.json lists (a plain copy beside one is
        stray: noted, never read), any other run's from whichever form it has."""
        listed = meta.get("files") if finished else None
        tables, notes = {}, []
        for name in SCHEMAS:
            path = self.packed(name) if listed and self.packed(name).name in listed else self.table_path(name)
            if listed and path == self.packed(name) and self.csv(name).exists():
                notes.append(f"{self.csv(name)}: a plain copy beside the verified {path.name}, not read")
            tables[name] = read_table(path, name) if path is not None else pd.DataFrame(columns=SCHEMAS[name])
        return tables, notes

    def _check_rows_are_its_own(self, tables: dict[str, pd.DataFrame]) -> None:
        """Every row names this folder's arm and seed: rows copied from another run are not believed."""
        for name, table in tables.items():
            foreign = table[(table.arm.astype(str) != self.arm) | (table.seed != self.seed)]
            if len(foreign):
                first = foreign.iloc[0]
                raise RecordError(f"{self.path}: {len(foreign)} row(s) of its {name} table name {first.arm}/seed-"
                                  f"{first.seed}, not this folder's {self.arm}/seed-{self.seed}: rows copied from "
                                  f"another run are not believed")

    def _check_against_tables(self, meta: dict, config: RunConfig, metrics: pd.DataFrame) -> None:
        """A complete run's training rows reach its last step; its final numbers in meta.json are its table's."""
        train_steps = metrics.step[metrics.split == "train"]
        last = int(train_steps.max()) if len(train_steps) else -1
        if meta.get("status") == STOPPED and last != meta.get("stopped_at", -1) - 1:
            raise RecordError(f"{self.path}: meta.json says stopped at step {meta.get('stopped_at')}, but its training "
                              f"rows end at step {last}; remove the folder to train the run again")
        if meta.get("status") == "complete" and last != config.train.steps - 1:
            raise RecordError(f"{self.path}: meta.json says complete, but its training rows end at step {last} of "
                              f"{config.train.steps}; remove the folder to train the run again")
        if meta.get("status") == "diverged" and (why := self._not_diverged(metrics)):
            raise RecordError(f"{self.path}: meta.json says diverged, but {why}: meta.json is not its tables'")
        derived = final_numbers(metrics)
        derived["steps_done"] = last + 1 if meta.get("status") in ("complete", STOPPED) else None
        if meta.get("status") == "diverged":  # a diverged run is not evaluated at its end: no final test accuracy
            derived["final_test_acc"] = None
        # the CSV keeps 7 significant digits; meta.json rounds to 5. A number the tables give is never null there.
        wrong = _disagreements(meta, derived, 1e-5, null_ok=False)
        if wrong:
            raise RecordError(f"{self.path}: {'; '.join(wrong)}: meta.json's numbers are not its tables'")

    @staticmethod
    def _not_diverged(metrics: pd.DataFrame) -> str | None:
        """Why tables do not show a divergence (every training loss finite), or None."""
        loss = metrics.value[(metrics.split == "train") & (metrics.metric == "loss")]
        return "its training loss is finite at every step" if np.isfinite(loss).all() else None

    @classmethod
    def at(cls, folder: Path) -> RunDir:
        """The run whose folder is `<results>/<experiment>/<arm>/seed-<n>`."""
        folder = Path(folder)
        return cls(folder.parent.parent.parent, folder.parent.parent.name, folder.parent.name,
                   int(folder.name.removeprefix("seed-")))

    @property
    def meta_path(self) -> Path:
        return self.path / "meta.json"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    def csv(self, name: str) -> Path:
        """The plain CSV a run in progress appends to."""
        return self.path / f"{name}.csv"

    def packed(self, name: str) -> Path:
        """The compressed CSV of a finished run."""
        return self.path / f"{name}.csv{PACKED_SUFFIX}"

    def table_path(self, name: str) -> Path | None:
        return table_path(self.path, name)

    def pack_tables(self) -> dict[str, dict]:
        """Compress every plain CSV to `<name>.csv.xz` (atomically); the plain files stay until `drop_plain_tables`.

        Returns the manifest meta.json keeps: file name -> its size in bytes and SHA-256.
        """
        files = {}
        for name in SCHEMAS:
            plain, packed = self.csv(name), self.packed(name)
            if plain.exists():
                atomic_write_bytes(packed, lzma.compress(plain.read_bytes(), preset=PACKED_LEVEL))
            if packed.exists():
                data = packed.read_bytes()
                files[packed.name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        return files

    def drop_plain_tables(self) -> None:
        for name in SCHEMAS:
            self.csv(name).unlink(missing_ok=True)

    def incomplete(self) -> str | None:
        """Why a finished run is not whole (a table meta.json does not list, a file it lists missing, or not the bytes
        it lists), or None (also for a run not finished: its files are still being written). A finished run lists
        every table's archive with its size and SHA-256 (`finish` writes them with the status, in one write): an
        empty or missing list is no off switch for the check."""
        meta = self.read_meta()
        if meta.get("status") not in SETTLED:
            return None
        listed = meta.get("files")
        if not listed:
            return "meta.json lists none of its files (each table's size and SHA-256), so its tables cannot be verified"
        if not isinstance(listed, dict) or not all(isinstance(entry, dict) for entry in listed.values()):
            return "meta.json's 'files' is not a table of files with their sizes and SHA-256"
        unlisted = [self.packed(name).name for name in SCHEMAS if self.packed(name).name not in listed]
        if unlisted:
            return f"meta.json lists no size and SHA-256 for {', '.join(unlisted)}, so its tables cannot be verified"
        for name, entry in listed.items():
            if why := self._unlike_listed(self.path / name, entry):
                return why
        return None

    @staticmethod
    def _unlike_listed(path: Path, entry: dict) -> str | None:
        """Why a file is not the one meta.json lists (missing, another size, another SHA-256), or None."""
        if not path.exists():
            return f"{path.name} missing"
        data = path.read_bytes()
        if len(data) != entry.get("bytes"):
            return f"{path.name} is not the file meta.json lists ({len(data)} bytes, {entry.get('bytes')} listed)"
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            return f"{path.name} is not the file meta.json lists (SHA-256 differs at its listed size)"
        return None

    def has_packed_tables(self) -> bool:
        return any(self.packed(name).exists() for name in SCHEMAS)

    def has_plain_tables(self) -> bool:
        return any(self.csv(name).exists() for name in SCHEMAS)

    def finish(self, fields: dict) -> dict:
        """A run's end: its tables packed, then one meta.json write that says it finished (`fields`) and lists the
        archives, then the plain files removed. A kill before that write leaves a run still running (the next `run`
        resumes it); after it, both forms of the same rows (the next `run` drops the plain ones). So a finished run
        always lists its files, and one that lists none is not believed."""
        files = self.pack_tables()
        fault_point("finish")
        meta = self.update_meta(**fields, files=files)
        fault_point("settle")  # a kill here leaves both forms, which hold the same rows
        self.drop_plain_tables()
        return meta

    def reopen(self) -> None:
        """A stopped run made ready to train on: its verified archives unpacked to the plain CSVs a run appends to
        (the bytes its checkpoint recorded), then meta.json says running and lists no files, then the archives go.
        A kill between leaves either the stopped run (its plain copies set aside by `load`, written again here) or
        a running one beside archives that its end packs anew."""
        if why := self.incomplete():
            raise RecordError(f"{self.path}: stopped, but {why}; restore it, or remove the folder to train again")
        for name in SCHEMAS:
            atomic_write_bytes(self.csv(name), lzma.decompress(self.packed(name).read_bytes()))
        meta = {k: v for k, v in self.read_meta().items() if k not in ("files", "stopped_at")}
        self.write_meta(meta | {"status": "running"})
        for name in SCHEMAS:
            self.packed(name).unlink(missing_ok=True)

    def settle(self) -> dict:
        """A finished run's tables in their final form, its status as it stands: `finish` with no new fields (a run
        folder whose plain CSVs were edited by hand is packed and listed again this way, as the tests do)."""
        return self.finish({})

    def remove_stale_temporaries(self) -> None:
        """The temporary files a killed writer left in this folder (never one of a live writer: the caller holds
        the experiment's lock, so no other process writes here)."""
        for tmp in self.path.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    def settle_interrupted(self) -> None:
        """Complete a finish that a kill cut short after meta.json listed the archives (`finish`): remove each plain
        CSV whose archive holds exactly its bytes. A plain CSV that differs from its listed archive is never packed
        over it (the archive's bytes are the ones meta.json vouches for): it stays, and `load` sets it aside."""
        if not self.has_plain_tables():
            return
        for name in SCHEMAS:
            plain, packed = self.csv(name), self.packed(name)
            if plain.exists() and packed.exists() and lzma.decompress(packed.read_bytes()) == plain.read_bytes():
                plain.unlink()

    def read_meta(self) -> dict:
        """meta.json, or {} for a run never started; a file there that is not a JSON object stops the command
        (a torn meta.json of a finished run must not pass for "not started" and get trained over)."""
        if not self.meta_path.exists():
            return {}
        return read_json(self.meta_path, hint=self.damage_hint())

    def damage_hint(self) -> str:
        """What the folder still says about the run, for a message about one of its damaged files."""
        if self.has_packed_tables():
            return ("the folder holds a finished run's compressed tables: restore the file, or remove the folder to "
                    "train again")
        return "restore the file, or remove the folder to train the run again"

    def stored_config(self) -> RunConfig | None:
        """The configuration config.json holds, rebuilt by config.build (a field added to RunConfig since the run
        was written takes its default, which keeps the behaviour from before it existed), or None."""
        stored = self.read_config()
        try:
            return None if stored is None else build(RunConfig, stored)
        except ConfigError as err:  # a damaged record, named by its file: the message alone says not whose
            raise RecordError(f"{self.path / 'config.json'}: {err}; {self.damage_hint()}") from None

    def read_config(self) -> dict | None:
        path = self.path / "config.json"
        return read_json(path, hint=self.damage_hint()) if path.exists() else None

    def write_meta(self, meta: dict) -> None:
        """meta.json as strict JSON: a non-finite number (a diverged run's last loss) is null, which `status` and
        `diverged_at` explain; Python's json would write a bare NaN, which no other JSON reader takes."""
        atomic_write_text(self.meta_path, json.dumps(json_safe(meta), indent=2, sort_keys=True, allow_nan=False) + "\n")

    def update_meta(self, **fields) -> dict:
        meta = self.read_meta() | fields
        self.write_meta(meta)
        return meta

    def is_finished(self) -> bool:
        return self.read_meta().get("status") in FINISHED

    def is_settled(self) -> bool:
        """Finished, or stopped where it was asked to: its tables packed and listed, read by plot and report."""
        return self.read_meta().get("status") in SETTLED

    def write_config(self, config) -> None:
        atomic_write_text(self.path / "config.json", json.dumps(dataclasses.asdict(config), indent=2) + "\n")

    def open_logs(self) -> dict[str, CsvLog]:
        self.path.mkdir(parents=True, exist_ok=True)
        return {name: CsvLog(self.csv(name), columns) for name, columns in SCHEMAS.items()}
