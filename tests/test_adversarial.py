"""Adversarial battery: hostile or broken inputs across configs, split files, sidecars, checkpoints,
feature files and the command line. Each case asserts the refusal and what its message names; each
runs in well under a few seconds (no training).
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import BIN, REPO, copy_project, env_with_venv
from unlearn_da.core.artifacts import read_json, save_npz, sha256_file, sidecar_path, write_json, write_sidecar
from unlearn_da.core.checkpoints import load_checkpoint, save_checkpoint
from unlearn_da.settings.config import load_config, read_yaml, validate_config
from unlearn_da.settings.config_yaml import MAX_EXPANDED_NODES, load_yaml_text
from unlearn_da.core.errors import ArtifactError, ConfigError, DataError, PipelineError
from unlearn_da.jobs.features import load_features
from unlearn_da.core.models import build_model, model_spec
from unlearn_da.data.splits import MANIFEST, load_split, make_split, write_split

BASE = load_config(base=REPO / "config" / "config.yaml")
SOURCES = [str(REPO / "config" / "config.yaml")]


# ------------------------------------------------------------------ config files: data, never bombs
def _alias_bomb(levels: int, fan: int = 9) -> str:
    lines = [f"a0: &a0 [{', '.join(['1'] * fan)}]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fan)}]")
    return "\n".join(lines) + f"\nunlearn:\n  ft:\n    lr: *a{levels}\n"


BAD_YAML = [
    # (file text, parts of the message)
    (_alias_bomb(9), ["line 6", "expand to more than", "alias bomb"]),
    (_alias_bomb(7), ["expand to more than"]),
    ("a: &x [1, *x]\n", ["recursive"]),
    ("unlearn:\n  ft:\n    lr: 0.5\nseeds: [0]\nunlearn:\n  ga:\n    lr: 0.1\n",
     ["line 5", "key 'unlearn' is given twice (lines 1 and 5)"]),
    ("unlearn:\n  ft:\n    lr: 0.5\n    epochs: 2\n    lr: 0.1\n", ["key 'lr' is given twice (lines 3 and 5)"]),
    ("precision:\n  amp: on\n", ["line 2", "'on' is read as a boolean", "write true or false"]),
    ("data:\n  download: yes\n", ["'yes' is read as a boolean"]),
    ("unlearn:\n  ft:\n    lr: 1e-3\n", ["line 3", "'1e-3' is read as text", "write 1.0e-3"]),
    ("unlearn:\n  ft:\n    lr: -5E+2\n", ["write -5.0e+2"]),
    ("- just\n- a list\n", ["top level must be a mapping"]),
    ("a: [1, 2\n", ["not valid YAML"]),
    ("{x: 1}: 2\n", ["a key must be a plain value"]),
    ("__use_yte__: true\nseeds:\n  ?if True:\n    - 0\n", ["'__use_yte__'", "run the Python in it"]),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", ["line 1", "nested more than 32 levels deep"]),  # was a RecursionError
    ("a: " + "[" * 40 + "]" * 40 + "\n", ["nested more than 32 levels deep"]),
    ("run_tag: a\x07b\n", ["not valid YAML", "unacceptable character #x0007"]),  # was a ReaderError traceback
    ("b: &b {lr: 0.1}\nc: &c {epochs: 2}\nunlearn:\n  ft:\n    <<: *b\n    <<: *c\n",
     ["line 6", "`<<` is given twice (lines 5 and 6)"]),  # the last `<<` won silently
]


@pytest.fixture(params=["libyaml", "python"])
def yaml_parser(request, monkeypatch):
    """Both parsers the strict loader runs on: libyaml's where PyYAML has it, the pure-Python one otherwise."""
    from unlearn_da.settings import config_yaml

    if request.param == "python":
        monkeypatch.setattr(config_yaml, "_PARSER", config_yaml._StrictLoader)
        monkeypatch.setattr(config_yaml, "_SCANNER", config_yaml.yaml.SafeLoader)
    elif not config_yaml.yaml.__with_libyaml__:
        pytest.skip("PyYAML without libyaml")
    return request.param


@pytest.mark.parametrize("text,expected", BAD_YAML, ids=[f"yaml{i}" for i in range(len(BAD_YAML))])
def test_a_bad_config_file_is_refused_quickly_naming_file_and_line(tmp_path, text, expected, yaml_parser):
    path = tmp_path / "overlay.yaml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        read_yaml(path)
    assert time.perf_counter() - start < 2
    msg = str(err.value)
    assert msg.startswith(str(path)) and len(msg) < 1000, msg
    for part in expected:
        assert part in msg, f"{part!r} missing from: {msg}"


