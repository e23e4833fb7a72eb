"""What would break a first GPU run before CUDA is reached, checked on the CPU with fakes: a GPU profile
on a machine without a usable GPU is refused with the reason, not run on the CPU without a word."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import env_with_venv
from unlearn_da.core.errors import ConfigError
from unlearn_da.core import cuda_check, runtime
from unlearn_da.settings.config import load_config


def test_the_paper_profiles_ask_for_a_gpu_and_the_cpu_profiles_do_not():
    assert load_config(["config/cifar10.yaml"])["device"] == "cuda"
    assert load_config(["config/cifar10.yaml", "config/cifar100.yaml"])["device"] == "cuda"
    assert load_config([])["device"] != "cuda"


@pytest.mark.parametrize("env, driver, build, reason", [
    ({}, None, "13.0", "no NVIDIA driver is loaded"),
    ({}, "570.133.20", "13.0", "the NVIDIA driver 570.133.20 is older than the 580.65.06 that torch's CUDA 13.0"),
    ({}, "570.133.20", "12.6", "NVIDIA driver 570.133.20, torch built for CUDA 12.6"),
    ({"CUDA_VISIBLE_DEVICES": ""}, "580.65.06", "13.0", "CUDA_VISIBLE_DEVICES='' hides every GPU"),
    ({}, "580.65.06", None, "is a CPU-only build"),
], ids=["login node", "old driver", "fitting build", "hidden", "cpu build"])
def test_the_reason_torch_sees_no_gpu_is_named(env, driver, build, reason):
    assert reason in cuda_check.cuda_diagnosis(env, driver=driver, build=build)


def test_device_cuda_without_a_gpu_is_refused_with_what_to_do(monkeypatch):
    from unlearn_da.jobs.session import open_session

    monkeypatch.setattr(runtime.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device: cuda, but torch sees no CUDA GPU: .*put device: cpu"):
        open_session("never-read.npz", {"device": "cuda"}, 1)
    cuda_check.require_cuda("auto")  # auto and cpu pass


def test_gpu_slots_refuses_a_gpu_profile_on_a_machine_without_a_gpu(tmp_path):
    """Before: gpu-slots printed 1,000,000 (no bound) and every ResNet-18 job trained on the CPU."""
    cmd = [sys.executable, "-m", "unlearn_da", "gpu-slots", "--configfile", "config/cifar10.yaml"]
    env = {**env_with_venv(), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    if done.returncode == 0 and runtime.torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert done.returncode == 2, done.stdout
    assert "device: cuda (the profile needs a GPU), but this machine has none" in done.stderr
    assert "device: cpu" in done.stderr and "Traceback" not in done.stderr
    overlay = tmp_path / "cpu.yaml"
    overlay.write_text("device: cpu\n")
    on_purpose = subprocess.run(cmd + [str(overlay)], env=env, capture_output=True, text=True, timeout=120)
    assert on_purpose.returncode == 0 and on_purpose.stdout.strip() == "1000000", on_purpose.stderr


def test_the_suite_and_every_process_it_starts_see_no_gpu():
    """On a GPU machine `device: auto` trained in bf16 on CUDA and the exact checks against expected/ failed;
    the suite hides the GPUs from itself and its subprocesses (UNLEARN_DA_TEST_GPU=1 lifts it)."""
    import os

    assert os.environ.get("UNLEARN_DA_TEST_GPU") == "1" or os.environ["CUDA_VISIBLE_DEVICES"] == ""
    seen = subprocess.run([sys.executable, "-c", "import os; print(repr(os.environ.get('CUDA_VISIBLE_DEVICES')))"],
                          env=env_with_venv(), capture_output=True, text=True, timeout=60).stdout.strip()
    assert os.environ.get("UNLEARN_DA_TEST_GPU") == "1" or seen == "''"


@pytest.mark.gpu
def test_a_job_on_a_real_gpu_places_itself_on_a_pool_device(tmp_path):
    """GPU only: a real device's UUID names its slot, and the job runs there."""
    from unlearn_da.core import device_pool

    settings = device_pool.PoolSettings(devices="auto", jobs_per_device=1, pool_dir=tmp_path, wait_s=10.0, fake=0)
    device = device_pool.place_job(runtime.torch.device("cuda"), settings)
    slot = device_pool.held()
    assert device.type == "cuda" and slot is not None and not slot.key.startswith("fake-")
    device_pool.release()


