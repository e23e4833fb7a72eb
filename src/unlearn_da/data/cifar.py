"""Read CIFAR-10/100 straight from the python-pickle folders users have, safely.

The official archives unpack to ``cifar-10-batches-py/`` (``data_batch_1..5``,
``test_batch``, ``batches.meta``) and ``cifar-100-python/`` (``train``, ``test``,
``meta``): Python-2 protocol-2 pickles of dicts whose ``data`` is a uint8
N x 3072 numpy array (channel-major 32x32 planes). We read them ourselves
instead of through torchvision's classes for two reasons:

* torchvision checks each file's MD5 and refuses anything else, so no test can
  feed its code path small files; we check the same published MD5s (taken from
  torchvision's ``datasets/cifar.py``) and refuse mismatches unless the config
  says ``data.allow_unverified: true`` (what the smoke tests use);
* unpickling a crafted file runs arbitrary code. :class:`RestrictedUnpickler`
  admits only the globals the real files reference (numpy's ``_reconstruct``,
  ``ndarray`` and ``dtype``), so a pickle naming anything else is refused.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import DataError


@dataclass(frozen=True)
class CifarLayout:
    folder: str
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: str
    md5: dict[str, str]  # published MD5 of each data file (torchvision's list)


CIFAR: dict[str, CifarLayout] = {
    "cifar10": CifarLayout(
        folder="cifar-10-batches-py",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test="test_batch",
        meta="batches.meta",
        label_key="labels",
        md5={
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
        },
    ),
    "cifar100": CifarLayout(
        folder="cifar-100-python",
        train=("train",),
        test="test",
        meta="meta",
        label_key="fine_labels",
        md5={
            "train": "16019d7e3df5f24257cddd939b257f8d",
            "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        },
    ),
}

# (module, name) pairs the real files reference; numpy >= 2 moved numpy.core to numpy._core
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
})


def _numpy_reconstruct() -> Any:
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):
            continue
    raise DataError("this numpy has no multiarray._reconstruct; cannot read CIFAR pickles")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS`; anything else is refused."""

    def __init__(self, file: io.BufferedIOBase, source: str):
        super().__init__(file, encoding="latin1")  # Python-2 str -> str, as the files were written
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise DataError(
                f"{self.source}: refusing to unpickle global '{module}.{name}': a CIFAR file holds only dicts, "
                "lists, strings, ints and numpy uint8 arrays, so this file is not a CIFAR batch "
                "(it may be crafted to run code)"
            )
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return getattr(np, name)

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self.source}: persistent ids are not allowed in a CIFAR file")


def load_pickle(path: str | os.PathLike) -> Any:
    """Unpickle one CIFAR file with :class:`RestrictedUnpickler`."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            return RestrictedUnpickler(fh, str(p)).load()
    except DataError:
        raise
    except Exception as exc:  # truncated or malformed pickles raise many types
        raise DataError(f"{p}: not a readable CIFAR pickle ({type(exc).__name__}: {exc})") from exc


def md5_of(path: str | os.PathLike) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_cifar_dir(name: str, dirs: list[str]) -> Path | None:
    """The first ``<dir>/<folder>`` that holds every data file of ``name``."""
    layout = CIFAR[name]
    for d in dirs:
        base = Path(d) / layout.folder
        if all((base / f).is_file() for f in (*layout.train, layout.test)):
            return base
    return None


def verify_md5(name: str, base: Path, allow_unverified: bool) -> list[str]:
    """Check every data file against its published MD5; return the files that differ.

    Mismatches are an error unless ``allow_unverified`` (then they are returned so
    the caller can record them).
    """
    layout = CIFAR[name]
    bad = [f for f in (*layout.train, layout.test) if md5_of(base / f) != layout.md5[f]]
    if bad and not allow_unverified:
        raise DataError(
            f"{base}: {', '.join(bad)} do(es) not match the published MD5 of {name} "
            "(a corrupted download or not the official files). Delete the folder and download again, "
            "or set data.allow_unverified: true to use these files anyway (synthetic test data)."
        )
    return bad


def _batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    entry = load_pickle(path)
    if not isinstance(entry, dict) or "data" not in entry or label_key not in entry:
        keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise DataError(f"{path}: expected a dict with 'data' and '{label_key}', got {keys}")
    data, labels = entry["data"], entry[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' must be a uint8 N x 3072 array, got "
                        f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    y = np.asarray(labels, dtype=np.int64)
    if y.shape != (len(data),):
        raise DataError(f"{path}: {len(y)} labels for {len(data)} images")
    if len(y) == 0:
        raise DataError(f"{path}: an empty batch (no image)")
    if y.min() < 0 or y.max() >= num_classes:
        bad = int(y[(y < 0) | (y >= num_classes)][0])
        raise DataError(f"{path}: label {bad} outside the {num_classes} classes 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), y


def read_cifar(name: str, base: Path, allow_unverified: bool = False) -> dict[str, Any]:
    """uint8 NCHW train/test images and int64 labels from a python-pickle folder.

    Returns the arrays plus ``unverified``: the files whose MD5 differs (empty for the real files).
    """
    layout = CIFAR[name]
    unverified = verify_md5(name, base, allow_unverified)
    classes = 10 if name == "cifar10" else 100
    parts = [_batch(base / f, layout.label_key, classes) for f in layout.train]
    x_test, y_test = _batch(base / layout.test, layout.label_key, classes)
    return {
        "x": np.ascontiguousarray(np.concatenate([p[0] for p in parts])),
        "y": np.concatenate([p[1] for p in parts]),
        "x_test": np.ascontiguousarray(x_test),
        "y_test": y_test,
        "unverified": unverified,
    }