def test_an_alias_bomb_overlay_given_to_validation_fails_fast_naming_the_overlay(tmp_path):
    """The whole path a run takes: validation reads every source with the strict loader first."""
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb(9))
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb\.yaml: line 6: .*alias bomb"):
        validate_config(copy.deepcopy(BASE), sources=[*SOURCES, str(path)])
    assert time.perf_counter() - start < 5


def test_both_parsers_read_the_shipped_configs_and_schema_alike(monkeypatch):
    from unlearn_da.settings import config_yaml

    files = [REPO / "workflow/schemas/config.schema.yaml", *sorted((REPO / "config").glob("*.yaml"))]
    fast = [config_yaml.load_yaml_file(f) for f in files]
    monkeypatch.setattr(config_yaml, "_PARSER", config_yaml._StrictLoader)
    monkeypatch.setattr(config_yaml, "_SCANNER", config_yaml.yaml.SafeLoader)
    assert [config_yaml.load_yaml_file(f) for f in files] == fast


def test_shared_aliases_below_the_limit_still_load():
    doc = load_yaml_text("base: &b {lr: 0.1, epochs: 2}\nft: *b\nga: *b\n", "ok.yaml")
    assert doc["ft"] == doc["ga"] == {"lr": 0.1, "epochs": 2}
    assert MAX_EXPANDED_NODES >= 10_000


def test_oversized_and_non_utf8_files_are_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("x: '" + "a" * 1_100_000 + "'\n")
    with pytest.raises(ConfigError, match=r"big\.yaml: .*at most 1,000,000 bytes"):
        read_yaml(big)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("run_tag: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin\.yaml: not UTF-8"):
        read_yaml(latin)


def test_every_shipped_config_passes_the_strict_loader():
    for path in sorted((REPO / "config").glob("*.yaml")) + sorted((REPO / "tests" / "config").glob("*.yaml")):
        assert isinstance(read_yaml(path), dict), path


def _validate(overrides: dict, files: list[Path] = ()) -> str:
    config = load_config(list(files), overrides=overrides, base=REPO / "config" / "config.yaml")
    with pytest.raises(ConfigError) as err:
        validate_config(config, sources=[*SOURCES, *map(str, files)])
    return str(err.value)


BAD_VALUES = [
    ({"seeds": [2**32]}, ["seeds[0]", "must be <= 2000000000"]),
    ({"seeds": [2**70]}, ["seeds[0]", "out of range"]),
    ({"evaluation": {"seed": 2**32}}, ["evaluation.seed", "out of range"]),
    ({"data": {"split_seed": 2**40}}, ["data.split_seed", "out of range"]),
    ({"tuning": {"budget": 10**9}}, ["tuning.budget", "must be <= 256"]),
    ({"model": {"width": 10**6}}, ["model.width", "must be <= 1024"]),
    ({"train": {"epochs": 10**9}}, ["train.epochs", "out of range"]),
    ({"run_tag": "a" * 300}, ["run_tag", "longer than 64 characters", "(302 characters)"]),
    ({"scenarios": ["random0.5"]}, ["scenarios[0]", "forgets about 6 samples", "10 k-means clusters"]),
    ({"scenarios": ["random010"]}, ["scenarios[0]", "write it as 'random10'"]),
    ({"scenarios": ["random10.0", "class03"]}, ["write it as 'random10'", "write it as 'class3'"]),
    ({"tuning": {"scenarios": ["backdoor05"]}}, ["tuning.scenarios[0]", "write it as 'backdoor5'"]),
    ({"train": {"schedule": "x" * 100_000}}, ["train.schedule", "(100002 characters)"]),
]


@pytest.mark.parametrize("overrides,expected", BAD_VALUES, ids=[str(o)[:40] for o, _ in BAD_VALUES])
def test_a_limit_is_checked_before_the_first_job(overrides, expected):
    msg = _validate(overrides)
    assert len(msg) < 2000, msg[:300]
    for part in expected:
        assert part in msg, f"{part!r} missing from: {msg}"


