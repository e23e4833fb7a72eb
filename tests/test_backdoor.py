"""Backdoor scenario: trigger placement, poisoned split, who sees which data, ASR, config refusals,
and one tiny pipeline run of ``backdoor10`` checked against an independent recomputation."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from unlearn_da.data.backdoor import (Trigger, apply_trigger, attack_success_rate, draw_poisoned, poisoned_train,
                                 resolve_trigger)
from unlearn_da.settings.config import load_config, validate_config
from unlearn_da.data.prepared import load_prepared
from unlearn_da.data.datasets import dataset_info
from unlearn_da.core.errors import ArtifactError, ConfigError, DataError
from unlearn_da.core.scenarios import parse_scenario
from unlearn_da.data.splits import load_split, load_split_poison, run_split

from conftest import copy_project, dry_run_jobs, env_with_venv, snakemake

BACKDOOR = load_config()["backdoor"]  # target 0, trigger auto: on digits 2x2 of 16 in the corner
DIGITS_TRIGGER = Trigger(size=2, margin=0, value=16)
TRAIN_PARAMS = {"arch": "smallcnn", "model": {"width": 4}, "train": {"epochs": 1, "batch_size": 64},
                "device": "cpu", "deterministic": True, "precision": {"amp": "off", "channels_last": "off"}}


def stamp_by_hand(images: np.ndarray, size: int, margin: int, value: int) -> np.ndarray:
    """The trigger written out independently of ``apply_trigger``: the template's slice, on NCHW."""
    out = images.copy()
    h, w = out.shape[-2:]
    out[:, :, h - margin - size:h - margin, w - margin - size:w - margin] = value
    return out


# ------------------------------------------------------------------ trigger and poisoned indices
def test_trigger_stamps_exactly_the_square_before_the_corner_on_every_channel():
    x = np.zeros((2, 3, 8, 8), dtype=np.uint8)
    out = apply_trigger(x, Trigger(size=2, margin=2, value=9))
    expected = np.zeros_like(x)
    expected[:, :, 4:6, 4:6] = 9  # the template's data[-2-s:-2, -2-s:-2]
    np.testing.assert_array_equal(out, expected)
    assert x.max() == 0  # the input is not modified
    corner = apply_trigger(np.ones((1, 1, 5, 5), dtype=np.uint8), Trigger(size=3, margin=0, value=0))
    assert corner[0, 0, 2:, 2:].max() == 0 and corner[0, 0, :2].min() == 1 and corner[0, 0, :, :2].min() == 1


def test_auto_trigger_per_data_set():
    assert resolve_trigger(BACKDOOR["trigger"], dataset_info("digits")) == DIGITS_TRIGGER  # corner: background
    assert resolve_trigger(BACKDOOR["trigger"], dataset_info("fashion_mnist")) == Trigger(3, 2, 255)
    assert resolve_trigger(BACKDOOR["trigger"], dataset_info("cifar10")) == Trigger(4, 2, 0)  # the template's
    assert resolve_trigger({"size": 5, "margin": 1, "value": 7}, dataset_info("cifar100")) == Trigger(5, 1, 7)


def test_poisoned_indices_are_seeded_sized_and_never_of_the_target_class():
    y = np.repeat(np.arange(10), 30)
    a, b = draw_poisoned(y, 10.0, 3, seed=0), draw_poisoned(y, 10.0, 3, seed=0)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 30 and len(np.unique(a)) == 30 and not (y[a] == 3).any()
    assert not np.array_equal(a, draw_poisoned(y, 10.0, 3, seed=1))
    with pytest.raises(DataError, match="outside the target class"):
        draw_poisoned(np.zeros(10, dtype=np.int64), 10.0, 0, seed=0)


def test_asr_counts_target_predictions_among_triggered_images():
    logits = np.array([[5.0, 0.0], [0.0, 5.0], [4.0, 1.0], [1.0, 2.0]])
    assert attack_success_rate(logits, target=0) == 50.0
    assert attack_success_rate(logits, target=1) == 50.0
    assert attack_success_rate(logits[:1], target=0) == 100.0


