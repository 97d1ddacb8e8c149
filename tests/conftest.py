import os
from pathlib import Path

import pytest
import torch

SMOKE_SYNTHETIC = ["--set", "data.dataset=synthetic"]


def threads_per_test() -> int:
    """torch's threads in a test: BNSTUDY_TEST_THREADS (1 beside a long run on a 2-core machine), else the cores
    shared among pytest-xdist's workers (`make test` runs one a core: more threads than cores slow every one)."""
    if "BNSTUDY_TEST_THREADS" in os.environ:
        return int(os.environ["BNSTUDY_TEST_THREADS"])
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1))
    return max(1, min(2, (os.cpu_count() or 1) // workers))


@pytest.fixture(autouse=True)
def _fast_torch():
    torch.set_num_threads(threads_per_test())
    yield


@pytest.fixture
def cifar_dir() -> Path:
    """The real CIFAR-10 (BNSTUDY_DATA); CI always provides it, so a skip here only happens on a laptop."""
    path = os.environ.get("BNSTUDY_DATA")
    if not path or not (Path(path) / "cifar-10-batches-py").is_dir():
        pytest.skip("BNSTUDY_DATA does not point at an unpacked CIFAR-10")
    return Path(path)


@pytest.fixture
def mnist_dir() -> Path:
    """The real MNIST (BNSTUDY_DATA/mnist/, which `make test` fetches there); skipped where it is not, saying how."""
    path = os.environ.get("BNSTUDY_DATA")
    if not path or not (Path(path) / "mnist" / "t10k-labels-idx1-ubyte").is_file():
        pytest.skip("BNSTUDY_DATA holds no mnist/: `make mnist-data` or `bnstudy data download --dataset mnist`")
    return Path(path)


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` need a GPU: where torch sees none they skip, saying why (`make test-gpu` runs them)."""
    if torch.cuda.is_available():
        return
    built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    skip = pytest.mark.skip(reason=f"no CUDA GPU visible to torch {torch.__version__} ({built})")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