@pytest.mark.gpu
@pytest.mark.slow
def test_the_quick_gpu_check_passes_on_this_gpu(tmp_path):
    """GPU only: the quick part of make gpu-check, stages and measurements, with host syncs counted,
    features against a separate extraction and two jobs sharing the device by its real UUID."""
    import json

    from unlearn_da.tools import gpucheck

    code = gpucheck.run_gpu_check("cuda", tmp_path, threads=2, part="quick")
    assert code == 0, (tmp_path / "gpu-check.md").read_text()
    stages = json.loads((tmp_path / "gpu-check.json").read_text())["stages"]
    assert any(r["stage"].endswith("ft+da host syncs per step") and r["ok"] for r in stages)


def test_gpu_check_gives_each_stage_s_slot_back_so_its_real_jobs_can_run(tmp_path, monkeypatch):
    """A fake one-GPU machine: gpu-check's stages run in its own process and each took the pool's only
    slot for the life of the process; the start-up measurement's real jobs then waited an hour for it."""
    from unlearn_da.core import device_pool
    from unlearn_da.tools.gpucheck import Checker

    monkeypatch.setenv(device_pool.ENV_FAKE, "1")
    monkeypatch.setenv(device_pool.ENV_POOL, str(tmp_path))
    monkeypatch.setenv(device_pool.ENV_WAIT, "3")
    chk = Checker(log=lambda *_: None)
    chk.stage("a job in this process", device_pool.place_job, runtime.torch.device("cpu"))
    assert device_pool.held() is None
    other = subprocess.run([sys.executable, "-c", "import json; from unlearn_da.core import device_pool as dp; "
                            "print(json.dumps(dp.acquire(dp.settings_from_environment()).record()))"],
                           env={**env_with_venv(), device_pool.ENV_FAKE: "1", device_pool.ENV_POOL: str(tmp_path),
                                device_pool.ENV_WAIT: "3"}, capture_output=True, text=True, timeout=120)
    assert other.returncode == 0, other.stderr[-500:]


def test_gpu_check_s_measured_jobs_wait_minutes_for_a_slot_not_an_hour(tmp_path, monkeypatch):
    from unlearn_da.core import device_pool
    from unlearn_da.tools import devicecost

    seen = {}

    def fake_run(cmd, **kwargs):
        seen.update(kwargs)
        return subprocess.CompletedProcess(cmd, 1, "", "no")

    monkeypatch.setattr(devicecost.subprocess, "run", fake_run)
    monkeypatch.setenv(device_pool.ENV_WAIT, "3600")
    with pytest.raises(RuntimeError):
        devicecost._job(["train"], tmp_path / "x.meta.json", tmp_path / "x.npz.meta.json")
    assert float(seen["env"][device_pool.ENV_WAIT]) <= 120 and seen["timeout"] <= 1800


