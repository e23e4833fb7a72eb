"""Per-example likelihood-ratio tests of unlearning: two games on the same margins.

The statistic is LiRA's (Carlini et al. 2022, ``tensorflow/privacy`` ``research/mi_lira_2021``):
phi = log(p_y / (1 - p_y)), the logit-scaled confidence, computed stably as the margin of
``klom.margins``; per example a Gaussian (mean, standard deviation with ddof 0, floored at
``min_std``, ours) is fitted to phi over an ensemble of models.

**Membership** (:func:`membership_leave_one_out`): the game of Hayes et al. ("Inexact Unlearning
Needs More Careful Evaluations to Avoid a False Sense of Privacy", arXiv 2403.01218) and of the
Attribute-to-Delete authors' U-LiRA code (``RoyRin/data-unlearning-bench`` at 09aa166,
``unlearning/auditors/ulira/compute_ulira_scores.py``: ``ulira_paper`` scores each target model on
its forget examples against as many examples of the same pool it never saw). Under one model,
forgotten examples (positives) against never-seen examples of the same distribution (negatives).
With one forget set for every model there are no models that forgot the never-seen examples, so
the test is the one-sided, offline form of LiRA (Carlini et al., section "offline"): the "out"
Gaussian of each example comes from the oracles, which never saw either kind, and the score is
(phi - mean_out) / std_out: how much more confident than the oracles the model is on the example.
An oracle that is not in the fit scores both kinds alike (AUC 0.5 by exchangeability).

**Distinguishability from the oracles** (:func:`leave_one_out`): the same forget examples, once
under an audited model (positives) and once under an oracle (negatives), scored by
log N(phi; in) - log N(phi; out) with "in" fitted on the audited ensemble and "out" on the oracles
(ours). Any systematic move of the margins separates here, whether or not it tells members
from non-members: this is not a privacy game.

Both leave each scored model out of every fit that scores it (models are named by ``ids``:
a bootstrap that draws a model twice leaves out both copies). Reported: ROC AUC and the
true-positive rate at low false-positive rates over the pooled scores of all models.

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


def offline_scores(target: np.ndarray, out_stats: np.ndarray, min_std: float) -> np.ndarray:
    """One-sided offline LiRA: (phi - mean_out) / std_out per example (large: more member-like)."""
    mo, so = fit(out_stats, min_std)
    return (np.asarray(target, dtype=np.float64) - mo) / so


def _ids(n: int, ids: np.ndarray | None) -> np.ndarray:
    return np.arange(n) if ids is None else np.asarray(ids)


def fit_without_each(stats: np.ndarray, ids: np.ndarray, min_std: float) -> tuple[np.ndarray, np.ndarray]:
    """Per model t: the per-example mean and standard deviation (ddof 0, floored) of ``stats`` (models,
    examples) over the models whose id differs from t's. From group sums, so all models at once; the
    sums are taken about the overall mean, which keeps the variance's subtraction well conditioned."""
    stats = np.asarray(stats, dtype=np.float64)
    groups, inverse = np.unique(ids, return_inverse=True)
    centred = stats - stats.mean(axis=0)
    count = np.bincount(inverse, minlength=len(groups)).astype(np.float64)
    s1 = np.zeros((len(groups), stats.shape[1]))
    s2 = np.zeros_like(s1)
    np.add.at(s1, inverse, centred)
    np.add.at(s2, inverse, centred**2)
    n = len(stats) - count[inverse][:, None]
    if (n < 1).any():
        raise ValueError("fit_without_each: a model whose id every model shares leaves nothing to fit on")
    rest1 = s1.sum(axis=0) - s1[inverse]
    rest2 = s2.sum(axis=0) - s2[inverse]
    mean = rest1 / n
    var = np.maximum(rest2 / n - mean**2, 0.0)
    return mean + stats.mean(axis=0), np.maximum(np.sqrt(var), min_std)


def leave_one_out(unlearned: np.ndarray, oracles: np.ndarray, min_std: float,
                  ids_unlearned: np.ndarray | None = None,
                  ids_oracles: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distinguishability: scores of each audited model (positives) and each oracle (negatives) on the
    same examples, shaped like the inputs, each with the Gaussians fitted without itself (and without its
    copies: the models of equal ``ids``)."""
    unlearned = np.asarray(unlearned, dtype=np.float64)
    oracles = np.asarray(oracles, dtype=np.float64)
    if unlearned.ndim != 2 or oracles.shape[1:] != unlearned.shape[1:] or min(len(unlearned), len(oracles)) < 3:
        raise ValueError(f"leave_one_out: want two (models >= 3, examples) arrays of equal examples, got "
                         f"{unlearned.shape} and {oracles.shape}")
    iu, io = _ids(len(unlearned), ids_unlearned), _ids(len(oracles), ids_oracles)
    in_all, out_all = fit(unlearned, min_std), fit(oracles, min_std)
    in_each, out_each = fit_without_each(unlearned, iu, min_std), fit_without_each(oracles, io, min_std)
    pos = gaussian_logpdf(unlearned, *in_each) - gaussian_logpdf(unlearned, *out_all)
    neg = gaussian_logpdf(oracles, *in_all) - gaussian_logpdf(oracles, *out_each)
    return pos, neg


def membership_leave_one_out(forget: np.ndarray, heldout: np.ndarray, oracles_forget: np.ndarray,
                             oracles_heldout: np.ndarray, min_std: float) -> tuple[np.ndarray, np.ndarray]:
    """Membership: per audited model, the offline scores of its forget examples (positives, models x
    forget) and of never-seen examples (negatives, models x held-out), calibrated per example on the
    oracles (which never saw either). The audited models are not in the fit, so none scores itself."""
    forget, heldout = np.asarray(forget, dtype=np.float64), np.asarray(heldout, dtype=np.float64)
    if len(forget) != len(heldout) or len(oracles_forget) != len(oracles_heldout) or len(oracles_forget) < 2:
        raise ValueError(f"membership_leave_one_out: {len(forget)} / {len(heldout)} audited models and "
                         f"{len(oracles_forget)} / {len(oracles_heldout)} oracles on the forget / held-out examples")
    return offline_scores(forget, oracles_forget, min_std), offline_scores(heldout, oracles_heldout, min_std)


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


def auc_and_tpr(positives: np.ndarray, negatives: np.ndarray, fpr_max: float) -> tuple[float, float]:
    """:func:`auc` and :func:`tpr_at` from one ROC."""
    fpr, tpr = roc(positives, negatives)
    return float(np.trapezoid(tpr, fpr)), float(tpr[fpr <= fpr_max + 1e-12].max())
