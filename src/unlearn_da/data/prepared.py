"""Materialise a data set once: uint8 images, labels and a fixed train/val/test split.

The prepared file is a plain ``.npz`` (no pickle) holding
``x_{train,val,test}`` (uint8, N x C x H x W), ``y_*`` (int64), the original
indices of the train/val split, and per-channel mean/std computed on train.
Models see ``(x / scale - mean) / std``, computed on the device.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.artifacts import load_npz, regular_file, save_npz, verify_artifact, write_sidecar
from .datasets import DatasetInfo, dataset_info
from ..core.errors import ArtifactError, DataError

FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass
class PreparedData:
    """A prepared data set in host memory."""

    info: DatasetInfo
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    sha256: str | None = None  # the file's checksum from its sidecar: a model records the data it was trained on

    @property
    def num_classes(self) -> int:
        return self.info.num_classes


# --------------------------------------------------------------------------- raw loaders
#: bytes an IDX file may hold once decompressed (Fashion-MNIST's largest holds 47 MB)
MAX_IDX_BYTES = 256 << 20


def read_idx(path: str | os.PathLike, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array: a regular file only (a FIFO or a link to
    a device is refused before reading), at most ``max_bytes`` decompressed."""
    try:
        p = regular_file(path, max_bytes=max_bytes)
    except ArtifactError as exc:
        raise DataError(str(exc)) from None
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except (OSError, EOFError) as exc:
        raise DataError(f"{p}: cannot read IDX file ({exc})") from exc
    if len(raw) > max_bytes:
        raise DataError(f"{p}: more than {max_bytes:,} bytes decompressed; not an IDX file of this data set")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{p}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise DataError(f"{p}: truncated IDX file ({len(raw) - offset} of {expected} bytes)")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _check_idx_pair(images: np.ndarray, labels: np.ndarray, images_file: Path, labels_file: Path,
                    info: DatasetInfo) -> None:
    """An image file of N size x size images and a label file of N labels within the data set's classes.
    No checksum: the publisher's MD5s are of its gzip files, and Debian re-gzipped them."""
    if images.ndim != 3 or images.shape[1:] != (info.size, info.size) or len(images) == 0:
        raise DataError(f"{images_file}: holds images of shape {images.shape}; {info.name} has "
                        f"{info.size}x{info.size} images")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{labels_file}: {labels.shape[0] if labels.ndim else 0} labels for the {len(images)} images "
                        f"of {images_file.name}; each image needs one")
    if labels.max() >= info.num_classes:
        raise DataError(f"{labels_file}: label {int(labels.max())} outside {info.name}'s classes "
                        f"0..{info.num_classes - 1}")


def _find_fashion_dir(dirs: list[str]) -> Path | None:
    for d in dirs:
        base = Path(d)
        if all(
            (base / name).exists() or (base / f"{name}.gz").exists()
            for name in FASHION_FILES.values()
        ):
            return base
    return None


def _fashion_file(base: Path, name: str) -> Path:
    plain = base / name
    return plain if plain.exists() else base / f"{name}.gz"


def _missing_dataset_error(name: str, searched: list[str], cause: Exception | None) -> DataError:
    how = {
        "fashion_mnist": (
            "  1. put the four IDX files (train-images-idx3-ubyte[.gz], ...) in data/raw/fashion-mnist/\n"
            "  2. or install Debian's package: apt-get install dataset-fashion-mnist "
            "(files land in /usr/share/datasets/fashion-mnist/)\n"
            "  3. or allow a download (data.download: true) on a machine with a network"
        ),
    }.get(
        name,
        "  1. copy the extracted python folder (cifar-10-batches-py/ or cifar-100-python/) into "
        "data/raw/ (or a directory listed in data.cifar_dirs)\n"
        "  2. or run once on a machine with a network with data.download: true "
        "(torchvision downloads into the first of data.cifar_dirs)\n"
        "  3. or pull the prepared data set from a DVC remote: dvc pull",
    )
    where = f" (searched: {', '.join(searched)})" if searched else ""
    reason = f"; last error: {cause}" if cause else ""
    return DataError(f"data set '{name}' not found{where}{reason}. Ways to get it:\n{how}")


