"""Measure what each of DVC's experiment modes reruns and how long it takes, on a finished run.

``python -m unlearn_da dvc-experiments --repo <clone>`` runs, in a Git + DVC clone whose run stage and
``dvc.lock`` are committed and whose ``dvc status`` is clean (what ``make reproduce`` leaves):

1. ``dvc exp run --temp -S ++<key>=<v>``: the experiment in a folder of its own, as queued ones run;
2. ``dvc exp run --queue -S '++<key>=<v1>,<v2>,<v3>'`` then ``CORES=<n> dvc queue start -j <jobs>``: a
   sweep, each experiment's Snakemake on its share of the cores;
3. ``dvc exp run -S ++<key>=<v>``: the experiment in the workspace (last: it changes the workspace).

Per mode: the wall time, the jobs each experiment's Snakemake ran (its first "N of M steps"), and
``git diff --stat -- config/`` after it (empty: values set through DVC land in ``params.yaml``). Then
``dvc exp show --only-changed --md``. The JSON it writes is what the docs render ("Experiments with DVC");
the numbers are this machine's (its CPU model and core count are in the file).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..core.errors import PipelineError

STEPS = re.compile(r"\d+ of (\d+) steps")


def _run(repo: Path, *cmd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), cwd=repo, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise PipelineError(f"{' '.join(cmd)} failed in {repo} (exit {proc.returncode}):\n"
                            f"{(proc.stdout + proc.stderr)[-3000:]}")
    return proc


def planned_steps(text: str) -> int:
    """The job count Snakemake planned, from its first "N of M steps" line (0 when it ran none)."""
    found = STEPS.search(text)
    return int(found.group(1)) if found else 0


def _config_diff(repo: Path) -> str:
    return _run(repo, "git", "diff", "--stat", "--", "config/").stdout.strip()


def _wait_for_queue(repo: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = _run(repo, "dvc", "queue", "status").stdout
        if not any(word in status for word in ("Queued", "Running")):
            return status
        if time.monotonic() > deadline:
            raise PipelineError(f"the queue did not finish in {timeout:.0f} s:\n{status}")
        time.sleep(5)


def _queued_names(status: str) -> list[str]:
    """Experiment names of the finished rows of ``dvc queue status`` (first column)."""
    return [line.split()[1] for line in status.splitlines()
            if line.split()[:1] and re.fullmatch(r"[0-9a-f]{7}", line.split()[0]) and "Success" in line]


def measure(repo: Path, key: str = "unlearn.ft.lr", values: tuple[str, ...] = ("0.2", "0.25", "0.3", "0.35", "0.4"),
            queue_jobs: int = 2, cores: int | None = None, timeout: float = 3600) -> dict[str, Any]:
    """Run the three modes in ``repo`` (see the module's docstring); the measured record."""
    from ..core.kernels import cpu_model

    if len(values) < 5:
        raise PipelineError("dvc-experiments needs five values: one for --temp, three for the queue, one for the "
                            "workspace")
    status = _run(repo, "dvc", "status").stdout
    if "up to date" not in status:
        raise PipelineError(f"{repo}: `dvc status` is not clean; run `make reproduce` and commit dvc.yaml and "
                            f"dvc.lock first:\n{status[-2000:]}")
    total_cores = os.cpu_count() or 1
    per_exp = cores or max(1, total_cores // queue_jobs)
    modes: list[dict[str, Any]] = []

    command = f"dvc exp run --temp -S ++{key}={values[0]}"
    t0 = time.perf_counter()
    proc = _run(repo, *command.split())
    modes.append({"mode": "temp", "command": command, "seconds": round(time.perf_counter() - t0, 1),
                  "jobs": [planned_steps(proc.stdout + proc.stderr)], "config_diff": _config_diff(repo)})

    sweep = ",".join(values[1:4])
    queue = f"dvc exp run --queue -S '++{key}={sweep}'"
    start = f"CORES={per_exp} dvc queue start -j {queue_jobs}"
    before = set(_queued_names(_run(repo, "dvc", "queue", "status").stdout))
    t0 = time.perf_counter()
    _run(repo, "dvc", "exp", "run", "--queue", "-S", f"++{key}={sweep}")
    _run(repo, "dvc", "queue", "start", "-j", str(queue_jobs), env={"CORES": str(per_exp)})
    final = _wait_for_queue(repo, timeout)
    seconds = round(time.perf_counter() - t0, 1)
    names = [n for n in _queued_names(final) if n not in before]
    if len(names) != 3:
        raise PipelineError(f"the sweep should have finished three experiments:\n{final}")
    jobs = [planned_steps(_run(repo, "dvc", "queue", "logs", name).stdout) for name in names]
    modes.append({"mode": "queue", "command": f"{queue} && {start}", "seconds": seconds, "jobs": jobs,
                  "config_diff": _config_diff(repo)})

    command = f"dvc exp run -S ++{key}={values[4]}"
    t0 = time.perf_counter()
    proc = _run(repo, *command.split())
    modes.append({"mode": "workspace", "command": command, "seconds": round(time.perf_counter() - t0, 1),
                  "jobs": [planned_steps(proc.stdout + proc.stderr)], "config_diff": _config_diff(repo)})

    shown = _run(repo, "dvc", "exp", "show", "--only-changed", "--md").stdout.strip()
    commit = _run(repo, "git", "rev-parse", "--short", "HEAD").stdout.strip()
    return {"key": key, "machine": f"{cpu_model()}, {total_cores} cores", "cores_per_experiment": per_exp,
            "queue_jobs": queue_jobs, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "commit": commit,
            "modes": modes, "exp_show_only_changed": shown}


def main(repo: str, out: str, key: str, values: list[str], queue_jobs: int, cores: int | None) -> None:
    """Measure, then set the ``dvc-experiments`` entry of the measurements file ``out``."""
    from . import measurements

    record = measure(Path(repo).resolve(), key, tuple(values), queue_jobs, cores)
    measurements.update("dvc-experiments", {"command": "python -m unlearn_da dvc-experiments", **record}, out)
    for m in record["modes"]:
        print(f"{m['mode']}: {m['seconds']} s, jobs {m['jobs']}, config/ diff: {m['config_diff'] or 'none'}",
              file=sys.stderr)
