"""Small synthetic CIFAR folders in exactly the real on-disk form, for smoke tests.

The real ``cifar-10-batches-py`` and ``cifar-100-python`` files were written by
Python 2's cPickle with protocol 2: strings are Python-2 ``str`` (BINSTRING
opcodes), numpy arrays are rebuilt through the globals
``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and ``numpy.dtype``.
Python 3's pickler cannot produce that form (it writes bytes through
``_codecs.encode`` and numpy >= 2 names ``numpy._core``), so this module emits
the opcodes itself. The images are learnable (a class colour plus noise), so
the pipeline's metrics see something other than chance.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ..core.artifacts import atomic_path
from .cifar import CIFAR

# protocol-2 opcodes (pickletools' names)
PROTO, STOP, MARK = b"\x80", b".", b"("
EMPTY_DICT, SETITEMS, EMPTY_LIST, APPENDS = b"}", b"u", b"]", b"e"
SHORT_BINSTRING, BINSTRING = b"U", b"T"
BININT1, BININT2, BININT = b"K", b"M", b"J"
NONE, NEWTRUE, NEWFALSE = b"N", b"\x88", b"\x89"
TUPLE, TUPLE1, TUPLE2, TUPLE3 = b"t", b"\x85", b"\x86", b"\x87"
GLOBAL, REDUCE, BUILD, BINPUT = b"c", b"R", b"b", b"q"


class Py2Pickler:
    """Writes dicts, lists, tuples, ints, ``bytes`` (as Python-2 str) and uint8 arrays like cPickle protocol 2."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.memo = 0

    def _put(self) -> None:
        if self.memo < 256:
            self.out += BINPUT + bytes([self.memo])
            self.memo += 1

    def dumps(self, obj: Any) -> bytes:
        self.out += PROTO + b"\x02"
        self.save(obj)
        self.out += STOP
        return bytes(self.out)

    def save(self, obj: Any) -> None:
        if obj is None:
            self.out += NONE
        elif obj is True or obj is False:
            self.out += NEWTRUE if obj else NEWFALSE
        elif isinstance(obj, (int, np.integer)):
            self._int(int(obj))
        elif isinstance(obj, str):
            self._str(obj.encode("latin1"))
        elif isinstance(obj, bytes):
            self._str(obj)
        elif isinstance(obj, tuple):
            self._tuple(obj)
        elif isinstance(obj, list):
            self._list(obj)
        elif isinstance(obj, dict):
            self._dict(obj)
        elif isinstance(obj, np.ndarray):
            self._array(obj)
        else:
            raise TypeError(f"Py2Pickler cannot write {type(obj).__name__}")

    def _int(self, v: int) -> None:
        if 0 <= v < 256:
            self.out += BININT1 + bytes([v])
        elif 0 <= v < 65536:
            self.out += BININT2 + struct.pack("<H", v)
        else:
            self.out += BININT + struct.pack("<i", v)

    def _str(self, b: bytes) -> None:
        self.out += (SHORT_BINSTRING + bytes([len(b)])) if len(b) < 256 else (BINSTRING + struct.pack("<i", len(b)))
        self.out += b

    def _tuple(self, t: tuple) -> None:
        if 1 <= len(t) <= 3:
            for item in t:
                self.save(item)
            self.out += (TUPLE1, TUPLE2, TUPLE3)[len(t) - 1]
        else:
            self.out += MARK
            for item in t:
                self.save(item)
            self.out += TUPLE

    def _list(self, items: list) -> None:
        self.out += EMPTY_LIST
        self._put()
        for start in range(0, len(items), 1000):  # cPickle batches appends by 1000
            self.out += MARK
            for item in items[start : start + 1000]:
                self.save(item)
            self.out += APPENDS

    def _dict(self, d: dict) -> None:
        self.out += EMPTY_DICT
        self._put()
        self.out += MARK
        for key, value in d.items():
            self.save(key)
            self.save(value)
        self.out += SETITEMS

    def _global(self, module: str, name: str) -> None:
        self.out += GLOBAL + f"{module}\n{name}\n".encode()
        self._put()

    def _array(self, a: np.ndarray) -> None:
        if a.dtype != np.uint8:
            raise TypeError("Py2Pickler writes uint8 arrays only (the CIFAR files hold no other)")
        self._global("numpy.core.multiarray", "_reconstruct")
        self._global("numpy", "ndarray")
        self._tuple((0,))
        self._str(b"b")
        self.out += TUPLE3 + REDUCE
        self._put()
        # state: (version, shape, dtype, fortran_order, raw bytes)
        self.out += MARK
        self._int(1)
        self._tuple(tuple(int(s) for s in a.shape))
        self._global("numpy", "dtype")
        self._str(b"u1")
        self._int(0)
        self._int(1)
        self.out += TUPLE3 + REDUCE
        self._put()
        self._tuple((3, b"|", None, None, None, -1, -1, 0))
        self.out += BUILD
        self.out += NEWFALSE
        self._str(np.ascontiguousarray(a).tobytes())
        self.out += TUPLE + BUILD


