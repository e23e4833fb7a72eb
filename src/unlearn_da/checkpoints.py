"""Model checkpoints: state dicts saved atomically, loaded with ``weights_only=True`` after a checksum check."""

from __future__ import annotations

import os
from typing import Any

import torch

from .artifacts import atomic_path, verify_artifact, write_sidecar
from .errors import ArtifactError
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


def load_checkpoint(path: str | os.PathLike, made_by: str, device: torch.device | str = "cpu") -> tuple[Classifier, dict]:
    """Verify, rebuild and load a model; return it in eval mode with its sidecar."""
    meta = verify_artifact(path, made_by)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError/UnpicklingError/EOFError for bad files
        raise ArtifactError(f"{path}: unreadable checkpoint ({exc}) (made by rule '{made_by}')") from exc
    model = build_model(meta["spec"])
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ArtifactError(
            f"{path}: weights do not fit the model spec in its sidecar ({exc}) (made by rule '{made_by}')"
        ) from exc
    return model.to(device).eval(), meta
