"""Datasets as tensors on the device, and batches by index with a seeded generator.

CIFAR-10 is read from the official "python version" (pickled batches in `cifar-10-batches-py/`),
checksum-verified against the official files or the project's local JPEG-decoded copy. No
torchvision, no DataLoader: the whole split is one standardized tensor on the device and a batch
is an index gather.

`DATASETS` is the one registry of the kinds `data.dataset` may name: each with its task (the loss and
its reduction, and whether accuracy means anything), the model kinds that fit it, and how it is loaded.
"""
from __future__ import annotations

import hashlib
import pickle
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
import torch.nn.functional as F

from bnstudy.architectures import DATASET_MODELS
from bnstudy.errors import DataError  # noqa: F401  (raised here; importers take it from here too)

if TYPE_CHECKING:  # annotations only: bnstudy.config may import this module without a cycle
    from bnstudy.config import DataConfig, RunConfig

CIFAR_DIRNAME = "cifar-10-batches-py"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]
CIFAR_CHECKSUMS = {  # copy name -> file -> md5
    "official": {
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
    },
    "local JPEG-decoded copy": {  # a copy decoded from JPEG: pixels close to, not equal to, the official ones
        "batches.meta": "7dddfda267884953c50a801cce85580c",
        "data_batch_1": "d37e3e038d65aaffaa561cef196a740b",
        "data_batch_2": "1caeb35ca32cb7bf41293a1f2ba19618",
        "data_batch_3": "233ed4ec65b4a325d0299508e9fbd38c",
        "data_batch_4": "6d802afc7904729089f7b9a007590388",
        "data_batch_5": "756d442705ef10e532c92d7d39a92889",
        "test_batch": "96a481fc669a50313aa78d87659fb773",
    },
}


@dataclass
class Dataset:
    """A training and a test split as tensors on one device, inputs already standardized."""

    name: str  # e.g. "CIFAR-10 (official)" or "synthetic images (tests only)"
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    augment: bool = False

    @property
    def train_size(self) -> int:
        return self.train_x.shape[0]

    def train_batch(self, index: torch.Tensor, generator: torch.Generator | None = None):
        x = self.train_x[index]
        if self.augment:
            x = random_crop_flip(x, generator)
        return x, self.train_y[index]


# ----------------------------------------------------------------------------------------------
# CIFAR-10, official python format
# ----------------------------------------------------------------------------------------------
def cifar_folder(data_dir: Path) -> Path:
    """Accept either the folder holding `cifar-10-batches-py/` or that folder itself."""
    data_dir = Path(data_dir)
    return data_dir if data_dir.name == CIFAR_DIRNAME else data_dir / CIFAR_DIRNAME


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_cifar(folder: Path, checksums: dict[str, dict[str, str]] = CIFAR_CHECKSUMS) -> str:
    """Name of the first known copy whose every file `folder` holds with that copy's md5; DataError otherwise.

    Each copy is compared over its own files (copies need not list the same ones)."""
    if not folder.is_dir():
        raise DataError(f"CIFAR-10 not found: no folder {folder}. Set --data-dir or BNSTUDY_DATA to the folder "
                        f"holding {CIFAR_DIRNAME}/, or fetch it with `bnstudy data download`.")
    missing = {copy: [n for n in sorted(expected) if not (folder / n).is_file()]
               for copy, expected in checksums.items()}
    complete = [copy for copy, names in missing.items() if not names]
    if not complete:  # name what the nearest copy lacks
        nearest = min(missing.values(), key=len)
        raise DataError(f"CIFAR-10 in {folder} is incomplete: missing {', '.join(nearest)}")
    names = sorted({n for copy in complete for n in checksums[copy]})
    found = {n: md5(folder / n) for n in names}
    for copy in complete:
        if all(found[n] == digest for n, digest in checksums[copy].items()):
            return copy
    known = {n: {c[n] for c in checksums.values() if n in c} for n in names}
    bad = [n for n in names if found[n] not in known[n]]  # name the first file that matches no copy
    if bad:
        raise DataError(f"CIFAR-10 file {folder / bad[0]} has md5 {found[bad[0]]}, which matches no known copy "
                        f"({', '.join(checksums)}): corrupt or truncated; fetch it again")
    raise DataError(f"CIFAR-10 files in {folder} mix files of different copies ({', '.join(checksums)})")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> (N, 3, 32, 32) uint8 images, (N,) int64 labels."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="bytes")
        data = np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as err:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {err}") from None
    return data, labels


