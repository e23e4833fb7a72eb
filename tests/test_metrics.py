"""Each metric against a hand-computed or independent value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearn_da.metrics.accuracy import accuracy, classwise_accuracy, unlearning_accuracy
from unlearn_da.metrics.da import (
    dimensional_alignment,
    eigenspace_alignment,
    energy_rank,
    normalized_spectrum,
)
from unlearn_da.metrics.clustering import clustering_scores, matched_f1
from unlearn_da.metrics.mia import (
    loss_mia_accuracy,
    per_sample_ce,
    salun_mia_efficacy,
    svc_attack,
    true_label_confidence,
)
from unlearn_da.metrics.probe import linear_probe

RNG = np.random.default_rng(0)


def test_accuracy_hand_computed():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0], [1.0, 0.0]])
    labels = np.array([0, 1, 1, 1])
    assert accuracy(logits, labels) == 50.0
    assert unlearning_accuracy(logits, labels) == 50.0
    assert classwise_accuracy(logits, labels, 1) == (pytest.approx(100 / 3), 100.0)
    assert np.isnan(accuracy(np.zeros((0, 2)), np.zeros(0, dtype=int)))
    with pytest.raises(ValueError):
        accuracy(logits, labels[:2])


def test_da_is_one_inside_the_retain_span():
    basis = RNG.normal(size=(32, 4))
    zr = RNG.normal(size=(500, 4)) @ basis.T
    zf = RNG.normal(size=(50, 4)) @ basis.T
    assert dimensional_alignment(zf, zr, energy=0.999) == pytest.approx(1.0, abs=1e-9)


def test_da_is_k_over_d_for_isotropic_features():
    zr, zf = RNG.normal(size=(20000, 40)), RNG.normal(size=(4000, 40))
    assert dimensional_alignment(zf, zr, k=10) == pytest.approx(10 / 40, abs=0.02)


def test_da_two_routes_numpy_torch_and_centring_agree():
    zr, zf = RNG.normal(size=(300, 12)) * np.arange(1, 13), RNG.normal(size=(80, 12)) + 0.5
    for center in (False, True):
        a = dimensional_alignment(zf, zr, energy=0.9, center=center)
        assert eigenspace_alignment(zf, zr, energy=0.9, center=center) == pytest.approx(a, abs=1e-10)
        assert dimensional_alignment(torch.tensor(zf), torch.tensor(zr), energy=0.9, center=center) == \
            pytest.approx(a, abs=1e-10)


def test_energy_rank_and_spectrum():
    vals = np.array([6.0, 3.0, 1.0])
    assert [energy_rank(vals, e) for e in (0.5, 0.6, 0.9, 0.95, 1.0)] == [1, 1, 2, 3, 3]
    spec = normalized_spectrum(RNG.normal(size=(100, 5)) * [5, 4, 3, 2, 1])
    assert spec == sorted(spec, reverse=True) and sum(spec) == pytest.approx(1.0)


def test_confidence_and_loss_hand_computed():
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]]))
    assert true_label_confidence(logits, np.array([0, 2])) == pytest.approx([0.7, 0.5])
    assert per_sample_ce(logits, np.array([1, 2])) == pytest.approx([-np.log(0.2), -np.log(0.5)])


def _logits_with_confidence(conf: np.ndarray, labels: np.ndarray, k: int = 10) -> np.ndarray:
    p = np.full((len(conf), k), 0.0)
    p[:] = ((1 - conf) / (k - 1))[:, None]
    p[np.arange(len(conf)), labels] = conf
    return np.log(p)


def test_salun_mia_on_separable_toy():
    y = RNG.integers(0, 10, 400)
    members = _logits_with_confidence(RNG.uniform(0.95, 0.999, 400), y)
    nonmembers = _logits_with_confidence(RNG.uniform(0.2, 0.5, 200), y[:200])
    like_members = _logits_with_confidence(RNG.uniform(0.95, 0.999, 100), y[:100])
    like_nonmembers = _logits_with_confidence(RNG.uniform(0.2, 0.5, 100), y[:100])
    assert salun_mia_efficacy(retain_logits=members, retain_labels=y, nonmember_logits=nonmembers,
                              nonmember_labels=y[:200], forget_logits=like_members, forget_labels=y[:100]) == 0.0
    assert salun_mia_efficacy(retain_logits=members, retain_labels=y, nonmember_logits=nonmembers,
                              nonmember_labels=y[:200], forget_logits=like_nonmembers, forget_labels=y[:100]) == 100.0


def test_svc_attack_uses_first_members_only():
    # members beyond the non-member count are ignored (SalUn takes the first |D_t| retain samples)
    members = np.concatenate([np.full(50, 0.99), np.full(50, 0.3)])
    pct = svc_attack(members[:50], np.full(50, 0.3), np.full(10, 0.99))
    assert pct == 0.0


def test_loss_mia_chance_and_separable():
    y = RNG.integers(0, 10, 600)
    same_a = _logits_with_confidence(RNG.uniform(0.3, 0.9, 300), y[:300])
    same_b = _logits_with_confidence(RNG.uniform(0.3, 0.9, 300), y[300:])
    assert loss_mia_accuracy(forget_logits=same_a, forget_labels=y[:300], nonmember_logits=same_b,
                             nonmember_labels=y[300:]) == pytest.approx(50, abs=8)
    low = _logits_with_confidence(RNG.uniform(0.97, 0.99, 300), y[:300])
    high = _logits_with_confidence(RNG.uniform(0.1, 0.2, 300), y[300:])
    assert loss_mia_accuracy(forget_logits=low, forget_labels=y[:300], nonmember_logits=high,
                             nonmember_labels=y[300:]) > 97


def test_linear_probe_separable_and_random():
    x = np.concatenate([RNG.normal(-3, 1, (100, 5)), RNG.normal(3, 1, (100, 5))])
    y = np.repeat([0, 1], 100)
    out = linear_probe(x, y, {"same": (x, y), "flipped": (x, 1 - y)})
    assert out["same"] == 100.0 and out["flipped"] == 0.0


def test_nmi_matches_sklearn_and_f1_hand_computed():
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    centers = np.array([[0, 0], [10, 0], [0, 10]])
    labels = np.repeat([0, 1, 2], 50)
    x = centers[labels] + RNG.normal(0, 1.5, (150, 2))
    ours = clustering_scores(x, labels, 3, seed=0)
    clusters = KMeans(3, n_init=10, random_state=0).fit_predict(x)
    assert ours["nmi"] == pytest.approx(normalized_mutual_info_score(labels, clusters))
    # hand-computed F1: class 0 -> cluster 5 (tp 2 of 3, cluster size 2): P=1, R=2/3
    f1 = matched_f1(np.array([0, 0, 0, 1, 1]), np.array([5, 5, 7, 7, 7]))
    assert f1[0] == pytest.approx(100 * 2 * (1 * 2 / 3) / (1 + 2 / 3))
    assert f1[1] == pytest.approx(100 * 2 * (2 / 3 * 1) / (2 / 3 + 1))


def test_the_six_array_mia_functions_take_their_arrays_by_name_only():
    """Six arrays of two shapes: passed by position, a swapped pair would still run."""
    y = np.zeros(20, dtype=np.int64)
    z = np.zeros((20, 3))
    with pytest.raises(TypeError):
        salun_mia_efficacy(z, y, z, y, z, y)
    with pytest.raises(TypeError):
        loss_mia_accuracy(z, y, z, y)