def load_raw(name: str, params: dict[str, Any], raw_dir: str | os.PathLike = "data/raw") -> dict[str, np.ndarray]:
    """Return uint8 NCHW images and int64 labels; ``test`` keys are absent without a test split."""
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = bunch.images.astype(np.uint8)[:, None, :, :]
        return {"x": x, "y": bunch.target.astype(np.int64)}
    if name == "fashion_mnist":
        dirs = list(params.get("fashion_mnist_dirs", []))
        base = _find_fashion_dir(dirs)
        if base is None:
            if not params.get("download", False):
                raise _missing_dataset_error(name, dirs, None)
            try:
                from torchvision.datasets import FashionMNIST

                tr = FashionMNIST(str(raw_dir), train=True, download=True)
                te = FashionMNIST(str(raw_dir), train=False, download=True)
            except Exception as exc:  # network errors come in many types
                raise _missing_dataset_error(name, dirs, exc) from exc
            return {
                "x": tr.data.numpy()[:, None],
                "y": tr.targets.numpy().astype(np.int64),
                "x_test": te.data.numpy()[:, None],
                "y_test": te.targets.numpy().astype(np.int64),
            }
        out = {}
        for part, key in (("train", "x"), ("test", "x_test")):
            images_file = _fashion_file(base, FASHION_FILES[f"{part}_images"])
            labels_file = _fashion_file(base, FASHION_FILES[f"{part}_labels"])
            images, labels = read_idx(images_file), read_idx(labels_file)
            _check_idx_pair(images, labels, images_file, labels_file, dataset_info(name))
            out[key], out[key.replace("x", "y")] = images[:, None], labels.astype(np.int64)
        return out
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, params, raw_dir)
    dataset_info(name)  # raises the 'unknown dataset' error
    raise AssertionError("unreachable")


def _load_cifar(name: str, params: dict[str, Any], raw_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """The python-pickle folder from ``data.cifar_dirs`` (MD5-checked, restricted unpickler);
    with ``data.download`` and no local copy, torchvision downloads it into the first directory."""
    from .cifar import find_cifar_dir, read_cifar

    dirs = [str(d) for d in params.get("cifar_dirs", [raw_dir])]
    base = find_cifar_dir(name, dirs)
    if base is None and params.get("download", False):
        try:
            from torchvision.datasets import CIFAR10, CIFAR100

            cls = CIFAR10 if name == "cifar10" else CIFAR100
            for train in (True, False):
                cls(dirs[0], train=train, download=True)
        except Exception as exc:  # network errors come in many types
            raise _missing_dataset_error(name, dirs, exc) from exc
        base = find_cifar_dir(name, dirs)
    if base is None:
        raise _missing_dataset_error(name, dirs, None)
    raw = read_cifar(name, base, allow_unverified=bool(params.get("allow_unverified", False)))
    unverified = raw.pop("unverified")
    if unverified:
        print(f"warning: {base}: {len(unverified)} file(s) do not match the published MD5s; "
              "used anyway because data.allow_unverified is true", flush=True)
    return raw


# --------------------------------------------------------------------------- splitting
def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (keep, held_out) with ``fraction`` of every class held out."""
    rng = np.random.default_rng(seed)
    held = []
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        held.append(idx[: int(round(fraction * len(idx)))])
    held_out = np.sort(np.concatenate(held))
    keep = np.setdiff1d(np.arange(len(y)), held_out)
    return keep, held_out


def stratified_subset(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` sorted indices with every class's share of ``y`` kept (largest remainder), drawn with ``seed``."""
    if n > len(y):
        raise DataError(f"data.subset asks for {n} samples, but only {len(y)} exist")
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * (n / len(y))
    take = np.floor(exact).astype(int)
    order = np.lexsort((classes, -(exact - take)))  # largest remainder first, ties by class
    take[order[: n - int(take.sum())]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(y == c))[:t] for c, t in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(chosen))


