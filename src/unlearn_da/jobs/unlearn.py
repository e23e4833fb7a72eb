"""Job: run one unlearning method from the original checkpoint; record its wall-clock and per-step log."""

from __future__ import annotations

import copy
import csv
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..core.artifacts import atomic_path, sha256_file
from ..core.errors import PipelineError
from ..core.checkpoints import load_checkpoint, save_checkpoint
from ..methods import get_method, method_base
from ..methods.base import StepRecorder, UnlearnContext, frozen_copy
from ..core.models import images_counted, images_since
from ..core import runtime
from ..core import startup
from ..core.runtime import seed_everything
from .features import extract_after
from .session import open_session
from ..data.splits import POISON_FILE, check_split, load_split_poison


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def write_steps(rows: list[dict[str, Any]], path: str) -> None:
    """The per-step log as CSV (columns: union of every row's keys, in first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)


def method_seconds(run, ctx: UnlearnContext, hp: dict[str, Any], recorder: StepRecorder,
                   device: torch.device) -> float:
    """Wall-clock of ``run(ctx, hp)`` without the probe evaluations made while it ran.

    Only the evaluation time spent inside this window is subtracted (the starting point's
    probe, recorded before, is not: subtracting it gave negative times for short runs).
    """
    eval_before = recorder.eval_seconds
    startup.mark()  # the job's fixed cost ends here (sidecar: startup_s)
    t0 = time.perf_counter()
    run(ctx, hp)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0 - (recorder.eval_seconds - eval_before)


class MethodError(PipelineError):
    """A method that broke the method API's contract (docs/method-api.md)."""


