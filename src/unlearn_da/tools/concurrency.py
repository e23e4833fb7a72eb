"""How many jobs one device should run at once (``gpu.jobs_per_device``), measured.

The profile's training step (its model, batch size, precision, augmentation, deterministic
settings, the project's Trainer and Preprocessor) runs in 1, 2, 4, ... processes on one device at
once. Every process builds its model, warms up, reports ready, and waits; when all are ready the
parent names a common start instant, and each process counts the images it trains inside the same
window. The aggregate rate is the sum over processes; ``jobs_per_device`` is the smallest count
whose aggregate is within ``tolerance`` (5 %) of the best: more jobs than that buy nothing and
cost memory. ``make gpu-check`` runs it on the GPU (the profile's ResNet-18); on the CPU the same
code runs at toy size (tests).

The same worker measures the two other per-step costs gpu-check reports (``tools/devicecost.py``):
``compile: true`` compiles the model as a job does (``runtime.compile_model``, Inductor's cache in
``inductor_cache``), and ``da: {...}`` adds the ``+da`` term as ``UnlearnContext.fit`` does (a
second forward of the batch paired with a DA batch, the DA loss on its features). Each worker
reports the seconds of its warm-up (compiling included) and counts images as the workload does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

POLL_S = 0.01


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One process of a measurement (``python -m unlearn_da concurrency-worker``)."""
    import numpy as np
    import torch

    from ..core import runtime
    from ..core.models import build_model, model_spec
    from ..core.training import Preprocessor, Trainer

    device = torch.device(spec["device"])
    runtime.setup(int(spec["threads"]), device, bool(spec.get("deterministic", True)))
    torch.manual_seed(int(spec["index"]))
    c, size, batch = int(spec["in_channels"]), int(spec["image_size"]), int(spec["batch_size"])
    model = build_model(model_spec(spec["arch"], int(spec["num_classes"]), c, size, int(spec["width"]))).to(device)
    if spec["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(int(spec["index"]))
    n = max(batch * 4, int(spec.get("features_batch") or 0))
    x8 = torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=gen).to(device)
    y = torch.randint(0, int(spec["num_classes"]), (n,), generator=gen).to(device)
    prep = Preprocessor(np.full(c, 0.5), np.full(c, 0.25), 255.0, device, augment=spec.get("augment", "none"),
                        padding=int(spec.get("crop_padding", 0)), channels_last=bool(spec["channels_last"]),
                        crop_fill=spec.get("crop_fill", "black"))
    if spec.get("compile"):
        if spec.get("inductor_cache"):
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(spec["inductor_cache"])
        runtime.compile_model(model)
    hp = {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "constant", "optimizer": "sgd"}
    trainer = Trainer(model, hp, 10**9, 10**6)
    model.train()
    steps = _steps(spec, model, trainer, x8, y, prep, gen, device)
    mix = spec.get("mix") or {spec.get("kind") or ("da" if spec.get("da") else "plain"): 1.0}
    share = {k: float(v) / sum(mix.values()) for k, v in mix.items()}
    counted_by_kind = dict.fromkeys(share, 0)

    def step(i: int) -> int:
        """One step of the kind furthest behind its share of the images (one kind: always that one)."""
        total = sum(counted_by_kind.values())
        kind = max(share, key=lambda k: share[k] * (total + 1) - counted_by_kind[k])
        counted = steps[kind](i)
        counted_by_kind[kind] += counted
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return counted

    t0 = time.perf_counter()
    for i in range(int(spec["warmup_steps"])):
        step(i)
    warmup_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rendezvous = Path(spec["rendezvous"])
    (rendezvous / f"ready-{spec['index']}").touch()
    go = rendezvous / "go"
    while not go.exists():
        time.sleep(POLL_S)
    start_at = float(go.read_text() or 0)
    while time.time() < start_at:
        time.sleep(POLL_S / 10)
    end_at, images, i = start_at + float(spec["window_s"]), 0, 0
    while time.time() < end_at:
        images += step(i)
        i += 1
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        import resource

        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"index": spec["index"], "images": images, "img_s": images / float(spec["window_s"]),
            "steps": i, "peak_mb": peak_mb, "warmup_s": warmup_s, "images_by_kind": counted_by_kind}


