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
from unlearn_da.metrics.klom import binned_kl, klom, margins, split_floor
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


def test_klom_floor_splits_the_pooled_oracles_and_is_lower_than_a_shift():
    rng = np.random.default_rng(2)
    oracles = rng.normal(size=(64, 400))
    floor = split_floor(oracles, 32, splits=5, seed=0)
    assert floor.shape == (5, 400)
    shifted = klom(rng.normal(loc=2.0, size=(32, 400)), oracles[:32])
    assert np.median(shifted) > np.percentile(np.median(floor, axis=1), 97.5)
    with pytest.raises(ValueError):
        split_floor(oracles, 64, splits=1, seed=0)


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


def test_no_model_is_scored_by_gaussians_fitted_on_itself():
    rng = np.random.default_rng(5)
    unlearned, oracles = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    unlearned[2] += 50  # an outlier model: it would widen its own "in" Gaussian if it were fitted on
    pos, neg = ulira.leave_one_out(unlearned, oracles, min_std=1e-3)
    rest = np.arange(6) != 2
    assert np.allclose(pos[2], ulira.scores(unlearned[2], unlearned[rest], oracles[rest], 1e-3))
    assert np.allclose(neg[2], ulira.scores(oracles[2], unlearned[rest], oracles[rest], 1e-3))
    assert not np.allclose(pos[2], ulira.scores(unlearned[2], unlearned, oracles[rest], 1e-3))


