"""Model checkpoints: state dicts saved atomically, loaded with ``weights_only=True`` after a checksum check."""

from __future__ import annotations

import os
import re
from typing import Any

import torch

from .artifacts import atomic_path, sidecar_path, verify_artifact, write_sidecar
from .errors import ArtifactError, short
from .models import Classifier, build_model


def save_checkpoint(model: Classifier, path: str | os.PathLike, made_by: str, meta: dict[str, Any]) -> dict:
    """Write the CPU state dict, then its sidecar (``meta`` must hold the model ``spec``)."""
    if "spec" not in meta:
        raise ValueError("checkpoint meta needs the model 'spec' to rebuild the model")
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        # a file object, not the (random) temporary name: torch.save names the archive's
        # root folder after a path, which would make identical weights differ in bytes
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
    return write_sidecar(path, made_by, meta)


#: model specs a sidecar may ask for (a forged one must not allocate a model of any size)
SPEC_LIMITS = {"in_channels": (1, 3), "num_classes": (2, 1000), "image_size": (8, 256), "width": (1, 1024)}


def spec_problem(spec: Any) -> str | None:
    """Why a sidecar's model ``spec`` cannot be built, or None."""
    if not isinstance(spec, dict) or spec.get("arch") not in ("smallcnn", "resnet18"):
        return f"{short(spec)} names no known model (arch smallcnn or resnet18)"
    for key, (low, high) in SPEC_LIMITS.items():
        if key == "width" and spec["arch"] != "smallcnn":
            continue
        value = spec.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"{key} {short(value)} is not an integer in {low}..{high}"
    return None


def load_error_text(exc: BaseException) -> str:
    """torch's reason a file did not load, without its advice to retry with ``weights_only=False``
    or to allow-list globals: both would run whatever code a forged file carries."""
    text = str(exc)
    forbidden = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
    if forbidden:
        return (f"it asks to import {forbidden.group(1)}, which a file of weights never needs: it is not a plain "
                "state dict (forged, or made by other code) and is not loaded")
    keep = [line.strip() for line in text.splitlines()
            if line.strip() and "weights_only" not in line and "safe_globals" not in line]
    return short(" ".join(keep) or type(exc).__name__, 300)


def load_state(path: str | os.PathLike, made_by: str) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict, read with ``weights_only=True``: a dict of tensors or a refusal."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError/UnpicklingError/EOFError for bad files
        raise ArtifactError(f"{path}: unreadable checkpoint: {load_error_text(exc)} "
                            f"(made by rule '{made_by}'); delete it and rerun the pipeline") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ArtifactError(f"{path}: holds a {type(state).__name__}, not a state dict of named tensors "
                            f"(made by rule '{made_by}'); delete it and rerun the pipeline")
    return state


def load_checkpoint(path: str | os.PathLike, made_by: str, device: torch.device | str = "cpu") -> tuple[Classifier, dict]:
    """Verify, rebuild and load a model; return it in eval mode with its sidecar."""
    meta = verify_artifact(path, made_by)
    spec = meta["spec"]
    problem = spec_problem(spec)
    if problem:
        raise ArtifactError(f"{sidecar_path(path)}: field 'spec': {problem} (made by rule '{made_by}'); "
                            "delete the checkpoint and rerun the pipeline")
    state = load_state(path, made_by)
    model = build_model(spec)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ArtifactError(
            f"{path}: weights do not fit the model spec in its sidecar ({short(str(exc), 300)}) "
            f"(made by rule '{made_by}')"
        ) from exc
    return model.to(device).eval(), meta
