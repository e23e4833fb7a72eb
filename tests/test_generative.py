"""Generated inputs at the front doors: config overlays (structurally valid and not) and mutated
artifacts. Every input is either accepted (and the config's rules can be planned) or refused with
one line naming the file (and, for a config, the key); never a traceback, never a hang."""

from __future__ import annotations

import copy
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from unlearn_da import pipeline as P
from unlearn_da.core.artifacts import read_json, save_npz, sha256_file, write_json, write_sidecar
from unlearn_da.core.errors import ConfigError, PipelineError
from unlearn_da.data.splits import MANIFEST, load_split, make_split, write_split
from unlearn_da.jobs.features import load_features
from unlearn_da.settings.config import load_config, read_yaml, validate_config

BASE = load_config()
SECONDS = 5  # a front door answers within this, whatever it is given

# every leaf of the default config, as a key path: the places an overlay can set
LEAVES: list[tuple[str, ...]] = []


def _walk(node, path=()):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            _walk(value, path + (key,))
    else:
        LEAVES.append(path)


_walk(BASE)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.sampled_from([0, 1, -1, 2**31, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1.0, 1e-300, 1e300, -0.5]),
    st.text(max_size=12), st.sampled_from(["ft", "ft+da", "muda", "random10", "class0", "a\nb", "x\x1b[0m",
                                           "auto", "none", "epoch", "../etc", "1e-3"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=6)
def _like(default):
    """Values of the default's own type and near its size: mostly valid configs (a random value of any
    type is refused almost always, and the accepting path must be exercised too)."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(max(0, default // 2), default * 2 + 1)
    if isinstance(default, float):
        return st.floats(default / 3, default * 3 + 1e-9, allow_nan=False) if default > 0 else st.just(default)
    return st.just(default)


def _edit(path):
    node = BASE
    for key in path:
        node = node[key] if isinstance(node, dict) else None
    return st.tuples(st.just(path), st.one_of(_like(node), values) if node is not None else values)


edits = st.lists(st.sampled_from(LEAVES).flatmap(_edit), min_size=1, max_size=3)
extra_keys = st.lists(st.tuples(st.sampled_from([(), ("unlearn",), ("unlearn", "ft"), ("tuning",), ("audit",)]),
                                st.text(max_size=10), values), max_size=1)


def _overlay(tmp_path: Path, edit_list, extras) -> Path:
    """Write the edits as an overlay file (only what they set), as a user would."""
    overlay: dict = {}
    for path, value in edit_list:
        node = overlay
        for key in path[:-1]:
            node = node.setdefault(key, {}) if isinstance(node.get(key, {}), dict) else node
        node[path[-1]] = value
    for where, key, value in extras:
        node = overlay
        for k in where:
            node = node.setdefault(k, {}) if isinstance(node.get(k, {}), dict) else node
        node[key] = value
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay, allow_unicode=True))
    return path


def _one_line_per_problem(message: str, overlay: Path) -> None:
    lines = message.splitlines()
    assert "Traceback" not in message
    if lines[0] == "invalid configuration:":
        for line in lines[1:]:
            assert line.startswith("  - "), line
            assert re.match(r"  - (config/config\.yaml|.*overlay\.yaml|command-line --config): key '", line), line
            assert len(line) < 2000
    else:  # the file itself (YAML) was refused: one line naming it
        assert len(lines) <= 3 and str(overlay) in lines[0], message


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(edit_list=edits, extras=extra_keys)
def test_a_generated_overlay_is_accepted_and_plans_or_refused_in_one_line_per_key(tmp_path, edit_list, extras):
    overlay = _overlay(tmp_path, edit_list, extras)
    start = time.perf_counter()
    try:
        config = validate_config(load_config([overlay]), sources=["config/config.yaml", str(overlay)])
    except ConfigError as exc:
        event("refused")
        _one_line_per_problem(str(exc), overlay)
    else:
        event("accepted")
        # what the Snakefile computes from a valid config to plan its jobs
        targets = P.final_targets(config)
        assert targets and all(isinstance(t, str) and "\n" not in t for t in targets)
        for method in config["unlearn"]["methods"]:
            P.unlearn_params(config, method)
        P.tuning_provenance(config)
    assert time.perf_counter() - start < SECONDS


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_generated_config_text_is_read_as_a_mapping_or_refused_naming_the_file(tmp_path, text):
    path = tmp_path / "overlay.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass") if _encodable(text) else path.write_bytes(
        text.encode("utf-8", errors="replace"))
    start = time.perf_counter()
    try:
        data = read_yaml(path)
    except ConfigError as exc:
        assert str(path) in str(exc).splitlines()[0] and "Traceback" not in str(exc)
    else:
        assert isinstance(data, dict)
    assert time.perf_counter() - start < SECONDS


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


# ------------------------------------------------------------------ mutated artifacts
N = 40


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A valid split folder and feature file to mutate."""
    root = tmp_path_factory.mktemp("good")
    y = np.arange(N) % 4
    dataset = root / "dataset.npz"
    dataset.write_bytes(b"stand-in")
    split = root / "splits" / "class1" / "seed0"
    write_split(make_split(y, "class1", 0), split, dataset)
    features = root / "ft.npz"
    save_npz(features, {f"{s}_{k}": np.ones((n, 4 if k == "logits" else 8), np.float32)
                        for s, n in (("train", N), ("val", 5), ("test", 6)) for k in ("features", "logits")})
    write_sidecar(features, "unlearn", {})
    return {"root": root, "y": y, "dataset": dataset, "split": split, "features": features}


def _clone(good, tmp_path: Path) -> dict:
    import shutil

    shutil.copytree(good["root"], tmp_path / "c", dirs_exist_ok=True)
    base = tmp_path / "c"
    return {**good, "dataset": base / "dataset.npz", "split": base / "splits" / "class1" / "seed0",
            "features": base / "ft.npz"}


mutations = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), min_size=1, max_size=4)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=64)),
)


