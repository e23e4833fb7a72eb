"""Membership-inference attacks on cached logits.

``salun_mia_efficacy`` is the SalUn / l1-sparse "MIA-Efficacy", bit for bit:
feature = softmax probability of the true label ("confidence") of the evaluated
model (eval mode, no augmentation); attack training set = the first |D_t| samples
of D_r as members (label 1) and D_t as non-members (label 0) (class-wise runs: D_t
without the forgotten class); ``sklearn.svm.SVC(C=3, gamma="auto", kernel="rbf")``,
no scaling, refit per model; score = share of D_f predicted non-member, x 100.
Direction: match the retrained oracle. Unit: percent.

``loss_mia_accuracy`` is the challenge-kit / SCRUB loss attack: per-sample CE loss
on D_f versus non-members, balanced by subsampling, ``LogisticRegression``,
stratified k-fold CV accuracy x 100. Direction: match the oracle (about 50). Unit: percent.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def true_label_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Softmax probability of each sample's true label."""
    return softmax(np.asarray(logits, dtype=np.float64))[np.arange(len(labels)), labels]


def per_sample_ce(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy of each sample (natural log)."""
    logits = np.asarray(logits, dtype=np.float64)
    z = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return log_norm - z[np.arange(len(labels)), labels]


def svc_attack(member_feat: np.ndarray, nonmember_feat: np.ndarray, target_feat: np.ndarray) -> float:
    """Fit SVC(C=3, gamma='auto', rbf) on members (1) vs non-members (0); return the share of
    ``target_feat`` predicted non-member, in percent."""
    from sklearn.svm import SVC

    if len(member_feat) == 0 or len(nonmember_feat) == 0 or len(target_feat) == 0:
        raise ValueError("svc_attack: members, non-members and targets must all be non-empty")
    x = np.concatenate([member_feat, nonmember_feat]).reshape(-1, 1)
    y = np.concatenate([np.ones(len(member_feat)), np.zeros(len(nonmember_feat))])
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    clf.fit(x, y)
    pred = clf.predict(np.asarray(target_feat).reshape(-1, 1))
    return 100.0 * float(1.0 - pred.mean())


def salun_mia_efficacy(*, retain_logits: np.ndarray, retain_labels: np.ndarray,
                       nonmember_logits: np.ndarray, nonmember_labels: np.ndarray,
                       forget_logits: np.ndarray, forget_labels: np.ndarray) -> float:
    """MIA-Efficacy (percent of D_f predicted non-member); members = first |non-members| of D_r.

    Keyword-only: six arrays of two shapes, where a swapped pair would still run."""
    n = min(len(nonmember_labels), len(retain_labels))
    members = true_label_confidence(retain_logits[:n], retain_labels[:n])
    nonmembers = true_label_confidence(nonmember_logits, nonmember_labels)
    targets = true_label_confidence(forget_logits, forget_labels)
    return svc_attack(members, nonmembers, targets)


def loss_mia_accuracy(*, forget_logits: np.ndarray, forget_labels: np.ndarray,
                      nonmember_logits: np.ndarray, nonmember_labels: np.ndarray,
                      folds: int = 10, seed: int = 0) -> float:
    """CV accuracy (percent) of a logistic regression telling D_f losses from non-member losses."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    lf = per_sample_ce(forget_logits, forget_labels)
    ln = per_sample_ce(nonmember_logits, nonmember_labels)
    n = min(len(lf), len(ln))
    if n < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    lf = lf[rng.permutation(len(lf))[:n]]
    ln = ln[rng.permutation(len(ln))[:n]]
    x = np.concatenate([lf, ln]).reshape(-1, 1)
    y = np.concatenate([np.ones(n), np.zeros(n)])
    k = min(folds, n)
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    scores = cross_val_score(LogisticRegression(), x, y, cv=cv, scoring="accuracy")
    return 100.0 * float(scores.mean())
