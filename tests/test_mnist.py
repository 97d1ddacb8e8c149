"""MNIST from its official IDX files: reading, the checksums that refuse a corrupt or foreign copy, fetching from a
mirror or the registry copy's pickle, and the real files where BNSTUDY_DATA holds them."""
import gzip
import hashlib
import pickle

import numpy as np
import pytest

from bnstudy import mnist
from bnstudy.cli import main
from bnstudy.errors import DataError
from bnstudy.mnist import (IDX_FILES, SPLITS, fetch_mnist, idx_bytes, idx_from_pickle, mnist_folder, read_idx,
                           read_mnist, verify_mnist)


def small_splits(n_train=8, n_test=4, seed=0):
    """(images, labels) per split, IDX-shaped (N, 28, 28) uint8 and (N,) uint8."""
    rng = np.random.default_rng(seed)
    return {split: (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8))
            for split, n in (("train", n_train), ("test", n_test))}


def idx_files_of(splits) -> dict[str, bytes]:
    files = {}
    for split, (images, labels) in splits.items():
        files[SPLITS[split][0]], files[SPLITS[split][1]] = idx_bytes(images), idx_bytes(labels)
    return files


def table_of(files: dict[str, bytes]) -> dict:
    """An IDX_FILES-shaped table of these files' own checksums: the 'official' ones of a small synthetic copy."""
    return {name: (hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest(), len(data))
            for name, data in files.items()}


@pytest.fixture
def small_copy(tmp_path, monkeypatch):
    """A synthetic MNIST in tmp_path/mnist whose checksums stand in for the official ones."""
    files = idx_files_of(small_splits())
    monkeypatch.setattr(mnist, "IDX_FILES", table_of(files))
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder, files


def test_idx_round_trip_and_a_short_or_foreign_file_refused(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    path = tmp_path / "images"
    path.write_bytes(idx_bytes(images))
    assert (read_idx(path) == images).all() and read_idx(path).flags.writeable
    path.write_bytes(idx_bytes(images)[:-1])
    with pytest.raises(DataError, match="holds 1,567: truncated or corrupt"):
        read_idx(path)
    path.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(DataError, match="not an IDX file of unsigned bytes"):
        read_idx(path)


def test_a_copy_is_accepted_by_its_checksums_and_a_changed_byte_refused(small_copy):
    folder, files = small_copy
    assert verify_mnist(folder, mnist.IDX_FILES) == "official"
    images, labels = read_mnist(folder, "test")
    assert images.shape == (4, 1, 28, 28) and labels.dtype == np.int64
    corrupt = bytearray(files["t10k-images-idx3-ubyte"])
    corrupt[100] ^= 1  # one pixel, one bit: the length and the header still read fine
    (folder / "t10k-images-idx3-ubyte").write_bytes(bytes(corrupt))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte is not the official one"):
        verify_mnist(folder, mnist.IDX_FILES)
    (folder / "t10k-images-idx3-ubyte").write_bytes(files["t10k-images-idx3-ubyte"])
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="incomplete: missing t10k-labels-idx1-ubyte"):
        verify_mnist(folder, mnist.IDX_FILES)
    with pytest.raises(DataError, match="MNIST not found: no folder"):
        verify_mnist(folder / "nowhere")


def serve(folder, files: dict[str, bytes]) -> str:
    """A mirror on the local disk, as the official ones serve the files: gzip, '<name>.gz'."""
    folder.mkdir()
    for name, data in files.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(data))
    return folder.as_uri() + "/"


def no_registry(registry, names):
    raise DataError("the package registry's copy (none in this test)")


