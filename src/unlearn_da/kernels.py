"""Which CPU kernels torch, MKL, oneDNN, OpenBLAS and numpy run: ``portable`` (default) or ``native``.

The same seed and thread count give the same bits only when the same kernels run, and each of
these libraries picks its kernels by the CPU it finds: ATen by its CPU capability (AVX-512 where
present), oneDNN by its ISA (AVX-512, AMX), MKL by its code path (which also differs between Intel
and AMD processors), OpenBLAS by its core type, numpy by its dispatch targets. ``portable`` pins
each of them to a level every x86-64 CPU since 2015 has (AVX2; MKL's vendor-neutral
"COMPATIBLE" path, the only one measured to give the same bits on an Intel and an AMD CPU model),
so a run gives the same checkpoints on any such machine. ``native`` leaves the choice to the
libraries: faster, and reproducible only on the same CPU model.

The variables are read once, when the libraries load, so they must be set before torch or numpy
is first imported: ``unlearn_da/__init__.py`` applies the mode of ``UNLEARN_DA_CPU_KERNELS``
(default portable) and the command line applies a job's ``cpu_kernels`` param before anything
imports torch. On ARM (Apple silicon, Graviton) other kernels run anyway: portable pins ATen to
its baseline and OpenBLAS to generic ARMv8, which makes ARM machines agree with each other at
best, never with x86; the architecture is recorded in every sidecar.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import warnings
from typing import Any

MODES = ("portable", "native")
ENV_MODE = "UNLEARN_DA_CPU_KERNELS"
# the variables' values before the outermost process applied a mode (JSON), for child processes:
# a job started by Snakemake inherits the portable values, and its native mode restores these
ENV_ORIGINAL = "UNLEARN_DA_ORIGINAL_DISPATCH_ENV"

# variable -> value, per architecture; every variable here is read at library load time
PORTABLE_ENV: dict[str, dict[str, str]] = {
    "x86_64": {
        "ATEN_CPU_CAPABILITY": "avx2",        # ATen's vectorised kernels (else AVX-512 where present)
        "ONEDNN_MAX_CPU_ISA": "AVX2",          # oneDNN's JIT convolutions (else AVX-512 / AMX)
        "MKL_CBWR": "COMPATIBLE",              # MKL BLAS, LAPACK, VML: one path on Intel and AMD
        "OPENBLAS_CORETYPE": "Haswell",        # numpy/scipy's OpenBLAS (k-means, probes)
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # numpy's AVX-512 dispatch
    },
    "aarch64": {
        "ATEN_CPU_CAPABILITY": "default",      # no SVE kernels
        "OPENBLAS_CORETYPE": "ARMV8",
    },
}
PORTABLE_ENV["AMD64"] = PORTABLE_ENV["x86_64"]
PORTABLE_ENV["arm64"] = PORTABLE_ENV["aarch64"]
ALL_VARIABLES = sorted({k for table in PORTABLE_ENV.values() for k in table})

_state: dict[str, Any] = {"mode": None, "saved": {}}


def portable_env(machine: str | None = None) -> dict[str, str]:
    """The variables portable mode sets on ``machine`` (default: this one); {} where none are known."""
    return dict(PORTABLE_ENV.get(machine or platform.machine(), {}))


def mode_from_environment() -> str:
    mode = os.environ.get(ENV_MODE, "portable") or "portable"
    if mode not in MODES:
        raise ValueError(f"{ENV_MODE}={mode!r} is not allowed; allowed: {', '.join(MODES)}")
    return mode


def apply(mode: str) -> str:
    """Set (portable) or restore (native) the dispatch variables; before torch/numpy load.

    Portable overrides what the environment held (a job must not inherit another level);
    native restores the values the process started with. Once torch is imported the mode is
    fixed: asking for another one is an error rather than a silent no-op.
    """
    if mode not in MODES:
        raise ValueError(f"cpu_kernels: {mode!r} is not allowed; allowed: {', '.join(MODES)}")
    if _state["mode"] == mode:
        return mode
    if "torch" in sys.modules and _state["mode"] is not None:
        raise RuntimeError(f"cpu_kernels: {mode} asked for after torch was loaded with {_state['mode']} "
                           "kernels; the mode must be set before torch is first imported")
    if _state["mode"] is None:
        _state["saved"] = _original_values()
        if "torch" in sys.modules and mode == "portable" and not _would_be_portable():
            warnings.warn("unlearn_da was imported after torch: the CPU kernels are not pinned to the "
                          "portable level in this process (import unlearn_da first)", stacklevel=3)
    for key in ALL_VARIABLES:
        original = _state["saved"].get(key)
        if original is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = original
    if mode == "portable":
        os.environ.update(portable_env())
    _state["mode"] = mode
    return mode


def _original_values() -> dict[str, str | None]:
    """The dispatch variables as the user set them: from the parent's record if there is one."""
    inherited = os.environ.get(ENV_ORIGINAL)
    if inherited:
        try:
            values = json.loads(inherited)
            return {k: values.get(k) for k in ALL_VARIABLES}
        except (ValueError, AttributeError):
            pass
    values = {k: os.environ.get(k) for k in ALL_VARIABLES}
    os.environ[ENV_ORIGINAL] = json.dumps(values, sort_keys=True)
    return values


def _would_be_portable() -> bool:
    torch = sys.modules.get("torch")
    wanted = portable_env().get("ATEN_CPU_CAPABILITY")
    return torch is None or wanted is None or torch.backends.cpu.get_cpu_capability().lower() == wanted


def current_mode() -> str | None:
    return _state["mode"]


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else what platform says)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def record() -> dict[str, Any]:
    """What ran: the mode, the architecture and CPU, ATen's capability in force and the variables."""
    out: dict[str, Any] = {
        "cpu_kernels": _state["mode"] or mode_from_environment(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "variables": {k: os.environ.get(k) for k in ALL_VARIABLES if os.environ.get(k) is not None},
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        out["aten_capability"] = torch.backends.cpu.get_cpu_capability()
    return out


def portable_in_force() -> bool:
    """Whether this process runs the portable kernels (ATen's capability checked where torch is loaded)."""
    wanted = portable_env()
    if any(os.environ.get(k) != v for k, v in wanted.items()):
        return False
    torch = sys.modules.get("torch")
    if torch is not None and "ATEN_CPU_CAPABILITY" in wanted:
        return torch.backends.cpu.get_cpu_capability().lower() == wanted["ATEN_CPU_CAPABILITY"].lower()
    return True


def single_threaded_libraries(mode: str):
    """A context in which OpenMP and BLAS run one thread, in portable mode (else a no-op).

    scikit-learn's k-means sums per-thread partial centres in the order the threads finish, and
    BLAS splits its work by the thread count: one thread gives one order on every machine. The
    metrics rule declares one core per job, so this is also what Snakemake schedules for.
    """
    import contextlib

    if mode != "portable":
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)
