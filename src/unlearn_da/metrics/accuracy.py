"""Output-level accuracies from cached logits (percent, 0..100).

- ``accuracy``: top-1 accuracy; higher is better on retain/test, match the oracle on forget.
- ``unlearning_accuracy`` (UA, SalUn family): 100 - accuracy on D_f; match the oracle.
"""

from __future__ import annotations

import numpy as np


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent; nan for an empty set."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(f"accuracy: logits {logits.shape} and labels {labels.shape} do not match")
    if len(labels) == 0:
        return float("nan")
    return 100.0 * float((logits.argmax(1) == labels).mean())


def unlearning_accuracy(forget_logits: np.ndarray, forget_labels: np.ndarray) -> float:
    """UA = 100 - forget accuracy (SalUn's convention: higher = more forgotten)."""
    return 100.0 - accuracy(forget_logits, forget_labels)


def classwise_accuracy(logits: np.ndarray, labels: np.ndarray, cls: int) -> tuple[float, float]:
    """(accuracy on samples of class ``cls``, accuracy on every other class)."""
    labels = np.asarray(labels)
    mask = labels == cls
    return accuracy(logits[mask], labels[mask]), accuracy(logits[~mask], labels[~mask])
