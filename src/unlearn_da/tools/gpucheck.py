"""`make gpu-check` / `python -m unlearn_da gpu-check`: will the paper profile work on this GPU, and what will its tables cost?

Two parts. **quick** (`make gpu-check`, a few minutes on one GPU): the paper path's stages once on
``--device`` with the profile's CUDA precision (bf16 autocast, channels_last): synthetic CIFAR-10 in
the real on-disk form, the real ResNet-18, the original, the oracle and every method of
``config/cifar10.yaml`` (MUDA and the ``+da`` variants) on its first scenario, features, metrics, one
table; host-to-GPU synchronisations counted in every training stage (``torch.cuda.set_sync_debug_mode``);
a model's fp32 features against a separate extraction (the same bits); two real jobs sharing one
device through the pool (real device UUIDs; fake ids on the CPU); then the rates a projection needs
(each step kind alone, the table's mix of steps in 1, 2 and 4 processes, the fp32 feature pass, what
deterministic kernels cost: ``tools/devicecost.py``), one real train and one real unlearning job from
start to exit, and the projected hours of the CIFAR-10 and CIFAR-100 tables with every fixed cost
counted. **full** (`make gpu-check-full`, for a longer loan): every scenario, 8 processes too,
compile on and off, each real job twice, longer windows, and our training loop against a bare
PyTorch loop. The stages call the package's stage functions in sequence: no Snakemake, no jsonschema,
nothing installed, so it runs on a GPU machine as it comes. Every method must keep every logged loss
term finite and end with finite weights; every stage must complete. ``--measure-only`` skips the
methods' stages. Exits non-zero on any failure.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..settings.config import REPO_ROOT, deep_merge, load_config

RESNET_CASE = ("resnet18 32x32 (CIFAR)", "resnet18", 3, 32, 32, 128, 384)


def check_config(device: str, raw_dir: Path, amp: str, subset: tuple[int, int]) -> dict[str, Any]:
    """config/cifar10.yaml + config/smoke-paper.yaml, on ``device`` with the profile's precision."""
    config = load_config([REPO_ROOT / "config" / "cifar10.yaml", REPO_ROOT / "config" / "smoke-paper.yaml"])
    return deep_merge(config, {
        "device": device,
        "precision": {"amp": amp, "channels_last": "on"},
        "data": {"cifar_dirs": [str(raw_dir)], "subset": {"train": subset[0], "test": subset[1]}},
        "unlearn": {"log_every": 1},
        "evaluation": {"noise_floor": False},
    })


def _validate_if_possible(config: dict) -> str:
    try:
        import jsonschema  # noqa: F401
    except ImportError:
        return "schema not checked (no jsonschema here)"
    from ..settings.config import validate_config

    validate_config(config, sources=[])
    return "schema ok"


