"""Linear probe (LP) on frozen features: how linearly decodable the labels still are.

A standardised multinomial logistic regression is fit on training features and its
accuracy reported on other features. Direction: match the oracle. Unit: percent.
"""

from __future__ import annotations

import numpy as np


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, eval_sets: dict[str, tuple[np.ndarray, np.ndarray]],
                 max_train: int | None = None, c: float = 1.0, seed: int = 0) -> dict[str, float]:
    """Fit on (train_x, train_y) (subsampled to ``max_train``); accuracy in percent on each eval set."""
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
