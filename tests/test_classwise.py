"""Class-wise metrics follow SalUn / l1-sparse: TA on the remaining classes (issue 13).

SalUn's data loaders drop the forgotten class from the test set of a class-wise run
(``test_set.targets != class_to_replace`` in Classification/dataset.py), so its TA, and
with it the Avg. Gap, is the accuracy on the remaining classes. The tuning score reads the
validation accuracy the same way, and the linear probe scores only samples it did not
train on.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from unlearn_da.jobs.evaluate import feature_metrics, output_metrics
from unlearn_da.reporting.tables import add_oracle_gaps, load_records, run_aggregate, summarise
from unlearn_da.tuning.select import score_candidates

C = 0  # the forgotten class


def _onehot(pred: np.ndarray, k: int = 3) -> np.ndarray:
    return np.eye(k)[pred] * 5.0


def _arrays(forgotten_right: bool) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    """Three classes; every remaining-class sample right; the forgotten class (0) right in test
    and val only if ``forgotten_right``. D_f = train samples of class 0, predicted wrong."""
    y_train = np.array([0, 0, 1, 1, 2, 2])
    y_eval = np.array([0, 0, 1, 1, 1, 2, 2, 2])  # 2 forgotten-class + 6 remaining-class samples
    pred_eval = y_eval.copy()
    if not forgotten_right:
        pred_eval[y_eval == C] = 1
    pred_train = np.where(y_train == C, 1, y_train)
    arrays = {"train_logits": _onehot(pred_train), "test_logits": _onehot(pred_eval),
              "val_logits": _onehot(pred_eval)}
    labels = {"train": y_train, "test": y_eval, "val": y_eval}
    return arrays, labels, np.flatnonzero(y_train == C), np.flatnonzero(y_train != C)


def test_classwise_ta_is_the_remaining_class_test_accuracy():
    arrays, labels, forget, retain = _arrays(forgotten_right=True)
    arrays["test_logits"][2] = _onehot(np.array([2]))[0]  # one remaining-class test sample wrong
    out = output_metrics(arrays, labels, forget, retain, C)
    assert out["TA"] == pytest.approx(100 * 5 / 6)          # remaining classes only (SalUn)
    assert out["TA_forgotten"] == 100.0                     # its own column
    assert out["TA_all"] == pytest.approx(100 * 7 / 8)      # whole test set, for reference
    assert out["val_acc"] == 100.0 and out["val_acc_forgotten"] == 100.0
    assert "TA_remaining" not in out and "val_acc_remaining" not in out  # TA is that number now


def test_random_forgetting_ta_is_still_the_whole_test_set():
    arrays, labels, forget, retain = _arrays(forgotten_right=False)
    out = output_metrics(arrays, labels, forget, retain, None)
    assert out["TA"] == pytest.approx(100 * 6 / 8) and out["val_acc"] == pytest.approx(100 * 6 / 8)
    assert not {"TA_forgotten", "TA_all", "val_acc_forgotten"} & set(out)


def _classwise_records(tmp_path):
    """Oracle: forgotten class wrong on test/val (it never saw it); method: right. Everything
    else identical, so every SalUn-convention gap is 0 and only TA (forg.) differs."""
    paths, recs = [], []
    for model, right in (("retrain", False), ("m", True)):
        arrays, labels, forget, retain = _arrays(forgotten_right=right)
        metrics = {**output_metrics(arrays, labels, forget, retain, C), "MIA": 50.0, "MIA_val": 50.0,
                   "seconds": 1.0}
        rec = {"model": model, "seed": 0, "scenario": "class0", "metrics": metrics}
        recs.append(rec)
        paths.append(tmp_path / f"{model}.json")
        paths[-1].write_text(json.dumps(rec))
    return paths, recs


def test_classwise_avg_gap_and_main_table_use_remaining_class_ta(tmp_path):
    paths, _ = _classwise_records(tmp_path)
    stats = summarise(add_oracle_gaps(load_records(paths)), ["retrain", "m"]).set_index(["model", "metric"])
    assert stats.loc[("m", "gap_TA"), "mean"] == 0.0
    assert stats.loc[("m", "avg_gap_seed"), "mean"] == 0.0
    assert stats.loc[("m", "gap_TA_forgotten"), "mean"] == 100.0
    run_aggregate([str(p) for p in paths], ["retrain", "m"], "class0", "toy", str(tmp_path / "out"))
    table = pd.read_csv(tmp_path / "out" / "table.csv")
    assert {"TA_mean", "TA_forgotten_mean", "avg_gap_mean", "avg_gap_seed_mean"} <= set(table.columns)
    assert "TA_remaining_mean" not in table.columns  # no duplicate of TA
    md = (tmp_path / "out" / "table.md").read_text()
    assert "TA (forg.)" in md and "TA (rem.)" not in md
    assert "Class-wise: TA on the remaining classes" in md


def test_random_forgetting_table_has_no_classwise_legend(tmp_path):
    paths = []
    for model in ("retrain", "m"):
        paths.append(tmp_path / f"{model}.json")
        paths[-1].write_text(json.dumps({"model": model, "seed": 0, "scenario": "random10",
                                         "metrics": {"UA": 1.0, "RA": 99.0, "TA": 98.0, "MIA": 5.0}}))
    run_aggregate([str(p) for p in paths], ["retrain", "m"], "random10", "toy", str(tmp_path / "out"))
    assert "Class-wise" not in (tmp_path / "out" / "table.md").read_text()


def test_classwise_accuracy_figure_shows_ta_and_the_forgotten_class(tmp_path, monkeypatch):
    import unlearn_da.reporting.plots as plots

    paths, _ = _classwise_records(tmp_path)
    shown = {}
    monkeypatch.setattr(plots, "_facet_bars", lambda data, models, metrics, *a, **k: shown.update(m=metrics))
    plots.accuracy_bars(load_records(paths), ["retrain", "m"], "toy", tmp_path / "acc.png")
    assert shown["m"] == ["UA", "RA", "TA", "TA_forgotten", "MIA"]


def test_classwise_tuning_score_uses_remaining_class_validation_accuracy(tmp_path):
    _, recs = _classwise_records(tmp_path)
    scores = score_candidates(recs, {"m": {"base": "m"}})
    assert scores.loc[0, "gap_val_acc"] == 0.0 and scores.loc[0, "gap"] == 0.0


def _feature_cfg(train: str = "auto") -> dict:
    return {"seed": 3, "da": {"max_retain": 10_000, "energy": 0.95, "k": None, "center": False},
            "probe": {"train": train, "max_train": 10_000, "C": 1.0}, "clustering": {"n_init": 2},
            "spectrum_top": 8}


def _noise_features(seed: int = 0):
    """Features with no class information but more dimensions than samples: a probe fits its
    training samples perfectly and is at chance on any sample it did not see."""
    rng = np.random.default_rng(seed)
    y_train, y_test = np.repeat([0, 1, 2], 40), np.repeat([0, 1, 2], 20)
    arrays = {"train_features": rng.normal(size=(len(y_train), 400)),
              "test_features": rng.normal(size=(len(y_test), 400))}
    labels = {"train": y_train, "test": y_test}
    return arrays, labels, np.flatnonzero(y_train == C), np.flatnonzero(y_train != C)


def test_classwise_probe_does_not_score_its_own_training_samples():
    arrays, labels, forget, retain = _noise_features()
    out, _ = feature_metrics(arrays, labels, forget, retain, C, 3, _feature_cfg())
    # training accuracy on D_f would be 100 %; held-out noise sits near chance (1/3)
    assert out["LP_forget"] < 70.0
    again, _ = feature_metrics(arrays, labels, forget, retain, C, 3, _feature_cfg())
    assert again["LP_forget"] == out["LP_forget"]  # deterministic with the seed


def test_probe_holdout_split_is_disjoint_seeded_and_covers_the_forget_set():
    from unlearn_da.metrics.probe import holdout_split

    forget = np.arange(10, 51)
    fit, held = holdout_split(forget, seed=3)
    assert len(np.intersect1d(fit, held)) == 0
    assert np.array_equal(np.sort(np.concatenate([fit, held])), forget)
    assert len(held) == len(forget) // 2 and len(fit) == len(forget) - len(forget) // 2
    assert all(np.array_equal(a, b) for a, b in zip(holdout_split(forget, seed=3), (fit, held), strict=True))
    assert not np.array_equal(holdout_split(forget, seed=4)[1], held)


def test_random_forgetting_probe_still_trains_on_retain_and_scores_all_of_d_f():
    rng = np.random.default_rng(1)
    y_train, y_test = np.repeat([0, 1, 2], 40), np.repeat([0, 1, 2], 20)
    arrays = {"train_features": rng.normal(size=(120, 8)) + 10 * np.eye(8)[y_train],
              "test_features": rng.normal(size=(60, 8)) + 10 * np.eye(8)[y_test]}
    labels = {"train": y_train, "test": y_test}
    forget = np.sort(rng.permutation(120)[:12])
    retain = np.setdiff1d(np.arange(120), forget)
    out, _ = feature_metrics(arrays, labels, forget, retain, None, 3, _feature_cfg())
    assert out["LP_forget"] == 100.0 and out["LP_test"] == 100.0
    assert "LP_test_forgotten" not in out
