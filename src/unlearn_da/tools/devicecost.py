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
from dataclasses import dataclass
from typing import Any

from ..settings.config import REPO_ROOT, load_config

#: a forward-only image against a training image where nothing measured it (make bench on the CPU);
#: gpu-check measures it (fp32 features cost far more than a third of a bf16 training image on a GPU)
FORWARD_ONLY_COST_ASSUMED = 1 / 3


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


def _job(args: list[str], sidecar: Path, features_sidecar: Path) -> dict[str, float]:
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
    meta, features = json.loads(sidecar.read_text()), json.loads(features_sidecar.read_text())
    if meta.get("startup_s") is None or features.get("tail_s") is None:
        raise RuntimeError(f"{sidecar} records no startup_s, or {features_sidecar} no tail_s")
    # the features' sidecar is the job's last file: its tail_s is the whole tail (save, reload, feature
    # pass, checksums); the pass itself is counted as images (``fixed_seconds`` takes it out)
    return {"startup_s": float(meta["startup_s"]), "work_s": float(meta["seconds"]), "tail_s": float(features["tail_s"]),
            "features_images": int(features["images"]["forward_only"]), "wall_s": wall}


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
                      "--features-out", str(features), "--features-params", fp], Path(f"{out}.meta.json"),
                     Path(f"{features}.meta.json"))
                for _ in range(repeats)]
        row = {"rule": rule, **{k: [r[k] for r in runs] for k in runs[0]}}
        rows.append(row)
        log(f"a {rule} job, start to exit: start-up " + ", ".join(f"{s:.1f}" for s in row["startup_s"])
            + " s, work " + ", ".join(f"{s:.1f}" for s in row["work_s"]) + " s, tail "
            + ", ".join(f"{s:.1f}" for s in row["tail_s"]) + " s, whole job " + ", ".join(f"{s:.1f}" for s in row["wall_s"]) + " s")
    return rows


def runs_da(job: Any) -> bool:
    """Whether a workload job's steps carry the DA term: ``<method>+da`` and MUDA unlearning jobs."""
    name = Path(job.artifact).stem
    return job.stage == "unlearning" and (name.endswith("+da") or name == "muda")


def step_kind(job: Any) -> str:
    """Which measured step a model job's training passes run at: ``da`` (the ``+da`` term, MUDA),
    ``small_batch`` (NegGrad+'s retain batch 32 with a forget batch 16 in the CIFAR profiles) or
    ``plain`` (the profile's batch: training and every other method)."""
    if runs_da(job):
        return "da"
    return "small_batch" if job.stage == "unlearning" and Path(job.artifact).stem == "neggrad_plus" else "plain"


STEP_KINDS = ("plain", "da", "small_batch")


@dataclass(frozen=True)
class Rates:
    """What turns counted images into hours on one kind of device, measured (``make gpu-check``) or
    measured in part (``make bench``, on the CPU: ``source`` says which).

    ``img_s``: images per second of each step kind in one process alone on a device, counted as the
    workload counts them; ``scaling``: the aggregate rate of ``jobs_per_device`` processes of the
    table's step mix over that of one process; ``forward_only_cost``: seconds of a forward-only image
    (features in fp32, probes, teachers) over those of a plain training image; ``fixed_s``: a model
    job's start-up and tail (save, reload, checksums), the feature pass left out (it is counted as
    images)."""

    img_s: dict[str, float]
    devices: int = 1
    jobs_per_device: int = 1
    scaling: float = 1.0
    forward_only_cost: float = FORWARD_ONLY_COST_ASSUMED
    fixed_s: float = 0.0
    source: str = ""

    def slot_img_s(self, kind: str) -> float:
        """One job's rate of ``kind`` while ``jobs_per_device`` jobs share its device."""
        rate = self.img_s.get(kind) or self.img_s["plain"]
        return rate * self.scaling / self.jobs_per_device