def non_finite_steps(steps_csv: str | Path) -> list[str]:
    """Loss terms in a method's per-step log that are NaN or infinite ("column@step")."""
    bad = []
    with open(steps_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            for key, value in row.items():
                if key in ("step", "phase") or key.endswith("_acc") or value in ("", None):
                    continue
                try:
                    if not math.isfinite(float(value)):
                        bad.append(f"{key}@{row.get('step')}")
                except ValueError:
                    continue
    return bad


def non_finite_weights(checkpoint: str | Path) -> list[str]:
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    return [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]


#: what each part measures: process counts and window on a GPU; compile; the bare loop; every scenario
PARTS: dict[str, dict[str, Any]] = {
    "quick": {"counts": (1, 2, 4), "window_s": 5.0, "warmup_steps": 10, "repeats": 1, "compile": False,
              "bare_loop": False, "all_scenarios": False},
    "full": {"counts": (1, 2, 4, 8), "window_s": 10.0, "warmup_steps": 20, "repeats": 2, "compile": True,
             "bare_loop": True, "all_scenarios": True},
}
PROJECTED_DEVICES = (8,)  # a node of 8, each GPU as fast as the one measured, beside this machine's count


@contextlib.contextmanager
def counted_host_syncs(active: bool) -> Iterator[dict[str, int]]:
    """Count the host-GPU synchronisations torch reports while the block runs (``set_sync_debug_mode``
    warns at each: ``.item()``, a blocking copy, ...). Inactive (the CPU): nothing counted."""
    counts = {"syncs": 0}
    if not active:
        yield counts
        return
    import warnings

    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield counts
        finally:
            torch.cuda.set_sync_debug_mode("default")
            counts["syncs"] = sum("synchroniz" in str(w.message) for w in caught)


class Checker:
    """Runs named stages, records time and failure of each, never stops at the first failure."""

    def __init__(self, log=print, count_syncs: bool = False):
        self.rows: list[dict[str, Any]] = []
        self.log = log
        self.count_syncs = count_syncs

    def stage(self, name: str, fn, *args, **kwargs) -> Any:
        """Run one stage. A stage is one job run in this process: the GPU slot its session takes is
        given back when it ends (else the later stages' real jobs, in their own processes, wait
        for the only slot of a one-GPU machine until ``gpu.wait_s`` and fail). On CUDA the host
        synchronisations of the stage are counted (``host_syncs``)."""
        from ..core import device_pool

        t0 = time.perf_counter()
        with counted_host_syncs(self.count_syncs) as syncs:
            try:
                out = fn(*args, **kwargs)
                problem = None
            except Exception as exc:  # every failure is reported, then the check goes on
                out, problem = None, f"{type(exc).__name__}: {exc}"
                self.log(traceback.format_exc())
            finally:
                device_pool.release()
        seconds = time.perf_counter() - t0
        count = syncs["syncs"] if self.count_syncs else None
        self.rows.append({"stage": name, "seconds": seconds, "ok": problem is None, "problem": problem,
                          "host_syncs": count})
        self.log(f"[{'ok' if problem is None else 'FAIL'}] {name} ({seconds:.1f} s"
                 f"{'' if count is None else f', {count} host syncs'}){'' if problem is None else ': ' + problem}")
        return out

    def fail(self, name: str, problem: str) -> None:
        self.rows.append({"stage": name, "seconds": 0.0, "ok": False, "problem": problem, "host_syncs": None})
        self.log(f"[FAIL] {name}: {problem}")

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if not r["ok"]]


#: host syncs an unlearning step may add (``tests/test_host_sync.py``, the same rule counted on the CPU):
#: none, one with the DA term (``eigh`` returns its rank to the host); ``SYNC_SLACK`` for rounding
SYNC_SLACK = 0.25


def allowed_syncs_per_step(method: str) -> float:
    return (1.0 if method.endswith("+da") or method == "muda" else 0.0) + SYNC_SLACK


def sync_growth(run: Any, method: str) -> dict[str, Any]:
    """Host syncs per optimiser step of ``method``'s loop: ``run(epochs)`` runs the job with that many
    epochs (no logging step after the first) and returns its optimiser steps; the syncs of a run with
    one epoch and of one with two differ by what the steps of the second epoch add. Start, probes,
    saves and features cost the same in both and drop out."""
    counted = []
    for epochs in (1, 2):
        with counted_host_syncs(True) as syncs:
            steps = run(epochs)
        counted.append((syncs["syncs"], steps))
    (s1, n1), (s2, n2) = counted
    if n2 <= n1:
        return {"method": method, "per_step": None, "steps": [n1, n2], "syncs": [s1, s2]}
    per_step = (s2 - s1) / (n2 - n1)
    if per_step > allowed_syncs_per_step(method):
        raise RuntimeError(f"{method}: {per_step:.2f} host syncs per optimiser step (at most "
                           f"{allowed_syncs_per_step(method) - SYNC_SLACK:.0f}): its loop reads a GPU value on the "
                           "host every step")
    return {"method": method, "per_step": per_step, "steps": [n1, n2], "syncs": [s1, s2]}


