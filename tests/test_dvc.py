"""Share artifacts through a DVC remote: push from one clone, pull into another, rerun nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, copy_project, dry_run_jobs, env_with_venv, snakemake

pytestmark = pytest.mark.slow
TINY = "tests/config/tiny.yaml"


def sh(cwd: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), cwd=cwd, env=env_with_venv(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh(cwd, str(BIN / "dvc"), *args, check=check)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A git repo whose dvc.yaml runs the tiny config; pipeline run with `dvc repro`, pushed to a local remote."""
    base = tmp_path_factory.mktemp("dvc")
    origin = copy_project(base / "origin")
    repo_root = Path(__file__).resolve().parents[1]
    for name in (".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore"):
        (origin / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo_root / name, origin / name)
    stage = (origin / "dvc.yaml").read_text()
    assert "--cores all\n" in stage
    (origin / "dvc.yaml").write_text(stage.replace("--cores all\n", f"--cores 2 --configfile {TINY}\n", 1))
    sh(origin, "git", "init", "-q")
    sh(origin, "git", "config", "user.email", "t@example.com")
    sh(origin, "git", "config", "user.name", "test")
    repro = dvc(origin, "repro")
    sh(origin, "git", "add", "-A")
    sh(origin, "git", "commit", "-qm", "run")
    remote = base / "remote"
    dvc(origin, "remote", "add", "-d", "local", str(remote))
    sh(origin, "git", "commit", "-qam", "remote")
    dvc(origin, "push")
    clone = base / "clone"
    sh(base, "git", "clone", "-q", str(origin), str(clone))
    return origin, clone, repro


def test_repro_then_status_is_clean_and_metrics_show(shared):
    origin, _, repro = shared
    assert "Running stage 'digits'" in repro.stdout + repro.stderr
    status = dvc(origin, "status")
    assert "Data and pipelines are up to date" in status.stdout
    again = dvc(origin, "repro")
    assert "didn't change, skipping" in again.stdout + again.stderr
    shown = dvc(origin, "metrics", "show").stdout
    assert "class0/summary.json" in shown and "retrain.UA.mean" in shown


def test_pull_into_fresh_clone_reuses_every_model(shared):
    origin, clone, _ = shared
    assert not (clone / "results").exists()
    dvc(clone, "pull")
    assert "Data and pipelines are up to date" in dvc(clone, "status").stdout
    verified = sh(clone, str(BIN / "python"), "-m", "unlearn_da", "verify", "--configfile", TINY)
    assert "all match" in verified.stdout
    snakemake(clone, "--touch", "--forceall", "--configfile", TINY)  # what `make pull` runs
    dry = snakemake(clone, "-n", "--configfile", TINY)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    # every job's params and code are now in Snakemake's metadata: none missing ...
    assert "missing provenance/metadata" not in dry.stdout + dry.stderr
    # ... so a config change after the pull reruns exactly what it affects, as in a clone that trained
    overlay = clone / "lr.yaml"
    overlay.write_text("unlearn:\n  ga:\n    lr: 0.0005\n")
    assert dry_run_jobs(clone, "--configfile", TINY, str(overlay)) == {
        "unlearn": 2, "extract_features": 2, "metrics": 2, "aggregate": 2, "plots": 2, "all": 1}
    # a pulled checkpoint loads and reproduces its pulled metrics
    rel = "results/digits-smallcnn/class0/seed0"
    out = clone / "recheck"
    out.mkdir()
    cfg = json.loads((clone / f"{rel}/metrics/ft.json").read_text())
    feat_params = json.loads((clone / f"{rel}/features/ft.npz.meta.json").read_text())["params"]
    sh(clone, str(BIN / "python"), "-m", "unlearn_da", "features", "--data", "data/prepared/digits-smallcnn/dataset.npz",
       "--model", f"{rel}/models/ft.pt", "--params", json.dumps(feat_params), "--out", str(out / "ft.npz"))
    sh(clone, str(BIN / "python"), "-m", "unlearn_da", "metrics", "--data", "data/prepared/digits-smallcnn/dataset.npz",
       "--split", "data/prepared/digits-smallcnn/splits/class0/seed0", "--features", str(out / "ft.npz"),
       "--model-meta", f"{rel}/models/ft.pt.meta.json", "--model", "ft", "--scenario", "class0", "--seed", "0",
       "--params", json.dumps(cfg["params"]), "--out", str(out / "ft.json"))
    assert json.loads((out / "ft.json").read_text())["metrics"] == cfg["metrics"]


def test_changing_a_param_after_pull_is_detected(shared, tmp_path):
    _, clone, _ = shared
    if not (clone / "results").exists():
        dvc(clone, "pull")
    overlay = tmp_path / "lr.yaml"
    overlay.write_text("unlearn:\n  ga:\n    lr: 0.5\n")
    proc = sh(clone, str(BIN / "python"), "-m", "unlearn_da", "verify", "--configfile", TINY, str(overlay),
              check=False)
    assert proc.returncode == 2
    assert "2 of 35 artifacts do not match" in proc.stderr  # ga in both scenarios, nothing else
    assert "seed0/models/ga.pt: made with other parameters" in proc.stderr
    assert "in the sidecar, 0.5 now" in proc.stderr
