"""Bad input gets a clear error; a crash loses nothing; the same seed gives the same numbers."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import copy_project, env_with_venv, remove_model_chain, snakemake, tiny_copy
from unlearn_da.core.artifacts import atomic_path, sha256_file, write_json, write_sidecar
from unlearn_da.settings.config import load_config, validate_config
from unlearn_da.core.errors import ArtifactError, ConfigError, DataError
from unlearn_da.jobs.evaluate import load_labels
from unlearn_da.jobs.features import load_features
from unlearn_da.data.splits import Split, check_split, make_split

BASE = load_config()


def _set(cfg, dotted, value):
    node = cfg
    keys = dotted.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value


class _Delete:
    """Sentinel: delete the key. Its repr is stable, so the test ids are the same in every process."""

    def __repr__(self) -> str:
        return "<deleted>"


_DELETE = _Delete()

# (key, bad value, substrings the message must contain)
BAD_CONFIGS = [
    ("train.epochs", "ten", ["train.epochs", "'ten'", "expected integer"]),
    ("train.epochs", -3, ["train.epochs", "-3", "must be >= 1"]),
    ("train.lr", 0, ["train.lr", "must be > 0"]),
    ("train.momentum", 1.5, ["train.momentum", "must be <= 1"]),
    ("train.schedule", "linear", ["train.schedule", "'linear'", "cosine, multistep, constant"]),
    ("device", "tpu", ["device", "'tpu'", "auto, cpu, cuda"]),
    ("dataset", "mnist", ["dataset", "'mnist'", "digits, fashion_mnist, cifar10, cifar100"]),
    ("arch", "resnet18", ["arch", "resnet18 expects 32x32", "smallcnn"]),
    ("unlearn.methods", ["ft", "foo"], ["unlearn.methods[1]", "unknown method 'foo'", "allowed: bad_teacher"]),
    ("unlearn.methods", ["ssd+da"], ["'ssd+da' is not allowed", "no training loop"]),
    ("scenarios", ["random10", "half"], ["scenarios[1]", "unknown scenario 'half'", "random<P>"]),
    ("scenarios", ["random0"], ["scenarios[0]", "must be > 0 and < 100"]),
    ("scenarios", ["random100"], ["scenarios[0]", "must be > 0 and < 100"]),
    ("scenarios", ["class10"], ["scenarios[0]", "class 10 does not exist", "0..9"]),
    ("seeds", [0, 0], ["seeds", "repeats an item"]),
    ("seeds", [], ["seeds", "fewer than 1 item"]),
    ("threads", 0, ["threads", "must be >= 1"]),
    ("train.learning_rate", 0.1, ["unknown key(s) learning_rate", "allowed keys:", "lr"]),
    ("colour", "blue", ["unknown key(s) colour"]),
    ("data.val_fraction", 1.5, ["data.val_fraction", "must be < 1"]),
    ("unlearn.muda.forget_loss", "kl", ["unlearn.muda.forget_loss", "none, neg_ce, random_label"]),
    ("unlearn.variants", {"x": {"base": "muda", "lambda_sd": -1}}, ["unlearn.variants.x.lambda_sd", ">= 0"]),
    ("unlearn.variants", {"ga": {"base": "ga"}}, ["variant name 'ga' is taken"]),
    ("tuning.space", {"ga": {"lr": ["uniform", -1, 0.1]}}, ["tuning.space.ga.lr", "must be > 0"]),
    ("evaluation.da.k", 0, ["evaluation.da.k", ">= 1"]),
    ("unlearn.ft", _DELETE, ["method 'ft' has no hyper-parameter block"]),
    # counts are integers, not floats JSON Schema would also call integers, and every one is bounded
    ("seeds", [0.0], ["seeds[0]", "0.0 has the wrong type; expected integer"]),
    ("train.epochs", 3.0, ["train.epochs", "3.0 has the wrong type"]),
    ("evaluation.clustering.n_init", 10 ** 9, ["evaluation.clustering.n_init", "must be <= 1000"]),
    ("train.crop_padding", 100000, ["train.crop_padding", "must be <= 64"]),
    ("evaluation.batch_size", 10 ** 7, ["evaluation.batch_size", "must be <= 65536"]),
    ("audit.retain_sample", 10 ** 9, ["audit.retain_sample", "must be <= 1000000"]),
    # names: a newline or a control character passes a pattern's $, so none is allowed anywhere; the key
    # and the value are quoted escaped in the message
    ("run_tag", "abc\n", ["run_tag", "'abc\\n' holds a control character"]),
    ("unlearn.variants", {"fast\n": {"base": "ft"}}, ["unlearn.variants.'fast\\n'", "holds a control character"]),
    ("unlearn.ft.epochs\x1b[31m", 3, ["'epochs\\x1b[31m'"]),
    # lists of method names take known names only
    ("unlearn.da.weights", {"fft": 1.0}, ["unlearn.da.weights.fft", "'fft' is not a method that takes the DA plug-in"]),
    ("evaluation.embedding.models", ["mdua"], ["evaluation.embedding.models[0]", "unknown method 'mdua'"]),
    ("evaluation.da_k_curve.models", ["ft", "rll"], ["evaluation.da_k_curve.models[1]", "unknown method 'rll'"]),
]


def test_every_number_in_the_schema_is_bounded_on_both_sides():
    """A count without a maximum (n_init 1e9) hangs a job; a number without one fails late."""
    import yaml

    schema = yaml.safe_load(Path("workflow/schemas/config.schema.yaml").read_text())
    unbounded = []

    def walk(node, path):
        if isinstance(node, dict):
            types = node.get("type") if isinstance(node.get("type"), list) else [node.get("type")]
            if {"integer", "number"} & set(types):
                low = {"minimum", "exclusiveMinimum"} & set(node)
                high = {"maximum", "exclusiveMaximum"} & set(node)
                if not (low and high):
                    unbounded.append(".".join(path))
            for key, value in node.items():
                walk(value, path + [str(key)])
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, path + [str(i)])

    walk(schema, [])
    assert not unbounded, unbounded


@pytest.mark.parametrize("key,value,expected", BAD_CONFIGS, ids=[f"{k}={v!r}"[:40] for k, v, _ in BAD_CONFIGS])
def test_bad_config_is_refused_with_a_clear_message(key, value, expected):
    cfg = copy.deepcopy(BASE)
    _set(cfg, key, value)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, sources=["config/config.yaml", "my-overlay.yaml"])
    msg = str(err.value)
    for part in expected:
        assert part in msg, f"{part!r} missing from: {msg}"


def test_error_names_the_overlay_file_that_set_the_key(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("train:\n  epochs: -1\n")
    with pytest.raises(ConfigError, match=r"overlay\.yaml: key 'train\.epochs'"):
        validate_config(load_config([overlay]), sources=["config/config.yaml", str(overlay)])


def test_missing_fashion_data_without_download_is_a_config_error(tmp_path):
    cfg = copy.deepcopy(BASE)
    cfg.update(dataset="fashion_mnist")
    cfg["data"].update(download=False, fashion_mnist_dirs=[str(tmp_path / "nowhere")])
    with pytest.raises(ConfigError, match="none of these directories exists.*dataset-fashion-mnist"):
        validate_config(cfg)


def test_unparsable_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config([bad])


def test_snakemake_refuses_a_bad_config_before_running_anything(tmp_path):
    root = copy_project(tmp_path / "proj")
    proc = snakemake(root, "-n", "--config", "device=tpu", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "key 'device': 'tpu' is not allowed; allowed: auto, cpu, cuda" in out


# ---------------------------------------------------------------------------------------- bad files
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unlearn_da", *args], capture_output=True, text=True,
                          env=env_with_venv())


def test_cli_reports_a_missing_input_in_one_line(tmp_path):
    proc = _cli("split", "--data", str(tmp_path / "missing.npz"), "--scenario", "random10", "--seed", "0",
                "--out-dir", str(tmp_path / "s"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'missing.npz'}: file not found (made by rule 'prepare_data')"]


def test_truncated_feature_file_names_file_and_rule(tmp_path):
    """A model's features are written by the job that made the model: the error names that rule."""
    path = tmp_path / "retrain.npz"
    np.savez(path, **{f"{s}_{k}": np.zeros((3, 2)) for s in ("train", "val", "test") for k in ("features", "logits")})
    write_sidecar(path, "train_retrain", {})
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ArtifactError, match=r"retrain\.npz: SHA-256 .*\(made by rule 'train_retrain'\)"):
        load_features(path)