def features_match(data: Path, model: Path, in_job: Path, out: Path, threads: int, params: dict[str, Any]) -> int:
    """The features a job extracted right after saving its model (``extract_after``) against a separate
    extraction from the saved checkpoint (``run_features``, what a pulled checkpoint gets): the same bits,
    array by array. Returns the number of arrays compared."""
    import numpy as np

    from ..jobs.features import run_features

    run_features(str(data), str(model), threads, params, str(out), code="gpu-check")
    with np.load(in_job) as a, np.load(out) as b:
        if set(a.files) != set(b.files):
            raise RuntimeError(f"{in_job} holds {sorted(a.files)}, the separate extraction {sorted(b.files)}")
        differ = [k for k in a.files if a[k].shape != b[k].shape or not np.array_equal(a[k], b[k])]
        if differ:
            raise RuntimeError(f"fp32 features differ from a separate extraction of the same checkpoint: {differ}")
        return len(a.files)


def pool_share(config: dict[str, Any], data: Path, split_dir: Path, original: Path, work: Path, seed: int,
               threads: int, on_gpu: bool) -> list[dict[str, Any]]:
    """Two real unlearning jobs started at once on a pool of one device with two slots
    (``gpu.jobs_per_device: 2``): each must hold its own slot of the same device, named by its UUID
    (a fake id on the CPU), and see the other on it. Returns their sidecars' ``device_slot``."""
    import os

    from .. import pipeline as P
    from ..core import device_pool

    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, device_pool.ENV_DEVICES: "0" if on_gpu else "auto", device_pool.ENV_JOBS: "2",
           device_pool.ENV_POOL: str(work / "pool"), device_pool.ENV_WAIT: "120", device_pool.ENV_EXCLUSIVE: "0"}
    if not on_gpu:
        env[device_pool.ENV_FAKE] = "1"
    procs, outs = [], []
    for i in range(2):
        out = work / f"ft-{i}.pt"
        outs.append(out)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "unlearn_da", "unlearn", "--data", str(data), "--split", str(split_dir),
             "--original", str(original), "--method", "ft", "--params", json.dumps(P.unlearn_params(config, "ft")),
             "--out", str(out), "--steps", str(work / f"ft-{i}.steps.csv"), "--seed", str(seed),
             "--threads", str(threads), "--code", "gpu-check"], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"a pooled job failed:\n{err[-2000:]}")
    slots = [json.loads(Path(f"{o}.meta.json").read_text())["environment"].get("device_slot") for o in outs]
    if None in slots:
        raise RuntimeError("a pooled job's sidecar records no device slot")
    if len({s["device_uuid"] for s in slots}) != 1 or sorted(s["slot"] for s in slots) != [0, 1]:
        raise RuntimeError(f"the two jobs did not hold the two slots of one device: {slots}")
    if max(max(s["jobs_on_device_at_start"], s["jobs_on_device_now"]) for s in slots) != 2:
        raise RuntimeError(f"the two jobs never shared the device: {slots}")
    if on_gpu:
        import torch

        uuid = str(torch.cuda.get_device_properties(0).uuid)
        if slots[0]["device_uuid"] != uuid or slots[0]["fake"]:
            raise RuntimeError(f"the pool named the device {slots[0]['device_uuid']}, torch says {uuid}")
    return slots


def _epochs_runner(config: dict[str, Any], data: Path, split_dir: Path, original: Path, method: str, seed: int,
                   threads: int, work: Path) -> Any:
    """``run(epochs)`` for ``sync_growth``: the method's unlearning job in this process with ``epochs``
    epochs and no logging step after the first; returns its optimiser steps (its sidecar's ``steps``)."""
    from .. import pipeline as P
    from ..jobs.unlearn import run_unlearn

    def run(epochs: int) -> int:
        params = P.unlearn_params(deep_merge(config, {"unlearn": {"log_every": 10**6}}), method)
        params = {**params, "hp": {**params["hp"], "epochs": epochs}}
        out = work / f"{method}-{epochs}.pt"
        run_unlearn(str(data), str(split_dir), str(original), method, seed, threads, params, str(out),
                    str(work / f"{method}-{epochs}.steps.csv"), code="gpu-check")
        return int(json.loads(Path(f"{out}.meta.json").read_text())["steps"])

    return run


