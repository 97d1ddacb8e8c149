"""Durable files, and nothing about what a run is: atomic writes, JSON read back with one clear error, the
append-only CSV log a run's tables are written through, the lock that keeps one process per experiment folder, and
the points where the kill-and-resume tests pull the plug. bnstudy.recording lays out a run's folder with these."""
from __future__ import annotations

import csv
import hashlib
import fcntl
import io
import json
import math
import os
import platform
import signal
from contextlib import contextmanager
from pathlib import Path

from bnstudy.errors import RecordError


FAULT_ENV = "BNSTUDY_FAULT"  # tests only: "point@n" kills this process with SIGKILL at the n-th pass of `point`
_fault_counts: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Where the kill-and-resume tests pull the plug (SIGKILL, nothing cleaned up); a no-op otherwise."""
    spec = os.environ.get(FAULT_ENV)
    if not spec or not spec.startswith(name + "@"):
        return
    _fault_counts[name] = _fault_counts.get(name, 0) + 1
    if _fault_counts[name] == int(spec.split("@")[1]):
        os.kill(os.getpid(), signal.SIGKILL)


def atomic_write_text(path: Path, text: str) -> None:
    """UTF-8 text, atomically. A name that is not UTF-8 (a folder named in bytes, which Python reads as surrogates)
    is written as its escapes ('\\udcff'), never a broken file nor a traceback."""
    atomic_write_bytes(path, text.encode("utf-8", errors="backslashreplace"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name and rename: a reader never sees half a file, a crash leaves the old one.
    The temporary name is the writer's own (pid), so two processes writing one file never mix their bytes."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with removed_on_failure(tmp), named_on_failure(path):
        with open(tmp, "wb") as f:
            f.write(data[: len(data) // 2])
            fault_point("atomic-write")  # a kill here leaves a half-written temporary file, never a torn `path`
            f.write(data[len(data) // 2:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


@contextmanager
def named_on_failure(path: Path):
    """An OSError that names no file (a write or fsync on a full disk: errno 28) named by the file being written."""
    try:
        yield
    except OSError as err:
        if err.filename is None:
            raise OSError(err.errno, err.strerror or str(err), str(path)) from None
        raise


@contextmanager
def removed_on_failure(tmp: Path):
    """A write that fails (a full disk: OSError 28) leaves no temporary file behind; a kill's are removed by the
    next run in the folder (RunDir.remove_stale_temporaries)."""
    try:
        yield
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def previous(path: Path) -> Path:
    return path.with_name(path.name + ".prev")


def read_json(path: Path, hint: str = "") -> dict:
    """A JSON object from `path`, or RecordError naming the file (torn, empty, null, a list, unreadable)."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:  # the file is there but may not be read (permissions), or the disk fails
        raise RecordError(f"{path}: cannot read ({err.strerror or err}){'; ' + hint if hint else ''}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(f"{path}: unreadable ({type(err).__name__}: {err}){'; ' + hint if hint else ''}") from None
    if not isinstance(value, dict):
        raise RecordError(f"{path}: holds {type(value).__name__}, not a JSON object{'; ' + hint if hint else ''}")
    return value


def _compact(value):
    """Floats with 7 significant digits (float32's precision): a third of the size of repr, same numbers."""
    return format(value, ".7g") if isinstance(value, float) else value


def json_safe(value):
    """`value` with every non-finite float (NaN, inf) replaced by None, in nested dicts and lists too."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return [json_safe(v) for v in value] if isinstance(value, (list, tuple)) else value


def prefix_sha256(path: Path, size: int) -> str:
    """SHA-256 of a file's first `size` bytes (all of them if it is shorter), read in chunks."""
    digest, left = hashlib.sha256(), size
    with open(path, "rb") as f:
        while left > 0 and (chunk := f.read(min(left, 1 << 20))):
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


class CsvLog:
    """Append-only tidy CSV with a fixed schema; rows are buffered and flushed (fsynced) on demand.

    `size()` after a flush is a resume point: `truncate(size)` drops whatever was written after it.
    """

    def __init__(self, path: Path, columns: tuple[str, ...]):
        self.path, self.columns = path, columns
        self.buffer: list[dict] = []
        if not path.exists() or path.stat().st_size == 0:
            atomic_write_text(path, ",".join(columns) + "\n")

    def append(self, rows: list[dict]) -> None:
        for row in rows:
            if set(row) != set(self.columns):
                extra, missing = set(row) - set(self.columns), set(self.columns) - set(row)
                raise ValueError(f"{self.path.name}: row columns differ from the schema "
                                 f"(unknown: {sorted(extra)}, missing: {sorted(missing)})")
        self.buffer.extend(rows)

    def flush(self) -> None:
        if not self.buffer:
            return
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.columns, lineterminator="\n")
        writer.writerows({k: _compact(v) for k, v in row.items()} for row in self.buffer)
        data = text.getvalue()
        with named_on_failure(self.path), open(self.path, "a", encoding="utf-8") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            fault_point("csv-append")  # a kill here leaves a torn tail; resume truncates to the checkpoint's size
            f.write(data[len(data) // 2:])
            f.flush()
            os.fsync(f.fileno())
        self.buffer.clear()

    def size(self) -> int:
        return self.path.stat().st_size

    def sha256(self) -> str:
        """SHA-256 of the file as flushed: with size(), what a checkpoint records of it."""
        return prefix_sha256(self.path, self.size())

    def clear(self) -> None:
        """Back to the header alone (a fresh start of the run)."""
        self.truncate(len(",".join(self.columns)) + 1)

    def truncate(self, size: int) -> None:
        self.buffer.clear()
        with open(self.path, "rb+") as f:  # bytes: truncation counts bytes, and no text encoding is involved
            f.truncate(size)


class ResultsLock:
    """One bnstudy process per experiment folder: an exclusive lock (flock) on `<folder>/.lock`.

    The kernel holds the lock for the process and drops it when the process ends, however it ends:
    SIGKILL included, and a killed process that its parent has not reaped yet (a zombie, as Docker without
    an init leaves it) holds no files. So no lock outlives its process, and no pid is trusted. The file
    itself only tells a refused process who holds it (host and pid); it stays in place when released.
    """

    def __init__(self, folder: Path):
        self.path = Path(folder) / ".lock"
        self.owner = f"{platform.node()} {os.getpid()}"
        self.fd: int | None = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:  # O_NOFOLLOW: a .lock that is a link would have its target truncated below
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            raise RecordError(f"{self.path} is not a plain file ({err.strerror}); remove it, and rerun") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FileExistsError(f"{self.path.parent} is in use by another bnstudy run (lock file {self.path}, "
                                  f"held by host and pid {holder}); wait for it to finish, or use another "
                                  f"--results-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (self.owner + "\n").encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        os.ftruncate(self.fd, 0)  # no owner named once released
        os.close(self.fd)  # closing the last descriptor releases the flock
        self.fd = None
