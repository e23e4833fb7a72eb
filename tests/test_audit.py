"""The oracle-ensemble audit: KLoM and U-LiRA against hand computations, the sanity rows and
their flag, the audit's DAG, and one tiny audit through Snakemake (docs/audit.md)."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from unlearn_da import pipeline as P
from unlearn_da.core.artifacts import save_npz, write_sidecar
from unlearn_da.metrics import ulira
from unlearn_da.metrics.klom import binned_kl, klom, margins
from unlearn_da.settings.config import load_config, validate_config

from conftest import snakemake

AUDIT = ("--configfile", "tests/config/tiny.yaml", "tests/config/tiny-audit.yaml")
K = 4  # tests/config/tiny-audit.yaml: audit.train_seeds


# ------------------------------------------------------------------------------ KLoM
def test_margin_is_the_logit_scaled_confidence():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=4, size=(3, 7, 5))
    labels = rng.integers(0, 5, size=7)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    py = np.take_along_axis(p, np.broadcast_to(labels[:, None], (3, 7, 1)), -1)[..., 0]
    assert np.allclose(margins(logits, labels), np.log(py / (1 - py)), atol=1e-9)
    # stable where the softmax saturates: 1 - p_y underflows, the margin does not
    big = np.array([[[1000.0, 0.0, -5.0]]])
    assert margins(big, np.array([0]))[0, 0] == pytest.approx(1000.0 - np.log(1 + np.exp(-5.0)))


def test_klom_by_hand():
    """Three bins on [0, 3]: p's 0, 0.5 fall in bin 1 and 2.9 in bin 3; q's 3.0 lies on the top edge
    and is dropped (np.digitize, as the reference), leaving q = (1/2, 1/2, 0); q's empty bin where p
    has mass is raised to eps and q renormalised."""
    p = np.array([[0.0], [0.5], [2.9]])
    q = np.array([[0.0], [1.5], [3.0]])
    eps = 1e-5
    z = 1 + eps
    expected = (2 / 3) * math.log((2 / 3) / (0.5 / z)) + (1 / 3) * math.log((1 / 3) / (eps / z))
    assert binned_kl(p, q, bins=3, eps=eps)[0] == pytest.approx(expected, rel=1e-12)
    # identical samples: 0; the direction matters (KL is not symmetric)
    assert binned_kl(p, p, bins=3)[0] == pytest.approx(0.0, abs=1e-12)
    assert binned_kl(q, p, bins=3)[0] != pytest.approx(binned_kl(p, q, bins=3)[0])


def test_an_ensemble_wholly_on_the_top_edge_scores_as_far_apart_not_as_identical():
    """Every unlearned margin clipped at +100 above every oracle's: the reference's histogram is empty
    (np.digitize drops the top edge; NaN or 0 there); here the values go to the top bin, where the
    oracle has no mass: KL = log((1 + eps) / eps). The same with the roles swapped."""
    rng = np.random.default_rng(3)
    high = np.full((8, 4), 150.0)  # clipped to 100
    low = rng.normal(loc=5.0, size=(8, 4))
    eps = 1e-5
    assert binned_kl(high, low, eps=eps) == pytest.approx(np.full(4, math.log((1 + eps) / eps)), rel=1e-12)
    assert (binned_kl(low, high, eps=eps) > 10).all()
    # one value on the top edge of a sample that has others is still dropped, as in the reference
    mixed = low.copy()
    mixed[0] = 100.0
    assert np.allclose(binned_kl(mixed, low), _reference_klom(mixed, low), rtol=1e-10, atol=1e-12)


def _reference_klom(p: np.ndarray, q: np.ndarray, bins: int = 20, eps: float = 1e-5, clip: float = 100.0):
    """The data-unlearning-bench algorithm written as its loop: per example np.digitize and
    scipy.stats.entropy (an independent implementation of what klom.binned_kl vectorises)."""
    from scipy import stats

    out = []
    for i in range(p.shape[1]):
        a, b = np.clip(p[:, i], -clip, clip), np.clip(q[:, i], -clip, clip)
        lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
        hi = lo + 1 if lo >= hi else hi
        edges = np.linspace(lo, hi, bins + 1)
        ca = np.array([np.sum(np.digitize(a, edges) == j) for j in range(1, bins + 1)])
        cb = np.array([np.sum(np.digitize(b, edges) == j) for j in range(1, bins + 1)])
        pa, pb = ca / ca.sum(), cb / cb.sum()
        out.append(stats.entropy(pa, np.where(pa > 0, np.maximum(pb, eps), pb)))
    return np.array(out)


def test_klom_matches_the_reference_loop_on_random_margins():
    rng = np.random.default_rng(1)
    p = rng.normal(size=(16, 300)) * rng.uniform(0.1, 30, size=300)
    q = rng.normal(loc=0.5, size=(16, 300)) * rng.uniform(0.1, 30, size=300)
    p[:, :5] = 2.0  # constant examples: one bin of width 1
    q[:, :3] = 2.0
    p[0, 10], q[0, 11] = 500.0, -700.0  # clipped
    q[:, 20] = np.round(q[:, 20])  # ties
    assert np.allclose(klom(p, q), _reference_klom(p, q), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------ U-LiRA
def test_ulira_score_by_hand():
    """in: (1, 3) -> N(2, 1); out: (0, 2) -> N(1, 1); at phi = 2: log N(2; 2, 1) - log N(2; 1, 1) = 0.5."""
    score = ulira.scores(np.array([2.0]), np.array([[1.0], [3.0]]), np.array([[0.0], [2.0]]), min_std=1e-3)
    assert score[0] == pytest.approx(0.5, abs=1e-12)


def test_roc_auc_and_tpr_at_low_fpr_by_hand():
    pos, neg = np.array([3.0, 2.0, 1.0]), np.array([2.5, 0.5, 0.0, -1.0])
    # thresholds: >3 (0,0); 3 -> (0, 1/3); 2.5 -> (1/4, 1/3); 2 -> (1/4, 2/3); 1 -> (1/4, 1); ...
    assert ulira.tpr_at(pos, neg, 0.1) == pytest.approx(1 / 3)
    assert ulira.tpr_at(pos, neg, 0.25) == pytest.approx(1.0)
    assert ulira.auc(pos, neg) == pytest.approx(10 / 12)  # 10 of the 12 pairs ranked right (2.5 beats 2 and 1)
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    p, n = np.round(rng.normal(1, 1, 500), 1), np.round(rng.normal(0, 1, 700), 1)  # many ties
    y = np.r_[np.ones(500), np.zeros(700)]
    assert ulira.auc(p, n) == pytest.approx(roc_auc_score(y, np.r_[p, n]), abs=1e-12)


def test_ulira_recovers_a_known_auc():
    """phi ~ N(1, 1) under unlearned models and N(0, 1) under oracles, independent per example:
    the likelihood ratio is increasing in phi, so AUC = P(X > Y) = Phi(1 / sqrt 2) = 0.7602."""
    rng = np.random.default_rng(4)
    unlearned = rng.normal(1.0, 1.0, size=(200, 40))
    oracles = rng.normal(0.0, 1.0, size=(200, 40))
    pos, neg = ulira.leave_one_out(unlearned, oracles, min_std=1e-3)
    expected = 0.5 * (1 + math.erf(1 / math.sqrt(2) / math.sqrt(2)))
    assert ulira.auc(pos, neg) == pytest.approx(expected, abs=0.015)
    same = ulira.leave_one_out(rng.normal(size=(200, 40)), rng.normal(size=(200, 40)), min_std=1e-3)
    assert ulira.auc(*same) == pytest.approx(0.5, abs=0.02)


def test_no_model_is_scored_by_gaussians_fitted_on_itself_or_its_copies():
    """Against the oracles: model t's "in" Gaussian leaves t out, oracle s's "out" Gaussian leaves s out; with
    ids (a bootstrap's draw), every copy of the scored model is left out too."""
    rng = np.random.default_rng(5)
    unlearned, oracles = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    unlearned[2] += 50  # an outlier model: it would widen its own "in" Gaussian if it were fitted on
    pos, neg = ulira.leave_one_out(unlearned, oracles, min_std=1e-3)
    rest = np.arange(6) != 2
    assert np.allclose(pos[2], ulira.scores(unlearned[2], unlearned[rest], oracles, 1e-3))
    assert np.allclose(neg[2], ulira.scores(oracles[2], unlearned, oracles[rest], 1e-3))
    assert not np.allclose(pos[2], ulira.scores(unlearned[2], unlearned, oracles, 1e-3))
    ids = np.array([0, 2, 2, 3, 4, 5])  # model 2 drawn twice
    pos, _ = ulira.leave_one_out(unlearned[ids], oracles, 1e-3, ids_unlearned=ids)
    assert np.allclose(pos[1], ulira.scores(unlearned[2], unlearned[[0, 3, 4, 5]], oracles, 1e-3))


def test_membership_scores_are_each_example_s_z_score_against_the_oracles():
    """Offline LiRA: (phi - mean over the oracles) / their standard deviation, per example."""
    oracles_f, oracles_h = np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([[1.0], [1.0]])
    pos, neg = ulira.membership_leave_one_out(np.array([[3.0, 2.0]]), np.array([[4.0]]), oracles_f, oracles_h, 0.5)
    assert np.allclose(pos, [[2.0, 0.0]]) and np.allclose(neg, [[6.0]])  # means (1, 2), sds (1, 1); floor 0.5


def test_the_membership_game_finds_members_and_not_a_shift_of_every_example():
    """A model more confident on its forget examples than the oracles (a leak) scores AUC > 0.5; one that
    moved every example alike (a distortion, not a leak) scores 0.5 here, though it is far from the oracles
    in the other game; an exchangeable oracle scores 0.5 in both."""
    rng = np.random.default_rng(7)
    k, nf, nh = 40, 60, 60
    difficulty_f, difficulty_h = rng.normal(0, 3, nf), rng.normal(0, 3, nh)
    oracles_f, oracles_h = difficulty_f + rng.normal(size=(k, nf)), difficulty_h + rng.normal(size=(k, nh))

    def games(shift_forget, shift_heldout):
        f = difficulty_f + shift_forget + rng.normal(size=(k, nf))
        h = difficulty_h + shift_heldout + rng.normal(size=(k, nh))
        member = ulira.auc(*ulira.membership_leave_one_out(f, h, oracles_f, oracles_h, 1e-3))
        distinct = ulira.auc(*ulira.leave_one_out(f, oracles_f, 1e-3))
        return member, distinct

    leak, distorted, oracle = games(1.5, 0.0), games(-4.0, -4.0), games(0.0, 0.0)
    assert leak[0] > 0.8 and leak[1] > 0.8
    assert abs(distorted[0] - 0.5) < 0.05 and distorted[1] > 0.99
    assert abs(oracle[0] - 0.5) < 0.05 and abs(oracle[1] - 0.5) < 0.05


# ------------------------------------------------------------------------------ sanity rows, flagged
def _write_logits(path: Path, margins_by_set: dict[str, np.ndarray], seed: int) -> str:
    """An audit logits file whose two-class logits have the given margins (label 0: margin = z0 - z1); the
    test set holds ``test`` margins (label 0) and 40 random two-class examples."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for s, m in margins_by_set.items():
        k, n = m.shape
        arrays[f"{s}_logits"] = np.stack([m, np.zeros_like(m)], axis=-1).astype(np.float32)
        arrays[f"{s}_labels"] = np.zeros(n, dtype=np.int64)
    k = len(margins_by_set["forget"])
    arrays["member_logits"] = rng.normal(size=(k, 40, 2)).astype(np.float32)
    arrays["member_labels"] = np.random.default_rng(99).integers(0, 2, size=40)
    arrays["forgotten_class"] = np.asarray(-1)
    arrays["forget_index"] = np.arange(margins_by_set["forget"].shape[1])
    arrays["retain_index"] = np.arange(margins_by_set["retain"].shape[1])
    save_npz(path, arrays)
    write_sidecar(path, "audit_logits", {})
    return str(path)


def _synthetic(rng, k: int, difficulty: dict[str, np.ndarray], forget_shift: float = 0.0) -> dict[str, np.ndarray]:
    """K models' margins: a per-example difficulty shared by every model, model noise, a forget shift."""
    return {s: d + rng.normal(size=(k, len(d))) + (forget_shift if s == "forget" else 0.0)
            for s, d in difficulty.items()}


def _params(null_draws: int = 200, resamples: int = 30):
    params = P.audit_params(load_config([]))
    params.update({"null_draws": null_draws, "resamples": resamples})
    return params


def _run(tmp_path: Path, alt_shift: float, original_shift: float = 3.0):
    from unlearn_da.reporting.audit import run_audit

    rng = np.random.default_rng(6)
    k = 16
    difficulty = {s: rng.normal(0, 2, n) for s, n in (("forget", 40), ("retain", 30), ("val", 40), ("test", 20))}
    ref = _write_logits(tmp_path / "retrain.npz", _synthetic(rng, k, difficulty), 0)
    alt = _write_logits(tmp_path / "retrain_alt.npz", _synthetic(rng, k, difficulty, alt_shift), 1)
    orig = _write_logits(tmp_path / "original.npz", _synthetic(rng, k, difficulty, original_shift), 2)
    out = tmp_path / "out"
    summary = run_audit(ref, [alt, orig], ["retrain_alt", "original"], "random10", "synthetic", _params(), str(out))
    return summary, (out / "audit.md").read_text()


def test_oracle_row_passes_and_original_fails_on_exchangeable_synthetic_ensembles(tmp_path: Path):
    summary, table = _run(tmp_path, alt_shift=0.0)
    rows = {r["model"]: r for r in summary["rows"]}
    assert rows["retrain_alt"]["sanity"]["ok"] and rows["original"]["sanity"]["ok"]
    assert rows["original"]["intervals"]["membership_auc"][0] > 0.9
    assert summary["sanity_failed"] == [] and "Sanity check failed" not in table
    assert "| oracle (2nd ensemble) |" in table and "ok (must pass)" in table and "ok (must fail)" in table
    assert summary["conclusions"][0].startswith("oracle (2nd ensemble): not told apart from the reference oracles")
    assert "sanity check passed" in summary["conclusions"][0]
    assert (tmp_path / "out" / "figures" / "klom.png").stat().st_size > 0
    assert (tmp_path / "out" / "figures" / "roc.png").stat().st_size > 0


def test_an_oracle_row_that_does_not_pass_is_flagged_in_the_table(tmp_path: Path):
    summary, table = _run(tmp_path, alt_shift=1.5)  # the "second oracles" differ on the forget set
    assert summary["sanity_failed"] == ["retrain_alt"]
    assert "**Sanity check failed** (oracle (2nd ensemble), must pass)" in table
    assert "**FAILED** (must pass)" in table


def test_originals_that_the_audit_cannot_tell_from_oracles_fail_the_check(tmp_path: Path):
    """"The originals must fail" is a test, not a formality: originals that behave as oracles are flagged."""
    summary, table = _run(tmp_path, alt_shift=0.0, original_shift=0.0)
    assert summary["sanity_failed"] == ["original"]
    assert "the audit cannot tell the originals from oracles" in table


# ------------------------------------------------------------------------------ config and DAG
def test_the_audit_is_off_by_default_and_leaves_the_run_s_targets_alone():
    config = load_config([])
    assert not P.audit_enabled(config)
    targets = P.final_targets(config)
    assert not any("/audit/" in t for t in targets)
    on = load_config(["tests/config/tiny.yaml", "tests/config/tiny-audit.yaml"])
    assert all("/audit/" in t for t in P.final_targets(on))
    on["audit"]["only"] = False
    off = load_config(["tests/config/tiny.yaml", "tests/config/tiny-audit.yaml"])
    off["audit"]["enabled"] = False
    assert set(P.final_targets(on)) == set(P.final_targets(off)) | set(P.audit_targets(on))


@pytest.mark.parametrize("key,value,message", [
    ("scenarios", ["backdoor10"], "random<P> and class<C> scenarios only"),
    ("scenarios", ["class12"], "class 12 does not exist"),
    ("methods", ["salun"], "'salun' is not one of unlearn.methods"),
])
def test_bad_audit_settings_name_the_key(tmp_path: Path, key, value, message):
    from unlearn_da.core.errors import ConfigError

    overlay = tmp_path / "bad.yaml"
    overlay.write_text(json.dumps({"audit": {key: value}}))
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        validate_config(load_config(["tests/config/tiny.yaml", "tests/config/tiny-audit.yaml", str(overlay)]))
    assert f"audit.{key}" in str(err.value)


def _planned_commands(root: Path) -> list[list[str]]:
    proc = snakemake(root, "-n", "-p", *AUDIT)
    prefix = "Shell command: "
    return [shlex.split(line.removeprefix(prefix).split(" > ")[0]) for line in (proc.stdout + proc.stderr).splitlines()
            if line.startswith(prefix + "python -m unlearn_da ")]


def _arg(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_the_audit_dag_shares_one_split_and_gives_each_model_its_training_seed(pristine: Path):
    cmds = _planned_commands(pristine)
    split = "data/prepared/digits-smallcnn-audit/splits/class0/seed0"
    oracles = [c for c in cmds if c[3] == "train" and "--split" in c]
    originals = [c for c in cmds if c[3] == "train" and "--split" not in c]
    unlearn = [c for c in cmds if c[3] == "unlearn"]
    logits = [c for c in cmds if c[3] == "audit-logits"]
    seeds = list(range(K))
    assert {_arg(c, "--split") for c in oracles + unlearn + logits} == {split}
    # the reference oracles train with seed t + 20,000, the second ensemble with t (its role adds 10,000):
    # neither shares the initialisation of original t, so both relate to the originals alike
    assert sorted(int(_arg(c, "--seed")) for c in oracles if _arg(c, "--role") == "retrain") == \
        [t + P.AUDIT_REFERENCE_SEED_OFFSET for t in seeds]
    assert sorted(int(_arg(c, "--seed")) for c in oracles if _arg(c, "--role") == "retrain_alt") == seeds
    assert sorted(int(_arg(c, "--seed")) for c in originals) == seeds
    for c in unlearn:  # unlearned from the original of its own training seed, with that seed
        seed = _arg(c, "--seed")
        assert _arg(c, "--original") == f"results/digits-smallcnn-audit/seed{seed}/models/original.pt"
    assert sorted(int(_arg(c, "--seed")) for c in unlearn) == seeds
    assert len(logits) == 4  # retrain, retrain_alt, original, ft
    for c in logits:  # K checkpoints in training-seed order
        models = c[c.index("--models") + 1: c.index("--train-seeds")]
        assert [int(re.search(r"(?:train|seed)(\d+)/", m).group(1)) for m in models] == seeds


@pytest.mark.slow
def test_tiny_audit_runs_and_its_oracle_passes_while_its_original_fails(pristine: Path, tmp_path: Path):
    import shutil

    root = tmp_path / "project"
    shutil.copytree(pristine, root, symlinks=True)
    os.environ["UNLEARN_DA_TRACE"] = str(root / "trace.jsonl")  # the modules each command imports
    try:
        snakemake(root, *AUDIT)
    finally:
        del os.environ["UNLEARN_DA_TRACE"]
    out = root / "results" / "digits-smallcnn-audit" / "audit" / "class0"
    summary = json.loads((out / "audit.json").read_text())
    rows = {r["model"]: r for r in summary["rows"]}
    assert list(rows) == ["retrain_alt", "original", "ft"]
    check = rows["retrain_alt"]["sanity"]
    assert (check["expect"], check["ok"], check["problems"]) == ("pass", True, []) and 0 < check["p"] <= 1
    assert rows["original"]["sanity"]["ok"], rows["original"]["sanity"]
    assert summary["K"] == K and summary["examples"]["retain"] == 100
    assert summary["examples"]["heldout"] > 0  # class 0's validation and test images
    with np.load(out / "scores.npz") as z:
        assert z["ft/distinct_positive"].shape == (K, summary["examples"]["forget"])
        assert z["ft/membership_negative"].shape == (K, summary["examples"]["heldout"])
        assert z["null/membership_auc"].shape == (200,)
    # every job's sidecar records the images the config's count gives it (the README's projection)
    from test_workload import recorded_images
    from unlearn_da.tools.workload import workload_jobs

    config = load_config([root / "tests/config/tiny.yaml", root / "tests/config/tiny-audit.yaml"],
                         base=root / "config/config.yaml")
    recorded = recorded_images(root)
    jobs = workload_jobs(config)
    assert sorted(recorded) == sorted(job.artifact for job in jobs)
    for job in jobs:
        assert recorded[job.artifact]["images"] == job.images.as_dict(), job.artifact
    # every checkpoint and logits file checks out against the config and code (make verify, after a pull)
    from unlearn_da.tools.provenance import verify

    problems, checked = verify(config, root)
    assert problems == [] and checked == K * 4 + 4 + 1 + 1  # originals, 2 oracles, ft; 4 logits; the data set; the split
    # the audit's own commands import only what their rules' code hashes cover
    for line in (root / "trace.jsonl").read_text().splitlines():
        rec = json.loads(line)
        rule = {"audit-logits": "audit_logits", "audit": "audit"}.get(rec["command"])
        if rule is None:
            continue
        files = {m.removeprefix("unlearn_da").lstrip(".").replace(".", "/") for m in rec["modules"]}
        files = {(f + ".py") if f else "__init__.py" for f in files}
        files = {f if (P.PACKAGE_DIR / f).exists() else f.removesuffix(".py") + "/__init__.py" for f in files}
        assert files - {"cli.py", "__main__.py"} <= set(P.with_packages(P.RULE_SOURCES[rule])), rec["command"]
    # the expected-results record of an audit run: logits checksums and every row's numbers, and the
    # generated documentation blocks read it
    from unlearn_da.tools.reproduction import collect, compare
    from unlearn_da.tools.readme_tables import audit_block

    record = collect(config, ["tests/config/tiny.yaml", "tests/config/tiny-audit.yaml"], root)
    assert set(record["models"]) == {f"audit/class0/{m}" for m in ("retrain", "retrain_alt", "original", "ft")}
    assert record["models"]["audit/class0/ft"]["metrics"]["membership_auc"] == rows["ft"]["membership_auc"]
    assert compare(record, record)["counts"]["identical"] == 4
    assert record["audit"]["_run"]["artifacts"] == K * 4 + 4
    block = audit_block(record, "x.json")
    assert "| oracle (2nd ensemble) |" in block and "- ft: membership AUC" in block
    # the statistics alone rerun when their settings change; no model does
    overlay = tmp_path / "resamples.yaml"
    overlay.write_text("audit: {resamples: 60}\n")
    from conftest import dry_run_jobs

    assert dry_run_jobs(root, *AUDIT, str(overlay)) == {"audit": 1, "all": 1}


# ------------------------------------------------------------------------------ the statistics, pinned
def test_row_klom_is_audited_against_oracles_not_the_reverse():
    """KL(row || oracles): a row much narrower than the oracles scores low, the reverse direction high."""
    from unlearn_da.reporting.audit import row_statistics

    rng = np.random.default_rng(11)
    k = 16
    wide = {s: rng.normal(0, 3, size=(k, 30)) for s in ("forget", "retain", "val", "heldout")}
    narrow = {s: rng.normal(0, 0.3, size=(k, 30)) for s in wide}
    stats, _ = row_statistics(narrow, wide, _params())
    right = np.percentile(klom(narrow["forget"], wide["forget"]), 95)
    swapped = np.percentile(klom(wide["forget"], narrow["forget"]), 95)
    assert stats["klom_forget_p95"] == pytest.approx(right) and abs(right - swapped) > 1.0


def test_a_permutation_p_value_counts_the_draws_at_least_as_large_plus_one():
    from unlearn_da.reporting.audit import p_value

    null = np.arange(99.0)  # 99 draws
    assert p_value(1000.0, null) == pytest.approx(1 / 100)  # none reached: the smallest p-value there is
    assert p_value(-5.0, null) == pytest.approx(1.0)
    assert p_value(49.0, null) == pytest.approx((1 + 50) / 100)  # 49..98 are at least as large


@pytest.mark.parametrize("criterion", ["membership_gap", "distinct_auc", "distinct_tpr", "klom_forget_p95"])
def test_each_criterion_alone_fails_the_second_ensemble(criterion):
    """The sanity check tests exactly these four statistics together: one of them far out, the others
    typical of the null, is enough to flag the second oracle ensemble; none out, it passes."""
    from unlearn_da.reporting.audit import CRITERIA, min_p_adjusted, sanity

    assert CRITERIA == ("membership_gap", "distinct_auc", "distinct_tpr", "klom_forget_p95")
    rng = np.random.default_rng(12)
    null = {c: rng.normal(size=400) for c in CRITERIA}
    typical = {c: 0.0 for c in CRITERIA}
    adjusted, raw = min_p_adjusted(typical, null)
    assert adjusted > 0.5 and sanity("retrain_alt", adjusted, raw, 0.01)["ok"]
    adjusted, raw = min_p_adjusted({**typical, criterion: 10.0}, null)
    check = sanity("retrain_alt", adjusted, raw, 0.01)
    assert adjusted < 0.01 and not check["ok"] and raw[criterion] == pytest.approx(1 / 401)


def test_min_p_adjusts_for_the_four_criteria():
    """Four independent criteria at p = 1 % each are not a 1 % finding together: min-P gives about 4 %."""
    from unlearn_da.reporting.audit import CRITERIA, min_p_adjusted

    rng = np.random.default_rng(13)
    null = {c: rng.normal(size=5000) for c in CRITERIA}
    observed = {c: float(np.percentile(null[c], 99)) for c in CRITERIA}
    adjusted, raw = min_p_adjusted(observed, null)
    assert all(p == pytest.approx(0.01, abs=0.002) for p in raw.values())
    assert adjusted == pytest.approx(1 - 0.99 ** 4, abs=0.01)


def _two_ensembles(rng, k: int, n: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A row and a reference of ``k`` models each on ``n`` examples per set: a shared per-example difficulty,
    per-model noise (exchangeable ensembles)."""
    difficulty = {s: rng.normal(0, 2, n) for s in ("forget", "retain", "val", "heldout")}
    row = {s: d + rng.normal(size=(k, n)) for s, d in difficulty.items()}
    ref = {s: d + rng.normal(size=(k, n)) for s, d in difficulty.items()}
    return row, ref


def test_intervals_resample_models_of_both_ensembles_and_have_width():
    """Half-samples of the models of the row and of the reference: a spread of models gives a spread of
    the statistic; with every model of each ensemble alike there is nothing to resample."""
    from unlearn_da.reporting.audit import INTERVAL_STATS, bootstrap_intervals, row_statistics

    k = 12
    row, ref = _two_ensembles(np.random.default_rng(14), k, 25)
    stats, _ = row_statistics(row, ref, _params())
    intervals = bootstrap_intervals(row, ref, _params(), draws=40, seed=0)
    for name in INTERVAL_STATS:
        lo, hi = intervals[name]
        assert hi - lo > 1e-3, name
    same_row = {s: np.repeat(v[:1], k, axis=0) for s, v in row.items()}
    same_ref = {s: np.repeat(v[:1], k, axis=0) for s, v in ref.items()}
    flat = bootstrap_intervals(same_row, same_ref, _params(), draws=10, seed=0)
    assert all(hi - lo < 1e-9 for lo, hi in flat.values())
    assert set(intervals) == set(INTERVAL_STATS) and stats["membership_auc"] >= 0


def test_each_interval_holds_its_estimate_kloms_too():
    """The bootstrap with replacement put KLoM's interval wholly above its estimate (repeated models make
    the histograms spikier: 3.02 [4.40, 5.93] on the digits oracle row); half-samples hold it."""
    from unlearn_da.reporting.audit import INTERVAL_STATS, bootstrap_intervals, row_statistics

    k = 16
    row, ref = _two_ensembles(np.random.default_rng(3), k, 40)
    stats, _ = row_statistics(row, ref, _params())
    intervals = bootstrap_intervals(row, ref, _params(), draws=60, seed=0)
    for name in INTERVAL_STATS:
        lo, hi = intervals[name]
        assert lo <= stats[name] <= hi and hi - lo > 1e-3, (name, stats[name], lo, hi)


def test_intervals_at_the_smallest_k_the_config_allows():
    """audit.train_seeds may be 4: half of 4 models leaves 2, too few for a leave-one-out fit (the tiny
    audit's job failed); the half-sample takes the 3 such a fit needs, its spread scaled to K."""
    from unlearn_da.reporting.audit import INTERVAL_STATS, bootstrap_intervals

    row, ref = _two_ensembles(np.random.default_rng(5), 4, 20)
    intervals = bootstrap_intervals(row, ref, _params(), draws=12, seed=0)
    assert set(intervals) == set(INTERVAL_STATS) and all(hi > lo for lo, hi in intervals.values())


def _exchangeable_flag(rng, k: int, draws: int, alpha: float) -> bool:
    """One simulated audit of two exchangeable oracle ensembles, through the project's own functions:
    per-example difficulty shared by all models, a per-model offset that moves every example of a model
    (as whole oracles do on a class they never saw), per-example noise; the second ensemble is flagged?"""
    from unlearn_da.reporting.audit import min_p_adjusted, null_statistics, row_statistics

    sizes = {"forget": 24, "retain": 16, "val": 16, "heldout": 24}
    difficulty = {s: rng.normal(0, 2, n) for s, n in sizes.items()}
    offsets = rng.normal(0, 0.7, size=(2 * k, 1))
    models = {s: d + offsets + rng.normal(size=(2 * k, len(d))) for s, d in difficulty.items()}
    ref = {s: m[:k] for s, m in models.items()}
    alt = {s: m[k:] for s, m in models.items()}
    params = _params(null_draws=draws)
    stats, _ = row_statistics(alt, ref, params)
    null = null_statistics(ref, alt, params, draws, int(rng.integers(1 << 30)))
    adjusted, _ = min_p_adjusted(stats, null)
    return adjusted <= alpha


def test_the_sanity_check_flags_exchangeable_ensembles_at_its_declared_rate():
    """The false-flag rate of the calibrated check, measured: 150 simulated audits of two exchangeable
    oracle ensembles at alpha 0.1 flag within the binomial 99 % interval of 15."""
    from scipy.stats import binom

    rng = np.random.default_rng(2024)
    sims, alpha = 150, 0.1
    flags = sum(_exchangeable_flag(rng, k=6, draws=100, alpha=alpha) for _ in range(sims))
    lo, hi = binom.ppf(0.005, sims, alpha), binom.ppf(0.995, sims, alpha)
    assert lo <= flags <= hi, (flags, lo, hi)


def test_conclusions_say_what_the_numbers_say_and_compare_rows_only_where_intervals_part():
    """Generated from the summary: remembered (AUC above 0.5) and over-forgotten (below) are both a trace;
    a comparison with the originals only where the 95 % intervals do not overlap; the originals' own lack
    of a membership signal is said, since it means the game tests no method here."""
    from unlearn_da.reporting.audit import conclusions

    null = {name: {"median": 0.5, "q95": 1.0, "q99": 3.0, "range99": [0.4, 0.6]}
            for name in ("klom_retain_p95", "klom_val_p95")}

    def row(model, auc, lo, hi, p_gap, p_distinct=0.5, retain=1.0, val=1.0, check=None):
        return {"model": model, "membership_auc": auc, "intervals": {"membership_auc": [lo, hi]},
                "distinct_auc": 0.9, "klom_forget_p95": 2.0, "klom_retain_p95": retain, "klom_val_p95": val,
                "p": {"membership_gap": p_gap, "distinct_auc": p_distinct, "klom_retain_p95": 0.5 if retain < 3 else
                      0.001, "klom_val_p95": 0.5 if val < 3 else 0.001}, "sanity": check or {}}

    summary = {"alpha": 0.01, "null": null, "klom_saturation": 8.5, "rows": [
        row("original", 0.50, 0.47, 0.53, 0.6, check={"ok": True, "expect": "fail", "p": 0.0005}),
        row("over", 0.43, 0.41, 0.45, 0.0005, p_distinct=0.0005, retain=9.0),
        row("kept", 0.57, 0.55, 0.59, 0.0005),
        row("near", 0.51, 0.48, 0.54, 0.4),
    ]}
    out = dict(zip(["original", "over", "kept", "near"], conclusions(summary), strict=True))
    assert "the membership game cannot find the forget set even in models that trained on it" in out["original"]
    assert "identifiable as forgotten (less confident than never-seen ones)" in out["over"]
    assert "below the originals' 0.500 [0.470, 0.530]" in out["over"] and "moves retained examples too" in out["over"]
    assert "remain identifiable as members" in out["kept"] and "above the originals'" in out["kept"]
    assert "no membership signal beyond the oracle null" in out["near"]
    assert "not distinguishable from the originals'" in out["near"] and "not told apart" in out["near"]
