"""Job: the logits of one model kind's K ensemble members on the audit's examples, in one ``.npz``.

The oracle-ensemble audit (``docs/audit.md``) compares, per example, the outputs of K models of
one kind (K originals, K oracles, K models unlearned by one method, one per training seed) with
those of K oracles. Each statistic reads these cached arrays; none reruns a model, so an audit
pulled from a DVC remote recomputes only the statistics.

Arrays: ``{forget,retain,val,member,test}_logits`` shaped (K, examples, classes), float32;
``{...}_labels``; ``forget_index``/``retain_index`` (rows of the prepared train set); ``train_seeds``;
``forgotten_class`` (-1 for a random forget set).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from ..core import startup
from ..core.artifacts import save_npz, sha256_file, write_sidecar
from ..core.errors import ArtifactError
from .features import rule_for_model

AUDIT_SETS = ("forget", "retain", "val")
# MIA-Efficacy's attack set, as the run's metrics job forms it: test images (non-members) and the
# first |test| retain indices in the split's order (members)
MIA_SETS = ("member", "test")


def retain_sample(retain: np.ndarray, size: int, split_seed: int) -> np.ndarray:
    """A fixed, sorted sample of ``size`` retain indices (all of them when there are fewer), drawn
    from the split seed (ours) so every model kind of a scenario scores the same examples."""
    retain = np.sort(np.asarray(retain, dtype=np.int64))
    if size >= len(retain):
        return retain
    rng = np.random.default_rng([int(split_seed), 0xA0D17])
    return np.sort(rng.choice(retain, size=size, replace=False))


def run_audit_logits(data: str, split_dir: str, models: list[str], train_seeds: list[int], threads: int,
                     params: dict[str, Any], out: str, code: str | None = None) -> dict:
    import torch

    from ..core.checkpoints import load_checkpoint
    from ..core.models import images_counted, images_since
    from ..core.training import predict
    from ..data.splits import check_split, load_split
    from .session import open_session

    if len(models) != len(train_seeds):
        raise ValueError(f"{len(models)} checkpoints for {len(train_seeds)} training seeds")
    split = load_split(split_dir)
    if split.backdoor is not None:
        raise ArtifactError(f"{split_dir}: the audit runs on random and class-wise scenarios only")
    session = open_session(data, params, threads)
    check_split(split, len(session.y["train"]), split_dir, session.y["train"].cpu().numpy(), data)
    index = {"forget": np.sort(split.forget),
             "retain": retain_sample(split.retain, int(params["retain_sample"]), int(params["split_seed"]))}
    inputs = {s: session.subset("train", index[s]) for s in ("forget", "retain")}
    inputs["val"] = (session.x["val"], session.y["val"])
    inputs["member"] = session.subset("train", np.asarray(split.retain)[: len(session.y["test"])])
    inputs["test"] = (session.x["test"], session.y["test"])
    prep = session.preprocessor()
    counted = images_counted()
    startup.mark()
    logits: dict[str, list[np.ndarray]] = {s: [] for s in AUDIT_SETS + MIA_SETS}
    shas = []
    for path in models:
        name = path.rsplit("/", 1)[-1].removesuffix(".pt")
        model, meta = load_checkpoint(path, rule_for_model(name), session.device)
        session.check_model(path, meta, rule_for_model(name))
        if session.channels_last:
            model = model.to(memory_format=torch.channels_last)
        for s in AUDIT_SETS + MIA_SETS:
            _, out_logits = predict(model, inputs[s][0], prep, int(params["batch_size"]), amp=False)
            arr = out_logits.cpu().numpy().astype(np.float32)
            if not np.isfinite(arr).all():
                raise ArtifactError(f"{path}: the model produces non-finite logits on the {s} examples "
                                    f"(made by rule '{rule_for_model(name)}'); the method diverged")
            logits[s].append(arr)
        shas.append(sha256_file(path))
        print(f"audit logits: {path}", file=sys.stderr, flush=True)
    sets = AUDIT_SETS + MIA_SETS
    arrays: dict[str, np.ndarray] = {f"{s}_logits": np.stack(logits[s]) for s in sets}
    arrays.update({f"{s}_labels": inputs[s][1].cpu().numpy().astype(np.int64) for s in sets})
    arrays["forgotten_class"] = np.asarray(-1 if split.forgotten_class is None else split.forgotten_class)
    arrays["forget_index"] = index["forget"]
    arrays["retain_index"] = index["retain"]
    arrays["train_seeds"] = np.asarray(train_seeds, dtype=np.int64)
    save_npz(out, arrays)
    return write_sidecar(out, "audit_logits", {
        "models": list(models),
        "models_sha256": shas,
        "train_seeds": list(map(int, train_seeds)),
        "params": params,
        "code": code,
        "device": str(session.device),
        "images": images_since(counted),
    })


def load_audit_logits(path: str) -> dict[str, np.ndarray]:
    """Verify and load one model kind's audit logits."""
    from ..core.artifacts import verify_artifact

    from ..core.artifacts import load_npz

    verify_artifact(path, "audit_logits")
    arrays = load_npz(path, "audit_logits", "audit logits file")
    missing = [f"{s}_{k}" for s in AUDIT_SETS + MIA_SETS for k in ("logits", "labels") if f"{s}_{k}" not in arrays]
    if missing:
        raise ArtifactError(f"{path}: missing arrays {missing} (made by rule 'audit_logits')")
    return arrays