def write_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write (N, 3, 32, 32) uint8 images in the official format (used by tests and tools)."""
    entry = {b"data": images.reshape(len(images), -1).astype(np.uint8), b"labels": [int(v) for v in labels],
             b"batch_label": b"bnstudy", b"filenames": [b"%d.png" % i for i in range(len(images))]}
    with open(path, "wb") as f:
        pickle.dump(entry, f)


def read_cifar(folder: Path, files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    parts = [read_batch(folder / f) for f in files]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def download_cifar(data_dir: Path, url: str = CIFAR_URL) -> Path:
    """Fetch the official archive, check its md5, unpack into data_dir; DataError without a network."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
        archive = Path(tmp) / "cifar-10-python.tar.gz"
        try:
            urllib.request.urlretrieve(url, archive)
        except (OSError, ValueError) as err:
            raise DataError(f"could not download CIFAR-10 from {url} ({err}); with no network, copy "
                            f"{CIFAR_DIRNAME}/ into {data_dir} by hand") from None
        if md5(archive) != CIFAR_ARCHIVE_MD5:
            raise DataError(f"downloaded archive from {url} has the wrong md5; not unpacked")
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        (Path(tmp) / CIFAR_DIRNAME).replace(data_dir / CIFAR_DIRNAME)
    return data_dir / CIFAR_DIRNAME


