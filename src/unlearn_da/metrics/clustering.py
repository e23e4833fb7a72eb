"""Clustering quality of features: k-means, then NMI and F1 against the labels.

F1 matches clusters to classes one-to-one (Hungarian assignment on the contingency
table) and averages the per-class F1 (macro), or reports one class's F1.
Direction: match the oracle. Unit: NMI in [0, 1], F1 in percent.
"""

from __future__ import annotations

import numpy as np


def kmeans_labels(x: np.ndarray, k: int, seed: int = 0, n_init: int = 10) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x)


def matched_f1(labels: np.ndarray, clusters: np.ndarray) -> dict[int, float]:
    """Per-class F1 (percent) after a one-to-one cluster-to-class matching that maximises agreement."""
    from scipy.optimize import linear_sum_assignment

    classes, cl_ids = np.unique(labels), np.unique(clusters)
    table = np.array([[np.sum((labels == c) & (clusters == k)) for k in cl_ids] for c in classes])
    rows, cols = linear_sum_assignment(-table)
    f1 = {int(c): 0.0 for c in classes}
    for r, col in zip(rows, cols, strict=True):
        tp = table[r, col]
        precision = tp / max(1, table[:, col].sum())
        recall = tp / max(1, table[r].sum())
        f1[int(classes[r])] = 100.0 * (2 * precision * recall / (precision + recall) if tp else 0.0)
    return f1


def clustering_scores(x: np.ndarray, labels: np.ndarray, k: int, focus_class: int | None = None,
                      seed: int = 0, n_init: int = 10) -> dict[str, float]:
    """k-means with ``k`` clusters; NMI and macro F1, plus the F1 of ``focus_class`` when given."""
    from sklearn.metrics import normalized_mutual_info_score

    clusters = kmeans_labels(x, k, seed, n_init)
    per_class = matched_f1(labels, clusters)
    out = {"nmi": float(normalized_mutual_info_score(labels, clusters)),
           "f1": float(np.mean(list(per_class.values())))}
    if focus_class is not None:
        out["f1_focus"] = per_class.get(int(focus_class), 0.0)
    return out
