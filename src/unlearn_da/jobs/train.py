"""Job: train the original model (on D) or a retrained oracle (on D_r only), same recipe.

In a backdoor scenario (``--split`` of a backdoor split) D holds the poisoned forget samples, so
the original learns the backdoor; the oracles train on the clean retain set only.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..core.artifacts import sha256_file
from ..core.checkpoints import save_checkpoint
from ..core.models import build_model, images_counted, images_since, model_spec
from ..core import runtime
from ..core import startup
from ..core.runtime import seed_everything
from .features import extract_after
from .session import open_session
from ..data.splits import POISON_FILE, check_split, load_split_poison
from ..core.training import accuracy, fit

# oracle seeds: the noise-floor oracle differs from the main one in init and data order only
ROLE_SEED_OFFSET = {"original": 0, "retrain": 0, "retrain_alt": 10_000}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_for(params: dict[str, Any], session) -> tuple[torch.nn.Module, dict[str, Any]]:
    info = session.data.info
    spec = model_spec(params["arch"], info.num_classes, info.channels, info.size, int(params["model"]["width"]))
    model = build_model(spec).to(session.device)
    if session.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, spec


def run_train(
    data: str, role: str, seed: int, threads: int, params: dict[str, Any], out: str, split_dir: str | None = None,
    code: str | None = None, features_out: str | None = None, features_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train and save the model; with ``features_out`` also its features (``features.extract_after``)."""
    if role not in ROLE_SEED_OFFSET:
        raise ValueError(f"unknown role '{role}'; allowed: {', '.join(ROLE_SEED_OFFSET)}")
    if role != "original" and split_dir is None:
        raise ValueError(f"role '{role}' trains on the retain set and needs --split")
    counted = images_counted()  # the sidecar's ``images``: what this job pushes through models
    split, poison = load_split_poison(split_dir) if split_dir is not None else (None, None)
    scenario_poison = poison  # what the features see: a backdoor scenario's train set is poisoned
    if role != "original":
        poison = None  # the oracles train on the clean retain set: the poisoned images are not even loaded
    session = open_session(data, params, threads, poison=poison, timed=True)  # the oracle's seconds: RTE
    recipe = params["train"]
    if split is not None:
        check_split(split, len(session.y["train"]), split_dir, session.y["train"].cpu().numpy(), data)
    if role == "original":  # the whole train set (with a backdoor split: including the poisoned samples)
        x, y = session.x["train"], session.y["train"]
        split_sha = sha256_file(Path(split_dir) / POISON_FILE) if poison is not None else None
    else:
        x, y = session.subset("train", split.retain)
        split_sha = sha256_file(f"{split_dir}/retain.npy")
    init_seed = seed + ROLE_SEED_OFFSET[role]
    generator = seed_everything(init_seed)
    model, spec = build_for(params, session)
    if session.compile:
        runtime.compile_model(model)
    prep = session.preprocessor(recipe.get("augment", "none"), int(recipe.get("crop_padding", 0)),
                                recipe.get("crop_fill", "black"))
    log(f"train {role}: {len(y)} samples, {spec['arch']} on {session.device}, seed {init_seed}, "
        f"amp={session.amp}, threads={torch.get_num_threads()}")
    startup.mark()  # the job's fixed cost ends here (sidecar: startup_s)
    t0 = time.perf_counter()
    result = fit(model, x, y, prep, recipe, generator=generator, amp=session.amp, desc=f"train {role}", log=log)
    if session.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    val_acc = accuracy(model, session.x["val"], session.y["val"], prep, amp=session.amp)
    startup.work_done()  # the tail (save, features, checksums) starts here (sidecars: tail_s)
    log(f"train {role}: {seconds:.1f}s, val accuracy {val_acc:.2f} %")
    meta = {
        "role": role,
        "spec": spec,
        "seed": seed,
        "init_seed": init_seed,
        "params": params,
        "code": code,
        "threads": torch.get_num_threads(),
        "device": str(session.device),
        "data_sha256": sha256_file(data),
        "split_sha256": split_sha,
        "backdoor": poison.describe() if poison is not None else None,
        "n_train": int(len(y)),
        "seconds": seconds,
        "val_acc": val_acc,
        "history": result["history"],
        "images": images_since(counted),  # training passes and the validation pass (bench.workload_images)
    }
    made_by = "train_original" if role == "original" else "train_retrain"
    record = save_checkpoint(model, out, made_by, meta)
    if features_out is not None:
        extract_after(out, session, features_params or {}, features_out, code, poison=scenario_poison)
    return record