def _steps(spec: dict[str, Any], model: Any, trainer: Any, x8: Any, y: Any, prep: Any, gen: Any,
           device: Any) -> dict[str, Any]:
    """The step kinds a table's jobs run, each returning the images it counts as the workload does:
    ``plain`` (the profile's batch), ``da`` (the ``+da`` term: the batch, then the batch again beside a
    DA batch: ``counting.Count.da_paired``), ``small_batch`` (NegGrad+: a retain batch and a forget
    batch in two forwards) and ``features`` (eval mode, no graph, true float32: the pass a model job
    ends with, ``training.predict``)."""
    import torch

    from ..core import runtime
    from ..core.training import predict

    batch, amp = int(spec["batch_size"]), bool(spec["amp"])
    ce = torch.nn.functional.cross_entropy
    kinds = set(spec.get("mix") or {}) | {spec.get("kind") or ("da" if spec.get("da") else "plain")}
    da_step = _da_step(spec["da"], model, x8, prep, gen, device, amp) if "da" in kinds else None

    def train_step(i: int, da: bool) -> int:
        sl = slice((i % 4) * batch, (i % 4 + 1) * batch)
        model.train()
        with runtime.autocast(device, amp):
            xb = prep(x8[sl], train=True, generator=gen)
            loss = ce(model(xb), y[sl])
            if da:
                loss = loss + da_step(xb)
        trainer.step(loss)
        return batch + (batch + int(spec["da"]["batch_size"]) if da else 0)

    def small_batch(i: int) -> int:
        retain, forget = int(spec["small_batch"]["batch_size"]), int(spec["small_batch"]["forget_batch_size"])
        r0, f0 = (i * retain) % (len(x8) - retain), (i * forget) % (len(x8) - forget)
        model.train()
        with runtime.autocast(device, amp):
            lr = ce(model(prep(x8[r0:r0 + retain], train=True, generator=gen)), y[r0:r0 + retain])
            lf = ce(model(prep(x8[f0:f0 + forget], train=True, generator=gen)), y[f0:f0 + forget])
            loss = 0.9999 * lr - 0.0001 * lf
        trainer.step(loss)
        return retain + forget

    def features(i: int) -> int:
        n = int(spec.get("features_batch", batch))
        with torch.no_grad():
            predict(model, x8[:n], prep, n, amp=False)
        return n

    return {"plain": lambda i: train_step(i, False), "da": lambda i: train_step(i, True),
            "small_batch": small_batch, "features": features}


def _da_step(cfg: dict[str, Any], model: Any, x8: Any, prep: Any, gen: Any, device: Any, amp: bool):
    """The ``+da`` term of one step as ``UnlearnContext.fit`` adds it: the method's batch and a DA batch
    in their own forward (batch statistics, no BatchNorm buffer updated), lambda * L_DA on the features."""
    import types

    import torch

    from ..core import runtime
    from ..methods.base import batch_stat_features
    from ..methods.da import DARegularizer

    reg = DARegularizer(cfg)
    n_other = int(cfg["batch_size"])
    if cfg["basis_source"] == "epoch":  # the epoch basis, once (the step itself decomposes nothing)
        ctx = types.SimpleNamespace(y_retain=torch.zeros(len(x8)), x_retain=x8, prep=prep, device=device,
                                    da_generator=gen, autocast=lambda: runtime.autocast(device, amp))
        reg.on_epoch_start(model, ctx)

    def penalty(xb: Any) -> Any:
        idx = torch.randint(0, len(x8), (n_other,), generator=gen).to(device)
        z = batch_stat_features(model, torch.cat([xb, prep(x8[idx], train=True, generator=gen)]))
        value, _ = reg.penalty(z[: len(xb)], z[len(xb):])
        return value

    return penalty


