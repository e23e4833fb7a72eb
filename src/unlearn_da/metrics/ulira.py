"""U-LiRA: the per-example likelihood-ratio membership attack adapted to unlearning.

Hayes et al., "Inexact Unlearning Needs More Careful Evaluations to Avoid a False Sense of
Privacy" (arXiv 2403.01218), built on LiRA (Carlini et al. 2022, ``tensorflow/privacy``
``research/mi_lira_2021``). Per example x and statistic phi = log(p_y / (1 - p_y)) (the logit-scaled
confidence, computed stably as the margin of ``klom.margins``):

- "in": a Gaussian fitted to phi(x) of shadow models that trained on x and then unlearned it with
  the method under test; "out": a Gaussian fitted to phi(x) of models that never saw x (oracles);
  mean and standard deviation per example (ddof 0), the deviation floored at ``min_std`` (ours);
- score(x, model) = log N(phi; in) - log N(phi; out): large means "x was trained on and unlearned";
- the game (ours, for one fixed forget set): the same forget examples, once under an unlearned
  target model (positives) and once under a held-out oracle (negatives); targets are held out of
  every fit (leave-one-out over the K training seeds), so no model scores itself;
- reported: ROC AUC, and the true-positive rate at low false-positive rates, over the pooled
  scores of all K folds; intervals from a bootstrap over the K folds.

Pure functions on arrays.
"""

from __future__ import annotations

import numpy as np


def gaussian_logpdf(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2.0 * np.pi)


def fit(stats: np.ndarray, min_std: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-example mean and standard deviation (ddof 0, floored) of ``stats`` (models, examples)."""
    stats = np.asarray(stats, dtype=np.float64)
    return stats.mean(axis=0), np.maximum(stats.std(axis=0), min_std)


def scores(target: np.ndarray, in_stats: np.ndarray, out_stats: np.ndarray, min_std: float) -> np.ndarray:
    """Log-likelihood ratio of ``target`` (examples,) under the in- against the out-Gaussians."""
    mi, si = fit(in_stats, min_std)
    mo, so = fit(out_stats, min_std)
    target = np.asarray(target, dtype=np.float64)
    return gaussian_logpdf(target, mi, si) - gaussian_logpdf(target, mo, so)


def leave_one_out(unlearned: np.ndarray, oracles: np.ndarray, min_std: float) -> tuple[np.ndarray, np.ndarray]:
    """Scores of each unlearned model t (positives) and oracle t (negatives), (K, examples) each,
    with the Gaussians fitted on the other K-1 unlearned models and oracles."""
    unlearned = np.asarray(unlearned, dtype=np.float64)
    oracles = np.asarray(oracles, dtype=np.float64)
    if unlearned.shape != oracles.shape or len(unlearned) < 3:
        raise ValueError(f"leave_one_out: want two (K >= 3, examples) arrays of one shape, got {unlearned.shape} "
                         f"and {oracles.shape}")
    pos, neg = [], []
    for t in range(len(unlearned)):
        rest = np.arange(len(unlearned)) != t
        pos.append(scores(unlearned[t], unlearned[rest], oracles[rest], min_std))
        neg.append(scores(oracles[t], unlearned[rest], oracles[rest], min_std))
    return np.stack(pos), np.stack(neg)


def roc(positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates over every threshold (scores >= threshold are "unlearned"),
    starting at (0, 0); tied scores move both rates at once."""
    pos = np.asarray(positives, dtype=np.float64).ravel()
    neg = np.asarray(negatives, dtype=np.float64).ravel()
    s = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.diff(s) != 0, True]  # the last index of each run of tied scores
    tp = np.cumsum(y)[last]
    fp = np.cumsum(1 - y)[last]
    return np.r_[0.0, fp / len(neg)], np.r_[0.0, tp / len(pos)]


def auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > a negative's) + half the ties."""
    fpr, tpr = roc(positives, negatives)
    return float(np.trapezoid(tpr, fpr))


def tpr_at(positives: np.ndarray, negatives: np.ndarray, fpr_max: float) -> float:
    """The largest true-positive rate of a threshold whose false-positive rate is at most ``fpr_max``."""
    fpr, tpr = roc(positives, negatives)
    return float(tpr[fpr <= fpr_max + 1e-12].max())


def bootstrap_folds(positives: np.ndarray, negatives: np.ndarray, stat, resamples: int, seed: int) -> np.ndarray:
    """``stat(pos, neg)`` over ``resamples`` bootstrap draws of the K folds (rows) with replacement."""
    rng = np.random.default_rng(seed)
    k = len(positives)
    out = []
    for _ in range(resamples):
        rows = rng.integers(0, k, size=k)
        out.append(stat(positives[rows], negatives[rows]))
    return np.asarray(out)
