import gzip
import os
import re

import numpy as np
import pytest

from unlearn_da.core.artifacts import sha256_file
from unlearn_da.data.prepared import load_prepared, load_raw, prepare, read_idx, stratified_split
from unlearn_da.core.errors import ArtifactError, DataError
from unlearn_da.data.splits import load_split, make_split, write_split


def test_digits_prepared_split_is_fixed_and_disjoint(digits_file, tmp_path):
    data = load_prepared(digits_file)
    assert data.x_train.dtype == np.uint8 and data.x_train.shape[1:] == (1, 8, 8)
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 1797
    again = tmp_path / "again.npz"
    prepare("digits", {"val_fraction": 0.1, "test_fraction": 0.2, "split_seed": 0}, again)
    assert sha256_file(again) == sha256_file(digits_file)  # same seed, same bytes
    with np.load(digits_file) as z:
        assert not set(z["source_train_idx"]) & set(z["source_val_idx"])


def test_stratified_split_keeps_class_shares():
    y = np.repeat(np.arange(4), 100)
    keep, held = stratified_split(y, 0.1, seed=3)
    assert len(held) == 40 and np.bincount(y[held]).tolist() == [10, 10, 10, 10]
    assert len(np.intersect1d(keep, held)) == 0


def _write_idx(path, arr, gz=False):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    opener = gzip.open if gz else open
    with opener(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reader_round_trips(tmp_path, gz):
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 256
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    _write_idx(path, arr, gz)
    assert np.array_equal(read_idx(path), arr)


def test_idx_reader_refuses_truncated_file(tmp_path):
    path = tmp_path / "t.idx"
    _write_idx(path, np.zeros((10, 4, 4)))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_fashion_mnist_from_idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    for name, shape in [("train-images-idx3-ubyte", (50, 28, 28)), ("t10k-images-idx3-ubyte", (20, 28, 28))]:
        _write_idx(tmp_path / f"{name}.gz", rng.integers(0, 255, shape), gz=True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", rng.integers(0, 10, 50))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 20))
    raw = load_raw("fashion_mnist", {"fashion_mnist_dirs": [str(tmp_path / "nope"), str(tmp_path)]})
    assert raw["x"].shape == (50, 1, 28, 28) and raw["x_test"].shape == (20, 1, 28, 28)


def _fashion_dir(tmp_path, train=(50, 28, 28), labels=50, top_label=9):
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 255, train), gz=True)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (20, 28, 28)), gz=True)
    y = rng.integers(0, 10, labels)
    y[0] = top_label
    _write_idx(tmp_path / "train-labels-idx1-ubyte", y)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 20))
    return tmp_path


@pytest.mark.parametrize("over, expected", [
    ({"labels": 49}, "train-labels-idx1-ubyte: 49 labels for the 50 images of train-images-idx3-ubyte.gz"),
    ({"train": (50, 32, 32), "labels": 50}, "train-images-idx3-ubyte.gz: holds images of shape (50, 32, 32); "
                                            "fashion_mnist has 28x28 images"),
    ({"top_label": 12}, "train-labels-idx1-ubyte: label 12 outside fashion_mnist's classes 0..9"),
], ids=["a label short", "32x32", "label range"])
def test_fashion_mnist_files_are_checked_for_shape_count_and_labels(tmp_path, over, expected):
    """One label short silently dropped an image; 32x32 images and label 12 were accepted."""
    with pytest.raises(DataError, match=re.escape(expected)):
        load_raw("fashion_mnist", {"fashion_mnist_dirs": [str(_fashion_dir(tmp_path, **over))]})


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_an_idx_file_that_is_not_a_regular_file_is_refused_before_reading(tmp_path, kind):
    """A FIFO blocked the reader; a link to /dev/zero read until memory ran out."""
    path = tmp_path / "train-images-idx3-ubyte"
    os.mkfifo(path) if kind == "fifo" else path.symlink_to("/dev/zero")
    with pytest.raises(DataError, match="not a regular file"):
        read_idx(path)


def test_an_idx_file_past_the_size_bound_is_refused(tmp_path):
    path = tmp_path / "big.idx.gz"
    _write_idx(path, np.zeros((1000, 28, 28)), gz=True)
    with pytest.raises(DataError, match="more than 1,000 bytes decompressed"):
        read_idx(path, max_bytes=1000)


def test_missing_fashion_mnist_names_three_ways(tmp_path):
    with pytest.raises(DataError) as err:
        load_raw("fashion_mnist", {"fashion_mnist_dirs": [str(tmp_path)], "download": False})
    text = str(err.value)
    assert "data/raw/fashion-mnist" in text and "apt-get install dataset-fashion-mnist" in text
    assert "data.download" in text


def test_random_split_is_seeded_and_sized():
    y = np.arange(1000) % 10
    a, b, c = make_split(y, "random10", 0), make_split(y, "random10", 0), make_split(y, "random10", 1)
    assert len(a.forget) == 100 and np.array_equal(a.forget, b.forget)
    assert not np.array_equal(a.forget, c.forget)
    assert len(np.intersect1d(a.forget, a.retain)) == 0 and len(a.forget) + len(a.retain) == 1000


def test_class_split_takes_the_whole_class():
    y = np.arange(100) % 10
    s = make_split(y, "class3", 0)
    assert s.forgotten_class == 3 and (y[s.forget] == 3).all() and (y[s.retain] != 3).all()


def test_split_files_are_checked_against_manifest(digits_file, tmp_path):
    data = load_prepared(digits_file)
    write_split(make_split(data.y_train, "random10", 0), tmp_path, digits_file)
    assert len(load_split(tmp_path).forget) == round(0.1 * len(data.y_train))
    np.save(tmp_path / "forget.npy", np.arange(3))
    with pytest.raises(ArtifactError, match="forget.npy.*manifest"):
        load_split(tmp_path)


def test_corrupted_prepared_data_is_refused(digits_file, tmp_path):
    bad = tmp_path / "dataset.npz"
    bad.write_bytes(digits_file.read_bytes()[:-100])
    (tmp_path / "dataset.npz.meta.json").write_text(
        (digits_file.parent / "dataset.npz.meta.json").read_text())
    with pytest.raises(ArtifactError, match="prepare_data"):
        load_prepared(bad)
