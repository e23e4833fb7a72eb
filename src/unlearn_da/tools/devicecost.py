"""What decides a paper table's time on a device besides the training rate, measured by ``make gpu-check``.

- **compile on and off**: the profile's training step in one process, without compiling (the
  jobs-per-device row of one process), then compiled with a cold Inductor cache and again with
  the cache the first run filled (a second job reuses it): img/s and warm-up seconds of each;
- **the DA step**: the step with the ``+da`` term (the profile's ``<method>+da`` settings: a
  second forward of the batch paired with a DA batch, the DA loss with its eigen-decomposition),
  its milliseconds against the plain step's and its rate in counted images, which the projection
  assumes equal to the plain rate;
- **a job's start-up**: real ``train`` and ``unlearn`` jobs (``python -m unlearn_da``, as
  Snakemake starts them) on the check's data, twice each; their sidecars' ``startup_s`` (process
  start to the first training step) and the process's wall time;
- **the projection**: the table's counted images at the chosen aggregate rate on every device
  (the images of the jobs that run the DA term, ``<method>+da`` and MUDA, at that rate times the
  DA step's measured ratio), plus every model job's start-up spread over the slots (an upper
  bound: a job's start overlaps other jobs' training when a device runs more than one).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..settings.config import REPO_ROOT, load_config


def measure_compile(spec: dict[str, Any], off_row: dict[str, Any], cache_dir: Path, log=print) -> list[dict[str, Any]]:
    """One process: compile off (``off_row``, measured already), on with an emptied cache, on again (cache warm)."""
    from .concurrency import measure

    shutil.rmtree(cache_dir, ignore_errors=True)
    rows = [{"mode": "off", **off_row}]
    for mode in ("on, cold cache", "on, warm cache"):
        row = measure({**spec, "compile": True, "inductor_cache": str(cache_dir)}, 1, timeout_s=1800.0)
        rows.append({"mode": mode, **row})
        log(f"compile {mode}: {row['aggregate_img_s']:.0f} img/s, warm-up (compiling included) "
            f"{row['warmup_s']:.1f} s")
    return rows


def da_settings(config: dict[str, Any], method: str = "ft+da") -> dict[str, Any]:
    """The DA regulariser of the profile's ``<method>+da`` (``pipeline.unlearn_params``)."""
    from .. import pipeline as P

    return P.unlearn_params(config, method)["da"]


def measure_da_step(spec: dict[str, Any], plain_row: dict[str, Any], da: dict[str, Any], log=print) -> dict[str, Any]:
    """One process of the step with the ``+da`` term, against the plain step (``plain_row``)."""
    from .concurrency import measure

    row = measure({**spec, "da": da}, 1)
    out = {"plain_ms": plain_row["ms_per_step"], "da_ms": row["ms_per_step"],
           "plain_img_s": plain_row["aggregate_img_s"], "da_img_s": row["aggregate_img_s"],
           "da_batch": int(da["batch_size"]), "basis_source": da["basis_source"],
           "rate_ratio": row["aggregate_img_s"] / plain_row["aggregate_img_s"]}
    log(f"DA step ({da['basis_source']} basis, DA batch {da['batch_size']}): {out['da_ms']:.1f} ms against "
        f"{out['plain_ms']:.1f} ms plain; {out['da_img_s']:.0f} counted img/s against {out['plain_img_s']:.0f} "
        f"(ratio {out['rate_ratio']:.2f})")
    return out


#: how long a measured job may wait for a GPU slot, and run (a busy pool is a failure here, not a wait)
JOB_SLOT_WAIT_S = 120.0
JOB_TIMEOUT_S = 1800.0


def _job(args: list[str], sidecar: Path) -> dict[str, float]:
    import os

    from ..core import device_pool

    env = {**os.environ, device_pool.ENV_WAIT: str(min(JOB_SLOT_WAIT_S, float(os.environ.get(device_pool.ENV_WAIT,
                                                                                              JOB_SLOT_WAIT_S))))}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "unlearn_da", *args], capture_output=True, text=True, env=env,
                              timeout=JOB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"job {args[0]} ran past {JOB_TIMEOUT_S:.0f} s") from None
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"job {' '.join(args[:1])} failed:\n{proc.stderr[-2000:]}")
    meta = json.loads(sidecar.read_text())
    if meta.get("startup_s") is None:
        raise RuntimeError(f"{sidecar} records no startup_s")
    return {"startup_s": float(meta["startup_s"]), "wall_s": wall}


def measure_startup(config: dict[str, Any], data: Path, split_dir: Path, work: Path, seed: int, threads: int,
                    repeats: int = 2, log=print) -> list[dict[str, Any]]:
    """Real ``train`` (the original) and ``unlearn`` (FT from it) jobs, ``repeats`` times each, in new
    processes (an unlearning job refuses to start from a checkpoint of another role)."""
    from .. import pipeline as P

    work.mkdir(parents=True, exist_ok=True)
    fp = json.dumps(P.features_params(config))
    original = work / "original.pt"
    rows = []
    for rule, args, out in (
        ("train_original", ["train", "--data", str(data), "--role", "original",
                            "--params", json.dumps(P.train_params(config)), "--out", str(original)], original),
        ("unlearn", ["unlearn", "--data", str(data), "--split", str(split_dir), "--original", str(original),
                     "--method", "ft", "--params", json.dumps(P.unlearn_params(config, "ft")),
                     "--out", str(work / "ft.pt"), "--steps", str(work / "ft.steps.csv")], work / "ft.pt"),
    ):
        features = work / f"{out.stem}.npz"
        runs = [_job([*args, "--seed", str(seed), "--threads", str(threads), "--code", "gpu-check",
                      "--features-out", str(features), "--features-params", fp], Path(f"{out}.meta.json"))
                for _ in range(repeats)]
        row = {"rule": rule, "startup_s": [r["startup_s"] for r in runs], "wall_s": [r["wall_s"] for r in runs]}
        rows.append(row)
        log(f"start-up of a {rule} job: " + ", ".join(f"{s:.1f} s" for s in row["startup_s"])
            + " (process start to its first step); whole job " + ", ".join(f"{s:.1f} s" for s in row["wall_s"]))
    return rows