def test_fetch_keeps_a_mirrors_files_only_when_they_are_official(tmp_path, monkeypatch):
    files = idx_files_of(small_splits())
    monkeypatch.setattr(mnist, "IDX_FILES", table_of(files))
    monkeypatch.setattr(mnist, "_from_registry", no_registry)
    good = serve(tmp_path / "good", files)
    tampered = dict(files, **{"train-labels-idx1-ubyte": idx_bytes(np.zeros(8, np.uint8))})
    bad = serve(tmp_path / "bad", tampered)
    with pytest.raises(DataError, match="could not fetch MNIST: .*train-labels-idx1-ubyte from .* is not the official "
                                        "file.*; the package registry's copy"):
        fetch_mnist(tmp_path / "data", mirrors=(bad,))
    assert not list((tmp_path / "data" / "mnist").iterdir())  # nothing kept, not even the good files before it
    folder = fetch_mnist(tmp_path / "data", mirrors=(tmp_path.as_uri() + "/missing/", bad, good))
    assert verify_mnist(folder, mnist.IDX_FILES) == "official" and folder == mnist_folder(tmp_path / "data")
    assert sorted(p.name for p in folder.iterdir()) == sorted([*files, "README.md"])  # no temporary file left
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert f"from {good}" in readme and mnist.IDX_FILES["train-images-idx3-ubyte"][1] in readme


def test_a_file_where_the_folder_goes_and_a_full_disk_are_one_line(tmp_path, monkeypatch):
    (tmp_path / "mnist").write_text("not a folder")
    with pytest.raises(DataError, match=r"cannot make .*mnist for MNIST"):
        fetch_mnist(tmp_path, mirrors=())
    files = idx_files_of(small_splits())
    monkeypatch.setattr(mnist, "IDX_FILES", table_of(files))
    good = serve(tmp_path / "good", files)

    def full(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mnist.tempfile._TemporaryFileWrapper, "write", full, raising=False)
    with pytest.raises(DataError, match="cannot write .*: No space left on device"):
        fetch_mnist(tmp_path / "data", mirrors=(good,))
    assert not [p for p in (tmp_path / "data" / "mnist").iterdir()]  # no temporary file left behind


def test_the_registry_copy_is_rebuilt_to_the_idx_bytes_and_refused_when_not_k_over_256():
    splits = small_splits(n_train=12, n_test=4)
    images, labels = splits["train"]
    as_pickle = ((images[:8].reshape(8, -1) / 256).astype(np.float32), labels[:8].astype(np.int64)), \
        ((images[8:].reshape(4, -1) / 256).astype(np.float32), labels[8:].astype(np.int64)), \
        ((splits["test"][0].reshape(4, -1) / 256).astype(np.float32), splits["test"][1].astype(np.int64))
    assert idx_from_pickle(as_pickle) == idx_files_of(splits)  # train + validation = the training file, in order
    (x, y), valid, test = as_pickle
    with pytest.raises(DataError, match="not k / 256"):
        idx_from_pickle(((x + np.float32(1e-3), y), valid, test))


def test_the_registry_pickle_builds_arrays_and_nothing_else():
    arrays = pickle.dumps((np.arange(3, dtype=np.float32), np.zeros(2, np.int64)), protocol=2)
    built = mnist._arrays_only(arrays)
    assert (built[0] == np.arange(3)).all()

    class Hostile:
        def __reduce__(self):
            return (print, ("owned",))

    with pytest.raises(pickle.UnpicklingError, match=r"refused to build (__builtin__|builtins)\.print"):
        mnist._arrays_only(pickle.dumps(Hostile(), protocol=2))


def test_data_check_without_mnist_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["data", "check", "--dataset", "mnist", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "MNIST not found" in err and "bnstudy data download --dataset mnist" in err


def test_the_real_mnist_is_the_official_one(mnist_dir):
    folder = mnist_folder(mnist_dir)
    assert verify_mnist(folder) == "official"
    train_x, train_y = read_mnist(folder, "train")
    test_x, test_y = read_mnist(folder, "test")
    assert train_x.shape == (60_000, 1, 28, 28) and test_x.shape == (10_000, 1, 28, 28)
    assert list(test_y[:10]) == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the test set's first digits, as every copy has them
    assert np.bincount(train_y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert train_x.max() == 255 and set(IDX_FILES) <= {p.name for p in folder.iterdir()}