def _launch(spec: dict[str, Any]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "unlearn_da", "concurrency-worker", "--spec", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def measure(spec: dict[str, Any], processes: int, timeout_s: float = 300.0) -> dict[str, Any]:
    """``processes`` concurrent workers of ``spec`` on one device: aggregate and per-process img/s."""
    with tempfile.TemporaryDirectory(prefix="unlearn-da-concurrency-") as tmp:
        procs = [_launch({**spec, "index": i, "rendezvous": tmp}) for i in range(processes)]
        deadline = time.time() + timeout_s
        try:
            while len(list(Path(tmp).glob("ready-*"))) < processes:
                failed = [p for p in procs if p.poll() not in (None, 0)]
                if failed:
                    raise RuntimeError(f"a concurrency worker failed: {failed[0].stderr.read()[-2000:]}")
                if time.time() > deadline:
                    raise TimeoutError(f"{processes} workers were not ready after {timeout_s:.0f} s")
                time.sleep(POLL_S)
            go = Path(tmp) / "go.tmp"
            go.write_text(f"{time.time() + 0.2}")
            go.rename(Path(tmp) / "go")  # atomic: a worker never reads a half-written start
            out = []
            for p in procs:
                stdout, stderr = p.communicate(timeout=max(1.0, deadline - time.time()) + float(spec["window_s"]))
                if p.returncode != 0:
                    raise RuntimeError(f"a concurrency worker failed: {stderr[-2000:]}")
                out.append(json.loads(stdout.strip().splitlines()[-1]))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
    rates = [r["img_s"] for r in out]
    return {"processes": processes, "aggregate_img_s": sum(rates), "per_process_img_s": sum(rates) / len(rates),
            "slowest_img_s": min(rates), "peak_mb": max(r["peak_mb"] for r in out),
            "ms_per_step": 1000.0 * float(spec["window_s"]) * len(out) / max(1, sum(r["steps"] for r in out)),
            "warmup_s": max(r["warmup_s"] for r in out),
            "images_by_kind": {k: sum(r["images_by_kind"].get(k, 0) for r in out) for k in out[0]["images_by_kind"]}}


def choose_jobs_per_device(rows: list[dict[str, Any]], tolerance: float = 0.05) -> int:
    """The smallest process count whose aggregate rate is within ``tolerance`` of the best."""
    best = max(r["aggregate_img_s"] for r in rows)
    return min(r["processes"] for r in rows if r["aggregate_img_s"] >= (1 - tolerance) * best)


def profile_spec(config: dict[str, Any], device: str, amp: bool, channels_last: bool, threads: int,
                 window_s: float, warmup_steps: int, batch_size: int | None = None) -> dict[str, Any]:
    """The worker spec of a profile's training step (its model, batch, augmentation)."""
    from ..data.datasets import DATASETS

    info = DATASETS[config["dataset"]]
    train = config["train"]
    return {"device": device, "threads": threads, "deterministic": bool(config.get("deterministic", True)),
            "arch": config["arch"], "num_classes": info.num_classes, "in_channels": info.channels,
            "image_size": info.size, "width": int(config["model"]["width"]),
            "batch_size": int(batch_size or train["batch_size"]), "augment": train.get("augment", "none"),
            "crop_padding": int(train.get("crop_padding", 0)), "crop_fill": train.get("crop_fill", "black"), "amp": amp, "channels_last": channels_last,
            "window_s": window_s, "warmup_steps": warmup_steps}


def run_concurrency(spec: dict[str, Any], counts: tuple[int, ...] = (1, 2, 4, 8), tolerance: float = 0.05,
                    log=print) -> dict[str, Any]:
    """Measure every count; return the rows and the chosen ``jobs_per_device``."""
    rows = []
    for n in counts:
        row = measure(spec, n)
        rows.append(row)
        log(f"{n} process(es) on {spec['device']}: {row['aggregate_img_s']:.0f} img/s in all, "
            f"{row['per_process_img_s']:.0f} each, peak {row['peak_mb']:.0f} MB per process")
    chosen = choose_jobs_per_device(rows, tolerance)
    return {"rows": rows, "jobs_per_device": chosen,
            "best_aggregate_img_s": max(r["aggregate_img_s"] for r in rows),
            "chosen_aggregate_img_s": next(r["aggregate_img_s"] for r in rows if r["processes"] == chosen),
            "cpu_count": os.cpu_count()}