def _mutate(path: Path, mutation) -> None:
    raw = bytearray(path.read_bytes())
    kind, arg = mutation
    if kind == "truncate":
        raw = raw[: int(arg * len(raw))]
    elif kind == "flip":
        for where, xor in arg:
            raw[min(int(where * len(raw)), len(raw) - 1)] ^= xor
    else:
        raw += arg
    path.write_bytes(bytes(raw))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(["forget.npy", "retain.npy", MANIFEST]), mutation=mutations, reseal=st.booleans())
def test_a_mutated_split_is_loaded_intact_or_refused_in_one_line(good, tmp_path, target, mutation, reseal):
    """Bytes changed in an index file or the manifest (with ``reseal``: checksums rewritten to match, as a
    forger would): the split loads unchanged, or one PipelineError names a file."""
    c = _clone(good, tmp_path)
    path = c["split"] / target
    _mutate(path, mutation)
    if reseal and target != MANIFEST:
        try:
            manifest = read_json(c["split"] / MANIFEST)
            manifest["files"][target] = sha256_file(path)
            write_json(c["split"] / MANIFEST, manifest)
        except PipelineError:
            pass
    start = time.perf_counter()
    try:
        split = load_split(c["split"], N, c["y"], c["dataset"])
    except PipelineError as exc:
        event(type(exc).__name__)
        assert "\n" not in str(exc).strip() and str(c["split"]) in str(exc), str(exc)
    else:
        original = load_split(good["split"], N, good["y"], good["dataset"])
        assert np.array_equal(split.forget, original.forget) and np.array_equal(split.retain, original.retain)
    assert time.perf_counter() - start < SECONDS


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=mutations, reseal=st.booleans())
def test_a_mutated_feature_file_is_loaded_intact_or_refused_in_one_line(good, tmp_path, mutation, reseal):
    c = _clone(good, tmp_path)
    _mutate(c["features"], mutation)
    if reseal:
        write_sidecar(c["features"], "unlearn", {})
    rows = {"train": N, "val": 5, "test": 6}
    start = time.perf_counter()
    try:
        arrays = load_features(c["features"], rows, 4)
    except PipelineError as exc:
        assert "\n" not in str(exc).strip() and "ft.npz" in str(exc), str(exc)
    else:
        assert all(np.array_equal(arrays[k], v) for k, v in load_features(good["features"], rows, 4).items())
    assert time.perf_counter() - start < SECONDS


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["scenario", "seed", "forgotten_class", "n_forget", "n_retain", "dataset_sha256",
                              "files"]), value=values)
@example(field="scenario", value="")  # not a scenario name: once refused without the manifest's path
def test_a_manifest_field_of_any_value_is_accepted_only_if_it_is_the_true_one(good, tmp_path, field, value):
    c = _clone(good, tmp_path)
    manifest = read_json(c["split"] / MANIFEST)
    true = copy.deepcopy(manifest[field])
    manifest[field] = value
    write_json(c["split"] / MANIFEST, manifest)
    try:
        load_split(c["split"], N, c["y"], c["dataset"])
    except PipelineError as exc:
        assert "Traceback" not in str(exc) and str(c["split"]) in str(exc)
    else:  # accepted: it must be the true value (or one equal to it)
        assert value == true or (isinstance(value, float) and not math.isnan(value) and value == true)