def test_feature_file_with_nan_is_refused(tmp_path):
    path = tmp_path / "f.npz"
    arrays = {f"{s}_{k}": np.zeros((3, 2)) for s in ("train", "val", "test") for k in ("features", "logits")}
    arrays["val_features"][1, 1] = np.nan
    np.savez(path, **arrays)
    write_sidecar(path, "unlearn", {})
    with pytest.raises(ArtifactError, match="val_features holds NaN"):
        load_features(path)


def test_missing_sidecar_is_reported(tmp_path, digits_file):
    copy = tmp_path / "dataset.npz"
    copy.write_bytes(digits_file.read_bytes())
    with pytest.raises(ArtifactError, match="sidecar dataset.npz.meta.json is missing"):
        load_labels(str(copy))


def test_corrupted_metrics_json_names_the_rule(tmp_path):
    from unlearn_da.reporting.tables import load_records

    bad = tmp_path / "m.json"
    bad.write_text('{"model": "ft", "metr')
    with pytest.raises(ArtifactError, match=r"m\.json: not valid JSON .*rule 'metrics'"):
        load_records([bad])


def test_atomic_writes_leave_no_temp_file_and_respect_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640  # mkstemp alone gives 0600
        with pytest.raises(RuntimeError), atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


# ---------------------------------------------------------------------------------------- resource guards
def test_split_guards():
    y = np.zeros(50, dtype=int)
    with pytest.raises(DataError, match="retain set would be empty"):
        make_split(y, "class0", 0)
    with pytest.raises(DataError, match="retain set would be empty"):
        make_split(np.arange(10), "random99.9", 0)
    with pytest.raises(DataError, match="no train sample"):
        make_split(np.arange(10) % 2, "class5", 0)
    split = make_split(np.arange(100) % 10, "random10", 0)
    with pytest.raises(DataError, match="outside the training set"):
        check_split(split, 50, "here")
    with pytest.raises(DataError, match="retain set is empty"):
        check_split(Split("x", 0, np.arange(3), np.array([], dtype=int), None), 3, "here")


