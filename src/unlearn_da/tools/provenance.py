"""Check pulled (or old) artifacts against the current config and code before trusting them.

Snakemake decides what to rerun from file times and its own metadata, which a
fresh clone does not have; after ``dvc pull`` it would either rerun everything
or, after ``snakemake --touch``, trust everything. This check sits between the
two: every checkpoint, data set and feature file the current config would make
is compared with its sidecar (the params and code hash it was made with, and its
checksum). Mismatches are listed; only a clean check should be followed by
``snakemake --touch``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import pipeline as P
from ..core.artifacts import read_json, sha256_file, sidecar_path
from ..core.scenarios import is_backdoor


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): obj}


def differences(recorded: Any, expected: Any, limit: int = 6) -> list[str]:
    a, b = flatten(recorded), flatten(expected)
    diffs = [f"{k}: {a.get(k, '<absent>')!r} in the sidecar, {b.get(k, '<absent>')!r} now"
             for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]
    return diffs[:limit] + ([f"... {len(diffs) - limit} more"] if len(diffs) > limit else [])


def expected_artifacts(config: dict) -> Iterator[tuple[str, str, dict[str, Any], str]]:
    """(path, rule, params, code hash) of every checkpoint-like file the config's DAG makes."""
    run = P.run_name(config)
    yield (f"{P.prepared_dir(config)}/dataset.npz", "prepare_data", P.data_params(config),
           P.rule_code("prepare_data"))
    train, train_code = P.train_params(config), P.rule_code("train")
    mparams, mcode = P.metrics_params(config), P.rule_code("metrics")
    feats = P.features_params(config)  # a model's features: made in its job, with its code
    shared_original = P.needs_shared_original(config["scenarios"])
    if P.audit_enabled(config):
        yield from audit_artifacts(config)
        if config["audit"]["only"]:
            return
    for seed in config["seeds"]:
        if shared_original:  # backdoor scenarios train their own, on the poisoned data
            yield P.model_checkpoint(run, "", seed, "original"), "train_original", train, train_code
            yield P.model_features(run, "", seed, "original"), "train_original", feats, train_code
        for scenario in config["scenarios"]:
            for model in P.scenario_models(config):
                if model == "original" and not is_backdoor(scenario):
                    continue
                if model == "original":
                    made = ("train_original", P.train_params(config, scenario), train_code)
                elif model in P.ORACLES:
                    made = ("train_retrain", train, train_code)
                else:
                    made = ("unlearn", P.unlearn_params(config, model), P.method_code(config, model))
                yield (P.model_checkpoint(run, scenario, seed, model), *made)
                yield P.model_features(run, scenario, seed, model), made[0], feats, made[2]
            for model in P.scenario_models(config):
                yield P.model_metrics(run, scenario, seed, model), "metrics", mparams, mcode


def audit_artifacts(config: dict) -> Iterator[tuple[str, str, dict[str, Any], str]]:
    """The oracle-ensemble audit's checkpoints and logits files (``workflow/rules/audit.smk``)."""
    run = P.run_name(config)
    train, train_code = P.train_params(config), P.rule_code("train")
    logits, logits_code = P.audit_logits_params(config), P.rule_code("audit_logits")
    for t in P.audit_train_seeds(config):  # the per-seed originals, shared by the scenarios
        yield P.audit_checkpoint(run, "", t, "original"), "train_original", train, train_code
    for scenario in config["audit"]["scenarios"]:
        for t in P.audit_train_seeds(config):
            for oracle in P.ORACLES:
                yield P.audit_checkpoint(run, scenario, t, oracle), "train_retrain", train, train_code
            for method in config["audit"]["methods"]:
                yield (P.audit_checkpoint(run, scenario, t, method), "unlearn", P.unlearn_params(config, method),
                       P.method_code(config, method))
        for model in ["retrain", *P.audit_rows(config)]:
            yield P.audit_logits_file(run, scenario, model), "audit_logits", logits, logits_code


def _checkpoint_problem(path: Path, rule: str, meta: dict) -> str | None:
    """Why a checkpoint whose checksum matches its (possibly rewritten) sidecar still cannot be
    trusted: it must load with ``weights_only=True`` as named tensors of the sidecar's model."""
    from ..core.checkpoints import load_state, spec_problem
    from ..core.errors import ArtifactError
    from ..core.models import build_model

    problem = spec_problem(meta.get("spec"))
    if problem:
        return f"{path}: its sidecar's model spec: {problem} (rule '{rule}')"
    try:
        state = load_state(path, rule)
    except ArtifactError as exc:
        return str(exc)
    try:
        build_model(meta["spec"]).load_state_dict(state)
    except RuntimeError as exc:
        return f"{path}: its weights do not fit the model spec of its sidecar ({str(exc)[:200]}) (rule '{rule}')"
    return None


