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
        devicecost._job(["train"], tmp_path / "x.meta.json")
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
