"""Job: every per-model metric of one (model, scenario, seed), from cached features; no torch.

The output JSON holds flat metric values; aggregation and the oracle gaps come later
(``tables``), because they need every model of a seed together.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .artifacts import read_json, verify_artifact, write_json
from .errors import ArtifactError
from .features import load_features, rule_for_model
from .metrics.accuracy import accuracy, classwise_accuracy, unlearning_accuracy
from .splits import load_split


def load_labels(data: str) -> dict[str, np.ndarray]:
    """Only the label arrays of a prepared data set (npz members load lazily)."""
    verify_artifact(data, "prepare_data")
    with np.load(data, allow_pickle=False) as z:
        return {s: z[f"y_{s}"] for s in ("train", "val", "test")}


def output_metrics(arrays: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                   forget: np.ndarray, retain: np.ndarray, forgotten_class: int | None) -> dict[str, float]:
    y = labels["train"]
    logits = arrays["train_logits"]
    out = {
        "forget_acc": accuracy(logits[forget], y[forget]),
        "UA": unlearning_accuracy(logits[forget], y[forget]),
        "RA": accuracy(logits[retain], y[retain]),
        "TA": accuracy(arrays["test_logits"], labels["test"]),
        "val_acc": accuracy(arrays["val_logits"], labels["val"]),
    }
    if forgotten_class is not None:
        out["TA_forgotten"], out["TA_remaining"] = classwise_accuracy(
            arrays["test_logits"], labels["test"], forgotten_class)
        out["val_acc_forgotten"], out["val_acc_remaining"] = classwise_accuracy(
            arrays["val_logits"], labels["val"], forgotten_class)
    return out


def run_metrics(data: str, split_dir: str, features: str, model_meta: str, model: str,
                scenario: str, seed: int, params: dict[str, Any], out: str) -> dict[str, Any]:
    labels = load_labels(data)
    split = load_split(split_dir)
    arrays = load_features(features)
    if len(arrays["train_logits"]) != len(labels["train"]):
        raise ArtifactError(f"{features}: {len(arrays['train_logits'])} train rows but the data set has "
                            f"{len(labels['train'])}; it was made from another data set (rule 'extract_features')")
    meta = read_json(model_meta, rule_for_model(model))
    metrics = output_metrics(arrays, labels, split.forget, split.retain, split.forgotten_class)
    metrics["seconds"] = float(meta["seconds"])
    record = {
        "model": model,
        "scenario": scenario,
        "seed": seed,
        "forgotten_class": split.forgotten_class,
        "n_forget": int(len(split.forget)),
        "n_retain": int(len(split.retain)),
        "metrics": metrics,
        "params": params,
    }
    write_json(out, record)
    return record
