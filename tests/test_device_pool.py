"""The GPU pool without a GPU: fake device ids on the CPU (UNLEARN_DA_FAKE_GPUS), real file locks.

Processes compete for devices x jobs_per_device slots; a holder killed with SIGKILL frees its slot
(the kernel drops the lock); a job that finds no slot waits, then gets one or fails with a message;
and the tiny config through Snakemake with devices [0, 1] and two jobs per device never has more
than two jobs on a device and four in all, with the same metrics as a run without the pool.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import env_with_venv, remove_model_chain, snakemake, tiny_copy
from unlearn_da.core import device_pool
from unlearn_da.core.artifacts import sha256_file

HOLD = r"""
import json, sys, time
from unlearn_da.core import device_pool as dp
print("importing done", file=sys.stderr, flush=True)  # the next line is the acquisition
s = dp.acquire(dp.settings_from_environment())
print(json.dumps({"device": s.device, "slot": s.slot, "waited_s": s.waited_s}), flush=True)
time.sleep(float(sys.argv[1]))
"""


def pool_env(pool: Path, fake: int, jobs: int, devices: str = "auto", wait_s: float = 60.0) -> dict[str, str]:
    return {**env_with_venv(), device_pool.ENV_FAKE: str(fake), device_pool.ENV_JOBS: str(jobs),
            device_pool.ENV_DEVICES: devices, device_pool.ENV_POOL: str(pool), device_pool.ENV_WAIT: str(wait_s)}


def start_holder(env: dict[str, str], seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLD, str(seconds)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


WHERE_AND_WHEN = ("seconds", "timing", "environment")  # wall clock, sharing, host: not results


def without_seconds(record):
    if isinstance(record, dict):
        return {k: without_seconds(v) for k, v in record.items() if k not in WHERE_AND_WHEN}
    return record


def log_file(pool: Path) -> Path:
    return next(pool.glob(f"*/{device_pool.LOG_FILE}"))


def test_competing_processes_never_hold_more_slots_than_the_pool_has(tmp_path):
    env = pool_env(tmp_path, fake=2, jobs=2)
    procs = [start_holder(env, 1.5) for _ in range(7)]
    taken = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    summary = device_pool.overlap_summary(log_file(tmp_path))
    assert summary["acquisitions"] == 7
    assert max(summary["most_per_device"].values()) <= 2 and summary["most_overall"] <= 4
    assert set(summary["most_per_device"]) == {0, 1}  # slot-major: both devices were used
    assert sum(t["waited_s"] > 0.5 for t in taken) >= 3  # 7 jobs, 4 slots: at least 3 waited


def test_a_killed_holder_frees_its_slot_and_a_waiting_job_gets_it(tmp_path):
    env = pool_env(tmp_path, fake=1, jobs=1)
    holder = start_holder(env, 300)
    assert json.loads(holder.stdout.readline()) == {"device": 0, "slot": 0, "waited_s": pytest.approx(0, abs=5)}

    refused = subprocess.run([sys.executable, "-c", HOLD, "0"], env={**env, device_pool.ENV_WAIT: "0.5"},
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "no free GPU slot" in refused.stderr and "--resources gpu=1" in refused.stderr

    waiter = start_holder(env, 0)
    while waiter.stderr.readline().strip() != "importing done":  # however slow the start on a loaded machine
        assert waiter.poll() is None, waiter.stderr.read()
    time.sleep(2.0)  # the waiter is polling by now
    assert waiter.poll() is None
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    got = json.loads(waiter.communicate(timeout=120)[0])
    assert waiter.returncode == 0 and got["device"] == 0 and got["waited_s"] > 1.0
    events = [json.loads(line)["event"] for line in log_file(tmp_path).read_text().splitlines()]
    assert events == ["acquire", "acquire", "release"]  # the killed holder never logged its release


def test_settings_and_slot_count_from_the_config_block(tmp_path):
    env = device_pool.environment_for_jobs({"devices": [0, 1], "jobs_per_device": 3, "wait_s": 10,
                                            "pool_dir": str(tmp_path)})
    settings = device_pool.settings_from_environment({**env, device_pool.ENV_FAKE: "4"})
    assert settings.devices == [0, 1] and settings.jobs_per_device == 3 and settings.wait_s == 10.0
    assert settings.pool_dir == tmp_path
    assert device_pool.slot_count(settings) == 6
    assert [k for _, k in device_pool.device_ids(settings)] == ["fake-0", "fake-1"]


def test_gpu_slots_command_gives_snakemake_the_pools_size(tmp_path):
    overlay = tmp_path / "pool.yaml"
    overlay.write_text("gpu: {devices: [0, 1], jobs_per_device: 2}\n")
    cmd = [sys.executable, "-m", "unlearn_da", "gpu-slots", "--configfile", str(overlay)]
    fake = subprocess.run(cmd, env={**env_with_venv(), device_pool.ENV_FAKE: "2"}, capture_output=True, text=True)
    assert fake.returncode == 0 and fake.stdout.strip() == "4", fake.stderr
    overlay.write_text("gpu: {jobs_per_device: 0}\n")
    bad = subprocess.run(cmd, env=env_with_venv(), capture_output=True, text=True)
    assert bad.returncode != 0 and "jobs_per_device" in bad.stderr


POOLED = [(s, m) for s in ("random10", "class0") for m in ("ft", "ft+da", "ga")]


@pytest.mark.slow
def test_tiny_run_through_a_two_device_pool_matches_the_serial_run(tiny_project, tmp_path):
    # the finished tiny run without both scenarios' FT, FT+DA and GA: their unlearning jobs (each also
    # extracts its model's features) are the 6 pool jobs for 4 slots, all ready at once, on 6 cores
    root = tiny_copy(tiny_project, tmp_path / "pooled")
    for scenario, model in POOLED:
        remove_model_chain(root, scenario, model)
    (root / "pool.yaml").write_text(f"gpu: {{devices: [0, 1], jobs_per_device: 2, pool_dir: {tmp_path / 'pool'}}}\n")
    targets = [f"results/digits-smallcnn/{s}/seed0/metrics/{m}.json" for s, m in POOLED]
    env = {**env_with_venv(), device_pool.ENV_FAKE: "2"}
    snakemake(root, "--cores", "6", "--configfile", "tests/config/tiny.yaml", "pool.yaml", "--", *targets, env=env)
    summary = device_pool.overlap_summary(log_file(tmp_path / "pool"))
    print("acquisition log:", summary)
    assert summary["acquisitions"] == 6
    assert max(summary["most_per_device"].values()) <= 2 and summary["most_overall"] <= 4
    for path in targets:  # every metric and record, the wall clock, sharing and host aside
        pooled = json.loads((root / path).read_text())
        assert without_seconds(pooled) == without_seconds(json.loads((tiny_project / path).read_text())), path
    for scenario, model in POOLED:
        seed_dir = root / "results" / "digits-smallcnn" / scenario / "seed0"
        for name in (f"models/{model}.pt", f"features/{model}.npz"):
            assert sha256_file(seed_dir / name) == sha256_file(tiny_project / seed_dir.relative_to(root) / name)
        slot = json.loads((seed_dir / "models" / f"{model}.pt.meta.json").read_text())["environment"]["device_slot"]
        assert slot["device"] in (0, 1) and slot["fake"] is True


def test_an_exclusive_timed_job_holds_every_slot_of_its_device(tmp_path):
    env = pool_env(tmp_path, fake=1, jobs=2)
    timed = subprocess.Popen([sys.executable, "-c", HOLD.replace("dp.acquire(dp.settings_from_environment())",
                              "dp.acquire(dp.settings_from_environment(), exclusive=True)"), "300"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert json.loads(timed.stdout.readline())["device"] == 0
        shared = subprocess.run([sys.executable, "-c", HOLD, "0"], env={**env, device_pool.ENV_WAIT: "0.5"},
                                capture_output=True, text=True, timeout=120)
        assert shared.returncode != 0 and "no free GPU slot" in shared.stderr  # slot 1 is the timed job's too
    finally:
        timed.kill()
        timed.wait(timeout=30)
    # the other way round: a job on slot 0 keeps an exclusive job waiting, a shared one gets slot 1
    holder = start_holder(env, 300)
    try:
        assert json.loads(holder.stdout.readline())["slot"] == 0
        code = "from unlearn_da.core import device_pool as dp; dp.acquire(dp.settings_from_environment(), exclusive=True)"
        refused = subprocess.run([sys.executable, "-c", code], env={**env, device_pool.ENV_WAIT: "0.5"},
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0 and "no free GPU slot" in refused.stderr
        second = subprocess.run([sys.executable, "-c", HOLD, "0"], env=env, capture_output=True, text=True, timeout=120)
        assert json.loads(second.stdout)["slot"] == 1
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_tables_say_when_time_was_measured_on_a_shared_gpu(tmp_path):
    from unlearn_da.jobs.evaluate import timing_of
    from unlearn_da.reporting.tables import most_jobs_on_device, timing_legend

    def slot(start, now, exclusive=False):
        return {"environment": {"device_slot": {"jobs_on_device_at_start": start, "jobs_on_device_now": now,
                                                "exclusive": exclusive}}}

    assert timing_of({"environment": {}}) == {"jobs_on_device": None, "exclusive": None}
    assert timing_of(slot(1, 3)) == {"jobs_on_device": 3, "exclusive": False}
    paths = []
    for i, timing in enumerate([timing_of(slot(2, 1)), timing_of(slot(1, 1, True)), {"jobs_on_device": None}]):
        paths.append(tmp_path / f"m{i}.json")
        paths[-1].write_text(json.dumps({"model": "ft", "seed": i, "scenario": "random10", "metrics": {}, "timing": timing}))
    assert most_jobs_on_device(paths) == 2
    assert "up to 2 jobs shared a GPU" in timing_legend(2)
    assert timing_legend(1) == timing_legend(None) == ""


@pytest.mark.slow
def test_every_job_records_its_start_up_and_bench_reports_it_per_rule(tiny_project, monkeypatch):
    """startup_s: process start to the first training step (or feature pass), per job, in its sidecar; tail_s:
    the end of the work to each later file; make bench's breakdown per rule."""
    from unlearn_da.tools.bench import startup_times

    sidecars = {p: json.loads(p.read_text()) for p in (tiny_project / "results").rglob("*.meta.json")}
    models = [m for p, m in sidecars.items() if p.name.endswith(".pt.meta.json")]
    assert {m["made_by"] for m in models} == {"train_original", "train_retrain", "unlearn"}
    assert all(0.0 < m["startup_s"] < 120.0 for m in models)
    # a model's features come from its job: its start-up is counted once, in the checkpoint's sidecar
    features = [m for p, m in sidecars.items() if p.parent.name == "features"]
    assert features and not any("startup_s" in m for m in features)
    monkeypatch.chdir(tiny_project)
    starts = {r["rule"]: r["count"] for r in startup_times()}
    assert {"train_original", "train_retrain", "unlearn"} <= set(starts)
    assert sum(starts.values()) == len(models)
    # the tail: from the end of the work to the job's last file (its features' sidecar)
    assert all(m["tail_s"] >= 0.0 for m in features) and all("tail_s" in m for m in models)
    assert all(f["tail_s"] >= 0.0 for f in features)
    from unlearn_da.tools.bench import breakdown_lines, job_breakdown

    parts = {r["rule"]: r for r in job_breakdown()}
    assert {"train_original", "train_retrain", "unlearn"} <= set(parts)
    for r in parts.values():  # each part's sum fits in the jobs' wall time
        assert r["tail"] is not None and r["wall"] is not None, r
        assert r["startup"][1] + r["work"][1] + r["tail"][1] <= r["wall"][1], r
    assert breakdown_lines(list(parts.values()))[0].startswith("| run | rule | jobs | start-up | work | tail")