def _count_calls(obj: Any, name: str) -> list[int]:
    """Count calls of ``obj.<name>`` (the instance's method replaced by a counting wrapper); the list
    is empty until the first call."""
    calls: list[int] = []
    bound = getattr(obj, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return bound(*args, **kwargs)

    setattr(obj, name, counted)
    return calls


def _check_original_matches(original: str, meta: dict[str, Any], split_dir: str, poisoned: bool) -> None:
    """A backdoor scenario starts from the original trained on its own poisoned data; the others
    from the clean original."""
    trained_on = meta.get("backdoor")
    if poisoned and meta.get("split_sha256") != sha256_file(Path(split_dir) / POISON_FILE):
        raise ValueError(f"{original}: not the original trained on the poisoned data of {split_dir} "
                         "(rule 'train_original_backdoor' makes it)")
    if not poisoned and trained_on is not None:
        raise ValueError(f"{original}: trained on poisoned data ({trained_on}); {split_dir} is no backdoor split")


def unlearning_augment(params: dict[str, Any]) -> str:
    """The run's ``train.augment`` for a method whose reference augments during unlearning, else none.

    Each method's ``augment_data`` follows its reference: on for the SalUn family (FT, GA, RL,
    l1-sparse, SalUn, Boundary Shrinking: OPTML-Group/Unlearn-Saliency ``Classification/main_forget.py``
    copies ``marked_loader.dataset``, built with ``train_transform`` = RandomCrop(32, 4) + flip unless
    ``--no-aug``, ``Classification/dataset.py``), off for SCRUB and NegGrad+ (meghdadk/SCRUB notebooks:
    ``get_loaders(..., augment=False)``), Bad Teacher (vikram2000b/bad-teaching-unlearning ``dataset.py``:
    its ``transform_train`` has no random transform) and SSD (``transform_unlearning``); MUDA (ours) on.
    """
    return str(params.get("augment", "none")) if params["hp"].get("augment_data", True) else "none"


def run_unlearn(
    data: str, split_dir: str, original: str, method: str, seed: int, threads: int,
    params: dict[str, Any], out: str, steps_out: str, code: str | None = None,
    features_out: str | None = None, features_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Unlearn and save the model; with ``features_out`` also its features (``features.extract_after``)."""
    counted = images_counted()  # the sidecar's ``images``: what this job pushes through models
    split, poison = load_split_poison(split_dir)  # backdoor: D_f = the poisoned samples, their target labels
    session = open_session(data, params, threads, poison=poison, timed=True)  # seconds -> Time, RTE
    check_split(split, len(session.y["train"]), split_dir, session.y["train"].cpu().numpy(), data)
    base_model, base_meta = load_checkpoint(original, "train_original", session.device)
    session.check_model(original, base_meta, "train_original", seed=seed, role="original")
    _check_original_matches(original, base_meta, split_dir, poisoned=poison is not None)
    if session.channels_last:
        base_model = base_model.to(memory_format=torch.channels_last)
    model = copy.deepcopy(base_model).train()
    for p in model.parameters():
        p.requires_grad_(True)
    if session.compile:
        runtime.compile_model(model)
    xf, yf = session.subset("train", split.forget)
    xr, yr = session.subset("train", split.retain)
    generator = seed_everything(seed)
    probe_gen = torch.Generator().manual_seed(seed + 1)
    n_probe = int(params["probe_size"])
    pf = torch.randperm(len(yf), generator=probe_gen)[:n_probe].to(session.device)
    pr = torch.randperm(len(yr), generator=probe_gen)[:n_probe].to(session.device)
    eval_prep = session.preprocessor()
    recorder = StepRecorder(model, {"forget": (xf[pf], yf[pf]), "retain": (xr[pr], yr[pr])},
                            eval_prep, int(params["log_every"]), session.amp, log=log)
    plus_da = method_base(method)[1]
    da = None
    if plus_da:
        from ..methods.da import DARegularizer

        da = DARegularizer(params["da"])
    ctx = UnlearnContext(
        model=model,
        original=frozen_copy(base_model),
        x_forget=xf, y_forget=yf, x_retain=xr, y_retain=yr,
        prep=session.preprocessor(unlearning_augment(params), int(params.get("crop_padding", 0)),
                                  params.get("crop_fill", "black")),
        num_classes=session.data.num_classes,
        generator=generator,
        recorder=recorder,
        amp=session.amp,
        da=da,
        da_config=params.get("da"),
        spec=base_meta["spec"],
        log=log,
        forgotten_class=split.forgotten_class,
    )
    run = get_method(params["base"], params.get("source"))  # source: a method of unlearn.external
    da_calls = _count_calls(da, "penalty") if da is not None else None
    recorder.initial()
    log(f"unlearn {method}: |D_f|={len(yf)} |D_r|={len(yr)} on {session.device}, seed {seed}")
    seconds = method_seconds(run, ctx, params["hp"], recorder, session.device)
    if da_calls is not None and not da_calls:
        raise MethodError(f"{method}: the method never added the DA term (ctx.fit, ctx.da_paired and "
                          "ctx.da_sampled were not called), so its +da model would be the model without DA; "
                          "train through one of them, or declare DA_PLUGIN = '<why it cannot>' (docs/method-api.md)")
    final = recorder.probe_accuracy()
    startup.work_done()  # the tail (save, features, checksums) starts here (sidecars: tail_s)
    log(f"unlearn {method}: {seconds:.2f}s (probe evaluation excluded), probe {final}")
    write_steps(recorder.rows, steps_out)
    meta = {
        "role": "unlearned",
        "method": method,
        "spec": base_meta["spec"],
        "seed": seed,
        "params": params,
        "code": code,
        "threads": torch.get_num_threads(),
        "device": str(session.device),
        "original_sha256": sha256_file(original),
        "split_sha256": sha256_file(f"{split_dir}/forget.npy"),
        "seconds": seconds,
        "steps": recorder.step,
        "images": images_since(counted),  # the method's passes and the probes (bench.workload_images)
    }
    record = save_checkpoint(ctx.model, out, "unlearn", meta)
    if features_out is not None:
        extract_after(out, session, features_params or {}, features_out, code, poison=poison)
    return record