def _check_subset_sizes(y_pool: np.ndarray, y_test: np.ndarray, num_classes: int, val_fraction: float) -> None:
    """Refuse a subset too small for the metrics: every class in val, train and test."""
    for what, y in (("train (before the validation split)", y_pool), ("test", y_test)):
        present = len(np.unique(y))
        if present < num_classes:
            raise DataError(f"data.subset: the {what} subset holds {present} of {num_classes} classes; "
                            "raise data.subset so that every class has samples")
    counts = np.bincount(y_pool, minlength=num_classes)
    val = np.round(val_fraction * counts).astype(int)
    if (val < 1).any() or (counts - val < 1).any():
        raise DataError(f"data.subset.train: {int(counts.min())} samples in the smallest class leave no "
                        f"validation or no training sample for it at val_fraction {val_fraction}; "
                        "raise data.subset.train")


def prepare(name: str, params: dict[str, Any], out: str | os.PathLike, raw_dir: str = "data/raw",
            code: str | None = None) -> dict:
    """Load ``name``, split it, and write the prepared ``.npz`` plus its sidecar."""
    info = dataset_info(name)
    raw = load_raw(name, params, raw_dir)
    x, y = raw["x"], raw["y"]
    seed = int(params["split_seed"])
    all_idx = np.arange(len(y))
    if info.has_test_split:
        x_test, y_test = raw["x_test"], raw["y_test"]
        pool = all_idx
    else:
        pool, test_idx = stratified_split(y, float(params["test_fraction"]), seed)
        x_test, y_test = x[test_idx], y[test_idx]
    subset = params.get("subset")
    if subset:  # a stratified, seeded share of the pool and of the test set (laptop-sized paper profiles)
        pool = pool[stratified_subset(y[pool], int(subset["train"]), seed + 2)]
        test_keep = stratified_subset(y_test, int(subset["test"]), seed + 3)
        x_test, y_test = x_test[test_keep], y_test[test_keep]
        _check_subset_sizes(y[pool], y_test, info.num_classes, float(params["val_fraction"]))
    train_rel, val_rel = stratified_split(y[pool], float(params["val_fraction"]), seed + 1)
    train_idx, val_idx = pool[train_rel], pool[val_rel]
    x_train = x[train_idx]
    scaled = x_train.astype(np.float64) / info.scale
    mean = scaled.mean(axis=(0, 2, 3)).astype(np.float32)
    std = scaled.std(axis=(0, 2, 3)).astype(np.float32)
    arrays = {
        "x_train": x_train,
        "y_train": y[train_idx],
        "x_val": x[val_idx],
        "y_val": y[val_idx],
        "x_test": x_test,
        "y_test": y_test,
        "source_train_idx": train_idx,
        "source_val_idx": val_idx,
        "mean": mean,
        "std": std,
    }
    save_npz(out, arrays)
    meta = {
        "dataset": name,
        "params": params,
        "sizes": {k: int(len(arrays[f"y_{k}"])) for k in ("train", "val", "test")},
        "num_classes": info.num_classes,
        "subset": subset or None,
        "code": code,
    }
    write_sidecar(out, "prepare_data", meta)
    return meta


def load_prepared(path: str | os.PathLike, verify: bool = True) -> PreparedData:
    """Load a prepared data set, checking its checksum first."""
    meta = verify_artifact(path, "prepare_data") if verify else {}
    try:
        arrays = load_npz(path, "prepare_data", "prepared data set")
    except ArtifactError as exc:
        raise DataError(str(exc)) from None
    missing = [k for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "mean", "std") if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing arrays {missing} (made by rule 'prepare_data')")
    name = meta.get("dataset") or Path(path).parent.name
    return PreparedData(
        info=dataset_info(name),
        **{k: arrays[k] for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "mean", "std")},
        sha256=meta.get("sha256") if isinstance(meta.get("sha256"), str) else None,
    )