def test_a_timed_job_has_imported_before_its_clock_starts_what_its_first_optimizer_imports(digits_file):
    """torch.optim imports torch._dynamo on its first optimizer (1.4-2.2 s on the 2-core Xeon guest); a
    timed session (training, unlearning) pays it in its start-up, not in the seconds of Time and RTE."""
    code = f"""
import json, sys, torch
from unlearn_da.jobs.session import open_session
open_session({str(digits_file)!r}, {{"device": "cpu"}}, 1, timed={{timed}})
before = set(sys.modules)
torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9)
print(json.dumps(sorted(m for m in set(sys.modules) - before if m.startswith("torch"))))
"""
    imported = {}
    for timed in (True, False):
        proc = subprocess.run([sys.executable, "-c", code.replace("{timed}", str(timed))], env=env_with_venv(),
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        imported[timed] = json.loads(proc.stdout.splitlines()[-1])
    assert imported[True] == []
    assert "torch._dynamo" in imported[False]  # what a job that is not timed (features) never needs


def test_the_default_pool_is_per_machine_outside_the_project(tmp_path, monkeypatch):
    """Slots belong to a machine's GPUs: the default folder is local (the system's temporary directory),
    one per user, whichever clone the jobs come from; a path in the config is taken as given."""
    import tempfile

    monkeypatch.chdir(tmp_path)
    env = device_pool.environment_for_jobs({})
    assert Path(env[device_pool.ENV_POOL]) == Path(tempfile.gettempdir()) / f"unlearn-da-device-pool-{os.getuid()}"
    assert device_pool.settings_from_environment({}).pool_dir == Path(env[device_pool.ENV_POOL])
    assert Path(device_pool.environment_for_jobs({"pool_dir": "locks"})[device_pool.ENV_POOL]) == tmp_path / "locks"


@pytest.mark.parametrize("code", ["ENOLCK", "ENOSYS", "EOPNOTSUPP"])
def test_a_file_system_that_cannot_lock_is_refused_at_once_not_read_as_busy(tmp_path, monkeypatch, code):
    """Lustre without flock or NFSv3 without lockd: flock fails with ENOLCK/ENOSYS/EOPNOTSUPP. Read as
    "slot taken", every GPU job waited its hour and failed with a misleading message."""
    import errno as errno_mod

    def no_locks(fd, op):
        raise OSError(getattr(errno_mod, code), os.strerror(getattr(errno_mod, code)))

    monkeypatch.setattr(device_pool.fcntl, "flock", no_locks)
    settings = device_pool.PoolSettings(devices="auto", jobs_per_device=1, pool_dir=tmp_path, wait_s=3600.0, fake=1)
    start = time.monotonic()
    with pytest.raises(device_pool.PoolError, match=f"cannot lock files \\(flock: ({code}|ENOTSUP),.*set gpu.pool_dir"):
        device_pool.acquire(settings)
    assert time.monotonic() - start < 5


def test_a_busy_slot_still_reads_as_busy(tmp_path, monkeypatch):
    import errno as errno_mod

    def busy(fd, op):
        raise BlockingIOError(errno_mod.EWOULDBLOCK, "Resource temporarily unavailable")

    monkeypatch.setattr(device_pool.fcntl, "flock", busy)
    settings = device_pool.PoolSettings(devices="auto", jobs_per_device=1, pool_dir=tmp_path, wait_s=0.3, fake=1)
    with pytest.raises(TimeoutError, match="no free GPU slot"):
        device_pool.acquire(settings)