def typical_startup(rows: list[dict[str, Any]]) -> float:
    """A job's start-up as the projection takes it: the median over rules of each rule's fastest run
    (the first run of a fresh machine also reads the libraries from disk, which later jobs find cached)."""
    return statistics.median(min(r["startup_s"]) for r in rows)


def runs_da(job: Any) -> bool:
    """Whether a workload job's steps carry the DA term: ``<method>+da`` and MUDA unlearning jobs."""
    name = Path(job.artifact).stem
    return job.stage == "unlearning" and (name.endswith("+da") or name == "muda")


def counted_work(config: dict[str, Any]) -> dict[str, float]:
    """The config's model jobs and their images (forward + backward equivalents), split by whether
    the job runs the DA term (``workload.workload_jobs``; features come with their model's job)."""
    from .workload import FORWARD_ONLY_WEIGHT, workload_jobs

    out = {"jobs": 0, "plain": 0.0, "da": 0.0}
    for job in workload_jobs(config):
        out["jobs"] += job.stage != "features"
        total = job.images.forward_backward + FORWARD_ONLY_WEIGHT * job.images.forward_only
        out["da" if runs_da(job) else "plain"] += total
    return out


PAPER_PROFILES = {"cifar10": ["cifar10.yaml"], "cifar100": ["cifar10.yaml", "cifar100.yaml"]}


def projection(img_s_per_device: float, devices: int, jobs_per_device: int, startup_s: float,
               da_rate_ratio: float = 1.0) -> dict[str, dict]:
    """Hours of each paper table: counted images at the aggregate rate of ``devices`` (the DA jobs'
    at ``da_rate_ratio`` of it), plus every model job's start-up over ``devices x jobs_per_device`` slots."""
    out = {}
    rate = img_s_per_device * devices
    for name, files in PAPER_PROFILES.items():
        work = counted_work(load_config([REPO_ROOT / "config" / f for f in files]))
        images_h = (work["plain"] + work["da"] / da_rate_ratio) / rate / 3600
        startup_h = work["jobs"] * startup_s / (devices * jobs_per_device) / 3600
        out[name] = {"jobs": work["jobs"], "images": work["plain"] + work["da"], "da_images": work["da"],
                     "images_h": images_h, "startup_h": startup_h, "hours": images_h + startup_h}
    return out


def report_lines(compile_rows: list[dict] | None, da: dict | None, startup: list[dict] | None,
                 projected: dict[str, dict] | None, seconds: float, devices: int, jobs_per_device: int) -> list[str]:
    """gpu-check's Markdown for the measurements above."""
    lines: list[str] = []
    if compile_rows:
        lines += ["", "## Compile on and off (one process)", "",
                  "| compile | img/s | warm-up s (compiling included) |", "|---|---|---|"]
        lines += [f"| {r['mode']} | {r['aggregate_img_s']:.0f} | {r['warmup_s']:.1f} |" for r in compile_rows]
    if da:
        lines += ["", "## The DA step (one process)", "",
                  f"`+da` with the profile's settings ({da['basis_source']} basis, DA batch {da['da_batch']}): "
                  f"{da['da_ms']:.1f} ms a step against {da['plain_ms']:.1f} ms without; "
                  f"{da['da_img_s']:.0f} img/s counted as the workload counts them (the batch, then the batch again beside a DA batch) against "
                  f"{da['plain_img_s']:.0f} img/s plain: ratio {da['rate_ratio']:.2f} (the projection runs the DA jobs' "
                  "images at this ratio of the chosen rate)."]
    if startup:
        lines += ["", "## A job's start-up (process start to its first training step)", "",
                  "| rule | start-up s, each run | whole job s, each run |", "|---|---|---|"]
        lines += [f"| {r['rule']} | {', '.join(f'{s:.1f}' for s in r['startup_s'])} | "
                  f"{', '.join(f'{s:.1f}' for s in r['wall_s'])} |" for r in startup]
    if projected:
        lines += ["", f"## Projected hours on {devices} device(s), {jobs_per_device} job(s) per device", "",
                  "| table | model jobs | images (M, of which DA jobs) | images h | start-up h (at most) | total h |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {name} | {p['jobs']} | {p['images'] / 1e6:.0f} ({p['da_images'] / 1e6:.0f}) | "
                  f"{p['images_h']:.2f} | {p['startup_h']:.2f} | {p['hours']:.2f} |" for name, p in projected.items()]
    lines += ["", f"These measurements took {seconds:.0f} s of device time.", ""]
    return lines