def test_the_kmeans_bound_matches_the_prepared_training_set(tmp_path):
    """The check's training-set size is the one ``data.prepare`` makes for the whole data set."""
    from unlearn_da.settings.config import _fit_size
    from unlearn_da.data.prepared import load_prepared, prepare
    from unlearn_da.data.datasets import DATASETS

    prepare("digits", BASE["data"], tmp_path / "dataset.npz")
    assert _fit_size(BASE, DATASETS["digits"]) == len(load_prepared(tmp_path / "dataset.npz").y_train)
    validate_config(load_config(overrides={"scenarios": ["random0.8"]}, base=REPO / "config" / "config.yaml"),
                    sources=SOURCES)  # 10 samples: enough


def test_a_value_is_blamed_on_the_file_or_the_command_line_it_came_from(tmp_path):
    overlay = tmp_path / "mine.yaml"
    overlay.write_text("train:\n  epochs: -1\n")
    assert "mine.yaml: key 'train.epochs'" in _validate({}, [overlay])
    # set with --config key=value: not config/config.yaml's value, so not its fault
    msg = _validate({"train": {"lr": -1.0}})
    assert "command-line --config: key 'train.lr'" in msg and "config.yaml" not in msg
    # an unknown key is blamed on the file that added it, not on the parent's file
    overlay.write_text("train:\n  nonsense: 1\n")
    assert "mine.yaml: key 'train': unknown key(s) nonsense" in _validate({}, [overlay])


def test_an_overlay_the_loader_cannot_parse_is_named_itself(tmp_path):
    overlay = tmp_path / "broken.yaml"
    overlay.write_text("seeds: [0, 1\n")
    with pytest.raises(ConfigError) as err:
        validate_config(copy.deepcopy(BASE), sources=[*SOURCES, str(overlay)])
    assert str(err.value).startswith(str(overlay)) and "config.yaml" not in str(err.value)