# ----------------------------------------------------------------------------------------------
# Synthetic images: a small learnable set for tests only
# ----------------------------------------------------------------------------------------------
def synthetic_images(n: int, seed: int, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Class templates plus pixel noise: learnable in a few steps, labelled synthetic everywhere."""
    rng = np.random.default_rng(1234)  # the templates are the same for every split and seed
    templates = rng.uniform(0, 255, size=(classes, 3, 32, 32))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    images = templates[labels] * 0.5 + rng.uniform(0, 127, size=(n, 3, 32, 32))
    return images.astype(np.uint8), labels.astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Standardization, tensors on the device, batches
# ----------------------------------------------------------------------------------------------
def standardize(train: np.ndarray, test: np.ndarray, device: torch.device):
    """uint8 (N, 3, H, W) -> float32 on `device`, per channel zero mean, unit std (train statistics)."""
    train_t = torch.as_tensor(train, device=device).float().div_(255)
    test_t = torch.as_tensor(test, device=device).float().div_(255)
    mean = train_t.mean(dim=(0, 2, 3), keepdim=True)  # (1, C, 1, 1)
    std = train_t.std(dim=(0, 2, 3), keepdim=True)
    # in place: the same operations in the same order (same numbers), without two more 600 MB copies
    return train_t.sub_(mean).div_(std), test_t.sub_(mean).div_(std)


def load_images(cfg: DataConfig, data_dir: Path | None, device: torch.device) -> Dataset:
    """An image kind of DATASETS (cifar10, synthetic) as `cfg` asks for it."""
    return data_kind(cfg.dataset).reader(cfg, data_dir, device)


def load_cifar10(cfg: DataConfig, data_dir: Path | None, device: torch.device) -> Dataset:
    folder = cifar_folder(data_dir)
    name = f"CIFAR-10 ({verify_cifar(folder)})"
    train_x, train_y = read_cifar(folder, TRAIN_FILES)
    test_x, test_y = read_cifar(folder, TEST_FILES)
    train_x, train_y = train_x[: cfg.train_size or None], train_y[: cfg.train_size or None]
    test_x, test_y = test_x[: cfg.test_size or None], test_y[: cfg.test_size or None]
    return image_dataset(name, (train_x, train_y, test_x, test_y), cfg, device)


def load_synthetic(cfg: DataConfig, data_dir: Path | None, device: torch.device) -> Dataset:
    train_x, train_y = synthetic_images(cfg.train_size or 512, seed=0)
    test_x, test_y = synthetic_images(cfg.test_size or 256, seed=1)
    return image_dataset("synthetic images (tests only)", (train_x, train_y, test_x, test_y), cfg, device)


def image_dataset(name: str, arrays: tuple, cfg: DataConfig, device: torch.device) -> Dataset:
    train_x, train_y, test_x, test_y = arrays
    train_t, test_t = standardize(train_x, test_x, device)
    return Dataset(name, train_t, torch.as_tensor(train_y, device=device), test_t,
                   torch.as_tensor(test_y, device=device), augment=cfg.augment)


def gaussian_regression(cfg: DataConfig, width: int, seed: int, device: torch.device) -> Dataset:
    """The DLN task (docs/protocol.md, "The deep linear network"): x ~ N(0, I), y = A x with A_ij ~ N(0, 1);
    1,000 samples by default.

    A and the samples are a function of the run seed (paired seeds: every arm sees the same data).
    The test split is a fresh draw of x with the same A.
    """
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(width, width, generator=generator)
    train_x = torch.randn(cfg.train_size or 1000, width, generator=generator)
    test_x = torch.randn(cfg.test_size or 1000, width, generator=generator)
    return Dataset("Gaussian regression y = A x (DLN)", train_x.to(device), (train_x @ a.T).to(device),
                   test_x.to(device), (test_x @ a.T).to(device))


def load_gaussian(cfg: DataConfig, data_dir: Path | None, device: torch.device, *, width: int, seed: int) -> Dataset:
    return gaussian_regression(cfg, width, seed, device)


def random_crop_flip(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Random 32x32 crop of the 4-padded batch and a random horizontal flip, per image, on the device."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 9, (n,), generator=generator).to(x.device)
    flip = torch.rand(n, generator=generator).to(x.device) < 0.5
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (N, 1, H, 1)
    cols = torch.arange(w, device=x.device).expand(n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + dx[:, None]
    cols = cols[:, None, None, :]  # (N, 1, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


class BatchOrder:
    """Epochs of a seeded random permutation, cut into batches of indices; its state resumes exactly."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if batch_size > n:
            raise DataError(f"train.batch_size {batch_size} is larger than the training set ({n} examples)")
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.generator)
        self.position = 0

    def next(self) -> torch.Tensor:
        """The next batch of indices; a new permutation starts when fewer than a batch remain (drop last).
        Full-batch training (batch = dataset) takes the data in its stored order every step."""
        if self.batch_size == self.n:
            return torch.arange(self.n)
        if self.position + self.batch_size > self.n:
            self.perm = torch.randperm(self.n, generator=self.generator)
            self.position = 0
        index = self.perm[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return index

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "perm": self.perm, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.perm, self.position = state["perm"], state["position"]


# ----------------------------------------------------------------------------------------------
# The registry: every kind of data a run can name, with its task and its loader
# ----------------------------------------------------------------------------------------------
def summed_squared_error(outputs: torch.Tensor, targets: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """||outputs - targets||^2 summed over the samples (the DLN's loss in the paper), or its mean per sample."""
    total = (outputs - targets).square().sum()
    return total if reduction == "sum" else total / len(outputs)


@dataclass(frozen=True)
class Task:
    """What a dataset asks of a model: its loss, how that reduces over a batch, and whether accuracy means anything."""

    loss: object  # loss(outputs, targets, reduction="mean" | "sum")
    reduction: str  # the training objective's reduction over the batch
    classification: bool

    def objective(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss(outputs, targets, reduction=self.reduction)


CLASSIFICATION = Task(F.cross_entropy, "mean", True)
REGRESSION = Task(summed_squared_error, "sum", False)  # the DLN: summed over the batch, as in the paper


def _no_run_inputs(config: RunConfig) -> dict:
    return {}


@dataclass(frozen=True)
class DataKind:
    """One value of `data.dataset`: its task, the `model.kind`s that can train on it, and how it is loaded.

    reader(config.data, data_dir, device, **run_inputs(config)) -> Dataset; run_inputs names whatever else of the
    run (besides the data section) the tensors are a function of, so `key` says when two runs can share them."""

    task: Task
    models: tuple[str, ...]
    reader: Callable[..., Dataset]
    run_inputs: Callable[[RunConfig], dict] = _no_run_inputs

    def key(self, config: RunConfig) -> tuple:
        """Everything the tensors depend on besides the folder and the device: runs with equal keys share them."""
        return (config.data, *sorted(self.run_inputs(config).items()))

    def load(self, config: RunConfig, data_dir: Path | None, device: torch.device) -> Dataset:
        return self.reader(config.data, data_dir, device, **self.run_inputs(config))


def _gaussian_inputs(config: RunConfig) -> dict:
    return {"width": config.model.dln_width, "seed": config.seed}  # A and the samples: a function of both


def load_mnist(cfg: DataConfig, data_dir: Path | None, device: torch.device) -> Dataset:
    """MNIST's official IDX files (bnstudy.mnist), pixels scaled to [0, 1] and standardized with the training split's
    mean and std, as CIFAR-10's are (Ioffe & Szegedy say nothing of it: docs/protocol.md); not binarized."""
    from bnstudy.mnist import mnist_folder, read_mnist, verify_mnist

    folder = mnist_folder(data_dir if data_dir is not None else Path("data"))
    name = f"MNIST ({verify_mnist(folder)})"
    train_x, train_y = read_mnist(folder, "train")
    test_x, test_y = read_mnist(folder, "test")
    arrays = (train_x[: cfg.train_size or None], train_y[: cfg.train_size or None],
              test_x[: cfg.test_size or None], test_y[: cfg.test_size or None])
    return image_dataset(name, arrays, cfg, device)


DATASETS: dict[str, DataKind] = {  # the models of each kind: architectures.DATASET_MODELS (torch-free, for config)
    "cifar10": DataKind(CLASSIFICATION, DATASET_MODELS["cifar10"], load_cifar10),
    "synthetic": DataKind(CLASSIFICATION, DATASET_MODELS["synthetic"], load_synthetic),  # tiny, labelled: tests
    "gaussian": DataKind(REGRESSION, DATASET_MODELS["gaussian"], load_gaussian, _gaussian_inputs),  # the DLN's y = A x
    "mnist": DataKind(CLASSIFICATION, DATASET_MODELS["mnist"], load_mnist),  # Ioffe & Szegedy's MLP experiment
}
DATASET_KINDS = tuple(DATASETS)  # the package's own; register_dataset adds to DATASETS


def register_dataset(name: str, reader: Callable[..., Dataset], task: Task = CLASSIFICATION,
                     models: tuple[str, ...] = ()) -> None:
    """A data set of one's own, by name: `data.dataset = "<name>"` in an experiment file then loads it with
    reader(DataConfig, data_dir, device) -> Dataset, for the model kinds named (the package's, or one's own from
    models.register_model, which can also add this data set to a kind registered before). Registering a name again
    replaces it."""
    DATASETS[name] = DataKind(task, tuple(models), reader)
    DATASET_MODELS[name] = tuple(models)


def data_kind(name: str) -> DataKind:
    """The registry's entry for `name`; a DataError naming the known kinds otherwise."""
    if name not in DATASETS:
        raise DataError(f"unknown data.dataset '{name}'; known: {', '.join(DATASETS)}")
    return DATASETS[name]