# ---------------------------------------------------------------------------------------- crash + determinism
def _outputs(root: Path) -> tuple[dict[str, str], dict[str, dict]]:
    run = root / "results" / "digits-smallcnn"
    shas = {str(p.relative_to(run)): sha256_file(p) for p in sorted(run.rglob("*.pt")) + sorted(run.rglob("*.npz"))}
    shas["dataset.npz"] = sha256_file(root / "data" / "prepared" / "digits-smallcnn" / "dataset.npz")
    metrics = {}
    for p in sorted(run.rglob("metrics/*.json")):
        values = json.loads(p.read_text())["metrics"]
        metrics[str(p.relative_to(run))] = {k: v for k, v in values.items() if k not in ("seconds",)}
    return shas, metrics


# the chains the kill test removes from a copy of the finished tiny run: an oracle of each scenario, with
# its features and metrics; both train (3 epochs each) when the run is resumed
KILLED_CHAINS = {"random10": "retrain", "class0": "retrain_alt"}


@pytest.mark.slow
def test_kill_mid_training_then_rerun_gives_the_uninterrupted_results(tiny_project: Path, tmp_path: Path):
    root = tiny_copy(tiny_project, tmp_path / "crash")
    run = root / "results" / "digits-smallcnn"
    for scenario, model in KILLED_CHAINS.items():
        remove_model_chain(root, scenario, model)
    # their metrics asked for again: two training jobs start at once, and the first to end its first
    # epoch SIGKILLs the whole process group, Snakemake included (a power cut)
    targets = [f"results/digits-smallcnn/{s}/seed0/metrics/{m}.json" for s, m in KILLED_CHAINS.items()]
    args = ["--configfile", "tests/config/tiny.yaml", "--", *targets]
    env = env_with_venv()
    env["UNLEARN_DA_TEST_KILL_AFTER_EPOCH"] = "1"
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--cores", "2", *args]
    crashed = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, start_new_session=True)
    assert crashed.returncode != 0  # SIGKILLed together with its jobs
    assert "Error" not in crashed.stdout + crashed.stderr  # killed mid-training, not failed
    leftovers = [p for p in (root / "results").rglob("*.pt") if not Path(str(p) + ".meta.json").exists()]
    assert not leftovers, f"half-written checkpoints: {leftovers}"
    assert not any((run / s / "seed0" / "models" / f"{m}.pt").exists() for s, m in KILLED_CHAINS.items())
    snakemake(root, "--unlock", "--configfile", "tests/config/tiny.yaml")
    resumed = snakemake(root, "--rerun-incomplete", *args)
    assert "4 of 4 steps (100%) done" in resumed.stdout + resumed.stderr  # 2 models (with features), 2 metrics
    shas, metrics = _outputs(root)
    ref_shas, ref_metrics = _outputs(tiny_project)
    assert len(shas) == 23 and shas == ref_shas  # bit-identical: same seed, same threads
    assert metrics == ref_metrics
    for meta in (root / "results").rglob("*.pt.meta.json"):
        rec = json.loads(meta.read_text())
        assert "seed" in rec and rec["threads"] == 1


def test_a_file_is_hashed_once_per_version_in_a_process(tmp_path, monkeypatch):
    """A job hashes its data set to check it and again to record it: the second is answered from memory,
    a rewritten or replaced file is read again."""
    import builtins
    import os

    from unlearn_da.core import artifacts

    path = tmp_path / "data.bin"
    path.write_bytes(b"a" * 1000)
    reads = []
    real_open = builtins.open

    def counting_open(file, mode="r", *args, **kwargs):
        if str(file) == str(path) and "b" in mode:
            reads.append(mode)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    first = artifacts.sha256_file(path)
    assert artifacts.sha256_file(path) == first and len(reads) == 1
    path.write_bytes(b"b" * 1000)  # same size, new content: a new modification time
    os.utime(path, ns=(1, 1))
    assert artifacts.sha256_file(path) != first and len(reads) == 2
    replacement = tmp_path / "new.bin"
    replacement.write_bytes(b"c" * 1000)
    os.utime(replacement, ns=(1, 1))
    os.replace(replacement, path)  # same size and time, another inode
    assert artifacts.sha256_file(path) == artifacts.sha256_bytes(b"c" * 1000) and len(reads) == 3
