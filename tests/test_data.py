import hashlib

import numpy as np
import pytest
import torch

from bnstudy.data import (CIFAR_CHECKSUMS, BatchOrder, DataError, cifar_folder, random_crop_flip, read_batch,
                          standardize, verify_cifar, write_batch)


def tiny_cifar(folder, rng):
    folder.mkdir(parents=True)
    for name in list(CIFAR_CHECKSUMS["official"]):
        images = rng.integers(0, 256, size=(7, 3, 32, 32), dtype=np.uint8)
        write_batch(folder / name, images, rng.integers(0, 10, size=7))
    return {"tiny": {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in folder.iterdir()}}


def test_official_format_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=5)
    write_batch(tmp_path / "data_batch_1", images, labels)
    read_images, read_labels = read_batch(tmp_path / "data_batch_1")
    assert np.array_equal(read_images, images) and np.array_equal(read_labels, labels)


def test_checksums_name_the_copy_and_catch_corruption(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    checksums = tiny_cifar(folder, np.random.default_rng(1))
    assert verify_cifar(folder, checksums | CIFAR_CHECKSUMS) == "tiny"
    data = bytearray((folder / "data_batch_3").read_bytes())
    data[100] ^= 0xFF
    (folder / "data_batch_3").write_bytes(bytes(data))
    with pytest.raises(DataError, match="data_batch_3 has md5 .* matches no known copy"):
        verify_cifar(folder, checksums)


def test_missing_folder_and_missing_file_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="CIFAR-10 not found.*BNSTUDY_DATA"):
        verify_cifar(tmp_path / "nowhere")
    folder = tmp_path / "cifar-10-batches-py"
    tiny_cifar(folder, np.random.default_rng(2))
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match="incomplete: missing test_batch"):
        verify_cifar(folder)


def test_truncated_batch_is_a_clear_error(tmp_path):
    path = tmp_path / "data_batch_1"
    write_batch(path, np.zeros((3, 3, 32, 32), np.uint8), [0, 1, 2])
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="cannot read CIFAR-10 batch"):
        read_batch(path)


def test_real_cifar_is_recognised(cifar_dir):
    assert verify_cifar(cifar_folder(cifar_dir)) in CIFAR_CHECKSUMS
    assert cifar_folder(cifar_dir / "cifar-10-batches-py") == cifar_folder(cifar_dir)


def test_standardization_is_per_channel_on_the_training_split():
    rng = np.random.default_rng(3)
    train = rng.integers(0, 256, size=(50, 3, 8, 8), dtype=np.uint8)
    train_t, _ = standardize(train, train[:5], torch.device("cpu"))
    assert torch.allclose(train_t.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(train_t.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-5)


def test_batch_order_covers_each_epoch_and_resumes_exactly():
    order = BatchOrder(10, 3, seed=0)
    epoch = torch.cat([order.next() for _ in range(3)])
    assert len(set(epoch.tolist())) == 9  # drop-last: 3 batches of 3 from 10, no repeats
    state = order.state_dict()
    expected = [order.next() for _ in range(5)]
    resumed = BatchOrder(10, 3, seed=99)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(expected, [resumed.next() for _ in range(5)]))
    with pytest.raises(DataError, match="larger than the training set"):
        BatchOrder(10, 11, seed=0)


def test_random_crop_flip_keeps_shape_and_content():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    out = random_crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    # every value is either padding (0) or a pixel of the same image and channel
    for i in range(2):
        for c in range(3):
            values = set(out[i, c].flatten().tolist()) - {0.0}
            assert values <= set(x[i, c].flatten().tolist())


def test_each_known_copy_is_compared_over_its_own_files(tmp_path):
    """The copies were all checked over the first copy's file list: a folder matching a later copy that lists
    other files was 'incomplete' or 'mixed'."""
    folder = tmp_path / "cifar-10-batches-py"
    tiny = tiny_cifar(folder, np.random.default_rng(4))["tiny"]
    wider = {"with readme": CIFAR_CHECKSUMS["official"] | {"readme.html": "0" * 32}}
    assert verify_cifar(folder, wider | {"tiny": tiny}) == "tiny"
    narrower = {"fewer files": {n: "0" * 32 for n in list(tiny)[:3]}}
    assert verify_cifar(folder, narrower | {"tiny": tiny}) == "tiny"
    (folder / "extra").write_bytes(b"x")
    with_extra = {"tiny+extra": tiny | {"extra": hashlib.md5(b"x").hexdigest()}}
    assert verify_cifar(folder, narrower | with_extra) == "tiny+extra"
    (folder / "extra").unlink()
    two_more = {"two more files": tiny | {"a": "0" * 32, "b": "0" * 32}}
    with pytest.raises(DataError, match="incomplete: missing readme.html$"):
        verify_cifar(folder, two_more | wider)  # the nearest copy's missing files are named


def test_the_registry_names_every_kind_with_its_task_and_loader(tmp_path):
    from bnstudy.config import DataConfig, ModelConfig, RunConfig, validate
    from bnstudy.data import CLASSIFICATION, DATASET_KINDS, DATASETS, REGRESSION, data_kind

    assert DATASET_KINDS == ("cifar10", "synthetic", "gaussian", "mnist")
    assert DATASETS["cifar10"].task is CLASSIFICATION is DATASETS["synthetic"].task is DATASETS["mnist"].task
    assert DATASETS["gaussian"].task is REGRESSION and not REGRESSION.classification
    for kind, entry in DATASETS.items():  # config accepts each kind with each model kind the registry pairs it with
        for model in entry.models:
            validate(RunConfig(data=DataConfig(dataset=kind), model=ModelConfig(kind=model)))
    with pytest.raises(DataError, match="unknown data.dataset 'svhn'; known: cifar10, synthetic, gaussian, mnist"):
        data_kind("svhn")