def model_jobs(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The config's model jobs (``workload.workload_jobs``), each with its images by step kind, its
    forward-only images (its features' included: the job that makes a model extracts them) and the
    checkpoints it waits for."""
    from .workload import workload_jobs

    jobs: dict[str, dict[str, Any]] = {}
    for job in workload_jobs(config):
        entry = jobs.setdefault(job.made_in, {"name": job.made_in, "stage": job.stage, "kind": "plain",
                                              "train": 0.0, "forward_only": 0.0, "after": ()})
        entry["forward_only"] += job.images.forward_only
        if job.stage != "features":
            entry.update(stage=job.stage, kind=step_kind(job), train=float(job.images.forward_backward),
                         after=tuple(job.after))
    return list(jobs.values())


def job_seconds(job: dict[str, Any], rates: Rates) -> float:
    """One model job on one slot: its training images at its step kind's rate, its forward-only images
    at their measured cost, and the fixed start-up and tail."""
    plain = rates.slot_img_s("plain")
    return job["train"] / rates.slot_img_s(job["kind"]) + job["forward_only"] * rates.forward_only_cost / plain \
        + rates.fixed_s


def makespan(durations: dict[str, float], after: dict[str, tuple[str, ...]], slots: int) -> float:
    """Seconds until the last job ends when ``slots`` run at once: whenever a slot frees, the longest job
    whose inputs are done starts (longest first keeps the long jobs off the end). A job waiting for an
    input that no job makes (e.g. a checkpoint the table reuses) waits for nothing."""
    import heapq

    pending = {name: {a for a in after.get(name, ()) if a in durations} for name in durations}
    ready = [(-d, name) for name, d in durations.items() if not pending[name]]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    now, done = 0.0, 0
    while ready or running:
        while ready and len(running) < slots:
            neg, name = heapq.heappop(ready)
            heapq.heappush(running, (now - neg, name))
        now, finished = heapq.heappop(running)
        done += 1
        for name, waits in pending.items():
            if finished in waits:
                waits.discard(finished)
                if not waits:
                    heapq.heappush(ready, (-durations[name], name))
    if done != len(durations):
        raise ValueError("the jobs' dependencies form a cycle")
    return now


def table_mix(config: dict[str, Any]) -> dict[str, float]:
    """The share of each step kind in the training images of a config's table (``model_jobs``)."""
    totals = dict.fromkeys(STEP_KINDS, 0.0)
    for job in model_jobs(config):
        totals[job["kind"]] += job["train"]
    everything = sum(totals.values())
    return {k: v / everything for k, v in totals.items() if v > 0}


def measure_rates(spec: dict[str, Any], profile: dict[str, Any], mix: dict[str, float], counts: tuple[int, ...],
                  devices: int, log=print) -> dict[str, Any]:
    """Every rate a projection needs, on one device (``concurrency.measure``): each step kind and the
    fp32 feature pass in one process alone; the plain step without deterministic kernels (what
    ``deterministic: true`` costs); the table's ``mix`` of steps in each of ``counts`` processes at once,
    whose aggregate chooses ``jobs_per_device`` and gives the scaling over one process."""
    from .. import pipeline as P
    from .concurrency import choose_jobs_per_device, measure

    ng = P.unlearn_params(profile, "neggrad_plus")["hp"]
    spec = {**spec, "da": da_settings(profile), "features_batch": int(P.features_params(profile)["batch_size"]),
            "small_batch": {"batch_size": int(ng["batch_size"]),
                            "forget_batch_size": int(ng.get("forget_batch_size") or ng["batch_size"])}}
    alone = {}
    for kind in (*STEP_KINDS, "features"):
        alone[kind] = measure({**spec, "kind": kind}, 1)
        log(f"{kind} step alone: {alone[kind]['aggregate_img_s']:.0f} counted img/s, "
            f"{alone[kind]['ms_per_step']:.1f} ms a step")
    other = measure({**spec, "kind": "plain", "deterministic": not spec["deterministic"]}, 1)
    strict, loose = (alone["plain"], other) if spec["deterministic"] else (other, alone["plain"])
    log(f"deterministic kernels: {strict['aggregate_img_s']:.0f} img/s, without: {loose['aggregate_img_s']:.0f}")
    mixed = []
    for n in counts:
        row = measure({**spec, "mix": mix}, n)
        mixed.append({**row, "processes": n})
        log(f"the table's step mix in {n} process(es): {row['aggregate_img_s']:.0f} img/s in all, "
            f"peak {row['peak_mb']:.0f} MB per process")
    chosen = choose_jobs_per_device(mixed)
    one = mixed[0]["aggregate_img_s"]
    at_chosen = next(r["aggregate_img_s"] for r in mixed if r["processes"] == chosen)
    img_s = {k: alone[k]["aggregate_img_s"] for k in STEP_KINDS}
    rates = Rates(img_s=img_s, devices=devices, jobs_per_device=chosen, scaling=at_chosen / one,
                  forward_only_cost=img_s["plain"] / alone["features"]["aggregate_img_s"])
    return {"alone": alone, "mix": mix, "mixed": mixed, "jobs_per_device": chosen, "rates": rates,
            "deterministic_cost": loose["aggregate_img_s"] / strict["aggregate_img_s"],
            "deterministic": bool(spec["deterministic"]), "spec": spec}


def fixed_seconds(startup_rows: list[dict[str, Any]], features_img_s: float) -> float:
    """A model job's fixed cost as the projection takes it: start-up plus tail, less the feature pass at
    its measured rate (counted as images), of each rule's fastest run; the median over rules."""
    per_rule = [min(s + max(0.0, t - f / features_img_s) for s, t, f in
                    zip(r["startup_s"], r["tail_s"], r["features_images"], strict=True)) for r in startup_rows]
    return statistics.median(per_rule)


PAPER_PROFILES = {"cifar10": ["cifar10.yaml"], "cifar100": ["cifar10.yaml", "cifar100.yaml"]}


def project_config(config: dict[str, Any], rates: Rates) -> dict[str, Any]:
    """One config's table on ``rates.devices`` devices: the device time its images take, the fixed costs,
    and the hours until its last job ends (``makespan`` over ``devices x jobs_per_device`` slots)."""
    jobs = model_jobs(config)
    plain = rates.slot_img_s("plain")
    durations = {j["name"]: job_seconds(j, rates) for j in jobs}
    slots = rates.devices * rates.jobs_per_device
    images_s = sum(j["train"] / rates.slot_img_s(j["kind"]) for j in jobs)
    forward_s = sum(j["forward_only"] * rates.forward_only_cost / plain for j in jobs)
    return {"jobs": len(jobs), "images": sum(j["train"] + j["forward_only"] for j in jobs),
            "da_images": sum(j["train"] for j in jobs if j["kind"] == "da"),
            "forward_only": sum(j["forward_only"] for j in jobs),
            "images_h": images_s / slots / 3600, "forward_h": forward_s / slots / 3600,
            "fixed_h": len(jobs) * rates.fixed_s / slots / 3600, "fixed_s": rates.fixed_s,
            "hours": makespan(durations, {j["name"]: j["after"] for j in jobs}, slots) / 3600}


def projection(rates: Rates, device_counts: tuple[int, ...] = ()) -> dict[str, dict[int, dict]]:
    """Hours of each paper table (``PAPER_PROFILES``) at ``rates`` (``project_config``), on ``rates.devices``
    devices and on each of ``device_counts`` more (every device as fast as the one measured)."""
    import dataclasses

    counts = sorted({rates.devices, *device_counts})
    return {name: {n: project_config(load_config([REPO_ROOT / "config" / f for f in files]),
                                     dataclasses.replace(rates, devices=n)) for n in counts}
            for name, files in PAPER_PROFILES.items()}


def report_lines(measured: dict[str, Any] | None, compile_rows: list[dict] | None, startup: list[dict] | None,
                 projected: dict[str, dict[int, dict]] | None, seconds: float) -> list[str]:
    """gpu-check's Markdown for the measurements above."""
    lines: list[str] = []
    if measured:
        alone, rates = measured["alone"], measured["rates"]
        spec = measured["spec"]
        lines += ["", f"## Rates on one device, one process alone ({spec['arch']}, "
                  f"{'bf16' if spec['amp'] else 'fp32'} training, channels_last)", "",
                  "| step | batch | counted img/s | ms a step |", "|---|---|---|---|"]
        batches = {"plain": str(spec["batch_size"]), "da": f"{spec['batch_size']} + DA {spec['da']['batch_size']}",
                   "small_batch": f"{spec['small_batch']['batch_size']} + {spec['small_batch']['forget_batch_size']}",
                   "features": f"{spec['features_batch']} (fp32, eval)"}
        lines += [f"| {k} | {batches[k]} | {r['aggregate_img_s']:.0f} | {r['ms_per_step']:.1f} |" for k, r in alone.items()]
        lines += ["", f"Deterministic kernels: the plain step at {1 / measured['deterministic_cost']:.2f} of its rate "
                  f"without them (the profile runs with `deterministic: {str(measured['deterministic']).lower()}`). "
                  f"A forward-only image costs {rates.forward_only_cost:.2f} of a plain training image.",
                  "", "## The table's step mix in 1, 2, 4, ... processes on one device", "",
                  "Shares of the training images: " + ", ".join(f"{k} {v:.0%}" for k, v in measured["mix"].items())
                  + ".", "", "| processes | aggregate img/s | per process | slowest | peak MB per process |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['processes']} | {r['aggregate_img_s']:.0f} | {r['per_process_img_s']:.0f} | "
                  f"{r['slowest_img_s']:.0f} | {r['peak_mb']:.0f} |" for r in measured["mixed"]]
        lines += ["", f"Chosen `gpu.jobs_per_device`: **{measured['jobs_per_device']}** (fewest processes within 5 % of "
                  f"the best aggregate; {rates.scaling:.2f} x one process's rate)."]
    if compile_rows:
        lines += ["", "## Compile on and off (one process)", "",
                  "| compile | img/s | warm-up s (compiling included) |", "|---|---|---|"]
        lines += [f"| {r['mode']} | {r['aggregate_img_s']:.0f} | {r['warmup_s']:.1f} |" for r in compile_rows]
    if startup:
        lines += ["", "## A real job, start to exit (`python -m unlearn_da`, as Snakemake starts it)", "",
                  "| rule | start-up s | work s | tail s (save, reload, features, checksums) | whole job s |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['rule']} | {', '.join(f'{v:.1f}' for v in r['startup_s'])} | "
                  f"{', '.join(f'{v:.1f}' for v in r['work_s'])} | {', '.join(f'{v:.1f}' for v in r['tail_s'])} | "
                  f"{', '.join(f'{v:.1f}' for v in r['wall_s'])} |" for r in startup]
    if projected:
        fixed = next(iter(next(iter(projected.values())).values()))["fixed_s"]
        lines += ["", "## Projected hours", "",
                  f"Every model job: its training images at its step kind's rate on a shared device, its forward-only "
                  f"images (features in fp32, probes) at their measured cost, and {fixed:.1f} s of start-up and "
                  "tail; jobs start longest first on devices x jobs_per_device slots, each unlearning job after its "
                  "original." + ("" if not measured or measured["spec"]["arch"] == "resnet18" else
                                 f" The rates are the {measured['spec']['arch']}'s at toy size (no GPU here): these "
                                 "hours show the arithmetic, not what a CIFAR table costs."), "",
                  "| table | devices | model jobs | images M (DA, forward-only) | training h | forward-only h | "
                  "fixed h | hours to the last job |", "|---|---|---|---|---|---|---|---|"]
        for name, by_devices in projected.items():
            for devices, p in by_devices.items():
                lines.append(f"| {name} | {devices} | {p['jobs']} | {p['images'] / 1e6:.0f} ({p['da_images'] / 1e6:.0f}, "
                             f"{p['forward_only'] / 1e6:.0f}) | {p['images_h']:.2f} | {p['forward_h']:.2f} | "
                             f"{p['fixed_h']:.2f} | **{p['hours']:.2f}** |")
    lines += ["", f"These measurements took {seconds:.0f} s of device time.", ""]
    return lines
