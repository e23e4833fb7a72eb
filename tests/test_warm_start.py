"""Warm start (warm_start.py): a job run in a fork of a server that has torch loaded behaves as the
same command in its own process: same files, same exit status and messages, killed with its client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from unlearn_da import warm_start

PY = sys.executable


@pytest.fixture
def runtime(tmp_path_factory) -> Path:
    """A short folder of this test's own servers (a socket's path is short): they stop when it ends."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="uw-", dir="/tmp"))
    yield folder
    _stop_servers(folder)
    shutil.rmtree(folder, ignore_errors=True)


def _env(runtime: Path, warm: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("UNLEARN_DA_TRACE", None)
    env.pop("XDG_RUNTIME_DIR", None)
    env[warm_start.ENV_SWITCH] = "1" if warm else "0"
    env["TMPDIR"] = str(runtime)
    return env


def _servers(runtime: Path) -> list[Path]:
    folder = runtime / f"unlearn-da-warm-{os.getuid()}"
    return sorted(folder.glob("*.sock")) if folder.exists() else []


def _stop_servers(runtime: Path) -> None:
    for sock in _servers(runtime):
        sock.unlink(missing_ok=True)  # a server whose socket is gone exits within a poll


def test_which_commands_run_warm():
    job = ["unlearn", "--params", json.dumps({"device": "cpu"})]
    on = {warm_start.ENV_SWITCH: "1"}
    assert warm_start.wanted(job, on)
    assert warm_start.wanted(job, {})  # on by default
    assert not warm_start.wanted(job, {warm_start.ENV_SWITCH: "0"})
    assert not warm_start.wanted(["verify"], on)  # not a rule's command
    assert not warm_start.wanted(job, {**on, "SLURM_JOB_ID": "7"})
    assert not warm_start.wanted(["unlearn", "--params", json.dumps({"device": "cuda"})], on)
    auto = ["train", "--params", json.dumps({"device": "auto"})]
    assert warm_start.wanted(auto, {**on, "CUDA_VISIBLE_DEVICES": ""})  # no GPU can be reached


def test_an_edited_module_or_another_environment_gives_another_server(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(warm_start, "_PACKAGE", package)
    env = {"PATH": "/bin"}
    first = warm_start.server_key("portable", env)
    assert warm_start.server_key("portable", {**env, "PWD": "/elsewhere"}) == first
    (package / "a.py").write_text("x = 2\n")
    os.utime(package / "a.py", ns=(1, 1))
    edited = warm_start.server_key("portable", env)
    assert edited != first
    assert warm_start.server_key("native", env) != edited
    assert warm_start.server_key("portable", {**env, "OMP_NUM_THREADS": "3"}) != edited


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "unlearn_da", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def _train_args(pristine: Path, data: Path, out: Path, epochs: int, mode: str = "portable") -> list[str]:
    """The pipeline's command for the tiny config's original model (as tests/test_kernels.py runs it)."""
    from unlearn_da.pipeline import train_params
    from unlearn_da.settings.config import load_config, validate_config

    cfg = validate_config(load_config([pristine / "tests/config/tiny.yaml"], base=pristine / "config/config.yaml"))
    params = {**train_params(cfg), "device": "cpu", "cpu_kernels": mode}
    params["train"] = {**params["train"], "epochs": epochs}
    return ["train", "--data", str(data), "--role", "original", "--seed", "0", "--threads", "1",
            "--params", json.dumps(params), "--out", str(out)]


def _model(out: Path) -> tuple[bytes, dict]:
    meta = json.loads(Path(f"{out}.meta.json").read_text())
    return out.read_bytes(), meta


@pytest.mark.parametrize("mode", ["portable", "native"])
def test_a_warm_job_writes_what_a_cold_one_does(pristine, digits_file, tmp_path, runtime, mode):
    """The same training job cold, warm (starting the server) and warm again (reusing it): the same
    checkpoint bits, the same kernels recorded, the start-up counted from the client's start."""
    runs = []
    for i, warm in enumerate((False, True, True)):
        out = tmp_path / f"model{i}.pt"
        proc = _run(_train_args(pristine, digits_file, out, 2, mode), _env(runtime, warm), tmp_path)
        assert proc.returncode == 0, proc.stderr
        runs.append(_model(out))
    assert runs[0][0] == runs[1][0] == runs[2][0]
    kernels = [meta["environment"]["kernels"] for _bits, meta in runs]
    assert kernels[0] == kernels[1] == kernels[2] and kernels[0]["cpu_kernels"] == mode
    assert len(_servers(runtime)) == 1
    assert 0 < runs[2][1]["startup_s"] < runs[0][1]["startup_s"]  # the warm job skipped the imports
    _stop_servers(runtime)


def test_a_failing_warm_job_says_and_ends_as_a_cold_one(tmp_path, runtime):
    bad = ["metrics", "--data", str(tmp_path / "missing.npz"), "--split", "x", "--features", "f", "--model-meta", "m",
           "--model", "ft", "--scenario", "random10", "--seed", "0", "--params", "{}", "--code", "c", "--out", "o"]
    cold, warm = (_run(bad, _env(runtime, w), tmp_path) for w in (False, True))
    assert cold.returncode == warm.returncode == 2
    assert cold.stderr == warm.stderr and "missing.npz" in warm.stderr
    usage = [_run(["metrics", "--data"], _env(runtime, w), tmp_path) for w in (False, True)]
    assert usage[0].returncode == usage[1].returncode == 2 and usage[0].stderr == usage[1].stderr
    assert len(_servers(runtime)) == 1
    _stop_servers(runtime)


def _forked_jobs(runtime: Path) -> list[int]:
    """The processes the test's servers forked (jobs running warm)."""
    servers, parents = set(), {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if "unlearn_da.warm_start" in cmdline and str(runtime) in cmdline:
            servers.add(int(entry.name))
    return [pid for pid, parent in parents.items() if parent in servers and _alive(pid)]


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_client_takes_its_job_with_it(pristine, digits_file, tmp_path, runtime, how):
    """SIGKILL of the client (Snakemake killing a job) kills the forked job through the server; SIGTERM
    is forwarded to the job, and the client ends with the job's status."""
    args = _train_args(pristine, digits_file, tmp_path / "long.pt", 500)
    client = subprocess.Popen([PY, "-m", "unlearn_da", *args], env=_env(runtime, True), cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (jobs := _forked_jobs(runtime)):
        assert time.monotonic() < deadline and client.poll() is None, client.stderr.read() if client.stderr else ""
        time.sleep(0.05)
    client.send_signal(how)
    assert client.wait(timeout=60) == -how
    deadline = time.monotonic() + 10
    while any(_alive(job) for job in jobs):
        assert time.monotonic() < deadline, f"the job outlived its client ({how.name})"
        time.sleep(0.05)
    assert not (tmp_path / "long.pt").exists()
    _stop_servers(runtime)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_server_starts_no_thread_and_no_accelerator_before_it_forks(runtime):
    """What the server imports starts no thread beyond the BLAS thread servers of numpy's and scipy's
    OpenBLAS (which OpenBLAS stops before a fork and starts again in the child; a cold job has them too),
    no OpenMP pool and no CUDA context."""
    env = _env(runtime, True)
    count = "import os; print(len(os.listdir('/proc/self/task')), end=' '); "
    preload = ("from unlearn_da import warm_start as w; import importlib; "
               "[importlib.import_module(m) for m in w.PRELOAD]; " + count +
               "import torch; print(torch.cuda.is_initialized())")
    blas_only = "import numpy, scipy.linalg; " + count
    server, baseline = (subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, timeout=300)
                        for code in (preload, blas_only))
    assert server.returncode == 0 and baseline.returncode == 0, server.stderr + baseline.stderr
    assert server.stdout.split() == [baseline.stdout.split()[0], "False"]