def test_make_pipeline_refuses_a_yte_overlay_before_snakemake_runs_it(tmp_path):
    project = copy_project(tmp_path / "project")
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.yaml"
    evil.write_text("__use_yte__: true\nseeds:\n"
                    f"  ?if __import__('pathlib').Path({str(marker)!r}).write_text('x') > 0:\n    - 0\n")
    proc = subprocess.run(["make", "--no-print-directory", "pipeline", f"PROFILE={evil}", "CORES=1",
                           f"VENV={Path(sys.prefix)}"], cwd=project, env=env_with_venv(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "'__use_yte__' asks Snakemake to evaluate the file as a YTE template" in proc.stderr
    assert not marker.exists(), "the template's Python ran"


def test_check_config_command_refuses_with_exit_2(tmp_path):
    overlay = tmp_path / "dup.yaml"
    overlay.write_text("seeds: [0]\nseeds: [1]\n")
    proc = subprocess.run([str(BIN / "python"), "-m", "unlearn_da", "check-config", "--configfile", str(overlay)],
                          cwd=REPO, capture_output=True, text=True, env=env_with_venv(), timeout=60)
    assert proc.returncode == 2 and "key 'seeds' is given twice (lines 1 and 2)" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------ split files: exact
N = 40


def _split_dir(tmp_path: Path) -> Path:
    y = np.arange(N) % 4
    dataset = tmp_path / "dataset.npz"
    dataset.write_bytes(b"stand-in")
    d = tmp_path / "split"
    d.mkdir()
    write_split(make_split(y, "random25", 0), d, dataset)
    return d


def _tamper(d: Path, name: str, array: np.ndarray | None = None, raw: bytes | None = None) -> None:
    """Replace an index file and rewrite the manifest's checksum to match (a forgery, not corruption)."""
    path = d / name
    if raw is not None:
        path.write_bytes(raw)
    else:
        with open(path, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
    manifest = read_json(d / MANIFEST)
    manifest["files"][name] = sha256_file(path)
    write_json(d / MANIFEST, manifest)


def _with_duplicate(forget: np.ndarray, retain: np.ndarray):
    # forget's first index twice, retain's first index dropped into nothing: sizes still add up
    return np.concatenate([forget, forget[:1]]), retain[1:]


SPLIT_FORGERIES = [
    ("duplicate", lambda f, r: _with_duplicate(f, r), "forget.npy", "appears more than once"),
    ("negative", lambda f, r: (np.concatenate([[-3], f[1:]]), r), "forget.npy", "index -3 lies outside"),
    ("too large", lambda f, r: (f, np.concatenate([r[:-1], [N + 7]])), "retain.npy", f"index {N + 7} lies outside"),
    ("float", lambda f, r: (f.astype(np.float64), r), "forget.npy", "not a list of integer indices"),
    ("2-D", lambda f, r: (f.reshape(1, -1), r), "forget.npy", "shape (1,"),
    ("overlap", lambda f, r: (f, np.concatenate([r, f[:1]])[1:]), "forget.npy", "is also in"),
    ("missing", lambda f, r: (f[1:], r), "split", "is in neither forget.npy nor retain.npy"),
    ("empty forget", lambda f, r: (f[:0], r), "forget.npy", "the forget set is empty"),
]


@pytest.mark.parametrize("what,forge,names,expected", SPLIT_FORGERIES, ids=[f[0] for f in SPLIT_FORGERIES])
def test_a_split_that_is_not_an_exact_partition_is_refused(tmp_path, what, forge, names, expected):
    d = _split_dir(tmp_path)
    split = load_split(d, N)
    forget, retain = forge(split.forget, split.retain)
    _tamper(d, "forget.npy", forget)
    _tamper(d, "retain.npy", retain)
    with pytest.raises(PipelineError) as err:
        load_split(d, N)
    msg = str(err.value)
    assert names in msg and expected in msg, msg
    if what == "duplicate":
        assert f"index {int(split.forget[0])} appears more than once" in msg


def test_an_empty_index_file_and_a_manifest_without_a_field_name_the_file(tmp_path):
    d = _split_dir(tmp_path)
    _tamper(d, "retain.npy", raw=b"")
    with pytest.raises(ArtifactError, match=r"retain\.npy: unreadable index file"):
        load_split(d, N)
    (tmp_path / "b").mkdir()
    d = _split_dir(tmp_path / "b")
    manifest = read_json(d / MANIFEST)
    del manifest["seed"]
    write_json(d / MANIFEST, manifest)
    with pytest.raises(ArtifactError, match=r"manifest\.json: field 'seed' is missing \(made by rule 'split'\)"):
        load_split(d, N)
    manifest["seed"] = 0
    del manifest["files"]["retain.npy"]
    write_json(d / MANIFEST, manifest)
    with pytest.raises(ArtifactError, match=r"manifest\.json: field 'files' lists no checksum for retain\.npy"):
        load_split(d, N)


# ------------------------------------------------------------------ checkpoints and sidecars
SPEC = model_spec("smallcnn", 10, 1, 8, 2)


def _checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    save_checkpoint(build_model(SPEC), path, "train_original", {"spec": SPEC})
    return path


def _rewrite_sidecar(path: Path, **changes) -> None:
    meta = read_json(sidecar_path(path))
    meta.update(changes)
    meta["sha256"] = sha256_file(path)
    for key in [k for k, v in changes.items() if v is None]:
        del meta[key]
    write_json(sidecar_path(path), meta)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_forged_checkpoint_is_refused_without_unsafe_advice_or_running_code(tmp_path):
    path = _checkpoint(tmp_path)
    marker = tmp_path / "code-ran"
    with open(path, "wb") as fh:
        torch.save({"weight": _Payload(marker)}, fh)
    _rewrite_sidecar(path)
    with pytest.raises(ArtifactError) as err:
        load_checkpoint(path, "train_original")
    msg = str(err.value)
    assert "asks to import" in msg and "system" in msg, msg
    assert "weights_only=False" not in msg and "safe_globals" not in msg and "weights_only` set" not in msg
    assert not marker.exists()


@pytest.mark.parametrize("content,expected", [
    (lambda: [torch.zeros(2)], "holds a list, not a state dict"),
    (lambda: {"w": 3}, "holds a dict, not a state dict of named tensors"),
], ids=["list", "dict of ints"])
def test_a_checkpoint_that_is_not_named_tensors_is_refused(tmp_path, content, expected):
    path = _checkpoint(tmp_path)
    with open(path, "wb") as fh:
        torch.save(content(), fh)
    _rewrite_sidecar(path)
    with pytest.raises(ArtifactError, match=expected):
        load_checkpoint(path, "train_original")


def test_a_truncated_checkpoint_message_has_no_unsafe_advice(tmp_path):
    path = _checkpoint(tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    _rewrite_sidecar(path)
    with pytest.raises(ArtifactError) as err:
        load_checkpoint(path, "train_original")
    assert "unreadable checkpoint" in str(err.value) and "weights_only" not in str(err.value)


@pytest.mark.parametrize("spec,expected", [
    (None, "field 'spec' is missing"),
    ({**SPEC, "width": 10**9}, "width 1000000000 is not an integer in 1..1024"),
    ({**SPEC, "arch": "os.system"}, "names no known model"),
], ids=["no spec", "huge width", "unknown arch"])
def test_a_sidecar_with_a_missing_or_hostile_spec_names_file_and_field(tmp_path, spec, expected):
    path = _checkpoint(tmp_path)
    _rewrite_sidecar(path, spec=spec)
    with pytest.raises(ArtifactError) as err:
        load_checkpoint(path, "train_original")
    assert "model.pt.meta.json" in str(err.value) and expected in str(err.value), str(err.value)


def test_verify_loads_every_checkpoint_even_when_its_sidecar_matches(tmp_path):
    """``make verify`` once said "all match" for a forged checkpoint whose sidecar was rewritten."""
    from unlearn_da.tools.provenance import expected_artifacts, verify

    config = validate_config(load_config([REPO / "tests" / "config" / "tiny.yaml"],
                                         base=REPO / "config" / "config.yaml"),
                             sources=[*SOURCES, str(REPO / "tests" / "config" / "tiny.yaml")])
    rel, rule, params, code = next(a for a in expected_artifacts(config) if a[0].endswith(".pt"))
    path = tmp_path / rel
    path.parent.mkdir(parents=True)
    with open(path, "wb") as fh:
        torch.save({"weight": _Payload(tmp_path / "code-ran")}, fh)
    write_sidecar(path, rule, {"params": params, "code": code, "spec": SPEC})
    problems, checked = verify(config, tmp_path)
    assert checked == 1 and len(problems) == 1 and "asks to import" in problems[0], problems
    with open(path, "wb") as fh:  # genuine weights of another model than the sidecar names
        torch.save(build_model(model_spec("smallcnn", 10, 1, 8, 3)).state_dict(), fh)
    write_sidecar(path, rule, {"params": params, "code": code, "spec": SPEC})
    problems, _ = verify(config, tmp_path)
    assert len(problems) == 1 and "do not fit the model spec" in problems[0], problems
    assert not (tmp_path / "code-ran").exists()


def test_verify_refuses_a_checkpoint_of_another_width_whose_sidecar_describes_that_width(tmp_path):
    """docs/reliability.md promises make verify checks checkpoints against the config, not only themselves."""
    from unlearn_da.tools.provenance import expected_artifacts, verify

    config = validate_config(load_config([REPO / "tests" / "config" / "tiny.yaml"],
                                         base=REPO / "config" / "config.yaml"),
                             sources=[*SOURCES, str(REPO / "tests" / "config" / "tiny.yaml")])
    rel, rule, params, code = next(a for a in expected_artifacts(config) if a[0].endswith(".pt"))
    path = tmp_path / rel
    path.parent.mkdir(parents=True)
    wide = model_spec("smallcnn", 10, 1, 8, 16)  # the tiny config builds width 8
    torch.save(build_model(wide).state_dict(), path)
    write_sidecar(path, rule, {"params": params, "code": code, "spec": wide})
    problems, checked = verify(config, tmp_path)
    assert checked == 1 and len(problems) == 1, problems
    assert "a model of another shape than the config builds (width 16, the config's 8" in problems[0]


def test_verify_checks_the_splits_against_the_data_set(tmp_path, digits_file):
    """A split folder copied from another seed, and one of another data set, are found by make verify."""
    import shutil

    from unlearn_da import pipeline as P
    from unlearn_da.data.prepared import load_prepared
    from unlearn_da.tools.provenance import verify

    config = validate_config(load_config([REPO / "tests" / "config" / "tiny.yaml"],
                                         base=REPO / "config" / "config.yaml"),
                             sources=[*SOURCES, str(REPO / "tests" / "config" / "tiny.yaml")])
    prepared = tmp_path / P.prepared_dir(config)
    prepared.mkdir(parents=True)
    shutil.copy(digits_file, prepared / "dataset.npz")
    shutil.copy(f"{digits_file}.meta.json", prepared / "dataset.npz.meta.json")
    y = load_prepared(prepared / "dataset.npz").y_train
    for scenario in config["scenarios"]:
        write_split(make_split(y, scenario, 0), prepared / "splits" / scenario / "seed0", prepared / "dataset.npz")
    problems, checked = verify(config, tmp_path)  # (the fixture's data set was prepared with other params)
    assert [p for p in problems if "splits" in p] == [] and checked == len(config["scenarios"]) + 1
    shutil.rmtree(prepared / "splits" / "class0" / "seed0")
    shutil.copytree(prepared / "splits" / "random10" / "seed0", prepared / "splits" / "class0" / "seed0")
    problems, _ = verify(config, tmp_path)
    split_problems = [p for p in problems if "splits" in p]
    assert len(split_problems) == 1
    assert "the split of 'random10' seed 0, in the folder of 'class0' seed 0" in split_problems[0]


# ------------------------------------------------------------------ feature files
def _features(tmp_path: Path, **arrays) -> Path:
    path = tmp_path / "features.npz"
    base = {f"{s}_{k}": np.zeros((3, 2), np.float32) for s in ("train", "val", "test") for k in ("features", "logits")}
    base.update(arrays)
    save_npz(path, base)
    write_sidecar(path, "unlearn", {})
    return path


def test_feature_files_with_nan_missing_arrays_or_objects_are_refused(tmp_path):
    with pytest.raises(ArtifactError, match="train_logits holds NaN"):
        load_features(_features(tmp_path, train_logits=np.full((3, 2), np.nan, np.float32)))
    path = _features(tmp_path)
    arrays = dict(np.load(path))
    del arrays["val_features"]
    save_npz(path, arrays)
    write_sidecar(path, "unlearn", {})
    with pytest.raises(ArtifactError, match=r"missing arrays \['val_features'\]"):
        load_features(path)
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:  # an object array: loading it would unpickle
        with zf.open("train_features.npy", "w") as fh:
            np.lib.format.write_array(fh, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    write_sidecar(path, "unlearn", {})
    with pytest.raises(ArtifactError, match="unreadable feature file"):
        load_features(path)


def test_a_json_file_missing_a_field_names_the_file_not_a_bare_key(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"outer": {"inner": 1}}))
    record = read_json(path, "metrics")
    with pytest.raises(KeyError) as err:  # still a KeyError for code that tests for a field
        record["outer"]["absent"]
    assert str(err.value).startswith(f"{path}: field 'absent' is missing (made by rule 'metrics')")
    assert pickle.loads(pickle.dumps(record)) == {"outer": {"inner": 1}}


# ------------------------------------------------------------------ the command line
@pytest.mark.parametrize("args,expected", [
    (["split", "--data", "x.npz", "--scenario", "random10", "--seed", "0", "--out-dir", "o", "--params", "{"],
     "--params is not valid JSON"),
    (["split", "--data", "x.npz", "--scenario", "random10", "--seed", "0", "--out-dir", "o", "--params", "[1]"],
     "--params must be a JSON object"),
    (["check-config", "--configfile", "nowhere.yaml"], "'nowhere.yaml': config file not found"),
    (["check-config", "--configfile", "my", "profile.yaml"], "'my': config file not found (make's PROFILE lists"),
    (["check-config", "--configfile", "fifo.yaml"], "'fifo.yaml': not a regular file"),
    (["split", "--data", "nowhere.npz", "--scenario", "random010", "--seed", "0", "--out-dir", "o",
      "--params", "{}"], "nowhere.npz"),
], ids=["params not json", "params not object", "missing config", "a space in PROFILE", "a FIFO", "missing data"])
def test_bad_command_lines_get_one_line_not_a_traceback(tmp_path, args, expected):
    os.mkfifo(tmp_path / "fifo.yaml")  # read, it would wait for a writer forever
    proc = subprocess.run([str(BIN / "python"), "-m", "unlearn_da", *args], cwd=tmp_path, capture_output=True,
                          text=True, env={**env_with_venv(), "PYTHONPATH": str(REPO / "src")}, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_scenario_with_two_spellings_is_refused_by_the_split_job_too():
    with pytest.raises(ConfigError, match="write it as 'random10'"):
        make_split(np.arange(N) % 4, "random10.0", 0)


def test_data_errors_are_pipeline_errors():
    assert issubclass(DataError, PipelineError) and issubclass(ConfigError, PipelineError)


# ------------------------------------------------------------------ identity: every file is what its job expects
def _reseal(d: Path, **fields) -> None:
    manifest = read_json(d / MANIFEST)
    manifest.update(fields)
    write_json(d / MANIFEST, manifest)


def test_a_split_folder_copied_from_another_scenario_or_seed_is_refused(tmp_path):
    """The manifest names its scenario and seed; the pipeline's folder for them is .../<scenario>/seed<N>."""
    y = np.arange(N) % 4
    dataset = tmp_path / "dataset.npz"
    dataset.write_bytes(b"stand-in")
    src = tmp_path / "splits" / "random25" / "seed0"
    src.mkdir(parents=True)
    write_split(make_split(y, "random25", 0), src, dataset)
    assert load_split(src, N).seed == 0
    for scenario, seed in (("random25", 1), ("random10", 0)):
        dst = tmp_path / "splits" / scenario / f"seed{seed}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        import shutil

        shutil.copytree(src, dst)
        with pytest.raises(ArtifactError, match=f"the split of 'random25' seed 0, in the folder of '{scenario}' seed {seed}"):
            load_split(dst, N)


def test_a_class_split_whose_forget_set_is_not_that_class_is_refused(tmp_path):
    y = np.arange(N) % 4
    dataset = tmp_path / "dataset.npz"
    dataset.write_bytes(b"stand-in")
    d = tmp_path / "class1"
    d.mkdir()
    write_split(make_split(y, "class1", 0), d, dataset)
    other = make_split(y, "class2", 0)
    _tamper(d, "forget.npy", other.forget)
    _tamper(d, "retain.npy", other.retain)
    assert len(load_split(d, N).forget) == N // 4  # a partition, and the counts agree: only the labels tell
    with pytest.raises(DataError, match="the forget set of class1 is not exactly the training samples of class 1"):
        load_split(d, N, y_train=y)


def test_a_split_of_another_data_set_is_refused(tmp_path):
    d = _split_dir(tmp_path)
    other = tmp_path / "other.npz"
    other.write_bytes(b"another data set")
    with pytest.raises(DataError, match="the split was drawn from another data set than"):
        load_split(d, N, data_file=other)
    load_split(d, N, data_file=tmp_path / "dataset.npz")


@pytest.mark.parametrize("fields, expected", [
    ({"files": {"/dev/zero": "0" * 64}}, "field 'files' names '/dev/zero'"),
    ({"files": {"../../etc/passwd": "0" * 64}}, "field 'files' names '../../etc/passwd'"),
    ({"seed": "0"}, "field 'seed' is '0', not an integer"),
    ({"forgotten_class": 2}, "scenario 'random25' with forgotten class 2"),
    ({"n_forget": 3}, "indices where"),
], ids=["device", "traversal", "seed as text", "class of a random split", "count"])
def test_a_forged_manifest_is_refused_before_any_file_is_read(tmp_path, fields, expected):
    d = _split_dir(tmp_path)
    _reseal(d, **fields)
    start = time.perf_counter()
    with pytest.raises(ArtifactError, match=re.escape(expected)):
        load_split(d, N)
    assert time.perf_counter() - start < 2  # /dev/zero would be read forever


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_an_artifact_that_is_not_a_regular_file_is_refused_not_read(tmp_path, kind):
    from unlearn_da.core.artifacts import regular_file

    path = tmp_path / "x.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()
    expected = {"fifo": "a FIFO", "device": "a device", "directory": "a directory"}[kind]
    with pytest.raises(ArtifactError, match=f"x.json: {expected}, not a regular file"):
        read_json(path, "metrics")
    with pytest.raises(ArtifactError, match="not a regular file"):
        sha256_file(path)
    with pytest.raises(ArtifactError, match=r"bytes, more than the 10 such a file may hold"):
        (tmp_path / "big").write_bytes(b"x" * 11)
        regular_file(tmp_path / "big", max_bytes=10)


def test_a_deeply_nested_json_artifact_is_one_line(tmp_path):
    path = tmp_path / "m.json"
    path.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ArtifactError, match=r"m\.json: nested too deeply .*\(made by rule 'metrics'\)"):
        read_json(path, "metrics")


def _feature_file(tmp_path: Path, **over) -> Path:
    arrays = {f"{s}_{k}": np.zeros((n, 4 if k == "logits" else 8), dtype=np.float32)
              for s, n in (("train", 6), ("val", 3), ("test", 5)) for k in ("features", "logits")}
    arrays.update(over)
    path = tmp_path / "ft.npz"
    save_npz(path, arrays)
    write_sidecar(path, "unlearn", {})
    return path


ROWS = {"train": 6, "val": 3, "test": 5}


@pytest.mark.parametrize("over, expected", [
    ({"val_logits": np.zeros((3, 11), np.float32)}, "val_logits has 11 columns for 4 classes"),
    ({"test_features": np.zeros((4, 8), np.float32), "test_logits": np.zeros((4, 4), np.float32)},
     "test: 4 feature and 4 logit rows where the data set has 5"),
    ({"train_logits": np.zeros((6, 4, 1), np.float32)}, "train_logits is a float32 array of shape (6, 4, 1)"),
    ({"train_features": np.zeros((6, 8), np.int64)}, "train_features is a int64 array"),
], ids=["11 logit columns", "rows", "rank", "dtype"])
def test_a_feature_file_of_the_wrong_shape_is_refused_not_scored(tmp_path, over, expected):
    """11 logit columns for 10 classes gave silently wrong metrics."""
    path = _feature_file(tmp_path, **over)
    with pytest.raises(ArtifactError, match=re.escape(expected)):
        load_features(path, ROWS, 4)
    (tmp_path / "ok").mkdir()
    assert set(load_features(_feature_file(tmp_path / "ok"), ROWS, 4)) == {f"{s}_{k}" for s in ROWS for k in
                                                                          ("features", "logits")}


def test_an_npz_with_a_huge_header_is_one_line(tmp_path):
    import zipfile

    path = tmp_path / "ft.npz"
    with zipfile.ZipFile(path, "w") as zf:
        header = b"\x93NUMPY\x02\x00" + (200000).to_bytes(4, "little") + b"{" + b" " * 200000
        zf.writestr("train_features.npy", header)
    write_sidecar(path, "unlearn", {})
    with pytest.raises(ArtifactError, match=r"ft\.npz: unreadable feature file") as err:
        load_features(path)
    assert "\n" not in str(err.value)  # numpy's own reason spans three lines


def test_verify_refuses_features_of_another_data_set_whose_sidecar_matches(tmp_path):
    """A feature file with a logit column too many (a model of 11 classes) passes its own checksum and
    params; make verify reads it as the metrics jobs do and names what does not fit the config."""
    from unlearn_da.tools.provenance import expected_artifacts, verify

    config = validate_config(load_config([REPO / "tests" / "config" / "tiny.yaml"],
                                         base=REPO / "config" / "config.yaml"),
                             sources=[*SOURCES, str(REPO / "tests" / "config" / "tiny.yaml")])
    rel, rule, params, code = next(a for a in expected_artifacts(config) if "/features/" in a[0])
    path = tmp_path / rel
    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for classes, expect in ((10, []), (11, ["train_logits has 11 columns for 10 classes"])):
        arrays = {f"{s}_{k}": rng.normal(size=(5, 4 if k == "features" else classes)).astype(np.float32)
                  for s in ("train", "val", "test") for k in ("features", "logits")}
        np.savez(path, **arrays)
        write_sidecar(path, rule, {"params": params, "code": code})
        problems, checked = verify(config, tmp_path)
        assert checked == 1 and [p for p in problems if not any(e in p for e in expect)] == [], problems
        assert len(problems) == len(expect), problems


def test_a_yaml_merge_key_override_is_read_as_yaml_means_it(tmp_path):
    """`<<: *base` then a key of its own: valid YAML whose own key wins (not a key given twice)."""
    path = tmp_path / "overlay.yaml"
    path.write_text("base: &base {lr: 0.1, epochs: 3}\nft:\n  <<: *base\n  lr: 0.2\n")
    assert read_yaml(path)["ft"] == {"lr": 0.2, "epochs": 3}


def test_every_value_a_rule_puts_on_a_command_line_is_quoted():
    """A path or value with a space or a quote (a run_tag, a scenario, a file name) cannot split an argument:
    every placeholder in the rules' shell commands is quoted (`:q`), the thread count aside."""
    import re

    unquoted = []
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        for block in re.findall(r"shell:\n((?:\s+\".*\"\n)+)", text):
            unquoted += [f"{smk.name}: {m}" for m in re.findall(r"\{[^{}]+\}", block)
                         if not m.endswith(":q}") and m != "{threads}"]
    assert not unquoted, unquoted
