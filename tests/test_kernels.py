"""Portable CPU kernels: the same checkpoint whatever dispatch level a process starts from (issue 23).

PyTorch (ATen's CPU capability), oneDNN (its ISA) and MKL (its code path) pick their kernels by the
CPU they find, so two machines of other instruction sets trained different weights from the same
seed. Here the "other machine" is a process whose environment presets a lower dispatch level than
this CPU's best: in portable mode its checkpoint must equal the one of a process left at the host's
best; in native mode the two differ wherever the levels differ.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import env_with_venv
from unlearn_da.core import kernels
from unlearn_da.settings.config import load_config, validate_config
from unlearn_da.pipeline import train_params

# a level every x86-64 CPU runs and none chooses on its own: ATen without vectorisation, oneDNN
# at SSE4.1, MKL's vendor-neutral path
LOWER_X86 = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE"}
DISPATCH = kernels.ALL_VARIABLES + [kernels.ENV_ORIGINAL, kernels.ENV_MODE]


def clean_env(**preset: str) -> dict[str, str]:
    """The test's environment without any dispatch variable (the host's own choice), plus ``preset``."""
    env = {k: v for k, v in env_with_venv().items() if k not in DISPATCH}
    return {**env, **preset}


def train(pristine: Path, data: Path, out: Path, mode: str, env: dict[str, str]) -> dict:
    """`python -m unlearn_da train` (the pipeline's command) of the tiny config's original model."""
    cfg = validate_config(load_config([pristine / "tests/config/tiny.yaml"], base=pristine / "config/config.yaml"))
    params = {**train_params(cfg), "device": "cpu", "cpu_kernels": mode}
    params["train"] = {**params["train"], "epochs": 2}
    subprocess.run([sys.executable, "-m", "unlearn_da", "train", "--data", str(data), "--role", "original",
                    "--seed", "0", "--threads", "1", "--params", json.dumps(params), "--out", str(out)],
                   env=env, check=True, capture_output=True, text=True)
    meta = json.loads(Path(f"{out}.meta.json").read_text())
    return {"sha": hashlib.sha256(out.read_bytes()).hexdigest(), "kernels": meta["environment"]["kernels"]}


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the dispatch levels named here are x86's")
def test_portable_kernels_give_one_checkpoint_from_any_dispatch_level_native_do_not(pristine, digits_file, tmp_path):
    best = train(pristine, digits_file, tmp_path / "best.pt", "portable", clean_env())
    lower = train(pristine, digits_file, tmp_path / "lower.pt", "portable", clean_env(**LOWER_X86))
    assert best["sha"] == lower["sha"]
    for run in (best, lower):  # what ran is recorded: the mode, the architecture, ATen's capability in force
        assert run["kernels"]["cpu_kernels"] == "portable" and run["kernels"]["machine"] == platform.machine()
        assert run["kernels"]["aten_capability"] == "AVX2"
        assert run["kernels"]["variables"]["MKL_CBWR"] == "COMPATIBLE"

    native_best = train(pristine, digits_file, tmp_path / "nbest.pt", "native", clean_env())
    native_lower = train(pristine, digits_file, tmp_path / "nlower.pt", "native", clean_env(**LOWER_X86))
    assert native_lower["kernels"]["aten_capability"] == "DEFAULT"  # native keeps what the environment set
    if native_best["kernels"]["aten_capability"] == "DEFAULT":
        pytest.skip("this CPU's best ATen level is the baseline: native and lower dispatch are the same kernels")
    assert native_best["sha"] != native_lower["sha"]


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_native_mode_restores_what_the_user_set_even_in_a_job_started_by_a_portable_parent():
    """Snakemake's own process loads the package (portable by default) and its jobs inherit the pinned
    variables; a job in native mode must see the user's values, not the parent's portable ones."""
    parent = run_python("import os, json, unlearn_da; print(json.dumps(dict(os.environ)))",
                        clean_env(ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="SSE41"))
    inherited = json.loads(parent.stdout)
    assert inherited["ONEDNN_MAX_CPU_ISA"] == "AVX2"  # portable overrode the preset
    code = ("import os, unlearn_da.core.kernels as k; k.apply('native'); "
            "print(os.environ.get('ONEDNN_MAX_CPU_ISA'), os.environ.get('MKL_CBWR'))")
    child = run_python(code, inherited)
    assert child.stdout.split() == ["SSE41", "None"], child.stderr


def test_a_mode_cannot_change_after_torch_loaded():
    code = ("import unlearn_da, torch, unlearn_da.core.kernels as k\n"
            "try:\n    k.apply('native')\nexcept RuntimeError as e:\n    print('refused:', e)\n")
    proc = run_python(code, clean_env())
    assert "refused: cpu_kernels: native asked for after torch was loaded with portable" in proc.stdout, proc.stderr


def test_a_bad_mode_is_a_config_error_naming_the_allowed_values(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "unlearn_da", "features", "--data", "x", "--model", "y",
                           "--out", str(tmp_path / "z"), "--params", json.dumps({"cpu_kernels": "fast"})],
                          env=clean_env(), capture_output=True, text=True)
    assert proc.returncode == 2
    assert "cpu_kernels: 'fast' is not allowed; allowed: portable, native" in proc.stderr


def test_the_package_pins_the_kernels_in_this_test_process():
    """conftest imports the package before anything loads torch: every test runs portable kernels."""
    import torch

    assert os.environ.get("UNLEARN_DA_CPU_KERNELS", "portable") == "portable"
    if platform.machine() in ("x86_64", "AMD64"):
        assert torch.backends.cpu.get_cpu_capability() == "AVX2"
    assert kernels.portable_in_force()


def test_architecture_names_of_every_platform_map_to_one_portable_level():
    assert kernels.architecture("AMD64") == kernels.architecture("x86_64") == "x86_64"
    assert kernels.architecture("ARM64") == kernels.architecture("arm64") == "aarch64"
    assert kernels.portable_env("AMD64")["MKL_CBWR"] == "COMPATIBLE"
    assert kernels.portable_env("riscv64") == {} and kernels.architecture("ppc64le") is None


def test_a_cpu_without_avx2_is_refused_with_a_message_not_an_illegal_instruction():
    """ATen takes ATEN_CPU_CAPABILITY=avx2 at its word: on a CPU without AVX2 it would crash."""
    if kernels.architecture() != "x86_64":
        pytest.skip("the AVX2 level is x86's")
    code = ("import unlearn_da.core.kernels as k\n"
            "k.cpu_flags = lambda: {'sse2', 'sse4_2'}\n"
            "try:\n    k.apply('portable')\nexcept RuntimeError as e:\n    print('refused:', e)\n")
    proc = run_python(code, clean_env(UNLEARN_DA_CPU_KERNELS="native"))
    assert "refused: cpu_kernels: portable needs AVX2 and FMA, which this CPU" in proc.stdout, proc.stderr
    assert "cpu_kernels: native" in proc.stdout


def test_a_library_loaded_before_the_package_is_reported_not_in_force():
    code = ("import json, numpy, warnings\nwarnings.simplefilter('always')\n"
            "import unlearn_da.core.kernels as k\nprint(json.dumps(k.record()))\n")
    proc = run_python(code, clean_env())
    assert "imported after numpy" in proc.stderr
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rec["cpu_kernels"] == "portable" and rec["in_force"] is False
    proc = run_python("import json, unlearn_da.core.kernels as k; print(json.dumps(k.record()))", clean_env())
    assert json.loads(proc.stdout)["in_force"] is (kernels.architecture() is not None)
