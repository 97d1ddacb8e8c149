import os
from pathlib import Path

import pytest
import torch

SMOKE_SYNTHETIC = ["--set", "data.dataset=synthetic"]


@pytest.fixture(autouse=True)
def _fast_torch():
    torch.set_num_threads(2)
    yield


@pytest.fixture
def cifar_dir() -> Path:
    """The real CIFAR-10 (BNSTUDY_DATA); CI always provides it, so a skip here only happens on a laptop."""
    path = os.environ.get("BNSTUDY_DATA")
    if not path or not (Path(path) / "cifar-10-batches-py").is_dir():
        pytest.skip("BNSTUDY_DATA does not point at an unpacked CIFAR-10")
    return Path(path)