def py2_dumps(obj: Any) -> bytes:
    return Py2Pickler().dumps(obj)


def synthetic_images(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 N x 3072 images: a per-class colour and blob position plus noise (learnable, not trivial)."""
    n = len(labels)
    colours = np.random.default_rng(12345).integers(40, 216, size=(num_classes, 3))
    imgs = rng.normal(0, 30, size=(n, 3, 32, 32))
    imgs += colours[labels][:, :, None, None]
    rows = (labels * 7) % 24
    cols = (labels * 13) % 24
    for i in range(n):
        imgs[i, :, rows[i] : rows[i] + 8, cols[i] : cols[i] + 8] += 60
    return np.clip(imgs, 0, 255).astype(np.uint8).reshape(n, 3 * 32 * 32)


def _balanced_labels(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    return labels


def _write(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(py2_dumps(obj))


def write_synthetic_cifar(name: str, root: str | os.PathLike, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Write ``<root>/<folder>/`` for ``cifar10`` or ``cifar100`` with the real files' names and keys."""
    layout = CIFAR[name]
    num_classes = 10 if name == "cifar10" else 100
    rng = np.random.default_rng(seed)
    base = Path(root) / layout.folder
    base.mkdir(parents=True, exist_ok=True)
    y_train = _balanced_labels(n_train, num_classes, rng)
    y_test = _balanced_labels(n_test, num_classes, rng)
    x_train = synthetic_images(y_train, num_classes, rng)
    x_test = synthetic_images(y_test, num_classes, rng)
    chunks = np.array_split(np.arange(n_train), len(layout.train))
    for i, (fname, idx) in enumerate(zip(layout.train, chunks, strict=True)):
        _write(base / fname, _entry(name, f"training batch {i + 1} of {len(layout.train)}", x_train[idx],
                                    y_train[idx], "train"))
    _write(base / layout.test, _entry(name, "testing batch 1 of 1", x_test, y_test, "test"))
    if name == "cifar10":
        meta = {"num_cases_per_batch": len(chunks[0]), "label_names": [f"class{c}" for c in range(10)],
                "num_vis": 3072}
    else:
        meta = {"fine_label_names": [f"fine{c}" for c in range(100)],
                "coarse_label_names": [f"coarse{c}" for c in range(20)]}
    _write(base / layout.meta, meta)
    return base


def _entry(name: str, batch_label: str, x: np.ndarray, y: np.ndarray, split: str) -> dict:
    files = [f"synthetic_{split}_{i}.png" for i in range(len(y))]
    labels = [int(v) for v in y]
    if name == "cifar10":
        return {"batch_label": batch_label, "labels": labels, "data": x, "filenames": files}
    return {"filenames": files, "batch_label": batch_label, "fine_labels": labels,
            "coarse_labels": [v // 5 for v in labels], "data": x}
