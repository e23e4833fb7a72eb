"""Forget/retain index sets per (scenario, seed), saved with a SHA-256 manifest.

Backdoor scenarios also write ``poison.npz`` (``backdoor``): the poisoned forget images and the
triggered test images, checksummed in the same manifest.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.artifacts import atomic_path, load_npy, read_json, sha256_file, write_json
from .backdoor import (POISON_FILE, Poison, draw_poisoned, load_poison, make_poison, resolve_trigger, save_poison,
                       trigger_problem)
from ..core.scenarios import parse_scenario
from ..core.errors import ArtifactError, ConfigError, DataError, short

MANIFEST = "manifest.json"


@dataclass
class Split:
    """Indices into the prepared train set."""

    scenario: str
    seed: int
    forget: np.ndarray
    retain: np.ndarray
    forgotten_class: int | None  # set for class-wise scenarios
    backdoor: dict | None = None  # backdoor scenarios: target, trigger and counts (``Poison.describe``)
    dataset_sha256: str | None = None  # the prepared data set it was drawn from (its manifest's)


def make_split(y_train: np.ndarray, scenario: str, seed: int, backdoor_target: int = 0) -> Split:
    """Draw the forget set of ``scenario``; the same seed always gives the same indices."""
    kind, value = parse_scenario(scenario)
    n = len(y_train)
    if kind == "backdoor":
        forget = draw_poisoned(y_train, float(value), backdoor_target, seed)
        forgotten_class = None
    elif kind == "random":
        n_forget = int(round(n * value / 100.0))
        if n_forget < 1:
            raise DataError(f"scenario '{scenario}': {value} % of {n} train samples is no sample at all")
        if n_forget >= n:
            raise DataError(
                f"scenario '{scenario}': the forget set ({n_forget}) would hold the whole train set ({n}); "
                "the retain set would be empty"
            )
        rng = np.random.default_rng(seed)
        forget = np.sort(rng.permutation(n)[:n_forget])
        forgotten_class = None
    else:
        forgotten_class = int(value)
        forget = np.flatnonzero(y_train == forgotten_class)
        if len(forget) == 0:
            raise DataError(f"scenario '{scenario}': class {forgotten_class} has no train sample")
        if len(forget) == n:
            raise DataError(f"scenario '{scenario}': every train sample is of class {forgotten_class}; "
                            "the retain set would be empty")
    retain = np.setdiff1d(np.arange(n), forget)
    return Split(scenario, seed, forget.astype(np.int64), retain.astype(np.int64), forgotten_class)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)


def _dataset_subset(dataset_file: str | os.PathLike) -> dict | None:
    """The ``data.subset`` the prepared data set was drawn with (None: the whole data set)."""
    sidecar = Path(f"{dataset_file}.meta.json")
    if not sidecar.exists():
        return None
    return json.loads(sidecar.read_text()).get("subset")


def write_split(split: Split, out_dir: str | os.PathLike, dataset_file: str | os.PathLike,
                poison: Poison | None = None) -> dict:
    """Write forget.npy, retain.npy (and a backdoor's poison.npz) and a manifest with their
    checksums (manifest last)."""
    out = Path(out_dir)
    _save_npy(out / "forget.npy", split.forget)
    _save_npy(out / "retain.npy", split.retain)
    files = {"forget.npy": sha256_file(out / "forget.npy"), "retain.npy": sha256_file(out / "retain.npy")}
    if poison is not None:
        save_poison(out / POISON_FILE, poison)
        files[POISON_FILE] = sha256_file(out / POISON_FILE)
    manifest = {
        "scenario": split.scenario,
        "seed": split.seed,
        "forgotten_class": split.forgotten_class,
        "n_forget": int(len(split.forget)),
        "n_retain": int(len(split.retain)),
        "dataset_sha256": sha256_file(dataset_file),
        "dataset_subset": _dataset_subset(dataset_file),
        "backdoor": poison.describe() if poison is not None else None,
        "files": files,
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def split_hash(split_dir: str | os.PathLike) -> str:
    """One checksum that identifies a split (its manifest's file hashes)."""
    manifest = read_json(Path(split_dir) / MANIFEST, "split")
    return manifest["files"]["forget.npy"]


SPLIT_FILES = ("forget.npy", "retain.npy", POISON_FILE)
TYPE_WORDS = {int: "an integer", str: "a string", dict: "a mapping", list: "a list", float: "a number",
              type(None): "null"}
_MANIFEST_TYPES = {"scenario": (str,), "seed": (int,), "forgotten_class": (int, type(None)), "n_forget": (int,),
                   "n_retain": (int,), "dataset_sha256": (str,), "files": (dict,)}
_SEED_FOLDER = re.compile(r"seed([0-9]+)")


def _check_manifest(manifest: dict, d: Path) -> None:
    """Fields of the types ``write_split`` writes, files named as it names them (never a path of the
    manifest's choosing), and the scenario and seed the folder's path names (``.../<scenario>/seed<N>``):
    a split folder copied from another scenario or seed is refused, not used."""
    where = d / MANIFEST
    for key, types in _MANIFEST_TYPES.items():
        value = manifest[key]
        if not isinstance(value, types) or isinstance(value, bool):
            raise ArtifactError(f"{where}: field '{key}' is {short(value, 80)}, not "
                                f"{' or '.join(TYPE_WORDS.get(t, t.__name__) for t in types)} (made by rule 'split'); delete the "
                                "folder and rerun the pipeline")
    for name, checksum in manifest["files"].items():
        if name not in SPLIT_FILES or not isinstance(checksum, str):
            raise ArtifactError(f"{where}: field 'files' names {short(name, 80)}; a split holds only "
                                f"{', '.join(SPLIT_FILES)} (made by rule 'split')")
    try:
        kind, value = parse_scenario(manifest["scenario"])
    except ConfigError as exc:  # a manifest's scenario is data, not config: name the file
        raise ArtifactError(f"{where}: field 'scenario': {exc} (made by rule 'split'); delete the folder and "
                            "rerun the pipeline") from None
    if (kind == "class") != (manifest["forgotten_class"] is not None) or \
            (kind == "class" and int(value) != manifest["forgotten_class"]):
        raise ArtifactError(f"{where}: scenario {short(manifest['scenario'], 40)} with forgotten class "
                            f"{manifest['forgotten_class']} (made by rule 'split'); delete the folder and rerun")
    folder = _SEED_FOLDER.fullmatch(d.name)
    if folder and (int(folder.group(1)) != manifest["seed"] or d.parent.name != manifest["scenario"]):
        raise ArtifactError(f"{where}: the split of {short(manifest['scenario'], 40)} seed {manifest['seed']}, in the "
                            f"folder of {short(d.parent.name, 40)} seed {folder.group(1)}; it was copied from another "
                            "scenario or seed: delete the folder and rerun the pipeline")


def load_split(split_dir: str | os.PathLike, n_train: int | None = None, y_train: np.ndarray | None = None,
               data_file: str | os.PathLike | None = None) -> Split:
    """Load a split, verifying both index files against the manifest (and against ``n_train``, the data
    set's labels and the data set itself: ``check_split``)."""
    d = Path(split_dir)
    manifest = read_json(d / MANIFEST, "split")
    _check_manifest(manifest, d)
    arrays = {}
    for name, expected in manifest["files"].items():
        path = d / name
        if not path.exists():
            raise ArtifactError(f"{path}: index file not found (made by rule 'split')")
        if sha256_file(path) != expected:
            raise ArtifactError(
                f"{path}: SHA-256 does not match {d / MANIFEST}: the index file is corrupted or was "
                "replaced (made by rule 'split'); delete the folder and rerun the pipeline"
            )
        if name == POISON_FILE:
            continue  # checked here, read by load_split_poison
        arrays[name] = load_npy(path, "split", "index file")
    for name in ("forget.npy", "retain.npy"):
        if name not in arrays:
            raise ArtifactError(f"{d / MANIFEST}: field 'files' lists no checksum for {name} (made by rule "
                                "'split'); delete the folder and rerun the pipeline")
    split = Split(
        manifest["scenario"],
        int(manifest["seed"]),
        arrays["forget.npy"],
        arrays["retain.npy"],
        manifest["forgotten_class"],
        manifest.get("backdoor"),
        manifest["dataset_sha256"],
    )
    if n_train is not None:
        check_split(split, n_train, str(d), y_train, data_file)
    for name, count in (("forget", manifest["n_forget"]), ("retain", manifest["n_retain"])):
        if len(getattr(split, name)) != count:
            raise ArtifactError(f"{d / f'{name}.npy'}: {len(getattr(split, name))} indices where {d / MANIFEST} "
                                f"records {count} (made by rule 'split')")
    return split


def load_split_poison(split_dir: str | os.PathLike, n_train: int | None = None) -> tuple[Split, Poison | None]:
    """A split (verified as by ``load_split``) and, for a backdoor scenario, its poison."""
    split = load_split(split_dir, n_train)
    if split.backdoor is None:
        return split, None
    if POISON_FILE not in read_json(Path(split_dir) / MANIFEST, "split")["files"]:
        raise ArtifactError(f"{Path(split_dir) / MANIFEST}: a backdoor split without a checksum for {POISON_FILE} "
                            "(made by rule 'split'); delete the folder and rerun the pipeline")
    poison = load_poison(Path(split_dir) / POISON_FILE, split.backdoor)
    if not np.array_equal(poison.train_index, split.forget):
        raise ArtifactError(f"{Path(split_dir) / POISON_FILE}: its poisoned indices are not the forget set "
                            "(made by rule 'split'); delete the folder and rerun the pipeline")
    return split, poison


def run_split(data_path: str | os.PathLike, scenario: str, seed: int, params: dict, out_dir: str | os.PathLike) -> dict:
    """Job: draw a scenario's split; for a backdoor, also materialise its poisoned images once."""
    from .prepared import load_prepared

    data = load_prepared(data_path)
    kind, _ = parse_scenario(scenario)
    if kind != "backdoor":
        return write_split(make_split(data.y_train, scenario, seed), out_dir, data_path)
    if "target_class" not in params or "trigger" not in params:
        raise DataError(f"scenario '{scenario}': a backdoor split needs --params with 'target_class' and 'trigger' "
                        "(the config's backdoor block)")
    target = int(params["target_class"])
    if not 0 <= target < data.num_classes:
        raise DataError(f"backdoor.target_class {target} does not exist in {data.info.name} "
                        f"(classes 0..{data.num_classes - 1})")
    trigger = resolve_trigger(params["trigger"], data.info)
    problem = trigger_problem(trigger, data.info)
    if problem:
        raise DataError(f"backdoor.trigger.{problem[0]}: {problem[1]}")
    split = make_split(data.y_train, scenario, seed, backdoor_target=target)
    poison = make_poison(data.x_train, data.x_test, data.y_test, split.forget, target, trigger)
    return write_split(split, out_dir, data_path, poison)


def check_split(split: Split, n_train: int, where: str, y_train: np.ndarray | None = None,
                data_file: str | os.PathLike | None = None) -> Split:
    """Refuse index sets that are not an exact partition of a train set of ``n_train`` samples.

    Forget and retain indices must be 1-D integers, each unique, disjoint, and together exactly
    ``0..n_train-1``; anything else (a duplicated index leaves another sample in neither set) is
    refused naming the file and the first offending index as it is stored. With ``data_file``, the
    split must have been drawn from that prepared data set (its manifest's checksum); with
    ``y_train``, a class-wise split's forget set must be exactly that class.
    """
    if data_file is not None and split.dataset_sha256 is not None and sha256_file(data_file) != split.dataset_sha256:
        raise DataError(f"{Path(where) / MANIFEST}: the split was drawn from another data set than {data_file} "
                        "(its checksum differs); delete the folder and rerun the pipeline")
    d = Path(where)
    files = {"forget": split.forget, "retain": split.retain}
    for name, arr in files.items():
        path = d / f"{name}.npy"
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise DataError(f"{path}: holds a {arr.dtype} array of shape {arr.shape}, not a list of integer "
                            "indices (rule 'split')")
        if len(arr) == 0:
            raise DataError(f"{path}: the {name} set is empty" + ("; nothing would be left to learn from"
                                                                  if name == "retain" else ""))
        bad = arr[(arr < 0) | (arr >= n_train)]
        if len(bad):
            raise DataError(f"{path}: index {int(bad[0])} lies outside the training set (0..{n_train - 1}); "
                            "the split was made for another data set (rule 'split')")
        ordered = np.sort(arr, kind="stable")
        repeated = ordered[1:][ordered[1:] == ordered[:-1]]
        if len(repeated):
            raise DataError(f"{path}: index {int(repeated[0])} appears more than once; each sample belongs "
                            "to one set once (rule 'split')")
    f, r = split.forget, split.retain
    if len(f) >= n_train:
        raise DataError(f"{d / 'forget.npy'}: the forget set ({len(f)}) is as large as the training set ({n_train})")
    common = np.intersect1d(f, r)
    if len(common):
        raise DataError(f"{d / 'forget.npy'}: index {int(common[0])} is also in {d / 'retain.npy'}; "
                        "forget and retain sets must be disjoint (rule 'split')")
    if len(f) + len(r) != n_train:
        missing = np.setdiff1d(np.arange(n_train), np.concatenate([f, r]))
        raise DataError(f"{d}: index {int(missing[0])} is in neither forget.npy nor retain.npy; together they "
                        f"must hold every one of the {n_train} training indices (rule 'split')")
    if y_train is not None and split.forgotten_class is not None:
        wanted = np.flatnonzero(np.asarray(y_train) == split.forgotten_class)
        if not np.array_equal(np.sort(f), wanted):
            raise DataError(f"{d / 'forget.npy'}: the forget set of {split.scenario} is not exactly the training "
                            f"samples of class {split.forgotten_class} ({len(f)} indices, the class has {len(wanted)}) "
                            "(rule 'split'); delete the folder and rerun the pipeline")
    return split
