"""Linear probe (LP) on frozen features: how linearly decodable the labels still are.

A standardised multinomial logistic regression is fit on training features and its
accuracy reported on other features. Direction: match the oracle. Unit: percent.

The probe is only ever scored on samples it did not fit: a probe's accuracy on its own
training samples measures how well it memorises them (with more feature dimensions than
samples it reaches 100 % on pure noise), not what the features still encode. When the
probe must see the forgotten class to be able to predict it (class-wise forgetting),
``holdout_split`` keeps a seeded half of D_f out of its training set, and that half is
the one scored.
"""

from __future__ import annotations

import numpy as np

# share of D_f kept out of the probe's training set when the probe trains on D_f's class
HOLDOUT_FRACTION = 0.5


def holdout_split(idx: np.ndarray, fraction: float = HOLDOUT_FRACTION,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held): a seeded random split of ``idx``, ``floor(fraction * len)`` samples held out,
    each part sorted. Half by default: enough of the forgotten class stays in the probe's
    training set for it to learn the class, and enough is left to score."""
    idx = np.asarray(idx)
    n_held = int(np.floor(fraction * len(idx)))
    order = np.random.default_rng(seed).permutation(len(idx))
    return np.sort(idx[order[n_held:]]), np.sort(idx[order[:n_held]])


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, eval_sets: dict[str, tuple[np.ndarray, np.ndarray]],
                 max_train: int | None = None, c: float = 1.0, seed: int = 0) -> dict[str, float]:
    """Fit on (train_x, train_y) (subsampled to ``max_train``); accuracy in percent on each eval set.
    The eval sets must be disjoint from the training set (see the module docstring)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if max_train is not None and len(train_y) > max_train:
        keep = np.random.default_rng(seed).permutation(len(train_y))[:max_train]
        train_x, train_y = train_x[keep], train_y[keep]
    if len(np.unique(train_y)) < 2:
        raise ValueError("linear_probe: the training features hold fewer than two classes")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    probe.fit(train_x, train_y)
    return {name: (100.0 * float((probe.predict(x) == y).mean()) if len(y) else float("nan"))
            for name, (x, y) in eval_sets.items()}
