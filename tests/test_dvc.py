"""Share artifacts through a DVC remote: push from one clone, pull into another, rerun nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from conftest import BIN, copy_project, dry_run_jobs, env_with_venv, snakemake
from support.remote_servers import s3_server, ssh_server, sshd_available

pytestmark = pytest.mark.slow
TINY = "tests/config/tiny.yaml"


def sh(cwd: Path, *cmd: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd`` with the venv on PATH; ``env`` adds (or, with value None, removes) variables."""
    full = env_with_venv()
    for key, value in (env or {}).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    proc = subprocess.run(list(cmd), cwd=cwd, env=full, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def dvc(cwd: Path, *args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return sh(cwd, str(BIN / "dvc"), *args, check=check, env=env)


def make_reproduce(repo: Path) -> subprocess.CompletedProcess:
    """`make reproduce` with the tiny config on 2 cores, using this venv as is (-o: never reinstall it)."""
    venv = BIN.parent
    return sh(repo, "make", "--no-print-directory", "-o", f"{venv}/.installed", "reproduce", f"PROFILE={TINY}",
              "CORES=2", env={"VENV": str(venv)})


@pytest.mark.parametrize("target", ["reproduce", "pull", "pipeline"])
def test_make_n_prints_and_changes_nothing(tmp_path, target):
    """`make -n` of a target changes nothing: make runs a recipe line that names $(MAKE) even under -n, and
    reproduce's line also wrote dvc.yaml's stage and ran `dvc repro`."""
    repo = copy_project(tmp_path / "repo")
    sh(repo, "git", "init", "-q")
    sh(repo, str(BIN / "dvc"), "init", "-q", "--no-scm")
    before = {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    venv = BIN.parent
    proc = sh(repo, "make", "-n", "--no-print-directory", "-o", f"{venv}/.installed", target, f"PROFILE={TINY}",
              env={"VENV": str(venv)})
    after = {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    assert after == before, sorted(set(after) ^ set(before)) or [p for p in after if after[p] != before.get(p)]
    assert "unlearn_da" in proc.stdout  # what it would run, printed


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_project):
    """A git repo whose dvc.yaml runs the tiny config; `make reproduce` (through DVC), pushed to a local remote.

    The tiny run's outputs and Snakemake metadata come from the session's tiny run (same code and
    config, times kept), so the stage's Snakemake finds nothing to do; what is tested here is that
    the one command records, reports and shares them. (The tiny run itself is tested in
    test_pipeline_e2e.py.)
    """
    base = tmp_path_factory.mktemp("dvc")
    origin = copy_project(base / "origin")
    for name in ("data/prepared", "results", ".snakemake/metadata"):
        shutil.copytree(tiny_project / name, origin / name, symlinks=True)
    repo_root = Path(__file__).resolve().parents[1]
    for name in (".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore"):
        (origin / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo_root / name, origin / name)
    sh(origin, "git", "init", "-q")
    sh(origin, "git", "config", "user.email", "t@example.com")
    sh(origin, "git", "config", "user.name", "test")
    repro = make_reproduce(origin)
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
    # make reproduce added the run's stage to dvc.yaml (the tiny config's) and ran it
    assert "added the DVC stage 'digits-smallcnn'" in repro.stderr
    stage = yaml.safe_load((origin / "dvc.yaml").read_text())["stages"]["digits-smallcnn"]
    assert stage["cmd"] == f'make --no-print-directory pipeline PROFILE="{TINY}"'
    assert "Running stage 'digits-smallcnn'" in repro.stdout + repro.stderr
    assert "Nothing to be done" in repro.stdout + repro.stderr  # the session's tiny run, reused
    assert "writing results/digits-smallcnn/report.html" in repro.stdout
    status = dvc(origin, "status")
    assert "Data and pipelines are up to date" in status.stdout
    # the report is one of the stage's outputs, so it is pushed with the rest
    assert "results/digits-smallcnn" in lock_outs(origin)
    assert (origin / "results/digits-smallcnn/report.html").stat().st_size > 100_000
    again = make_reproduce(origin)
    assert "didn't change, skipping" in again.stdout + again.stderr
    shown = json.loads(dvc(origin, "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]  # the workspace's metrics files: the few headline numbers
    head = files["results/digits-smallcnn/class0/headline.json"]["data"]
    assert {"avg_gap_per_seed", "avg_gap", "noise_floor", "methods"} <= set(head)  # (muda_rank: null, no MUDA)
    assert set(head["avg_gap_per_seed"]) == {"retrain_alt", "original", "ft", "ga", "ft+da"} and head["methods"] == 3


def test_an_experiment_sets_its_value_in_params_yaml_and_reruns_what_a_direct_change_reruns(shared, tmp_path):
    """`dvc exp run -S ++unlearn.ft.lr=0.2` writes DVC's own parameters file, which every make target reads
    last: config/ stays byte-identical (the stage once tracked config/config.yaml, and DVC rewrote its 147
    commented lines), `dvc params diff` shows the value, and the experiment's Snakemake plans exactly the
    jobs that the same value given as an overlay plans."""
    import re

    origin, _, _ = shared
    repo = tmp_path / "exp"
    shutil.copytree(origin, repo, symlinks=True)
    config_before = {p: p.read_bytes() for p in (repo / "config").rglob("*") if p.is_file()}
    overlay = tmp_path / "ft.yaml"
    overlay.write_text("unlearn: {ft: {lr: 0.2}}\n")
    planned = dry_run_jobs(repo, "--configfile", TINY, str(overlay))
    assert planned.get("unlearn") and "train_original" not in planned, planned
    proc = dvc(repo, "exp", "run", "-S", "++unlearn.ft.lr=0.2")
    steps = [int(m.group(1)) for m in re.finditer(r"\d+ of (\d+) steps", proc.stdout + proc.stderr)]
    assert steps and steps[0] == sum(planned.values()), (steps[:1], planned)
    assert {p: p.read_bytes() for p in (repo / "config").rglob("*") if p.is_file()} == config_before
    assert yaml.safe_load((repo / "params.yaml").read_text()) == {"unlearn": {"ft": {"lr": 0.2}}}
    diff = dvc(repo, "params", "diff").stdout
    assert "params.yaml" in diff and "unlearn.ft.lr" in diff and "0.2" in diff
    ft = json.loads((repo / "results/digits-smallcnn/random10/seed0/models/ft.pt.meta.json").read_text())
    assert ft["params"]["hp"]["lr"] == 0.2


def _steps(proc: subprocess.CompletedProcess) -> int:
    """The job count Snakemake planned, from its first "N of M steps" line (0 when it ran none)."""
    import re

    found = re.search(r"\d+ of (\d+) steps", proc.stdout + proc.stderr)
    return int(found.group(1)) if found else 0


def test_a_temp_experiment_reruns_what_a_workspace_one_does(shared, tmp_path):
    """`dvc exp run --temp` (the mode of --queue) runs in a new folder where every file has a new time and
    .snakemake/ is absent: the stage restores Snakemake's records carried in results/<run>/ and reruns only
    the jobs the value reaches, as many as the same value as an overlay plans in the workspace."""
    origin, _, _ = shared
    repo = tmp_path / "exp"
    shutil.copytree(origin, repo, symlinks=True)
    assert list((repo / "results/digits-smallcnn/.snakemake-records").iterdir())  # saved by make pipeline
    overlay = tmp_path / "ft.yaml"
    overlay.write_text("unlearn: {ft: {lr: 0.3}}\n")
    planned = dry_run_jobs(repo, "--configfile", TINY, str(overlay))
    assert planned.get("unlearn") and "train_original" not in planned, planned
    proc = dvc(repo, "exp", "run", "--temp", "-S", "++unlearn.ft.lr=0.3")
    assert "snakemake-records:" in proc.stdout + proc.stderr and "restored" in proc.stdout + proc.stderr
    assert _steps(proc) == sum(planned.values()), (_steps(proc), planned)
    shown = dvc(repo, "exp", "show", "--only-changed", "--csv").stdout.splitlines()
    header, rows = shown[0].split(","), [line.split(",") for line in shown[1:]]
    column = header.index("unlearn.ft.lr")  # params.yaml's value beside the headline numbers that moved
    assert "0.3" in [row[column] for row in rows] and any("avg_gap_per_seed.ft" in h for h in header)


def test_a_copy_with_new_times_reruns_only_what_changed_content(shared, tmp_path):
    """A copy of the run whose every file is new (as after a checkout) and which has no .snakemake/: with
    the carried records restored nothing reruns; an artifact whose content changed reruns its readers
    (its checksum is not the recorded one), which a profile without the mtime trigger would miss."""
    origin, _, _ = shared
    repo = tmp_path / "copy"
    shutil.copytree(origin, repo, symlinks=True, ignore=shutil.ignore_patterns(".snakemake"))
    # new times, the data set's newest (what a checkout in another order gives), all before now
    files = sorted((p for p in repo.rglob("*") if p.is_file() and not p.is_symlink()), reverse=True)
    start = time.time() - len(files) - 60
    for i, path in enumerate(files):
        os.utime(path, (start + i, start + i))
    before = dry_run_jobs(repo, "--configfile", TINY)
    assert before.get("unlearn"), before  # no records: every job looks stale
    sh(repo, str(BIN / "python"), "-m", "unlearn_da", "snakemake-records", "restore", "--configfile", TINY)
    assert dry_run_jobs(repo, "--configfile", TINY) == {}
    split = repo / "data/prepared/digits-smallcnn/splits/random10/seed0/forget.npy"
    import numpy as np

    np.save(split, np.load(split)[::-1].copy())  # the same indices in another order: other bytes
    rerun = dry_run_jobs(repo, "--configfile", TINY)
    assert rerun.get("unlearn") and rerun.get("train_retrain") and "train_original" not in rerun, rerun


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
        "unlearn": 2, "metrics": 2, "aggregate": 2, "plots": 2, "all": 1}
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
    assert "2 of 37 artifacts do not match" in proc.stderr  # ga in both scenarios, nothing else (of 35 files and 2 splits)
    assert "seed0/models/ga.pt: made with other parameters" in proc.stderr
    assert "in the sidecar, 0.5 now" in proc.stderr


# ---------------------------------------------------------------------- real remotes
# The same origin (the `shared` fixture's run: the pipeline runs once per module) pushes
# to a real remote; a fresh `git clone` pulls from it and goes through `make pull`'s
# steps. S3 (moto's server) runs in `make test`; SSH (a throw-away sshd) is marked
# `remotes` and runs in `make test-remotes` with S3.


def lock_outs(repo: Path) -> list[str]:
    """Every output path dvc.lock records (whatever the stages and results folders are called)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return sorted(out["path"] for stage in lock["stages"].values() for out in stage.get("outs", []))


def tree_digests(repo: Path, paths: list[str]) -> dict[str, str]:
    """relative path -> SHA-256 of every file under ``paths`` (DVC's ignores: __pycache__, *.pyc)."""
    digests = {}
    for top in paths:
        root = repo / top
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            if "__pycache__" in f.parts or f.suffix == ".pyc":
                continue
            digests[f.relative_to(repo).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()
    return digests


def cache_objects(repo: Path) -> tuple[int, int]:
    """(files, bytes) in the repo's DVC cache: what a complete push must upload."""
    files = [p for p in (repo / ".dvc" / "cache").rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def remote_round_trip(origin: Path, clone: Path, name: str, url: str, *, config: dict[str, str],
                      local: dict[str, str], push_env: dict, pull_env: dict,
                      usage: Callable[[], tuple[int, int]],
                      origin_local: dict[str, str] | None = None) -> dict:
    """Push the origin's outputs to remote ``name`` and pull them into a fresh git clone.

    ``config`` goes into the committed .dvc/config, ``local`` (credentials, key files)
    into the clone's .dvc/config.local, which git does not carry, and ``origin_local``
    (default: ``local``) into the origin's. Checks what `make pull` checks and that every
    pulled file equals the origin's byte for byte; returns the measured times and sizes.
    """
    dvc(origin, "remote", "add", name, url)
    for key, value in config.items():
        dvc(origin, "remote", "modify", name, key, value)
    for key, value in (local if origin_local is None else origin_local).items():
        dvc(origin, "remote", "modify", "--local", name, key, value)
    sh(origin, "git", "commit", "-qam", f"dvc remote {name}")

    t0 = time.perf_counter()
    pushed = dvc(origin, "push", "-r", name, env=push_env)
    push_s = time.perf_counter() - t0
    files, nbytes = usage()
    assert (files, nbytes) == cache_objects(origin), pushed.stdout + pushed.stderr
    # a second push has nothing to upload
    again = dvc(origin, "push", "-r", name, env=push_env)
    assert "Everything is up to date" in again.stdout + again.stderr

    sh(clone.parent, "git", "clone", "-q", str(origin), str(clone))
    assert not any((clone / out).exists() for out in lock_outs(clone))
    for key, value in local.items():
        dvc(clone, "remote", "modify", "--local", name, key, value)
    t0 = time.perf_counter()
    dvc(clone, "pull", "-r", name, env=pull_env)
    pull_s = time.perf_counter() - t0
    # `make pull`: dvc status, verify, snakemake --touch --forceall; then nothing to do
    assert "are in sync" in dvc(clone, "status", "--cloud", "-r", name, env=pull_env).stdout
    assert "Data and pipelines are up to date" in dvc(clone, "status").stdout
    verified = sh(clone, str(BIN / "python"), "-m", "unlearn_da", "verify", "--configfile", TINY)
    assert "all match" in verified.stdout
    snakemake(clone, "--touch", "--forceall", "--configfile", TINY)
    dry = snakemake(clone, "-n", "--configfile", TINY)
    assert "Nothing to be done" in dry.stdout + dry.stderr

    outs = lock_outs(origin)
    want, got = tree_digests(origin, outs), tree_digests(clone, outs)
    assert got.keys() == want.keys()
    assert [p for p in want if got[p] != want[p]] == []
    metrics = [p for p in want if p.endswith(".json") and "/metrics/" in p]
    summaries = yaml.safe_load((origin / "dvc.yaml").read_text()).get("metrics", [])
    assert metrics and summaries and all(s in want for s in summaries)
    stats = {"remote": name, "push_s": round(push_s, 2), "pull_s": round(pull_s, 2),
             "files": files, "bytes": nbytes, "files_compared": len(want),
             "metrics_json_equal": len(metrics) + len(summaries)}
    print(f"DVC round trip via {name}: {json.dumps(stats)}")
    return stats


@pytest.fixture
def s3(tmp_path):
    with s3_server(tmp_path) as server:
        yield server


@pytest.fixture
def ssh(tmp_path):
    if not sshd_available():
        pytest.skip("no /usr/sbin/sshd: apt-get install openssh-server (`make test-remotes` does)")
    with ssh_server(tmp_path) as server:
        yield server


def test_s3_remote_round_trip(shared, s3, tmp_path, record_property):
    origin, _, _ = shared
    prefix = "unlearning-da"
    no_credentials = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}
    stats = remote_round_trip(
        origin, tmp_path / "clone-s3", "s3remote", f"s3://{s3.bucket}/{prefix}",
        config={"endpointurl": s3.endpoint},
        # the two ways to give credentials: the origin pushes with them in its environment
        # (AWS_ACCESS_KEY_ID, ...), the clone pulls with them in .dvc/config.local only
        origin_local={}, push_env=s3.env,
        local={"access_key_id": s3.access_key_id, "secret_access_key": s3.secret_access_key},
        pull_env={**s3.env, **no_credentials},
        usage=lambda: s3.usage(prefix + "/"))
    record_property("s3_round_trip", stats)


@pytest.mark.remotes
def test_ssh_remote_round_trip(shared, ssh, tmp_path, record_property):
    origin, _, _ = shared
    store = tmp_path / "ssh-store"

    def usage() -> tuple[int, int]:
        files = [p for p in store.rglob("*") if p.is_file()]
        return len(files), sum(p.stat().st_size for p in files)

    stats = remote_round_trip(
        origin, tmp_path / "clone-ssh", "sshremote", f"ssh://{ssh.host}{store}",
        config={"user": ssh.user, "port": str(ssh.port)},
        local={"keyfile": str(ssh.key)},
        # HOME of its own: asyncssh would read the user's ~/.ssh/config (host keys it does not
        # check at all: sshfs connects with known_hosts=None)
        push_env={**ssh.env, "SSH_AUTH_SOCK": None}, pull_env={**ssh.env, "SSH_AUTH_SOCK": None},
        usage=usage)
    record_property("ssh_round_trip", stats)


def test_records_are_saved_per_run_and_restored_only_where_missing(tmp_path):
    """Snakemake's record files are named by their output's path (URL-safe base64, long names cut into
    `@` folders): save keeps the run's own, drops those Snakemake no longer has; restore never replaces
    a record the workspace has."""
    import base64

    from unlearn_da.plumbing import snakemake_records as R

    def name(path: str) -> Path:
        encoded = base64.urlsafe_b64encode(path.encode()).decode()
        parts = [encoded[i:i + 254] for i in range(0, len(encoded), 254)]
        return Path(*["@" + p for p in parts[:-1]], parts[-1])

    meta = tmp_path / R.METADATA
    mine = "results/run/class0/seed0/models/" + "m" * 300 + ".pt"  # a name long enough to be cut
    other = "results/other-run/seed0/models/original.pt"
    for path, text in ((mine, "mine"), (other, "other"), ("data/prepared/run/dataset.npz", "data")):
        (meta / name(path)).parent.mkdir(parents=True, exist_ok=True)
        (meta / name(path)).write_text(text)
    assert R.record_path(name(mine)) == mine
    assert R.save("run", tmp_path) == 2 and R.save("run", tmp_path) == 0  # the run's two; unchanged: none
    carried = tmp_path / "results/run" / R.RECORDS
    assert sorted(R.record_path(p.relative_to(carried)) for p in carried.rglob("*") if p.is_file()) == [
        "data/prepared/run/dataset.npz", mine]
    (meta / name(mine)).write_text("mine, rerun")
    assert R.restore("run", tmp_path) == 0 and (meta / name(mine)).read_text() == "mine, rerun"
    (meta / name("data/prepared/run/dataset.npz")).unlink()
    assert R.restore("run", tmp_path) == 1 and (meta / name("data/prepared/run/dataset.npz")).read_text() == "data"
    (meta / name("data/prepared/run/dataset.npz")).unlink()
    assert R.save("run", tmp_path) == 2  # the changed record rewritten, the vanished one removed
    assert not (carried / name("data/prepared/run/dataset.npz")).exists()


def _queue_done(repo: Path, timeout: float = 900) -> str:
    """Wait until DVC's queue has nothing queued or running; its final `dvc queue status`."""
    deadline = time.monotonic() + timeout
    while True:
        status = dvc(repo, "queue", "status").stdout
        if not any(word in status for word in ("Queued", "Running")):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"the queue did not finish in {timeout:.0f} s:\n{status}")
        time.sleep(3)


def test_a_queued_sweep_runs_two_at_a_time_on_its_share_of_cores_and_is_shared_with_exp_push(
        shared, s3, tmp_path):
    """A two-value sweep (`dvc exp run --queue -S '++unlearn.ft.lr=0.2,0.3'`) run by two workers
    (`CORES=1 dvc queue start -j 2`): each experiment's Snakemake gets one core (CORES reaches the
    stage's `make pipeline` through the workers' environment) and reruns what the same value as an
    overlay reruns; `dvc exp push` sends an experiment to a Git remote and its outputs to a local-folder
    and an S3 remote, and a fresh clone that pulls and applies it finds nothing to rerun."""
    origin, _, _ = shared
    repo = tmp_path / "sweep"
    shutil.copytree(origin, repo, symlinks=True)
    bare = tmp_path / "experiments.git"
    sh(tmp_path, "git", "clone", "-q", "--bare", str(repo), str(bare))
    sh(repo, "git", "remote", "add", "shared", str(bare))
    config_before = {p: p.read_bytes() for p in (repo / "config").rglob("*") if p.is_file()}
    planned = {}
    for lr in ("0.2", "0.3"):
        overlay = tmp_path / f"ft{lr}.yaml"
        overlay.write_text(f"unlearn: {{ft: {{lr: {lr}}}}}\n")
        planned[lr] = sum(dry_run_jobs(repo, "--configfile", TINY, str(overlay)).values())
    assert all(planned.values()), planned

    dvc(repo, "exp", "run", "--queue", "-S", "++unlearn.ft.lr=0.2,0.3")
    assert dvc(repo, "queue", "status").stdout.count("Queued") == 2
    dvc(repo, "queue", "start", "-j", "2", env={"CORES": "1"})
    status = _queue_done(repo)
    assert status.count("Success") == 2 and "Failed" not in status, status
    shown = dvc(repo, "exp", "show", "--csv", "--all-commits").stdout.splitlines()
    header, rows = shown[0].split(","), [line.split(",") for line in shown[1:]]
    names = {row[header.index("unlearn.ft.lr")]: row[header.index("Experiment")] for row in rows
             if row[header.index("Experiment")]}
    assert set(names) == {"0.2", "0.3"}, shown
    for lr, name in names.items():
        log = dvc(repo, "queue", "logs", name).stdout
        assert "Provided cores: 1" in log, log[-2000:]
        assert _steps(subprocess.CompletedProcess([], 0, log, "")) == planned[lr], (lr, log[-2000:])
    assert {p: p.read_bytes() for p in (repo / "config").rglob("*") if p.is_file()} == config_before
    # the two experiments side by side: their headline numbers and their plots
    diff = dvc(repo, "metrics", "diff", names["0.2"], names["0.3"], "--json").stdout
    moved = json.loads(diff)["results/digits-smallcnn/random10/headline.json"]
    assert "avg_gap_per_seed.ft" in moved and "avg_gap_per_seed.ga" not in moved, sorted(moved)
    dvc(repo, "plots", "diff", names["0.2"], names["0.3"], "-o", str(tmp_path / "plots"))
    assert (tmp_path / "plots" / "index.html").stat().st_size > 1000

    # share one: its Git ref to the Git remote, its outputs to a local folder and to S3
    name = names["0.3"]

    def add_remotes(where: Path) -> None:  # in .dvc/config.local: an experiment's commit does not hold them
        dvc(where, "remote", "add", "--local", "folder", str(tmp_path / "folder-remote"))
        dvc(where, "remote", "add", "--local", "s3remote", f"s3://{s3.bucket}/experiments")
        dvc(where, "remote", "modify", "--local", "s3remote", "endpointurl", s3.endpoint)

    add_remotes(repo)
    for remote in ("folder", "s3remote"):
        dvc(repo, "exp", "push", "-r", remote, "shared", name, env=s3.env)
    assert s3.usage("experiments/")[0] > 0 and any((tmp_path / "folder-remote").rglob("*"))

    for remote in ("folder", "s3remote"):  # each remote alone gives a fresh clone the experiment
        clone = tmp_path / f"clone-{remote}"
        sh(tmp_path, "git", "clone", "-q", str(bare), str(clone))
        add_remotes(clone)
        dvc(clone, "exp", "pull", "-r", remote, "origin", name, env=s3.env)
        dvc(clone, "exp", "apply", name)
        assert yaml.safe_load((clone / "params.yaml").read_text()) == {"unlearn": {"ft": {"lr": 0.3}}}
        ft = json.loads((clone / "results/digits-smallcnn/random10/seed0/models/ft.pt.meta.json").read_text())
        assert ft["params"]["hp"]["lr"] == 0.3
        sh(clone, str(BIN / "python"), "-m", "unlearn_da", "snakemake-records", "restore", "--configfile", TINY)
        assert dry_run_jobs(clone, "--configfile", TINY, "params.yaml") == {}
