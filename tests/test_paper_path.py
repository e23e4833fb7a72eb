"""The paper path (CIFAR, ResNet-18): safe CIFAR reading, the subset switch, non-finite config values,
and a cut-down CIFAR-10 smoke through the pipeline's rules."""

from __future__ import annotations

import pickle
import pickletools
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from unlearn_da.data.cifar import CIFAR, load_pickle, read_cifar
from unlearn_da.settings.config import load_config, validate_config
from unlearn_da.data.prepared import load_prepared, prepare, stratified_subset
from unlearn_da.core.errors import ConfigError, DataError
from unlearn_da.data.synthetic import py2_dumps, write_synthetic_cifar


def _globals(raw: bytes) -> set[str]:
    return {arg for op, arg, _ in pickletools.genops(raw) if op.name in ("GLOBAL", "STACK_GLOBAL")}


@pytest.fixture(scope="module")
def cifar_raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    write_synthetic_cifar("cifar10", root, n_train=150, n_test=60, seed=0)
    write_synthetic_cifar("cifar100", root, n_train=400, n_test=200, seed=0)
    return root


def test_synthetic_files_have_the_real_on_disk_form(cifar_raw: Path):
    raw = (cifar_raw / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    assert raw[:2] == b"\x80\x02"  # protocol 2, as cPickle wrote the real files
    assert _globals(raw) == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    ops = {op.name for op, _, _ in pickletools.genops(raw)}
    assert "BINSTRING" in ops and "SHORT_BINSTRING" in ops  # Python-2 str, not Python-3 bytes
    entry = pickle.loads(raw, encoding="latin1")  # what torchvision does with the real files
    assert set(entry) == {"batch_label", "labels", "data", "filenames"}
    assert entry["data"].dtype == np.uint8 and entry["data"].shape == (30, 3072)
    c100 = pickle.loads((cifar_raw / "cifar-100-python" / "train").read_bytes(), encoding="latin1")
    assert set(c100) == {"filenames", "batch_label", "fine_labels", "coarse_labels", "data"}
    for name, layout in CIFAR.items():
        assert sorted(p.name for p in (cifar_raw / layout.folder).iterdir()) == sorted(
            [*layout.train, layout.test, layout.meta]), name


def test_restricted_reader_gives_the_same_arrays_as_plain_pickle(cifar_raw: Path):
    base = cifar_raw / "cifar-10-batches-py"
    out = read_cifar("cifar10", base, allow_unverified=True)
    plain = [pickle.loads((base / f).read_bytes(), encoding="latin1") for f in CIFAR["cifar10"].train]
    expected = np.concatenate([p["data"] for p in plain]).reshape(-1, 3, 32, 32)
    assert out["x"].dtype == np.uint8 and out["x"].shape == (150, 3, 32, 32)
    assert np.array_equal(out["x"], expected)
    assert out["y"].tolist() == sum((p["labels"] for p in plain), [])
    assert out["x_test"].shape == (60, 3, 32, 32)
    c100 = read_cifar("cifar100", cifar_raw / "cifar-100-python", allow_unverified=True)
    assert c100["y"].max() == 99 and c100["x"].shape == (400, 3, 32, 32)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("payload", [_Evil(), {"data": _Evil()}, {"labels": pd.Timestamp(0)}])
def test_a_pickle_with_any_other_global_is_refused(tmp_path: Path, payload):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError, match="refusing to unpickle global"):
        load_pickle(path)


def test_files_that_do_not_match_the_published_md5_are_refused_unless_allowed(cifar_raw: Path):
    base = cifar_raw / "cifar-10-batches-py"
    with pytest.raises(DataError, match="published MD5.*allow_unverified"):
        read_cifar("cifar10", base)
    assert read_cifar("cifar10", base, allow_unverified=True)["unverified"]  # names the files it let through


def test_malformed_cifar_files_name_the_file(tmp_path: Path):
    bad = tmp_path / "test_batch"
    bad.write_bytes(py2_dumps({"labels": [1, 2], "data": np.zeros((2, 10), np.uint8)}))
    with pytest.raises(DataError, match="test_batch.*uint8 N x 3072"):
        from unlearn_da.data.cifar import _batch

        _batch(bad, "labels", 10)
    for labels, data, expected in (([3, 10], np.zeros((2, 3072), np.uint8), "label 10 outside the 10 classes"),
                                   ([-1, 0], np.zeros((2, 3072), np.uint8), "label -1 outside"),
                                   ([], np.zeros((0, 3072), np.uint8), "an empty batch")):
        bad.write_bytes(py2_dumps({"labels": labels, "data": data}))
        with pytest.raises(DataError, match=f"test_batch: {expected}"):
            _batch(bad, "labels", 10)
    truncated = tmp_path / "data_batch_2"
    truncated.write_bytes(py2_dumps({"labels": [1]})[:-5])
    with pytest.raises(DataError, match="data_batch_2: not a readable CIFAR pickle"):
        load_pickle(truncated)


