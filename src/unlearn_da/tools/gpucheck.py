"""`make gpu-check` / `python -m unlearn_da gpu-check`: will the paper profile work on this GPU?

Runs the smoke's stages (synthetic CIFAR-10 in the real on-disk form, the real
ResNet-18, every method of ``config/cifar10.yaml`` including MUDA and the ``+da``
variants, features, metrics, one table) on ``--device`` with the profile's CUDA
precision (bf16 autocast, channels_last), calling the package's stage functions
in sequence: no Snakemake, no jsonschema, nothing installed, so it runs on a
GPU machine as it comes. Every method must keep every logged loss term finite
(``log_every: 1`` logs every step) and end with finite weights; every stage must
complete. Then it measures what decides the table's time: ResNet-18 32x32 training
throughput, ours against a bare PyTorch loop at the same precision; the profile's
step in 1, 2, 4 and 8 processes on one device (``gpu.jobs_per_device``); the DA step;
compile on and off; a real job's start-up (``tools/devicecost.py``); and projects the
hours of the CIFAR-10 and CIFAR-100 tables on this machine's GPUs from the counted
workload. ``--measure-only`` skips the methods' stages. Exits non-zero on any failure.
"""

from __future__ import annotations

import csv
import json
import math
import time
import traceback
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


class Checker:
    """Runs named stages, records time and failure of each, never stops at the first failure."""

    def __init__(self, log=print):
        self.rows: list[dict[str, Any]] = []
        self.log = log

    def stage(self, name: str, fn, *args, **kwargs) -> Any:
        """Run one stage. A stage is one job run in this process: the GPU slot its session takes is
        given back when it ends (else the later stages' real jobs, in their own processes, wait
        for the only slot of a one-GPU machine until ``gpu.wait_s`` and fail)."""
        from ..core import device_pool

        t0 = time.perf_counter()
        try:
            out = fn(*args, **kwargs)
            problem = None
        except Exception as exc:  # every failure is reported, then the check goes on
            out, problem = None, f"{type(exc).__name__}: {exc}"
            self.log(traceback.format_exc())
        finally:
            device_pool.release()
        seconds = time.perf_counter() - t0
        self.rows.append({"stage": name, "seconds": seconds, "ok": problem is None, "problem": problem})
        self.log(f"[{'ok' if problem is None else 'FAIL'}] {name} ({seconds:.1f} s){'' if problem is None else ': ' + problem}")
        return out

    def fail(self, name: str, problem: str) -> None:
        self.rows.append({"stage": name, "seconds": 0.0, "ok": False, "problem": problem})
        self.log(f"[FAIL] {name}: {problem}")

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if not r["ok"]]


def measured_profile(device: str) -> tuple[dict[str, Any], bool]:
    """The profile whose training step is measured: config/cifar10.yaml (ResNet-18, batch 256) on a GPU;
    on the CPU the default config's small CNN (toy size). Also whether it runs on a GPU."""
    import torch

    on_gpu = device != "cpu" and torch.cuda.is_available()
    return load_config([REPO_ROOT / "config" / "cifar10.yaml"] if on_gpu else []), on_gpu


def measure_jobs_per_device(device: str, amp: bool, threads: int, log=print) -> dict[str, Any]:
    """The profile's training step in 1, 2, 4 and 8 processes on one GPU; on the CPU in 1 and 2 processes."""
    import torch

    from .concurrency import profile_spec, run_concurrency

    config, on_gpu = measured_profile(device)
    spec = profile_spec(config, "cuda" if on_gpu else "cpu", amp, True, threads,
                        window_s=10.0 if on_gpu else 2.0, warmup_steps=20 if on_gpu else 3)
    result = run_concurrency(spec, (1, 2, 4, 8) if on_gpu else (1, 2), log=log)
    result.update(spec=spec, devices=torch.cuda.device_count() if on_gpu else 1)
    log(f"jobs_per_device: {result['jobs_per_device']} (the fewest processes within 5 % of the best "
        f"aggregate rate)")
    return result


def concurrency_lines(result: dict[str, Any]) -> list[str]:
    spec = result["spec"]
    lines = ["", "## Jobs per device", "",
             f"{spec['arch']} at batch {spec['batch_size']} ({'bf16' if spec['amp'] else 'fp32'}, "
             f"channels_last, deterministic {spec['deterministic']}), the project's Trainer, "
             f"{spec['window_s']:.0f} s window in every process at once:", "",
             "| processes | aggregate img/s | per process img/s | slowest img/s | peak MB per process |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['processes']} | {r['aggregate_img_s']:.0f} | {r['per_process_img_s']:.0f} | "
              f"{r['slowest_img_s']:.0f} | {r['peak_mb']:.0f} |" for r in result["rows"]]
    lines += ["", f"Chosen `gpu.jobs_per_device`: **{result['jobs_per_device']}** (fewest processes within 5 % "
              f"of the best aggregate).", ""]
    return lines


