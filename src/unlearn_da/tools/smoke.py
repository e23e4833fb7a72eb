"""`make smoke-paper`: the paper profiles (CIFAR-10/100, ResNet-18) through every rule at toy scale.

No CIFAR download is possible on a CPU-only, offline machine, so the smoke writes
small synthetic CIFAR folders in the real on-disk form (``synthetic.py``), then runs
Snakemake on ``config/cifar10.yaml`` (and ``config/cifar100.yaml``) overlaid with
``config/smoke-paper.yaml`` and a generated overlay that points ``data.cifar_dirs``
at them and sets ``data.subset``. It runs in a copy of the project so that its
outputs never mix with real results. The test suite runs a cut-down variant.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from ..core.artifacts import write_text
from ..settings.config import REPO_ROOT

PROJECT_FILES = ("Snakefile", "config", "workflow", "tests", "envs", "src", "expected", "examples", "pyproject.toml", "Makefile",
                 "dvc.yaml", ".dvcignore", "constraints.txt", "README.md", "docs", "mkdocs.yml", "CHANGELOG.md", "LICENSE", "params.yaml",
                 "measurements", ".snakemake-workflow-catalog.yml")
IGNORE = shutil.ignore_patterns(".venv", ".git", "results", "prepared", "raw", ".snakemake", "__pycache__",
                                "*.egg-info", ".pytest_cache", ".ruff_cache", ".whl", ".gl")
PROFILES = {"cifar10": ["config/cifar10.yaml"], "cifar100": ["config/cifar10.yaml", "config/cifar100.yaml"]}
# (train pool, test) images: the fewest the metrics allow (every class in val/train/test; a random-10 %
# forget set of at least as many samples as k-means clusters, i.e. classes)
SMOKE_SIZES = {"cifar10": (200, 100), "cifar100": (1200, 200)}


def copy_project(dest: Path, root: Path = REPO_ROOT) -> Path:
    """Copy the workflow into ``dest`` as the project ships it: no outputs, no venv, and no run
    stages in ``dvc.yaml`` (``sharing.shipped_dvc_yaml``) even where runs were made in ``root``."""
    from ..plumbing.sharing import shipped_dvc_yaml

    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=IGNORE, dirs_exist_ok=True)
        elif src.exists():
            shutil.copy2(src, dest / name)
    dvc_yaml = dest / "dvc.yaml"
    if dvc_yaml.exists():
        dvc_yaml.write_text(shipped_dvc_yaml(dvc_yaml.read_text()))
    return dest


def smoke_overlay(dataset: str, raw_dir: Path, train: int, test: int, methods: list[str] | None = None,
                  scenarios: list[str] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The generated part of the smoke config: where the synthetic files are, and how many to use."""
    overlay: dict[str, Any] = {"device": "cpu", **(extra or {}),
                               "data": {"cifar_dirs": [str(raw_dir)], "subset": {"train": train, "test": test}}}
    if methods is not None:
        overlay["unlearn"] = {"methods": list(methods)}
    if scenarios is not None:
        overlay["scenarios"] = list(scenarios)
    return overlay


def _snakemake(project: Path, args: list[str], log: Path) -> tuple[int, float, str]:
    bin_dir = Path(sys.executable).parent
    cmd = [str(bin_dir / "snakemake"), *args]
    t0 = time.perf_counter()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(cmd, cwd=project, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    text = proc.stdout + proc.stderr
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(text)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}) in {project}; log: {log}\n{text[-3000:]}")
    return proc.returncode, seconds, text


def jobs_done(snakemake_output: str) -> int:
    """The job count of a finished run ("N of N steps (100%) done"); 0 when there was nothing to do."""
    found = re.findall(r"(\d+) of (\d+) steps \(100%\) done", snakemake_output)
    return int(found[-1][1]) if found else 0


def run_smoke(workdir: str | Path, datasets: tuple[str, ...] = ("cifar10", "cifar100"), cores: int = 2,
              sizes: dict[str, tuple[int, int]] | None = None, methods: list[str] | None = None,
              scenarios: list[str] | None = None, targets: list[str] | None = None,
              report: bool = True, extra: dict[str, Any] | None = None, log=print) -> dict[str, Any]:
    """Run the smoke for ``datasets``; return per data set the wall time, the job count and the tables."""
    from ..data.synthetic import write_synthetic_cifar

    work = Path(workdir).resolve()
    project = copy_project(work / "project")
    raw = work / "raw"
    sizes = {**SMOKE_SIZES, **(sizes or {})}
    summary: dict[str, Any] = {}
    for dataset in datasets:
        n_train, n_test = sizes[dataset]
        # the synthetic source is a little larger than the subset, so the subset draw is exercised
        write_synthetic_cifar(dataset, raw, n_train=n_train + n_train // 4, n_test=n_test + n_test // 4, seed=0)
        overlay = project / "config" / f"smoke-{dataset}.generated.yaml"
        overlay.write_text(yaml.safe_dump(smoke_overlay(dataset, raw, n_train, n_test, methods, scenarios, extra)))
        configs = [*PROFILES[dataset], "config/smoke-paper.yaml", str(overlay.relative_to(project))]
        args = ["--cores", str(cores), "--configfile", *configs, "--rerun-incomplete"]
        log(f"smoke {dataset}: snakemake {' '.join(args)} (in {project})")
        _, seconds, text = _snakemake(project, [*args, *(targets or [])], work / "logs" / f"{dataset}.log")
        entry: dict[str, Any] = {"seconds": seconds, "jobs": jobs_done(text)}
        run_dir = project / "results" / f"{dataset}-resnet18"
        entry["tables"] = sorted(str(p.relative_to(project)) for p in run_dir.glob("*/table.md"))
        if report:
            html = work / f"report-{dataset}.html"
            _, rep_seconds, _ = _snakemake(project, [*args, "--report", str(html)], work / "logs" / f"{dataset}-report.log")
            entry["report"], entry["report_seconds"] = str(html), rep_seconds
        log(f"smoke {dataset}: {entry['jobs']} jobs in {seconds / 60:.1f} min; tables: {', '.join(entry['tables'])}")
        summary[dataset] = entry
    lines = ["# Paper-profile smoke (synthetic CIFAR, CPU)", "",
             "| data set | jobs | wall time | tables |", "|---|---|---|---|"]
    for dataset, e in summary.items():
        lines.append(f"| {dataset} | {e['jobs']} | {e['seconds'] / 60:.1f} min | {', '.join(e['tables'])} |")
    write_text(work / "summary.md", "\n".join(lines) + "\n")
    return summary