def _cifar_params(raw: Path, **extra) -> dict:
    return {"val_fraction": 0.1, "test_fraction": 0.2, "split_seed": 0, "fashion_mnist_dirs": [],
            "download": False, "cifar_dirs": [str(raw)], "allow_unverified": True, **extra}


def test_prepare_reads_cifar_and_applies_a_stratified_seeded_subset(cifar_raw: Path, tmp_path: Path):
    subset = {"train": 100, "test": 40}
    meta = prepare("cifar10", _cifar_params(cifar_raw, subset=subset), tmp_path / "a.npz")
    prepare("cifar10", _cifar_params(cifar_raw, subset=subset), tmp_path / "b.npz")
    data = load_prepared(tmp_path / "a.npz")
    assert meta["subset"] == subset
    assert len(data.y_train) + len(data.y_val) == 100 and len(data.y_test) == 40
    assert np.bincount(data.y_test, minlength=10).tolist() == [4] * 10  # stratified
    assert set(np.unique(data.y_val)) == set(range(10))  # validation carved from the subset, every class
    assert data.x_train.dtype == np.uint8 and data.x_train.shape[1:] == (3, 32, 32)
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)  # same seed, same subset


def test_stratified_subset_keeps_class_shares_and_depends_on_the_seed():
    y = np.repeat(np.arange(4), [10, 20, 30, 40])
    idx = stratified_subset(y, 50, seed=1)
    assert len(idx) == 50 and np.bincount(y[idx]).tolist() == [5, 10, 15, 20]
    assert not np.array_equal(idx, stratified_subset(y, 50, seed=2))
    with pytest.raises(DataError, match="asks for 101"):
        stratified_subset(y, 101, seed=0)


def test_subset_split_manifest_records_the_subset(cifar_raw: Path, tmp_path: Path):
    from unlearn_da.data.splits import make_split, write_split

    prepare("cifar10", _cifar_params(cifar_raw, subset={"train": 100, "test": 40}), tmp_path / "d.npz")
    manifest = write_split(make_split(load_prepared(tmp_path / "d.npz").y_train, "class0", 0), tmp_path / "s",
                           tmp_path / "d.npz")
    assert manifest["dataset_subset"] == {"train": 100, "test": 40}


@pytest.mark.parametrize("subset, key, message", [
    ({"train": 1000, "test": 5}, "data.subset.test", "cannot hold every one of the 10 classes"),
    ({"train": 40, "test": 100}, "data.subset.train", "no validation or no training sample"),
    ({"train": 80, "test": 100}, "scenarios[0]", "fewer than the 10 k-means clusters"),
])
def test_a_subset_too_small_for_the_metrics_is_refused(subset, key, message):
    config = load_config(["config/cifar10.yaml"], overrides={"data": {"subset": subset}})
    with pytest.raises(ConfigError, match=rf"key '{re.escape(key)}'.*{message}"):
        validate_config(config, sources=[])


@pytest.mark.parametrize("path, value", [
    (("unlearn", "ft", "lr"), float("nan")),
    (("train", "weight_decay"), float("inf")),
    (("unlearn", "da", "energy"), float("-inf")),
])
def test_non_finite_numbers_are_refused_naming_the_key(path, value):
    overrides: dict = {}
    node = overrides
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    config = load_config([], overrides=overrides)
    with pytest.raises(ConfigError, match=rf"key '{re.escape('.'.join(path))}'.*not a finite number"):
        validate_config(config, sources=[])