def throughput_lines(r: dict[str, Any]) -> list[str]:
    return ["", "## ResNet-18 32x32 training loop against a bare PyTorch loop", "",
            "| device | precision | batch | ours img/s | bare img/s | ratio |", "|---|---|---|---|---|---|",
            f"| {r['device']} | {r['precision']} | {r['batch']} | {r['ours']:.0f} | {r['bare']:.0f} | "
            f"{r['ours'] / r['bare']:.2f} |", ""]


def run_measurements(chk: Checker, device: str, amp_on: bool, threads: int, repeats: int, config: dict[str, Any],
                     data: Path, split_dir: Path, work: Path, seed: int, skip_compile: bool,
                     log=print) -> tuple[list[str], dict[str, Any]]:
    """What decides the table's time (``tools/devicecost.py``): our loop against a bare one, jobs per
    device, the DA step, compile on and off, a job's start-up; then the projected hours. Returns the
    report's lines and the numbers."""
    from . import devicecost as dc
    from .bench import training_throughput

    first = len(chk.rows)
    lines: list[str] = []
    loop = chk.stage("ResNet-18 throughput", training_throughput, threads, repeats, [RESNET_CASE], device,
                     amp_on, True)
    if loop:
        lines += throughput_lines(loop[0])
        log(f"ResNet-18 training: ours {loop[0]['ours']:.0f} img/s, bare {loop[0]['bare']:.0f} img/s")
    conc = chk.stage("jobs per device", measure_jobs_per_device, device, amp_on, threads, log)
    if not conc:
        return lines, {"loop": loop}
    lines += concurrency_lines(conc)
    spec, one = conc["spec"], conc["rows"][0]
    profile, _ = measured_profile(device)
    da = chk.stage("DA step", dc.measure_da_step, spec, one, dc.da_settings(profile), log)
    compiled = None if skip_compile else chk.stage("compile on and off", dc.measure_compile, spec, one,
                                                   work / "inductor-cache", log)
    startup = chk.stage("job start-up", dc.measure_startup, config, data, split_dir, work / "startup", seed,
                        threads, 2, log)
    projected = None
    if startup:
        projected = dc.projection(conc["chosen_aggregate_img_s"], conc["devices"], conc["jobs_per_device"],
                                  dc.typical_startup(startup), da["rate_ratio"] if da else 1.0)
        log("projected: " + ", ".join(f"{k} {v['hours']:.2f} h" for k, v in projected.items()))
    seconds = sum(r["seconds"] for r in chk.rows[first:])
    lines += dc.report_lines(compiled, da, startup, projected, seconds, conc["devices"], conc["jobs_per_device"])
    return lines, {"loop": loop, "jobs_per_device": conc, "da_step": da, "compile": compiled, "startup": startup,
                   "projected_hours": projected, "measurement_s": seconds}


def run_gpu_check(device: str = "cuda", workdir: str | Path = "results/gpu-check", threads: int = 2,
                  amp: str = "auto", subset: tuple[int, int] = (200, 100), repeats: int = 3,
                  skip_throughput: bool = False, measure_only: bool = False, skip_compile: bool = False,
                  log=print) -> int:
    """Run the check; write ``<workdir>/gpu-check.md`` and return the exit code (0: all stages passed).

    ``measure_only``: only the data, one split and the measurements (what decides the table's time),
    not every method's stages; ``skip_compile``: no compile measurement (Inductor needs a C++ compiler)."""
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
    header = [f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
              + (f", GPU: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""),
              f"device: {device}, precision: amp {amp} (bf16 autocast), channels_last on; "
              f"{_validate_if_possible(config)}"]
    for line in header:
        log(line)
    chk = Checker(log)
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

    for scenario in config["scenarios"]:
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
    lines = ["# gpu-check", "", *header, "", "| stage | seconds | result |", "|---|---|---|"]
    lines += [f"| {r['stage']} | {r['seconds']:.1f} | {'ok' if r['ok'] else 'FAIL: ' + str(r['problem'])} |"
              for r in chk.rows]
    if not skip_throughput:
        amp_on = amp == "on" or (amp == "auto" and device == "cuda")
        more, measured = run_measurements(chk, device, amp_on, threads, repeats, config, data,
                                          split_of(config["scenarios"][0]), work, seed, skip_compile, log)
        lines += more
    failures = chk.failures
    lines += ["", f"**{len(failures)} failure(s)**" if failures else "**all stages passed**", ""]
    write_text(work / "gpu-check.md", "\n".join(lines))
    (work / "gpu-check.json").write_text(json.dumps({"header": header, "stages": chk.rows, "measured": measured},
                                                    indent=1, default=str))
    log(f"gpu-check: {len(chk.rows)} stages, {len(failures)} failure(s); report: {work / 'gpu-check.md'}")
    return 1 if failures else 0