def test_a_torch_build_for_an_older_driver_installs_from_pytorch_s_index(tmp_path):
    """The PyPI wheel is the CUDA 13.0 build (driver 580+); TORCH_CUDA picks another build of the pinned
    versions (the constraints file still pins them). `make -n` only prints."""
    from conftest import REPO

    dry = subprocess.run(["make", "-n", "venv", "TORCH_CUDA=cu126", f"VENV={tmp_path / 'v'}"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    torch_line = next(line for line in dry.stdout.splitlines() if "torch torchvision" in line)
    assert "-c constraints.txt" in torch_line and "--index-url https://download.pytorch.org/whl/cu126" in torch_line
    assert not (tmp_path / "v").exists()
    plain = subprocess.run(["make", "-n", "venv", f"VENV={tmp_path / 'v'}"], cwd=REPO, capture_output=True, text=True,
                           timeout=60)
    assert "download.pytorch.org" not in plain.stdout
    refused = subprocess.run(["make", "torch"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "make torch needs TORCH_CUDA" in refused.stderr


@pytest.mark.parametrize("driver, build, says", [
    ("575.57.08", "13.0", "do NOT fit; install a torch build for this driver, e.g. make torch TORCH_CUDA=cu126"),
    ("580.82.07", "13.0", "NVIDIA driver 580.82.07, torch built for CUDA 13.0 (needs NVIDIA driver 580.65.06 or later): they fit"),
    ("535.104.05", "12.6", "they fit"),
    (None, "13.0", "no NVIDIA driver is loaded here"),
    ("580.82.07", None, "is a CPU-only build; NVIDIA driver: 580.82.07"),
])
def test_gpu_slots_and_gpu_check_say_whether_the_driver_fits_torch_s_cuda_build(driver, build, says):
    from unlearn_da.tools.cuda_build import build_fit

    assert says in build_fit(driver=driver, build=build)


def test_gpu_slots_explain_prints_the_driver_and_build_line():
    cmd = [sys.executable, "-m", "unlearn_da", "gpu-slots", "--explain"]
    done = subprocess.run(cmd, env=env_with_venv(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "GPU slot(s)" in done.stderr and ("CUDA" in done.stderr or "CPU-only build" in done.stderr)


def test_a_cpu_made_profile_with_device_auto_on_a_gpu_machine_is_told_before_the_run(monkeypatch):
    """``device: auto`` takes the GPU in bf16; the default profile's expected results were made on the CPU."""
    from unlearn_da import cli
    from unlearn_da.core import device_pool
    from unlearn_da.tools.cuda_build import auto_device_note

    config = load_config()
    assert config["device"] == "auto"
    assert "put device: cpu in an overlay" in auto_device_note(config, True, True)
    assert auto_device_note(config, False, True) is None and auto_device_note(config, True, False) is None
    assert auto_device_note({**config, "device": "cpu"}, True, True) is None
    monkeypatch.setattr(device_pool, "driver_version", lambda: "580.82.07")
    monkeypatch.setattr(runtime.torch.cuda, "is_available", lambda: True)
    assert "expected results were made on the CPU" in cli._auto_device_note(config)
    monkeypatch.setattr(device_pool, "driver_version", lambda: None)
    assert cli._auto_device_note(config) is None  # no driver: torch is not even imported for it


def test_gpu_check_counts_each_stage_s_host_syncs_on_cuda(monkeypatch):
    """On CUDA every stage runs under ``torch.cuda.set_sync_debug_mode('warn')`` and its warnings are
    counted (faked here: the CPU has no sync debug mode)."""
    import warnings

    from unlearn_da.tools import gpucheck

    modes = []
    monkeypatch.setattr(runtime.torch.cuda, "set_sync_debug_mode", modes.append)

    def syncing_stage(n):
        for _ in range(n):
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
        warnings.warn("something else", DeprecationWarning, stacklevel=1)
        return n

    chk = gpucheck.Checker(log=lambda *_: None, count_syncs=True)
    assert chk.stage("unlearn x", syncing_stage, 30) == 30
    assert chk.rows[-1]["host_syncs"] == 30 and modes == ["warn", "default"]
    quiet = gpucheck.Checker(log=lambda *_: None)
    quiet.stage("on the CPU", syncing_stage, 3)
    assert quiet.rows[-1]["host_syncs"] is None and modes == ["warn", "default"]


@pytest.mark.parametrize("method, per_step, fails", [("ft", 0, False), ("ft", 1, True), ("ft+da", 1, False),
                                                    ("muda", 1, False), ("muda", 2, True)])
def test_host_syncs_per_step_are_what_a_second_epoch_adds(monkeypatch, method, per_step, fails):
    """On CUDA the quick part runs each method with one epoch and with two: the start, probes, saves and
    features sync the same in both, so the difference over the extra steps is what the loop adds per
    step: none, or one with the DA term (the rule tests/test_host_sync.py counts on the CPU)."""
    import warnings

    from unlearn_da.tools import gpucheck

    monkeypatch.setattr(runtime.torch.cuda, "set_sync_debug_mode", lambda mode: None)

    def run(epochs):
        steps = 5 * epochs
        for _ in range(7 + per_step * steps):  # 7: what the job syncs whatever its length
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
        return steps

    if fails:
        with pytest.raises(RuntimeError, match=f"{method}: {per_step}.00 host syncs per optimiser step"):
            gpucheck.sync_growth(run, method)
    else:
        out = gpucheck.sync_growth(run, method)
        assert out["per_step"] == per_step and out["steps"] == [5, 10] and out["syncs"][0] == 7 + 5 * per_step
    assert gpucheck.sync_growth(lambda epochs: 3, "ssd")["per_step"] is None  # no epochs: nothing to tell


def test_features_that_differ_from_a_separate_extraction_fail_the_check(tmp_path, monkeypatch):
    import numpy as np

    from unlearn_da.jobs import features
    from unlearn_da.tools import gpucheck

    in_job = tmp_path / "a.npz"
    np.savez(in_job, train_features=np.ones((3, 2), np.float32), train_logits=np.zeros((3, 4), np.float32))

    def separate(data, model, threads, params, out, code=None, split_dir=None, bump=0.0):
        np.savez(out, train_features=np.ones((3, 2), np.float32) + bump, train_logits=np.zeros((3, 4), np.float32))

    monkeypatch.setattr(features, "run_features", separate)
    assert gpucheck.features_match(tmp_path, tmp_path / "m.pt", in_job, tmp_path / "b.npz", 1, {}) == 2
    monkeypatch.setattr(features, "run_features", lambda *a, **k: separate(*a, bump=np.float32(1e-7)))
    with pytest.raises(RuntimeError, match="differ from a separate extraction.*train_features"):
        gpucheck.features_match(tmp_path, tmp_path / "m.pt", in_job, tmp_path / "c.npz", 1, {})