@pytest.mark.slow
@pytest.mark.paper
def test_cifar10_smoke_runs_resnet18_through_the_rules(tmp_path: Path):
    """CI's cut-down paper smoke: synthetic CIFAR-10 in the real form, ResNet-18 with crop+flip, MUDA, one +da
    baseline and Boundary Shrinking (an FGSM step through ResNet-18), features, metrics and one table, through
    Snakemake. Every other method runs on ResNet-18 in `make smoke-paper`."""
    from unlearn_da.tools.smoke import run_smoke

    methods = ["muda", "ft+da", "boundary_shrink"]
    summary = run_smoke(tmp_path, datasets=("cifar10",), sizes={"cifar10": (120, 40)}, methods=methods,
                        scenarios=["class0"], targets=["results/cifar10-resnet18/class0/table.md"],
                        report=False, extra={"evaluation": {"noise_floor": False}}, log=lambda m: None)
    # data, split, the table; per model (original, oracle, methods) the job that makes it and its features, metrics
    assert summary["cifar10"]["jobs"] == 3 + 2 * (len(methods) + 2)
    run = tmp_path / "project" / "results" / "cifar10-resnet18"
    table = pd.read_csv(run / "class0" / "table.csv")
    assert list(table["model"]) == ["retrain", "original", *methods]
    assert table["TA_mean"].notna().all() and table["UA_mean"].between(0, 100).all()
    meta = (run / "seed0" / "models" / "original.pt.meta.json").read_text()
    assert '"arch": "resnet18"' in meta and '"augment": "crop_flip"' in meta
    md = (run / "class0" / "table.md").read_text()
    assert "muda" in md
    # the published l1-sparse class-wise row beside our oracle (config/reference); no other method of it ran
    section = md.split("### Published vs reproduced — cifar10 / resnet18 — class0", 1)[1]
    assert "**ℓ1-sparse (Jia et al., NeurIPS 2023), project page" in section and "| retrain (Retrain) |" in section
    published = pd.read_csv(run / "class0" / "published.csv")
    assert set(published["model"]) == {"retrain"} and len(published) == 5
    assert published.loc[published["metric"] == "TA", "published"].item() == 94.83



def test_gpu_check_imports_only_what_a_bare_gpu_machine_has():
    """GPU machines come with torch, numpy, pandas, scikit-learn, seaborn and PyYAML, but no Snakemake,
    jsonschema or tqdm: everything gpu-check runs must import with those blocked."""
    import subprocess
    import sys

    code = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('snakemake', 'jsonschema', 'tqdm', 'dvc'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
from unlearn_da.tools.gpucheck import _validate_if_possible, run_gpu_check
from unlearn_da.tools import bench
from unlearn_da.tools import concurrency
from unlearn_da.data import prepared as data
from unlearn_da.jobs import evaluate
from unlearn_da.jobs import features
from unlearn_da.data import splits
from unlearn_da.data import synthetic
from unlearn_da.reporting import tables
from unlearn_da.jobs import train
from unlearn_da.jobs import unlearn
from unlearn_da.methods import METHOD_MODULES, get_method
for m in METHOD_MODULES:
    get_method(m)
print(_validate_if_possible({}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "schema not checked" in proc.stdout


@pytest.mark.slow
@pytest.mark.paper
def test_gpu_check_measures_what_decides_the_tables_time(tmp_path: Path, monkeypatch):
    """``gpu-check --measure-only`` (quick part) on the CPU at toy size: each step kind and the feature pass
    alone, the table's step mix in 1 and 2 processes, real jobs from start to exit (start-up, work, tail
    from their sidecars), their features against a separate extraction, two real jobs sharing a (fake)
    device through the pool, and the projected hours built from all of it."""
    import json

    from unlearn_da.tools import gpucheck

    code = gpucheck.run_gpu_check("cpu", tmp_path, threads=1, subset=(120, 40), measure_only=True, log=print)
    report = (tmp_path / "gpu-check.md").read_text()
    assert code == 0, report
    saved = json.loads((tmp_path / "gpu-check.json").read_text())
    measured = saved["measured"]
    rates = measured["rates"]
    assert set(rates["alone"]) == {"plain", "da", "small_batch", "features"}
    assert [r["processes"] for r in rates["mixed"]] == [1, 2] and measured["compile"] is None
    assert set(rates["mix"]) == {"plain", "da", "small_batch"} and rates["rates"]["forward_only_cost"] > 0
    startup = {r["rule"]: r for r in measured["startup"]}
    assert set(startup) == {"train_original", "unlearn"}
    for row in startup.values():  # each job's sidecars: start-up, work and tail, inside the job's wall time
        (s, w, t, wall), = zip(row["startup_s"], row["work_s"], row["tail_s"], row["wall_s"], strict=True)
        assert 0 < s and 0 < w and 0 < t and s + w + t < wall
        assert row["features_images"][0] > 0
    stages = {r["stage"]: r for r in saved["stages"]}
    assert stages["fp32 features = a separate extraction"]["ok"]
    assert stages["two jobs share one device (pool)"]["ok"]
    hours = measured["projected_hours"]
    assert set(hours) == {"cifar10", "cifar100"} and set(hours["cifar10"]) == {"1", "8"}
    one, node = hours["cifar10"]["1"], hours["cifar10"]["8"]
    assert one["jobs"] == 204 and one["fixed_h"] > 0 and one["forward_h"] > 0
    assert one["images_h"] + one["forward_h"] + one["fixed_h"] <= one["hours"] * (1 + 1e-9)
    assert node["images_h"] + node["forward_h"] + node["fixed_h"] <= node["hours"] < one["hours"] / 7
    assert "## A real job, start to exit" in report and "## Projected hours" in report
    assert "## The table's step mix" in report
    assert not (tmp_path / "results").exists()  # no method's stage ran
