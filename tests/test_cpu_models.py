"""The same bits on other CPU models, emulated: qemu's user mode runs this venv's Python as an Intel
Haswell and as an AMD EPYC (Rome), both without AVX-512, on whatever CPU runs the tests.

tests/test_kernels.py changes the dispatch level a process starts from on one CPU; some libraries
pick their code by the CPU model itself, which no variable changes: MKL's vector library computed
``torch.sqrt`` (so torch's default Adam) to a different last bit on an Intel Xeon, an AMD EPYC and an
emulated Haswell, even with ``MKL_CBWR=COMPATIBLE``, and every Bad Teacher checkpoint differed across
vendors. qemu emulates the instructions exactly (floating point included) and reports its CPU model's
vendor and features, so the libraries choose as they would on that machine.

Skipped where ``qemu-x86_64`` is missing (``make test-cpu-models`` installs Debian's qemu-user).
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys

import pytest

from conftest import env_with_venv

QEMU = shutil.which("qemu-x86_64")
MODELS = ("Haswell-v2", "EPYC-Rome")  # GenuineIntel and AuthenticAMD, AVX2 + FMA, no AVX-512

pytestmark = [
    pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="qemu-x86_64 user mode emulates x86"),
    pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 is not installed (make test-cpu-models installs it)"),
]

# every optimiser the package builds, a few steps each on fixed parameters and gradients; torch's
# default for-loop Adam as the control that shows the emulated models do choose other kernels
STEPS = r"""
import hashlib, json
import unlearn_da, torch
from unlearn_da.core.training import OPTIMIZERS, build_optimizer

def steps(make):
    g = torch.Generator().manual_seed(0)
    p = [torch.nn.Parameter(torch.randn(1003, 37, generator=g)), torch.nn.Parameter(torch.randn(5, generator=g))]
    opt = make(p)
    for _ in range(20):
        for q in p:
            q.grad = torch.randn(q.shape, generator=g) * 1e-3
        opt.step()
    return hashlib.sha256(b"".join(q.detach().numpy().tobytes() for q in p)).hexdigest()

hp = {"lr": 2.41e-4, "momentum": 0.9, "weight_decay": 5e-4}
out = {name: steps(lambda p, name=name: build_optimizer(p, {**hp, "optimizer": name})) for name in OPTIMIZERS}
out["torch_default_adam"] = steps(lambda p: torch.optim.Adam(p, lr=hp["lr"], foreach=False))
print(json.dumps(out))
"""


def optimizer_bits(cpu_model: str | None) -> dict[str, str]:
    """The parameters' hash after the steps, per optimiser, natively (None) or on an emulated model."""
    cmd = [sys.executable, "-c", STEPS]
    if cpu_model:
        cmd = [QEMU, "-cpu", cpu_model, *cmd]
    proc = subprocess.run(cmd, env=env_with_venv(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_optimiser_gives_the_same_bits_on_an_emulated_intel_and_amd_cpu():
    host = optimizer_bits(None)
    emulated = {model: optimizer_bits(model) for model in MODELS}
    for model, bits in emulated.items():
        for name in host:
            if name != "torch_default_adam":
                assert bits[name] == host[name], f"{name} on {model} differs from this CPU's"
    if all(bits["torch_default_adam"] == host["torch_default_adam"] for bits in emulated.values()):
        pytest.skip("torch's default Adam gives one result on this CPU and the emulated models: "
                    "the control that they choose other kernels does not show here")