# ------------------------------------------------------------------------------ sanity rows, flagged
def _write_logits(path: Path, margins_by_set: dict[str, np.ndarray], seed: int) -> str:
    """An audit logits file whose two-class logits have the given margins (label 0: margin = z0 - z1)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for s, m in margins_by_set.items():
        k, n = m.shape
        arrays[f"{s}_logits"] = np.stack([m, np.zeros_like(m)], axis=-1).astype(np.float32)
        arrays[f"{s}_labels"] = np.zeros(n, dtype=np.int64)
    k = len(margins_by_set["forget"])
    for s, n in (("member", 40), ("test", 40)):
        arrays[f"{s}_logits"] = rng.normal(size=(k, n, 2)).astype(np.float32)
        arrays[f"{s}_labels"] = rng.integers(0, 2, size=n)
    arrays["forgotten_class"] = np.asarray(-1)
    arrays["forget_index"] = np.arange(margins_by_set["forget"].shape[1])
    arrays["retain_index"] = np.arange(margins_by_set["retain"].shape[1])
    save_npz(path, arrays)
    write_sidecar(path, "audit_logits", {})
    return str(path)


def _synthetic(rng, k: int, forget_shift: float = 0.0) -> dict[str, np.ndarray]:
    base = {"forget": 60, "retain": 50, "val": 50}
    return {s: rng.normal(size=(k, n)) + (forget_shift if s == "forget" else 0.0) for s, n in base.items()}


def _params():
    config = load_config([])
    return P.audit_params(config)


def _run(tmp_path: Path, alt_shift: float):
    from unlearn_da.reporting.audit import run_audit

    rng = np.random.default_rng(6)
    k = 24
    ref = _write_logits(tmp_path / "retrain.npz", _synthetic(rng, k), 0)
    alt = _write_logits(tmp_path / "retrain_alt.npz", _synthetic(rng, k, alt_shift), 1)
    orig = _write_logits(tmp_path / "original.npz", _synthetic(rng, k, 3.0), 2)
    params = _params()
    params["resamples"] = 50
    out = tmp_path / "out"
    summary = run_audit(ref, [alt, orig], ["retrain_alt", "original"], "random10", "synthetic", params, str(out))
    return summary, (out / "audit.md").read_text()


def test_oracle_row_passes_and_original_fails_on_exchangeable_synthetic_ensembles(tmp_path: Path):
    summary, table = _run(tmp_path, alt_shift=0.0)
    rows = {r["model"]: r for r in summary["rows"]}
    assert rows["retrain_alt"]["sanity"]["ok"] and rows["original"]["sanity"]["ok"]
    assert rows["original"]["ulira_auc_ci"][0] > 0.9
    assert summary["sanity_failed"] == [] and "Sanity check failed" not in table
    assert "| oracle (2nd ensemble) |" in table and "ok (must pass;" in table and "ok (must fail;" in table
    assert (tmp_path / "out" / "figures" / "klom.png").stat().st_size > 0
    assert (tmp_path / "out" / "figures" / "roc.png").stat().st_size > 0


def test_an_oracle_row_that_does_not_pass_is_flagged_in_the_table(tmp_path: Path):
    summary, table = _run(tmp_path, alt_shift=1.5)  # the "second oracles" differ on the forget set
    assert summary["sanity_failed"] == ["retrain_alt"]
    assert "**Sanity check failed** (oracle (2nd ensemble), must pass)" in table
    assert "**FAILED** (must pass;" in table


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
    for role in ("retrain", "retrain_alt"):
        assert sorted(int(_arg(c, "--seed")) for c in oracles if _arg(c, "--role") == role) == seeds
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
    assert (check["expect"], check["ok"], check["problems"]) == ("pass", True, []) and 0 <= check["null_p"] <= 1
    assert rows["original"]["sanity"]["ok"], rows["original"]["sanity"]
    assert summary["K"] == K and summary["examples"]["retain"] == 100
    with np.load(out / "scores.npz") as z:
        assert z["ft/ulira_positive"].shape == (K, summary["examples"]["forget"])
        assert z["floor/forget"].shape[0] == 50
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
    assert problems == [] and checked == K * 4 + 4 + 1  # originals, 2 oracles, ft; 4 logits; the data set
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
    from unlearn_da.reporting.reproduction import collect, compare
    from unlearn_da.tools.readme_tables import audit_block, audit_excerpt_block

    record = collect(config, ["tests/config/tiny.yaml", "tests/config/tiny-audit.yaml"], root)
    assert set(record["models"]) == {f"audit/class0/{m}" for m in ("retrain", "retrain_alt", "original", "ft")}
    assert record["models"]["audit/class0/ft"]["metrics"]["ulira_auc"] == rows["ft"]["ulira_auc"]
    assert compare(record, record)["counts"]["identical"] == 4
    assert record["audit"]["_run"]["artifacts"] == K * 4 + 4
    assert "| oracle (2nd ensemble) |" in audit_block(record, "x.json")
    assert "| ft |" in audit_excerpt_block(record, "x.json")
    # the statistics alone rerun when their settings change; no model does
    overlay = tmp_path / "resamples.yaml"
    overlay.write_text("audit: {resamples: 60}\n")
    from conftest import dry_run_jobs

    assert dry_run_jobs(root, *AUDIT, str(overlay)) == {"audit": 1, "all": 1}


def test_an_exchangeable_oracle_row_passes_against_the_oracle_null_where_the_fold_bootstrap_rejects_it():
    """Two ensembles of one distribution, where whole models shift every margin: by chance one ensemble
    sits apart from the other, so the observed AUC is often off 0.5 by more than the bootstrap over
    folds (which keeps the two ensembles fixed) allows. Judged against random splits of the pooled
    oracles, as ``sanity`` does, it passes."""
    from unlearn_da.reporting.audit import _interval, ulira_floor

    rng = np.random.default_rng(16)  # one such pair, found by search
    k, n = 12, 40
    scale = rng.uniform(0.3, 3, size=(1, n))
    oracles, second = (rng.normal(0, 1, size=(k, n)) * scale + rng.normal(0, 0.5, size=(k, 1)) for _ in range(2))
    pos, neg = ulira.leave_one_out(second, oracles, 1e-3)
    lo, hi = _interval(ulira.bootstrap_folds(pos, neg, ulira.auc, 100, 0), 99.0)
    assert not lo <= 0.5 <= hi  # what a check on the fold bootstrap would flag
    null = ulira_floor(oracles, second, {"ulira": {"min_std": 1e-3, "fpr": [0.01]}, "resamples": 100, "seed": 0})
    assert null["auc_range99"][0] <= ulira.auc(pos, neg) <= null["auc_range99"][1]
    assert abs(null["auc_median"] - 0.5) < 0.03
