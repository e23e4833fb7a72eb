"""Penultimate features and logits of one model on train, val and test, in one ``.npz``.

The job that makes a model (train, unlearn) extracts them right after saving it (``extract_after``),
so no process is started only to load the model again; every metric reads these cached arrays, and
no metric reruns the model. In a backdoor scenario
(``split_dir`` of a backdoor split) the train rows hold the poisoned samples at the forget indices,
and ``trigger_features``/``trigger_logits`` the triggered non-target test images (ASR).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from ..core import startup
from ..core.artifacts import load_npz, save_npz, sha256_file, verify_artifact, write_sidecar
from ..core.errors import ArtifactError

SPLITS = ("train", "val", "test")


def rule_for_model(name: str) -> str:
    """Which Snakemake rule makes the checkpoint of model ``name``."""
    if name == "original":
        return "train_original"
    if name.startswith("retrain"):
        return "train_retrain"
    return "unlearn"


def run_features(data: str, model_path: str, threads: int, params: dict[str, Any], out: str,
                 code: str | None = None, split_dir: str | None = None) -> dict:
    """Features of a saved model in a process of their own (``python -m unlearn_da features``: a
    recomputation from a pulled checkpoint; the pipeline extracts them in the job that made the model,
    ``extract_after``)."""
    from ..data.splits import load_split_poison
    from .session import open_session

    poison = load_split_poison(split_dir)[1] if split_dir is not None else None
    session = open_session(data, params, threads, poison=poison)
    return extract_features(model_path, session, params, out, code)


def extract_after(model_path: str, session, params: dict[str, Any], out: str, code: str | None = None,
                  poison=None) -> dict:
    """Features of the checkpoint this job has just saved, extracted in the same process.

    The model is reloaded from ``model_path`` into a fresh eager module in eval mode, exactly as a job
    of its own would load it, so the arrays are the same bits as ``run_features`` gives; only the
    process start, imports and data loading are not paid again. ``session`` is the job's; ``poison``
    is its scenario's (a backdoor oracle trains on clean data, its features see the poisoned set).
    """
    session = session.with_poison(poison)
    return extract_features(model_path, session, params, out, code, startup_s=False)


def extract_features(model_path: str, session, params: dict[str, Any], out: str, code: str | None = None,
                     startup_s: bool = True) -> dict:
    import torch  # the metrics job imports this module without torch

    from ..core.checkpoints import load_checkpoint
    from ..core.models import images_counted, images_since
    from ..core.training import predict

    poison = session.poison
    name = os.path.basename(model_path).removesuffix(".pt")
    made_by = rule_for_model(name)
    model, meta = load_checkpoint(model_path, made_by, session.device)
    session.check_model(model_path, meta, made_by)
    if session.channels_last:
        model = model.to(memory_format=torch.channels_last)
    prep = session.preprocessor()
    arrays: dict[str, np.ndarray] = {}
    counted = images_counted()  # the sidecar's ``images``: every split through the model, once
    startup.mark()  # the job's fixed cost ends here (sidecar: startup_s)
    for split in SPLITS + (("trigger",) if poison is not None else ()):
        # float32 whatever the training precision (bf16 autocast on CUDA): the metrics read these
        z, logits = predict(model, session.x[split], prep, int(params["batch_size"]), amp=False)
        arrays[f"{split}_features"] = z.cpu().numpy().astype(np.float32)
        arrays[f"{split}_logits"] = logits.cpu().numpy().astype(np.float32)
    for key, arr in arrays.items():
        if not np.isfinite(arr).all():
            raise ArtifactError(
                f"{model_path}: the model produces non-finite {key} (NaN/inf); the method diverged "
                f"(made by rule '{made_by}'); lower its learning rate"
            )
    save_npz(out, arrays)
    print(f"features of {name}: dim {arrays['train_features'].shape[1]}, "
          f"{sum(len(v) for k, v in arrays.items() if k.endswith('_logits'))} samples", file=sys.stderr)
    return write_sidecar(out, made_by, {
        "model": name,
        "model_sha256": sha256_file(model_path),
        "seed": meta.get("seed"),
        "params": params,
        "code": code,
        "device": str(session.device),
        "precision": "float32 (autocast and TF32 off)",
        "backdoor": poison.describe() if poison is not None else None,
        "images": images_since(counted),  # forward only (bench.workload_images)
    }, startup_s=startup_s)


def load_features(path: str | os.PathLike, rows: dict[str, int] | None = None,
                  num_classes: int | None = None) -> dict[str, np.ndarray]:
    """Verify and load a feature file: per split a 2-D float array of features and one of logits with as
    many rows (``rows``: the data set's, when the caller knows them) and ``num_classes`` logit columns;
    non-finite values refused. A file of another shape gives wrong metrics, not an error, downstream."""
    made_by = rule_for_model(os.path.basename(path).removesuffix(".npz"))
    verify_artifact(path, made_by)
    arrays = load_npz(path, made_by, "feature file")
    missing = [f"{s}_{kind}" for s in SPLITS for kind in ("features", "logits") if f"{s}_{kind}" not in arrays]
    if missing:
        raise ArtifactError(f"{path}: missing arrays {missing} (made by rule '{made_by}')")
    for s in SPLITS:
        feats, logits = arrays[f"{s}_features"], arrays[f"{s}_logits"]
        for key, arr in ((f"{s}_features", feats), (f"{s}_logits", logits)):
            if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
                raise ArtifactError(f"{path}: {key} is a {arr.dtype} array of shape {arr.shape}, not a 2-D float "
                                    f"array (made by rule '{made_by}')")
        if len(feats) != len(logits) or (rows is not None and len(logits) != rows[s]):
            want = rows[s] if rows is not None else len(feats)
            raise ArtifactError(f"{path}: {s}: {len(feats)} feature and {len(logits)} logit rows where the data set "
                                f"has {want}; it was made from another data set (rule '{made_by}')")
        if num_classes is not None and logits.shape[1] != num_classes:
            raise ArtifactError(f"{path}: {s}_logits has {logits.shape[1]} columns for {num_classes} classes; it was "
                                f"made by a model of another data set (rule '{made_by}')")
    for key, arr in arrays.items():
        if np.issubdtype(arr.dtype, np.number) and not np.isfinite(arr).all():
            raise ArtifactError(f"{path}: {key} holds NaN or inf values (made by rule '{made_by}')")
    return arrays
