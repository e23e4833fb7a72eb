"""`make bench`: throughput and overheads measured on the current machine, as Markdown.

- training-loop throughput (img/s) of each model: the project's ``fit`` against a bare
  PyTorch loop (same model, batch, optimiser; data already normalised on the device);
- the cost of the DA metric on 50,000 x 512 features;
- the no-op rerun time of the default config (``snakemake -n`` and a real no-op run);
- the time per rule, from Snakemake's records of the jobs of earlier runs (``.snakemake/metadata``).
"""

from __future__ import annotations

import glob
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core.artifacts import write_text

CASES = [  # (label, arch, channels, size, width, batch, samples per measured epoch)
    ("smallcnn 8x8 (digits)", "smallcnn", 1, 8, 32, 64, 4096),
    ("smallcnn 28x28 (Fashion-MNIST)", "smallcnn", 1, 28, 32, 128, 4096),
    ("resnet18 32x32 (CIFAR)", "resnet18", 3, 32, 32, 128, 384),
]


def _bare_loop(model, x, y, batch: int, lr: float, amp: bool = False) -> float:
    import torch
    import torch.nn.functional as F

    from ..core.runtime import autocast

    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    model.train()
    t0 = time.perf_counter()
    for start in range(0, len(y), batch):
        with autocast(x.device, amp):
            loss = F.cross_entropy(model(x[start:start + batch]), y[start:start + batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return len(y) / (time.perf_counter() - t0)


def _our_loop(model, x8, y, prep, hp: dict, seed: int, amp: bool = False) -> float:
    """img/s of the project's ``fit`` for one epoch."""
    import torch

    from ..core.training import fit

    if x8.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fit(model, x8, y, prep, hp, generator=torch.Generator().manual_seed(seed), amp=amp, log=lambda m: None)
    if x8.is_cuda:
        torch.cuda.synchronize()
    return len(y) / (time.perf_counter() - t0)


def _timed_bare(model, xf, y, batch: int, amp: bool = False) -> float:
    import torch

    if xf.is_cuda:
        torch.cuda.synchronize()
    return _bare_loop(model, xf, y, batch, 0.01, amp)


def training_throughput(threads: int, repeats: int = 3, cases: list[tuple] | None = None, device: str = "auto",
                        amp: bool | None = None, channels_last: bool | None = None) -> list[dict]:
    """img/s of ``fit`` and of a bare loop per case; precision defaults to the pipeline's 'auto' settings."""
    import torch

    from ..core.models import build_model, model_spec
    from ..core.runtime import amp_default, channels_last_default, select_device
    from ..core.training import Preprocessor

    torch.set_num_threads(threads)
    device = select_device(device)
    # the pipeline's 'auto' precision settings on this device, in both loops
    amp = amp_default(device) if amp is None else amp
    cl = channels_last_default(device) if channels_last is None else channels_last
    rows = []
    for label, arch, c, size, width, batch, n in cases or CASES:
        if device.type == "cuda":
            n *= 16
        gen = torch.Generator().manual_seed(0)
        x8 = torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=gen).to(device)
        y = torch.randint(0, 10, (n,), generator=gen).to(device)
        prep = Preprocessor(np.full(c, 0.5), np.full(c, 0.25), 255.0, device, channels_last=cl)
        xf = prep(x8)
        spec = model_spec(arch, 10, c, size, width)
        hp = {"epochs": 1, "batch_size": batch, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
              "schedule": "constant"}
        ours, bare = [], []
        for r in range(repeats + 2):  # the first round warms up both loops
            torch.manual_seed(r)
            m1 = build_model(spec).to(device)
            m2 = build_model(spec).to(device)
            m2.load_state_dict(m1.state_dict())
            if cl:
                m1, m2 = (m.to(memory_format=torch.channels_last) for m in (m1, m2))
            if r % 2:  # alternate the order so neither loop always runs first
                t_ours = _our_loop(m1, x8, y, prep, hp, r, amp)
                t_bare = _timed_bare(m2, xf, y, batch, amp)
            else:
                t_bare = _timed_bare(m2, xf, y, batch, amp)
                t_ours = _our_loop(m1, x8, y, prep, hp, r, amp)
            if r:
                ours.append(t_ours)
                bare.append(t_bare)
        rows.append({"model": label, "batch": batch, "device": str(device),
                     "precision": ("bf16" if amp else "fp32") + (", channels_last" if cl else ""), "ours": float(np.median(ours)),
                     "bare": float(np.median(bare))})
    return rows


def kernel_cost(threads: int, repeats: int = 3, cases: list[tuple] | None = None) -> list[dict]:
    """img/s of ``fit`` with native and with portable CPU kernels (``kernels.py``), each in its own
    process: the dispatch is fixed when torch loads. One row per case: native, portable, their ratio."""
    import json
    import os

    cases = cases or [c for c in CASES if c[1] in ("smallcnn", "resnet18") and c[3] in (8, 32)]
    code = ("import json, sys, unlearn_da.tools.bench as b; "
            "print(json.dumps(b.training_throughput(int(sys.argv[1]), int(sys.argv[2]), "
            "[tuple(c) for c in json.loads(sys.argv[3])], device='cpu')))")
    rates: dict[str, list[dict]] = {}
    for mode in ("native", "portable"):
        env = {**os.environ, "UNLEARN_DA_CPU_KERNELS": mode}
        env.pop("UNLEARN_DA_ORIGINAL_DISPATCH_ENV", None)  # this process's own values, not a parent's
        for key, value in json.loads(os.environ.get("UNLEARN_DA_ORIGINAL_DISPATCH_ENV") or "{}").items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        proc = subprocess.run([sys.executable, "-c", code, str(threads), str(repeats), json.dumps(cases)],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"throughput with {mode} kernels failed:\n{proc.stderr[-2000:]}")
        rates[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return [{"model": n["model"], "batch": n["batch"], "native": n["ours"], "portable": p["ours"],
             "ratio": p["ours"] / n["ours"]} for n, p in zip(rates["native"], rates["portable"], strict=True)]


def da_cost(n: int = 50_000, d: int = 512, n_forget: int = 5_000) -> dict:
    from ..metrics.da import dimensional_alignment

    rng = np.random.default_rng(0)
    zr = rng.standard_normal((n, d), dtype=np.float32)
    zf = rng.standard_normal((n_forget, d), dtype=np.float32)
    t0 = time.perf_counter()
    value = dimensional_alignment(zf, zr)
    return {"seconds": time.perf_counter() - t0, "value": value, "shape": f"{n}x{d} retain, {n_forget}x{d} forget"}


def noop_times(snakemake_bin: str) -> dict:
    out = {}
    for label, args in (("dry run (snakemake -n)", ["-n"]), ("no-op run (snakemake --cores 2)", ["--cores", "2"])):
        t0 = time.perf_counter()
        proc = subprocess.run([snakemake_bin, *args], capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        nothing = "Nothing to be done" in proc.stdout + proc.stderr
        out[label] = (seconds, nothing)
    return out


def job_walls(metadata: Path | str = ".snakemake/metadata") -> dict[str, dict[str, Any]]:
    """Output path -> {run, rule, seconds} of the job that made it, from Snakemake's own records: a job's
    start and the time its last output was written (``starttime``, ``endtime``). Snakemake keeps them for
    every job, so no rule needs a ``benchmark:`` file (whose memory sampling cost Snakemake's process
    several milliseconds per job and, under warm start, measured the client, not the job)."""
    from ..plumbing.snakemake_records import _records, record_path

    jobs: dict[tuple, dict[str, Any]] = {}
    outputs: dict[str, tuple] = {}
    for rel, path in _records(Path(metadata), ("",)).items():
        try:
            rec = json.loads(path.read_text())
            start, end = float(rec["starttime"]), float(rec["endtime"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        key = (rec.get("rule"), rec.get("job_hash"), start)
        job = jobs.setdefault(key, {"rule": str(rec.get("rule")), "start": start, "end": end})
        job["end"] = max(job["end"], end)
        outputs[str(record_path(rel))] = key
    out = {}
    for output, key in outputs.items():
        parts = Path(output).parts
        run = parts[2] if parts[:2] == ("data", "prepared") and len(parts) > 2 else (
            parts[1] if len(parts) > 1 else "?")
        out[output] = {"run": run, "rule": jobs[key]["rule"], "seconds": max(0.0, jobs[key]["end"] - jobs[key]["start"]),
                       "job": key}
    return out


def rule_times(metadata: Path | str = ".snakemake/metadata") -> list[dict]:
    """Per run and rule: job count and the mean, max and sum of the jobs' wall times (:func:`job_walls`)."""
    import pandas as pd

    rows, seen = [], set()
    for output, job in job_walls(metadata).items():
        if job["job"] in seen:
            continue
        seen.add(job["job"])
        rule = job["rule"]
        if rule == "unlearn" and "__t" in Path(output).name:
            rule = "unlearn (tuning candidates)"
        rows.append({"rule": rule, "run": job["run"], "seconds": job["seconds"]})
    if not rows:
        return []
    df = pd.DataFrame(rows)
    agg = df.groupby(["run", "rule"])["seconds"].agg(["count", "mean", "max", "sum"]).reset_index()
    return agg.to_dict("records")


def startup_times(pattern: str = "results/*/**/*.meta.json") -> list[dict]:
    """Per run and rule: seconds from a job's process start to its first unit of work (sidecars' ``startup_s``)."""
    import statistics

    groups: dict[tuple[str, str], list[float]] = {}
    for path in glob.glob(pattern, recursive=True):
        try:
            meta = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(meta, dict) or meta.get("startup_s") is None:
            continue
        run = Path(path).parts[1] if len(Path(path).parts) > 1 else "?"
        groups.setdefault((run, str(meta.get("made_by"))), []).append(float(meta["startup_s"]))
    return [{"run": run, "rule": rule, "count": len(v), "median": statistics.median(v), "max": max(v)}
            for (run, rule), v in sorted(groups.items())]


def job_breakdown(pattern: str = "results/*/**/models/*.pt.meta.json") -> list[dict]:
    """Per run and model rule, where a job's time goes, from its sidecars and Snakemake's benchmark file:
    start-up (process start to the first step: ``startup_s``), the work (``seconds``), the tail (saving,
    reloading, features and checksums: the job's last sidecar's ``tail_s``) and the job's wall time in
    Snakemake's records (:func:`job_walls`). Medians and sums over the rule's jobs."""
    import statistics

    walls = job_walls()

    groups: dict[tuple[str, str], list[dict[str, float]]] = {}
    for path in glob.glob(pattern, recursive=True):
        try:
            meta = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(meta, dict) or meta.get("startup_s") is None or meta.get("seconds") is None:
            continue
        checkpoint = Path(path[: -len(".meta.json")])
        features = Path(str(checkpoint).replace("/models/", "/features/")[: -len(".pt")] + ".npz.meta.json")
        tail = meta.get("tail_s")
        try:
            tail = json.loads(features.read_text()).get("tail_s", tail)
        except (OSError, ValueError):
            pass
        row = {"startup": float(meta["startup_s"]), "work": float(meta["seconds"])}
        if tail is not None:
            row["tail"] = float(tail)
        wall = walls.get(checkpoint.as_posix())
        if wall is not None:
            row["wall"] = wall["seconds"]
        run = Path(path).parts[1] if len(Path(path).parts) > 1 else "?"
        groups.setdefault((run, str(meta.get("made_by"))), []).append(row)
    out = []
    for (run, rule), rows in sorted(groups.items()):
        entry: dict[str, Any] = {"run": run, "rule": rule, "jobs": len(rows)}
        for part in ("startup", "work", "tail", "wall"):
            values = [r[part] for r in rows if part in r]
            entry[part] = (statistics.median(values), sum(values)) if values else None
        out.append(entry)
    return out


def record_cpu_rate(throughput: list[dict]) -> None:
    """The ResNet-18 rate measured on the CPU, into the measurements file the docs render it from (the
    cost of the CIFAR tables on a CPU); a GPU's rate is gpu-check's, not this entry's."""
    from datetime import datetime, timezone

    from . import measurements
    from .readme_tables import BENCH_ENTRY

    resnet = next((r for r in throughput if r["model"].startswith("resnet18") and r["device"] == "cpu"), None)
    if resnet is None:
        return
    measurements.update(BENCH_ENTRY, {"command": "make bench", "img_s": [round(resnet["ours"])],
                                      "machine": measurements.machine(),
                                      "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                                      "commit": measurements.commit(), "note": "one run"})


def typical_fixed_s(rows: list[dict]) -> float:
    """A model job's start-up plus tail as the projection takes it from :func:`job_breakdown`: the median
    over this machine's model rules of their median start-up plus median tail (0 without any run)."""
    import statistics

    fixed = [r["startup"][0] + (r["tail"][0] if r["tail"] else 0.0) for r in rows if r["startup"]]
    return statistics.median(fixed) if fixed else 0.0


def breakdown_lines(rows: list[dict]) -> list[str]:
    """The Markdown table of :func:`job_breakdown`: median (sum) seconds per part."""
    def cell(value: tuple[float, float] | None) -> str:
        return "–" if value is None else f"{value[0]:.2f} ({value[1]:.0f})"

    lines = ["| run | rule | jobs | start-up | work | tail | wall (Snakemake) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['rule']} | {r['jobs']} | {cell(r['startup'])} | {cell(r['work'])} | "
              f"{cell(r['tail'])} | {cell(r['wall'])} |" for r in rows]
    return lines


def paper_estimate(throughput: list[dict], fixed_s: float = 0.0) -> list[str]:
    """Hours of the paper tables at the ResNet-18 throughput measured here, through gpu-check's projection
    (``devicecost.projection``): the plain rate for every step kind (the DA and small-batch steps are not
    measured here), a forward-only image at ``FORWARD_ONLY_COST_ASSUMED`` of a training image, and
    ``fixed_s`` per job (the median start-up and tail of this machine's model jobs)."""
    from ..settings.config import load_config
    from ..pipeline import oracle_models
    from .devicecost import FORWARD_ONLY_COST_ASSUMED, Rates, projection

    resnet = next(r for r in throughput if r["model"].startswith("resnet18"))
    profile = load_config(["config/cifar10.yaml"])
    work = workload_images(profile)
    rates = Rates(img_s={"plain": resnet["ours"]}, fixed_s=fixed_s)
    hours = {name: by[1]["hours"] for name, by in projection(rates).items()}
    lines = ["## Cost of the paper profiles on this machine", "",
             f"Images the CIFAR-10 profile's DAG pushes through models ({len(profile['seeds'])} seeds, scenarios "
             f"{', '.join(profile['scenarios'])}, {len(profile['unlearn']['methods'])} methods, "
             f"{len(oracle_models(profile))} oracles per seed and scenario), counted as the jobs count them:", "",
             *workload_table(work), "",
             f"At the ResNet-18 throughput measured above ({resnet['ours']:.0f} img/s on {resnet['device']}) for "
             f"every step, a forward-only image at {FORWARD_ONLY_COST_ASSUMED:.2f} of a training image and "
             f"{fixed_s:.1f} s of start-up and tail per job, one device (`make gpu-check` projects the same way "
             "from rates it measures per step kind): " + "; ".join(f"**{name} {h:.1f} hours** ({h / 24:.1f} days)"
                                                                  for name, h in hours.items()) + ".", ""]
    return lines


def workload_table(work: dict) -> list[str]:
    """``workload_images`` as a Markdown table: millions of images per stage and kind, and the total."""
    lines = ["| stage | forward + backward (M) | forward only (M) |", "|---|---|---|"]
    lines += [f"| {stage} | {v['forward_backward'] / 1e6:.1f} | {v['forward_only'] / 1e6:.1f} |"
              for stage, v in work["stages"].items() if v["forward_backward"] or v["forward_only"]]
    lines += [f"| all | {work['forward_backward'] / 1e6:.1f} | {work['forward_only'] / 1e6:.1f} |",
              f"| total (forward only as 1/3) | {work['total'] / 1e6:.1f} | |"]
    return lines


def run_bench(out: str, threads: int = 1, skip_noop: bool = False) -> str:
    import torch

    from ..core.kernels import record

    k = record()
    lines = ["# Benchmark", "", f"Machine: {k['cpu']} ({k['machine']}, {sys.platform}), torch {torch.__version__}, "
             f"{torch.get_num_threads()} torch threads available, threads used: {threads}, "
             f"CUDA: {torch.cuda.is_available()}; {k['cpu_kernels']} CPU kernels "
             f"(ATen {k.get('aten_capability', '?')}) unless a table says otherwise", ""]
    lines += ["## Training-loop throughput (img/s)", "",
              "`fit` (uint8 -> normalise on the device, shuffle, schedule, hooks) against a bare loop "
              "over pre-normalised tensors; same model, batch, optimiser. Median of 4 rounds (alternating which "
              "loop goes first) after a warm-up.", "",
              "| model | batch | device | precision | ours | bare | ratio |", "|---|---|---|---|---|---|---|"]
    throughput = training_throughput(threads)
    record_cpu_rate(throughput)
    for r in throughput:
        lines.append(f"| {r['model']} | {r['batch']} | {r['device']} | {r['precision']} | {r['ours']:.0f} | "
                     f"{r['bare']:.0f} | "
                     f"{r['ours'] / r['bare']:.2f} |")
    from ..core.kernels import cpu_model

    lines += ["", "## Portable against native CPU kernels (img/s of `fit`, CPU)", "",
              f"CPU: {cpu_model()}. Each mode in its own process (`cpu_kernels`, README \"Reproducible on "
              "any machine\"); median of the rounds as above.", "",
              "| model | batch | native | portable | portable / native |", "|---|---|---|---|---|"]
    for r in kernel_cost(threads):
        lines.append(f"| {r['model']} | {r['batch']} | {r['native']:.0f} | {r['portable']:.0f} | {r['ratio']:.2f} |")
    da = da_cost()
    lines += ["", "## DA metric", "", f"{da['shape']}: {da['seconds']:.2f} s (DA = {da['value']:.3f})", ""]
    parts = job_breakdown()
    lines += paper_estimate(throughput, typical_fixed_s(parts))
    if not skip_noop:
        bin_dir = Path(sys.executable).parent
        lines += ["## No-op rerun of the default config", "", "| command | seconds | nothing to do |",
                  "|---|---|---|"]
        for label, (sec, nothing) in noop_times(str(bin_dir / "snakemake")).items():
            lines.append(f"| {label} | {sec:.2f} | {nothing} |")
        lines.append("")
    starts = startup_times()
    lines += ["## Start-up per rule (process start to the first training step or feature pass)", "",
              "From the sidecars of earlier runs (`startup_s`): interpreter, imports, reading and checking "
              "inputs, data to the device, model build; paid once per job.", ""]
    if starts:
        lines += ["| run | rule | jobs | median s | max s |", "|---|---|---|---|---|"]
        lines += [f"| {r['run']} | {r['rule']} | {r['count']} | {r['median']:.2f} | {r['max']:.2f} |" for r in starts]
    else:
        lines.append("No sidecar records a start-up yet: run `make reproduce` first.")
    lines.append("")
    lines += ["## Where a model job's time goes", "",
              "Median (sum) seconds per rule, from the sidecars (`startup_s`, `seconds`, the last sidecar's "
              "`tail_s`) and Snakemake's records of each job's start and end (wall).", ""]
    lines += breakdown_lines(parts) if parts else ["No model sidecar yet: run `make reproduce` first."]
    lines.append("")
    from ..plumbing.workflow_usage import usage_lines

    lines += ["## Snakemake's own CPU (its last run that ran jobs)", "",
              *(usage_lines() or ["No run has recorded it yet (the Snakefile's onsuccess writes it)."]), ""]
    rows = rule_times()
    lines += ["## Time per rule (Snakemake's records of the jobs of earlier runs)", ""]
    if rows:
        lines += ["| run | rule | jobs | mean s | max s | total s |", "|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['run']} | {r['rule']} | {r['count']} | {r['mean']:.2f} | {r['max']:.2f} | "
                         f"{r['sum']:.1f} |")
    else:
        lines.append("No job recorded yet: run `make reproduce` first.")
    text = "\n".join(lines) + "\n"
    write_text(out, text)
    return text


def workload_images(config: dict) -> dict:
    """Images the config's DAG pushes through models, by stage and in all (``workload.workload_images``).

    Counted exactly from the config and the data set sizes, job by job, as the jobs count them in
    their sidecars (``images``); ``total`` is forward + backward equivalents (a forward-only image
    counts as a third), the number a measured training rate turns into hours.
    """
    from .workload import workload_images as counted

    return counted(config)