def measured_profile(device: str) -> tuple[dict[str, Any], bool]:
    """The profile whose training step is measured: config/cifar10.yaml (ResNet-18, batch 256) on a GPU;
    on the CPU the default config's small CNN (toy size). Also whether it runs on a GPU."""
    import torch

    on_gpu = device != "cpu" and torch.cuda.is_available()
    return load_config([REPO_ROOT / "config" / "cifar10.yaml"] if on_gpu else []), on_gpu


def throughput_lines(r: dict[str, Any]) -> list[str]:
    return ["", "## ResNet-18 32x32 training loop against a bare PyTorch loop", "",
            "| device | precision | batch | ours img/s | bare img/s | ratio |", "|---|---|---|---|---|---|",
            f"| {r['device']} | {r['precision']} | {r['batch']} | {r['ours']:.0f} | {r['bare']:.0f} | "
            f"{r['ours'] / r['bare']:.2f} |", ""]


def run_measurements(chk: Checker, device: str, amp_on: bool, threads: int, part: str, config: dict[str, Any],
                     data: Path, split_dir: Path, work: Path, seed: int, skip_compile: bool,
                     log=print) -> tuple[list[str], dict[str, Any]]:
    """What decides the table's time (``tools/devicecost.py``), then the projected hours, and the two checks
    that need real jobs (features against a separate extraction, two jobs sharing a device). Returns the
    report's lines and the numbers."""
    import dataclasses

    import torch

    from .. import pipeline as P
    from . import devicecost as dc
    from .bench import training_throughput
    from .concurrency import profile_spec

    settings = PARTS[part]
    first = len(chk.rows)
    lines: list[str] = []
    profile, on_gpu = measured_profile(device)
    loop = None
    if settings["bare_loop"]:
        loop = chk.stage("ResNet-18 against a bare loop", training_throughput, threads, 3, [RESNET_CASE], device,
                         amp_on, True)
        if loop:
            lines += throughput_lines(loop[0])
    spec = profile_spec(profile, "cuda" if on_gpu else "cpu", amp_on, True, threads,
                        window_s=settings["window_s"] if on_gpu else 1.0,
                        warmup_steps=settings["warmup_steps"] if on_gpu else 3)
    counts = settings["counts"] if on_gpu else (1, 2)
    mix = dc.table_mix(load_config([REPO_ROOT / "config" / "cifar10.yaml"]))
    devices = torch.cuda.device_count() if on_gpu else 1
    rates = chk.stage("rates on one device", dc.measure_rates, spec, profile, mix, counts, devices, log)
    compiled = None
    if settings["compile"] and not skip_compile and rates:
        compiled = chk.stage("compile on and off", dc.measure_compile, rates["spec"], rates["alone"]["plain"],
                             work / "inductor-cache", log)
    startup = chk.stage("real jobs, start to exit", dc.measure_startup, config, data, split_dir, work / "startup",
                        seed, threads, settings["repeats"], log)
    if startup:
        original = work / "startup" / "original.pt"
        chk.stage("fp32 features = a separate extraction", features_match, data, original,
                  work / "startup" / "original.npz", work / "startup" / "original.again.npz", threads,
                  P.features_params(config))
        chk.stage("two jobs share one device (pool)", pool_share, config, data, split_dir, original,
                  work / "pool-jobs", seed, threads, on_gpu)
    projected = None
    if rates and startup:
        fixed = dc.fixed_seconds(startup, rates["alone"]["features"]["aggregate_img_s"])
        projected = dc.projection(dataclasses.replace(rates["rates"], fixed_s=fixed), PROJECTED_DEVICES)
        log("projected: " + ", ".join(f"{name} on {n} device(s) {p['hours']:.2f} h"
                                      for name, by in projected.items() for n, p in by.items()))
    seconds = sum(r["seconds"] for r in chk.rows[first:])
    lines += dc.report_lines(rates, compiled, startup, projected, seconds)
    numbers = {"loop": loop, "rates": rates and {**rates, "rates": dataclasses.asdict(rates["rates"])},
               "compile": compiled, "startup": startup, "projected_hours": projected, "measurement_s": seconds}
    return lines, numbers


