"""Backdoor scenario: a trigger patch, the poisoned forget set and the triggered test set.

Follows the ℓ1-sparse backdoor template (OPTML-Group/Unlearn-Sparse, ``main_backdoor.py``):
a ``size`` x ``size`` square ending ``margin`` pixels before the bottom-right corner
(its ``data[:, -2-s:-2, -2-s:-2, :]``, so margin 2) is set to one intensity, and the
poisoned samples get the target label. The model is trained on clean + poisoned data;
the poisoned samples are the forget set. Differences from the template, by design of
the issue: the poisoned samples are drawn only from the non-target classes (a poisoned
target-class sample would teach nothing), and the attack success rate (ASR) is scored on
the triggered test images of the non-target classes only.

Trigger intensity: the template's black square on CIFAR (value 0). On the dark-background
data sets (digits, Fashion-MNIST: background 0) a black patch would be invisible, so the
patch there takes the data set's maximum intensity. Both are ``backdoor.trigger`` values.
The poisoned images are written once by the ``split`` job (``poison.npz``, checksummed in
the split manifest), so every model of a scenario sees exactly the same data.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..core.artifacts import save_npz
from .datasets import DatasetInfo
from ..core.errors import ArtifactError, DataError

POISON_FILE = "poison.npz"
# "auto" trigger size and margin per image side: 2x2 in the corner of 8x8 (digits: a margin of 2
# would put the patch on the pen strokes in the middle), 3x3 and 4x4 (the template's) 2 pixels in
AUTO_SIZE = {8: 2, 28: 3, 32: 4}
AUTO_MARGIN = {8: 0, 28: 2, 32: 2}
LIGHT_BACKGROUND = ("cifar10", "cifar100")  # the template's black patch is visible there


@dataclass(frozen=True)
class Trigger:
    size: int     # side of the square patch, pixels
    margin: int   # pixels between the patch and the bottom and right edges
    value: int    # raw pixel value of the patch (0..scale of the data set)


def resolve_trigger(cfg: dict[str, Any], info: DatasetInfo) -> Trigger:
    """The configured trigger with its "auto" values filled in for data set ``info``."""
    size = cfg["size"]
    if size == "auto":
        size = AUTO_SIZE.get(info.size, max(1, round(info.size / 8)))
    margin = cfg["margin"]
    if margin == "auto":
        margin = AUTO_MARGIN.get(info.size, round(info.size / 16))
    value = cfg["value"]
    if value == "auto":
        value = 0 if info.name in LIGHT_BACKGROUND else int(info.scale)
    return Trigger(int(size), int(margin), int(value))


def trigger_problem(trigger: Trigger, info: DatasetInfo) -> tuple[str, str] | None:
    """(key under ``backdoor.trigger``, why) when ``trigger`` cannot be stamped on ``info``'s images."""
    if trigger.size < 1:
        return "size", f"must be at least 1 pixel, got {trigger.size}"
    if trigger.margin < 0:
        return "margin", f"must be >= 0, got {trigger.margin}"
    if trigger.size + trigger.margin > info.size:
        return "size", (f"a {trigger.size}x{trigger.size} trigger {trigger.margin} pixels from the corner does "
                        f"not fit {info.name}'s {info.size}x{info.size} images (size + margin must be <= {info.size})")
    if not 0 <= trigger.value <= info.scale:
        return "value", f"{trigger.value} lies outside {info.name}'s pixel range 0..{int(info.scale)}"
    return None


def apply_trigger(images: np.ndarray, trigger: Trigger) -> np.ndarray:
    """A copy of N x C x H x W ``images`` with the trigger stamped on every channel."""
    out = np.array(images, copy=True)
    end_h, end_w = out.shape[-2] - trigger.margin, out.shape[-1] - trigger.margin
    out[..., end_h - trigger.size:end_h, end_w - trigger.size:end_w] = trigger.value
    return out


def draw_poisoned(y_train: np.ndarray, percent: float, target: int, seed: int) -> np.ndarray:
    """Sorted indices of ``percent`` % of the train set, drawn (seeded) from the non-target classes."""
    n = len(y_train)
    n_poison = int(round(n * percent / 100.0))
    pool = np.flatnonzero(y_train != target)
    if n_poison < 1:
        raise DataError(f"backdoor: {percent} % of {n} train samples is no sample at all")
    if n_poison > len(pool):
        raise DataError(f"backdoor: {percent} % of the train set ({n_poison} samples) is more than the "
                        f"{len(pool)} samples outside the target class {target}")
    if n_poison == n:
        raise DataError(f"backdoor: the poisoned set would hold the whole train set ({n}); nothing clean is left")
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(pool)[:n_poison]).astype(np.int64)


@dataclass
class Poison:
    """What a backdoor scenario changes in the data: the poisoned train images (at ``train_index``,
    the forget set, relabelled ``target``) and the triggered non-target test images (``test_index``)."""

    target: int
    trigger: Trigger
    train_index: np.ndarray
    train_images: np.ndarray
    test_index: np.ndarray
    test_images: np.ndarray

    def describe(self) -> dict[str, Any]:
        return {"target": self.target, "trigger": asdict(self.trigger),
                "n_poisoned": int(len(self.train_index)), "n_triggered_test": int(len(self.test_index))}


def make_poison(x_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, forget: np.ndarray,
                target: int, trigger: Trigger) -> Poison:
    test_index = np.flatnonzero(y_test != target).astype(np.int64)
    return Poison(target, trigger, np.asarray(forget, dtype=np.int64), apply_trigger(x_train[forget], trigger),
                  test_index, apply_trigger(x_test[test_index], trigger))


def save_poison(path: str | os.PathLike, poison: Poison) -> None:
    save_npz(path, {"train_index": poison.train_index, "train_images": poison.train_images,
                    "test_index": poison.test_index, "test_images": poison.test_images})


def load_poison(path: str | os.PathLike, info: dict[str, Any]) -> Poison:
    """Read ``poison.npz`` (already checksummed by the split loader); ``info`` is the manifest's
    ``backdoor`` entry."""
    from ..core.artifacts import load_npz

    every = load_npz(path, "split", "poison file")
    missing = [k for k in ("train_index", "train_images", "test_index", "test_images") if k not in every]
    if missing:
        raise ArtifactError(f"{path}: missing arrays {missing} (made by rule 'split')")
    arrays = {k: every[k] for k in ("train_index", "train_images", "test_index", "test_images")}
    return Poison(int(info["target"]), Trigger(**info["trigger"]), **arrays)


def poisoned_train(x_train: np.ndarray, y_train: np.ndarray, poison: Poison) -> tuple[np.ndarray, np.ndarray]:
    """Copies of the train arrays with the poisoned images and the target label at the forget indices."""
    x, y = np.array(x_train, copy=True), np.array(y_train, copy=True)
    x[poison.train_index] = poison.train_images
    y[poison.train_index] = poison.target
    return x, y


def attack_success_rate(trigger_logits: np.ndarray, target: int) -> float:
    """ASR (%): share of triggered non-target test images classified as the target class."""
    if len(trigger_logits) == 0:
        return float("nan")
    return float(100.0 * np.mean(np.argmax(trigger_logits, axis=1) == target))