def _spec_problem(rel: str, rule: str, spec: Any, config: dict) -> str | None:
    """A checkpoint's model (architecture, width, classes, input) against the one the config builds: a
    checkpoint of another width whose sidecar describes that width loads, and is still not this run's."""
    from ..data.datasets import DATASETS

    info = DATASETS[config["dataset"]]
    want = {"arch": config["arch"], "num_classes": info.num_classes, "in_channels": info.channels,
            "image_size": info.size, "width": int(config["model"]["width"])}
    spec = spec if isinstance(spec, dict) else {}
    wrong = [f"{k} {spec.get(k)!r}, the config's {v!r}" for k, v in want.items()
             if spec.get(k) != v and not (k == "width" and config["arch"] != "smallcnn")]
    return f"{rel}: a model of another shape than the config builds ({'; '.join(wrong)}; rule '{rule}')" \
        if wrong else None


def _split_problems(config: dict, root: Path) -> tuple[list[str], int]:
    """Every split the config uses, checked against the run's prepared data set (identity, partition,
    a class's forget set), as the jobs check it."""
    from ..core.errors import PipelineError
    from ..data.splits import load_split
    from ..jobs.evaluate import load_labels

    data = root / P.prepared_dir(config) / "dataset.npz"
    folders = {f"{P.prepared_dir(config)}/splits/{s}/seed{seed}" for s in config["scenarios"]
               for seed in config["seeds"]}
    if P.audit_enabled(config):
        folders |= {f"{P.prepared_dir(config)}/splits/{s}/seed{config['audit']['split_seed']}"
                    for s in config["audit"]["scenarios"]}
    present = sorted(f for f in folders if (root / f / "manifest.json").exists())
    if not present or not data.exists():
        return [], 0
    try:
        labels, _ = load_labels(str(data))
    except PipelineError as exc:
        return [str(exc)], 0
    problems = []
    for rel in present:
        try:
            load_split(root / rel, len(labels["train"]), labels["train"], data)
        except PipelineError as exc:
            problems.append(str(exc))
    return problems, len(present)


def _data_rows(config: dict, root: Path) -> dict[str, int] | str | None:
    """Rows per split of the run's prepared data set (None when it is absent; a message when unreadable)."""
    from ..core.errors import PipelineError
    from ..jobs.evaluate import load_labels

    data = root / P.prepared_dir(config) / "dataset.npz"
    if not data.exists():
        return None
    try:
        labels, _ = load_labels(str(data))
    except PipelineError as exc:
        return str(exc)
    return {s: len(y) for s, y in labels.items()}


def _features_problem(path: Path, config: dict, rows: dict[str, int] | None) -> str | None:
    """A feature file against the config's data set: as many rows per split as the prepared data set
    has (when it is present) and a logit column per class, as the metrics jobs read it."""
    from ..core.errors import PipelineError
    from ..data.datasets import DATASETS
    from ..jobs.features import load_features

    try:
        load_features(path, rows, DATASETS[config["dataset"]].num_classes)
    except PipelineError as exc:
        return str(exc)
    return None


def verify(config: dict, root: str | Path = ".") -> tuple[list[str], int]:
    """(problems, number of artifacts checked); artifacts that do not exist yet are skipped."""
    root = Path(root)
    problems, checked = _split_problems(config, root)
    rows = _data_rows(config, root)
    if isinstance(rows, str):
        problems.append(rows)
        rows = None
    for rel, rule, params, code in expected_artifacts(config):
        path = root / rel
        if not path.exists():
            continue
        checked += 1
        if rule == "metrics":  # metric files carry their params themselves
            meta = read_json(path, rule)
        else:
            meta_file = sidecar_path(path)
            if not meta_file.exists():
                problems.append(f"{rel}: no sidecar; cannot tell what made it (rule '{rule}')")
                continue
            meta = read_json(meta_file, rule)
        if rule != "metrics" and meta.get("sha256") != sha256_file(path):
            problems.append(f"{rel}: checksum does not match its sidecar (corrupted or replaced; rule '{rule}')")
        elif rel.endswith(".pt"):
            problem = _checkpoint_problem(path, rule, meta) or _spec_problem(rel, rule, meta.get("spec"), config)
            if problem:
                problems.append(problem)
        elif rel.endswith(".npz") and "/features/" in rel:
            problem = _features_problem(path, config, rows)
            if problem:
                problems.append(problem)
        diffs = differences(meta.get("params"), params)
        if diffs:
            problems.append(f"{rel}: made with other parameters than the config asks for (rule '{rule}'):\n"
                            + "\n".join(f"      {d}" for d in diffs))
        if meta.get("code") not in (None, code):
            problems.append(f"{rel}: made by another version of the code of rule '{rule}' "
                            f"(code hash {meta.get('code')} in the sidecar, {code} now)")
    return problems, checked