def run_gpu_check(device: str = "cuda", workdir: str | Path = "results/gpu-check", threads: int = 2,
                  amp: str = "auto", subset: tuple[int, int] = (200, 100), part: str = "quick",
                  skip_throughput: bool = False, measure_only: bool = False, skip_compile: bool = False,
                  log=print) -> int:
    """Run the check; write ``<workdir>/gpu-check.md`` and return the exit code (0: all stages passed).

    ``part``: ``quick`` or ``full`` (``PARTS``); ``measure_only``: only the data, one split and the
    measurements (what decides the table's time), not every method's stages; ``skip_compile``: no
    compile measurement (Inductor needs a C++ compiler)."""
    if part not in PARTS:
        raise ValueError(f"part: {part!r}; allowed: {', '.join(PARTS)}")
    import torch

    from .. import pipeline as P
    from ..core.artifacts import write_text
    from ..data.prepared import prepare
    from ..jobs.evaluate import run_metrics
    from ..reporting.plots import run_backdoor_figure
    from ..core.scenarios import is_backdoor
    from ..data.splits import run_split
    from ..data.synthetic import write_synthetic_cifar
    from ..reporting.tables import run_aggregate
    from ..jobs.train import run_train
    from ..jobs.unlearn import run_unlearn

    work = Path(workdir).resolve()
    raw = work / "raw"
    config = check_config(device, raw, amp, subset)
    from .cuda_build import build_fit

    on_cuda = device != "cpu" and torch.cuda.is_available()
    header = [f"gpu-check, {part} part; torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
              + (f", GPU: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""),
              build_fit(),
              f"device: {device}, precision: amp {amp} (bf16 autocast), channels_last on; "
              f"{_validate_if_possible(config)}; host syncs {'counted' if on_cuda else 'not counted (CPU)'}"]
    for line in header:
        log(line)
    chk = Checker(log, count_syncs=on_cuda)
    measured: dict[str, Any] = {}
    run = P.run_name(config)
    res = work / "results" / run
    data = work / P.prepared_dir(config) / "dataset.npz"
    seed = int(config["seeds"][0])
    chk.stage("write synthetic CIFAR-10", write_synthetic_cifar, config["dataset"], raw,
              subset[0] + subset[0] // 4, subset[1] + subset[1] // 4)
    chk.stage("prepare_data", prepare, config["dataset"], P.data_params(config), data, code="gpu-check")
    original = res / f"seed{seed}" / "models" / "original.pt"
    # as in the pipeline, the job that makes a model also extracts its features (``--features-out``)
    fp = P.features_params(config)
    if not measure_only:
        chk.stage("train original", run_train, str(data), "original", seed, threads, P.train_params(config),
                  str(original), split_dir=None, code="gpu-check",
                  features_out=str(res / f"seed{seed}" / "features" / "original.npz"), features_params=fp)

    def split_of(scenario: str) -> Path:
        return work / P.prepared_dir(config) / "splits" / scenario / f"seed{seed}"

    scenarios = config["scenarios"] if PARTS[part]["all_scenarios"] else config["scenarios"][:1]
    for scenario in scenarios:
        split_dir = split_of(scenario)
        chk.stage(f"{scenario}: split", run_split, str(data), scenario, seed, P.split_params(config, scenario),
                  str(split_dir))
        if measure_only:  # the start-up measurement needs one split; no method runs
            break
        base = res / scenario / f"seed{seed}"
        models = ["retrain", "original", *config["unlearn"]["methods"]]
        backdoor = is_backdoor(scenario)  # its own original, trained on the poisoned data
        start = base / "models" / "original.pt" if backdoor else original
        if backdoor:
            chk.stage(f"{scenario}: train original (poisoned)", run_train, str(data), "original", seed, threads,
                      P.train_params(config, scenario), str(start), split_dir=str(split_dir), code="gpu-check",
                      features_out=str(base / "features" / "original.npz"), features_params=fp)
        chk.stage(f"{scenario}: train retrain", run_train, str(data), "retrain", seed, threads,
                  P.train_params(config), str(base / "models" / "retrain.pt"), split_dir=str(split_dir),
                  code="gpu-check", features_out=str(base / "features" / "retrain.npz"), features_params=fp)
        for method in config["unlearn"]["methods"]:
            ckpt, steps = base / "models" / f"{method}.pt", base / "models" / f"{method}.steps.csv"
            chk.stage(f"{scenario}: unlearn {method}", run_unlearn, str(data), str(split_dir), str(start),
                      method, seed, threads, P.unlearn_params(config, method), str(ckpt), str(steps),
                      code="gpu-check", features_out=str(base / "features" / f"{method}.npz"), features_params=fp)
            if steps.exists():
                bad = non_finite_steps(steps) + [f"weight {k}" for k in non_finite_weights(ckpt)]
                if bad:
                    chk.fail(f"{scenario}: {method} losses/weights finite", ", ".join(bad[:10]))
            # the quick part: each base method and one "+da" (every "+da" runs the same plug-in)
            growth = PARTS[part]["all_scenarios"] or not method.endswith("+da") or method == "ft+da"
            if on_cuda and growth and "epochs" in P.unlearn_params(config, method)["hp"]:
                chk.stage(f"{scenario}: {method} host syncs per step", sync_growth,
                          _epochs_runner(config, data, split_dir, start, method, seed, threads,
                                         base / "sync-check"), method)
        metric_files = []
        for model in models:
            ckpt = start if model == "original" else base / "models" / f"{model}.pt"
            feats = (res / f"seed{seed}" / "features" / "original.npz" if model == "original" and not backdoor
                     else base / "features" / f"{model}.npz")
            out = base / "metrics" / f"{model}.json"
            chk.stage(f"{scenario}: metrics {model}", run_metrics, str(data), str(split_dir), str(feats),
                      f"{ckpt}.meta.json", model, scenario, seed, P.metrics_params(config), str(out),
                      code="gpu-check")
            metric_files.append(str(out))
        chk.stage(f"{scenario}: table", run_aggregate, metric_files, models, scenario,
                  f"{config['dataset']} / {config['arch']} (gpu-check)", str(res / scenario))
        if backdoor:
            chk.stage(f"{scenario}: ASR figure", run_backdoor_figure, str(res / scenario / "metrics_long.csv"),
                      models, f"{scenario} (gpu-check)", str(res / scenario / "figures" / "asr.png"))
    more: list[str] = []
    if not skip_throughput:
        amp_on = amp == "on" or (amp == "auto" and device == "cuda")
        more, measured = run_measurements(chk, device, amp_on, threads, part, config, data,
                                          split_of(config["scenarios"][0]), work, seed, skip_compile, log)
    lines = ["# gpu-check", "", *header, "", "| stage | seconds | host syncs | result |", "|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['seconds']:.1f} | {'' if r['host_syncs'] is None else r['host_syncs']} | "
              f"{'ok' if r['ok'] else 'FAIL: ' + str(r['problem'])} |" for r in chk.rows]
    lines += more
    failures = chk.failures
    lines += ["", f"**{len(failures)} failure(s)**" if failures else "**all stages passed**", ""]
    write_text(work / "gpu-check.md", "\n".join(lines))
    (work / "gpu-check.json").write_text(json.dumps({"header": header, "stages": chk.rows, "measured": measured},
                                                    indent=1, default=str))
    log(f"gpu-check: {len(chk.rows)} stages, {len(failures)} failure(s); report: {work / 'gpu-check.md'}")
    return 1 if failures else 0