# ------------------------------------------------------------------ the split job
@pytest.fixture(scope="module")
def backdoor_split(digits_file: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("split") / "backdoor10" / "seed0"
    run_split(digits_file, "backdoor10", 0, BACKDOOR, out)
    return out


def test_forget_set_is_exactly_the_poisoned_indices(digits_file: Path, backdoor_split: Path):
    data = load_prepared(digits_file)
    split, poison = load_split_poison(backdoor_split, len(data.y_train))
    n = len(data.y_train)
    np.testing.assert_array_equal(split.forget, draw_poisoned(data.y_train, 10.0, 0, seed=0))
    np.testing.assert_array_equal(poison.train_index, split.forget)
    assert len(split.forget) == round(0.1 * n) and not (data.y_train[split.forget] == 0).any()
    np.testing.assert_array_equal(np.sort(np.concatenate([split.forget, split.retain])), np.arange(n))
    # the poisoned images are the train images with the trigger, materialised once
    np.testing.assert_array_equal(poison.train_images, apply_trigger(data.x_train[split.forget], DIGITS_TRIGGER))
    assert not np.array_equal(poison.train_images, data.x_train[split.forget])
    # the triggered test set: every non-target test image, with the trigger
    np.testing.assert_array_equal(poison.test_index, np.flatnonzero(data.y_test != 0))
    np.testing.assert_array_equal(poison.test_images, apply_trigger(data.x_test[poison.test_index], DIGITS_TRIGGER))
    manifest = json.loads((backdoor_split / "manifest.json").read_text())
    assert manifest["backdoor"]["target"] == 0 and manifest["backdoor"]["trigger"] == {"size": 2, "margin": 0, "value": 16}
    assert "poison.npz" in manifest["files"]


def test_a_replaced_poison_file_is_refused(backdoor_split: Path, tmp_path: Path):
    import shutil

    copy_dir = tmp_path / "split"
    shutil.copytree(backdoor_split, copy_dir)
    with np.load(copy_dir / "poison.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["train_images"] = arrays["train_images"] * 0
    np.savez(copy_dir / "poison.npz", **arrays)
    with pytest.raises(ArtifactError, match="poison.npz: SHA-256 does not match"):
        load_split(copy_dir)


def test_poisoned_train_replaces_only_the_forget_rows(digits_file: Path, backdoor_split: Path):
    data = load_prepared(digits_file)
    split, poison = load_split_poison(backdoor_split)
    x, y = poisoned_train(data.x_train, data.y_train, poison)
    assert (y[split.forget] == 0).all()
    np.testing.assert_array_equal(x[split.forget], poison.train_images)
    np.testing.assert_array_equal(x[split.retain], data.x_train[split.retain])
    np.testing.assert_array_equal(y[split.retain], data.y_train[split.retain])


def _train(role: str, digits_file: Path, split_dir: Path | None, out: Path, monkeypatch) -> tuple[dict, dict]:
    """run_train with ``fit`` replaced by a spy: (what it was given, the checkpoint's metadata)."""
    import unlearn_da.jobs.train as train_mod

    seen: dict = {}

    def spy_fit(model, x, y, prep, recipe, **kwargs):
        seen["x"], seen["y"] = x.cpu().numpy(), y.cpu().numpy()
        return {"history": []}

    monkeypatch.setattr(train_mod, "fit", spy_fit)
    meta = train_mod.run_train(str(digits_file), role, 0, 1, TRAIN_PARAMS, str(out),
                               split_dir=None if split_dir is None else str(split_dir))
    return seen, meta


@pytest.mark.parametrize("role", ["original", "retrain", "retrain_alt"])
def test_original_sees_the_poison_and_the_oracles_never_do(digits_file, backdoor_split, tmp_path, monkeypatch, role):
    seen, meta = _train(role, digits_file, backdoor_split, tmp_path / f"{role}.pt", monkeypatch)
    data = load_prepared(digits_file)
    split, poison = load_split_poison(backdoor_split)
    if role == "original":
        assert len(seen["y"]) == len(data.y_train)
        np.testing.assert_array_equal(seen["x"][split.forget], stamp_by_hand(data.x_train[split.forget], 2, 0, 16))
        assert (seen["y"][split.forget] == 0).all()
        assert meta["backdoor"]["n_poisoned"] == len(split.forget)
    else:
        np.testing.assert_array_equal(seen["x"], data.x_train[split.retain])
        np.testing.assert_array_equal(seen["y"], data.y_train[split.retain])
        poisoned_rows = {p.tobytes() for p in poison.train_images}
        assert not any(img.tobytes() in poisoned_rows for img in seen["x"])
        assert meta["backdoor"] is None


FEATURE_PARAMS = {"batch_size": 256, **{k: TRAIN_PARAMS[k] for k in ("device", "deterministic", "precision")}}


@pytest.mark.parametrize("role", ["original", "retrain"])
def test_a_model_job_extracts_the_features_a_job_of_their_own_would(digits_file, backdoor_split, tmp_path, role,
                                                                   monkeypatch):
    """A training job writes its model's features (``--features-out``): the same arrays, bit for bit, as
    ``python -m unlearn_da features`` on the saved checkpoint. A backdoor oracle trains on the clean
    retain set, yet its features are those of the scenario's data: poisoned train rows, triggered test."""
    import unlearn_da.jobs.train as train_mod
    from unlearn_da.jobs.features import run_features
    from unlearn_da.jobs.train import run_train

    monkeypatch.setattr(train_mod, "fit", lambda *a, **k: {"history": []})  # the initial weights will do
    models, features = tmp_path / "models", tmp_path / "features"
    models.mkdir()
    features.mkdir()
    run_train(str(digits_file), role, 0, 1, TRAIN_PARAMS, str(models / f"{role}.pt"), split_dir=str(backdoor_split),
              features_out=str(features / f"{role}.npz"), features_params=FEATURE_PARAMS)
    run_features(str(digits_file), str(models / f"{role}.pt"), 1, FEATURE_PARAMS, str(tmp_path / "alone.npz"),
                 split_dir=str(backdoor_split))
    with np.load(features / f"{role}.npz") as in_job, np.load(tmp_path / "alone.npz") as alone:
        assert sorted(in_job.files) == sorted(alone.files)
        assert "trigger_logits" in in_job.files
        for key in alone.files:
            np.testing.assert_array_equal(in_job[key], alone[key], err_msg=key)
    meta = json.loads((features / f"{role}.npz.meta.json").read_text())
    assert meta["made_by"] == ("train_original" if role == "original" else "train_retrain")
    assert meta["backdoor"]["n_poisoned"] == len(load_split(backdoor_split).forget)
    assert "startup_s" not in meta  # counted once, in the checkpoint's sidecar


def _unlearn(digits_file: Path, split_dir: Path, original: Path, tmp_path: Path, monkeypatch, seed: int = 0) -> dict:
    """run_unlearn with a spy in place of the method: the context it would have been given."""
    import unlearn_da.jobs.unlearn as unlearn_mod

    seen: dict = {}
    monkeypatch.setattr(unlearn_mod, "get_method", lambda base, source=None: lambda ctx, hp: seen.update(ctx=ctx))
    params = {"method": "ft", "base": "ft", "hp": {}, "log_every": 100, "probe_size": 8, "device": "cpu",
              "deterministic": True, "precision": {"amp": "off", "channels_last": "off"}}
    unlearn_mod.run_unlearn(str(digits_file), str(split_dir), str(original), "ft", seed, 1, params,
                            str(tmp_path / "ft.pt"), str(tmp_path / "ft.steps.csv"))
    return seen


def test_unlearning_starts_from_the_poisoned_original_and_sees_the_poisoned_forget_set(
        digits_file, backdoor_split, tmp_path, monkeypatch):
    _train("original", digits_file, backdoor_split, tmp_path / "poisoned.pt", monkeypatch)
    ctx = _unlearn(digits_file, backdoor_split, tmp_path / "poisoned.pt", tmp_path, monkeypatch)["ctx"]
    data = load_prepared(digits_file)
    split = load_split(backdoor_split)
    np.testing.assert_array_equal(ctx.x_forget.numpy(), stamp_by_hand(data.x_train[split.forget], 2, 0, 16))
    assert (ctx.y_forget.numpy() == 0).all()
    np.testing.assert_array_equal(ctx.x_retain.numpy(), data.x_train[split.retain])
    np.testing.assert_array_equal(ctx.y_retain.numpy(), data.y_train[split.retain])


def test_a_scenario_refuses_the_other_kind_of_original(digits_file, backdoor_split, tmp_path, monkeypatch):
    clean_split = tmp_path / "random10"
    run_split(digits_file, "random10", 0, {}, clean_split)
    _train("original", digits_file, None, tmp_path / "clean.pt", monkeypatch)
    _train("original", digits_file, backdoor_split, tmp_path / "poisoned.pt", monkeypatch)
    with pytest.raises(ValueError, match="not the original trained on the poisoned data"):
        _unlearn(digits_file, backdoor_split, tmp_path / "clean.pt", tmp_path, monkeypatch)
    with pytest.raises(ValueError, match="trained on poisoned data"):
        _unlearn(digits_file, clean_split, tmp_path / "poisoned.pt", tmp_path, monkeypatch)


def test_unlearning_refuses_an_original_of_another_seed_role_or_data_set(digits_file, tmp_path, monkeypatch):
    """A checkpoint copied into another seed's folder, an oracle renamed original.pt or an original of
    another prepared data set each pass their own checksum; the job compares what the sidecar records
    (seed, role, data checksum, the spec's input and classes) with what it is about to do."""
    from unlearn_da.data.prepared import prepare

    split = tmp_path / "random10"
    run_split(digits_file, "random10", 0, {}, split)
    _train("original", digits_file, None, tmp_path / "original.pt", monkeypatch)
    _train("retrain", digits_file, split, tmp_path / "retrain.pt", monkeypatch)
    other = tmp_path / "other" / "dataset.npz"
    other.parent.mkdir()
    prepare("digits", {"val_fraction": 0.2, "test_fraction": 0.2, "split_seed": 1}, other)
    _train("original", other, None, tmp_path / "other.pt", monkeypatch)
    assert "ctx" in _unlearn(digits_file, split, tmp_path / "original.pt", tmp_path, monkeypatch)
    with pytest.raises(ArtifactError, match=r"original.pt: not the model this job expects: seed 0 \(this job: 1\)"):
        _unlearn(digits_file, split, tmp_path / "original.pt", tmp_path, monkeypatch, seed=1)
    with pytest.raises(ArtifactError, match=r"role 'retrain' \(this job needs: original\)"):
        _unlearn(digits_file, split, tmp_path / "retrain.pt", tmp_path, monkeypatch)
    with pytest.raises(ArtifactError, match="trained on data with checksum"):
        _unlearn(digits_file, split, tmp_path / "other.pt", tmp_path, monkeypatch)


def test_a_backdoor_manifest_without_the_poison_checksum_is_refused(backdoor_split: Path, tmp_path: Path):
    import shutil

    copy_dir = tmp_path / "split"
    shutil.copytree(backdoor_split, copy_dir)
    manifest = json.loads((copy_dir / "manifest.json").read_text())
    del manifest["files"]["poison.npz"]
    (copy_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="without a checksum for poison.npz"):
        load_split_poison(copy_dir)


# ------------------------------------------------------------------ config validation
def _refusal(overrides: dict) -> str:
    from unlearn_da.settings.config import deep_merge

    cfg = deep_merge(copy.deepcopy(load_config()), overrides)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    return str(err.value)


def test_backdoor_scenarios_parse_and_bad_ones_are_refused_naming_the_key():
    assert parse_scenario("backdoor10") == ("backdoor", 10.0)
    assert parse_scenario("backdoor2.5") == ("backdoor", 2.5)
    validate_config(load_config(["config/backdoor.yaml"]))
    assert "scenarios[0]" in _refusal({"scenarios": ["backdoor0"]})
    assert "must be > 0 and < 100" in _refusal({"scenarios": ["backdoor100"]})
    msg = _refusal({"scenarios": ["backdoor10"], "backdoor": {"target_class": 10}})
    assert "backdoor.target_class" in msg and "does not exist in digits" in msg
    msg = _refusal({"scenarios": ["backdoor10"], "backdoor": {"trigger": {"size": 7, "margin": 2}}})
    assert "backdoor.trigger.size" in msg and "does not fit" in msg
    msg = _refusal({"scenarios": ["backdoor10"], "backdoor": {"trigger": {"value": 200}}})
    assert "backdoor.trigger.value" in msg and "outside digits's pixel range 0..16" in msg
    # a backdoor scenario only in the tuning search is checked too
    msg = _refusal({"tuning": {"scenarios": ["backdoor10"]}, "backdoor": {"target_class": 12}})
    assert "backdoor.target_class" in msg
    assert "backdoor.trigger.size" in _refusal({"backdoor": {"trigger": {"size": "big"}}})


# ------------------------------------------------------------------ one tiny run, checked from outside
def test_tiny_backdoor_run_matches_an_independent_recomputation(tmp_path: Path):
    root = copy_project(tmp_path / "project")
    snakemake(root, "--configfile", "tests/config/tiny-backdoor.yaml")
    run = root / "results" / "digits-smallcnn" / "backdoor10"
    assert (run / "figures" / "asr.png").stat().st_size > 0 and (run / "figures" / "asr.pdf").exists()
    # its own poisoned original; the shared per-seed original is never made
    assert (run / "seed0" / "models" / "original.pt").exists()
    assert not (root / "results" / "digits-smallcnn" / "seed0" / "models" / "original.pt").exists()
    table = (run / "table.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| Model"))
    assert "| Avg. Gap | Avg. Gap (per seed) | ASR | Acc. D_f (clean) |" in header
    assert "Backdoor: D_f = the poisoned samples" in table

    data = np.load(root / "data" / "prepared" / "digits-smallcnn" / "dataset.npz")
    split_dir = root / "data" / "prepared" / "digits-smallcnn" / "splits" / "backdoor10" / "seed0"
    forget = np.load(split_dir / "forget.npy")
    retain = np.load(split_dir / "retain.npy")
    y_clean = data["y_train"]
    for model in ("original", "retrain", "ft"):
        record = json.loads((run / "seed0" / "metrics" / f"{model}.json").read_text())
        m = record["metrics"]
        with np.load(run / "seed0" / "features" / f"{model}.npz") as f:
            pred_train = f["train_logits"].argmax(1)
            pred_trigger = f["trigger_logits"].argmax(1)
            pred_test = f["test_logits"].argmax(1)
        assert len(pred_trigger) == int((data["y_test"] != 0).sum())
        assert m["ASR"] == pytest.approx(100.0 * np.mean(pred_trigger == 0))
        assert m["UA"] == pytest.approx(100.0 - 100.0 * np.mean(pred_train[forget] == 0))  # the poisoned label
        assert m["forget_acc_clean"] == pytest.approx(100.0 * np.mean(pred_train[forget] == y_clean[forget]))
        assert m["RA"] == pytest.approx(100.0 * np.mean(pred_train[retain] == y_clean[retain]))
        assert m["TA"] == pytest.approx(100.0 * np.mean(pred_test == data["y_test"]))
        assert record["backdoor"]["target"] == 0
    # the provenance check knows the scenario's own original; a second run is a no-op
    verified = subprocess.run([sys.executable, "-m", "unlearn_da", "verify", "--configfile",
                               "tests/config/tiny-backdoor.yaml"], cwd=root, env=env_with_venv(),
                              capture_output=True, text=True, check=True)
    assert "verified 11 artifacts" in verified.stdout and "all match" in verified.stdout  # 10 files and the split
    assert dry_run_jobs(root, "--configfile", "tests/config/tiny-backdoor.yaml") == {}
    # each job pushed through its models the images workload_images counts (the poisoned original, the
    # triggered test images of every model's features; tests/test_workload.py)
    from unlearn_da.tools.workload import workload_jobs

    config = load_config([root / "tests/config/tiny-backdoor.yaml"], base=root / "config/config.yaml")
    recorded = {str(p.relative_to(root)).removesuffix(".meta.json"): json.loads(p.read_text())["images"]
                for p in (root / "results").rglob("*.meta.json") if "images" in json.loads(p.read_text())}
    assert recorded == {job.artifact: job.images.as_dict() for job in workload_jobs(config)}
    # from the checkpoints, on images stamped here by hand: the features held the triggered images
    import torch

    from unlearn_da.core.checkpoints import load_checkpoint
    from unlearn_da.core.training import Preprocessor, predict

    prep = Preprocessor(data["mean"], data["std"], 16.0, torch.device("cpu"))
    triggered = torch.from_numpy(stamp_by_hand(data["x_test"][data["y_test"] != 0], 2, 0, 16))
    poisoned = torch.from_numpy(stamp_by_hand(data["x_train"][forget], 2, 0, 16))
    for model, made_by in (("original", "train_original"), ("ft", "unlearn")):
        net, _ = load_checkpoint(run / "seed0" / "models" / f"{model}.pt", made_by)
        m = json.loads((run / "seed0" / "metrics" / f"{model}.json").read_text())["metrics"]
        asr = 100.0 * float((predict(net, triggered, prep)[1].argmax(1) == 0).float().mean())
        ua = 100.0 - 100.0 * float((predict(net, poisoned, prep)[1].argmax(1) == 0).float().mean())
        assert m["ASR"] == pytest.approx(asr, abs=1e-9) and m["UA"] == pytest.approx(ua, abs=1e-9)
    summary = json.loads((run / "summary.json").read_text())["models"]
    assert "gap_ASR" in summary["ft"] and "avg_gap" in summary["ft"]
    ua, ra, ta, mia = (summary["ft"][f"gap_{k}"]["mean"] for k in ("UA", "RA", "TA", "MIA"))
    assert summary["ft"]["avg_gap"]["mean"] == pytest.approx((ua + ra + ta + mia) / 4)  # ASR stays outside
    assert summary["ft"]["avg_gap_seed"]["mean"] == pytest.approx((ua + ra + ta + mia) / 4)  # one seed: equal
