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
ARCHITECTURES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
ALL_VARIABLES = sorted({k for table in PORTABLE_ENV.values() for k in table})
# the instructions the x86 portable level runs: without them ATen's AVX2 kernels would crash
X86_REQUIRED_FLAGS = ("avx2", "fma")

# libraries that read the variables when they load
DISPATCH_LIBRARIES = ("torch", "numpy", "scipy", "sklearn")

_state: dict[str, Any] = {"mode": None, "saved": {}, "loaded_before": []}


def architecture(machine: str | None = None) -> str | None:
    """x86_64 | aarch64 for the names platforms give them (AMD64, ARM64, arm64, ...); None otherwise."""
    return ARCHITECTURES.get((machine or platform.machine()).lower())


def portable_env(machine: str | None = None) -> dict[str, str]:
    """The variables portable mode sets on ``machine`` (default: this one); {} where none are known."""
    return dict(PORTABLE_ENV.get(architecture(machine) or "", {}))


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
        early = [m for m in DISPATCH_LIBRARIES if m in sys.modules]
        _state["loaded_before"] = early
        if early and mode == "portable":
            warnings.warn(f"unlearn_da was imported after {', '.join(early)}: the CPU kernels of these are "
                          "not pinned to the portable level in this process (import unlearn_da first)",
                          stacklevel=3)
    for key in ALL_VARIABLES:
        original = _state["saved"].get(key)
        if original is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = original
    if mode == "portable":
        missing = missing_x86_flags()
        if missing:
            raise RuntimeError(f"cpu_kernels: portable needs {' and '.join(f.upper() for f in missing)}, which this CPU "
                               f"({cpu_model()}) lacks; set cpu_kernels: native (config) or "
                               f"{ENV_MODE}=native, and expect other numbers than the shipped ones")
        os.environ.update(portable_env())
    _state["mode"] = mode
    return mode


def missing_x86_flags() -> list[str]:
    """The required x86 instructions this CPU lacks, where its flags can be read (else [])."""
    if architecture() != "x86_64":
        return []
    flags = cpu_flags()
    return [f for f in X86_REQUIRED_FLAGS if flags is not None and f not in flags]


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


def current_mode() -> str | None:
    return _state["mode"]


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of Linux's /proc/cpuinfo ({} elsewhere)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    return fields


def _sysctl(name: str) -> str | None:
    import subprocess

    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, macOS sysctl, else what platform says)."""
    info = _cpuinfo()
    for key in ("model name", "hardware", "cpu model"):
        if info.get(key):
            return info[key]
    if sys.platform == "darwin":
        return _sysctl("machdep.cpu.brand_string") or platform.processor() or "unknown"
    return platform.processor() or "unknown"


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags (Linux: /proc/cpuinfo; macOS on x86: sysctl); None where unknown."""
    info = _cpuinfo()
    if "flags" in info or "features" in info:
        return set((info.get("flags") or info.get("features", "")).lower().split())
    if sys.platform == "darwin" and architecture() == "x86_64":
        text = " ".join(filter(None, (_sysctl("machdep.cpu.features"), _sysctl("machdep.cpu.leaf7_features"))))
        return set(text.lower().replace("avx2.0", "avx2").split()) or None
    return None


# flags worth recording: what the native kernels would use on this CPU
NOTABLE_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "sve", "sve2")


def record() -> dict[str, Any]:
    """What ran: the mode and whether it is in force, the architecture, the CPU (model, vendor, notable
    flags), ATen's capability where torch is loaded, and the dispatch variables."""
    info = _cpuinfo()
    flags = cpu_flags()
    out: dict[str, Any] = {
        "cpu_kernels": _state["mode"] or mode_from_environment(),
        "in_force": portable_in_force() if (_state["mode"] or mode_from_environment()) == "portable" else None,
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "vendor": info.get("vendor_id") or info.get("cpu implementer"),
        "cpu_flags": sorted(f for f in NOTABLE_FLAGS if flags and f in flags) if flags is not None else None,
        "variables": {k: os.environ.get(k) for k in ALL_VARIABLES if os.environ.get(k) is not None},
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        out["aten_capability"] = torch.backends.cpu.get_cpu_capability()
    return out


def portable_in_force() -> bool:
    """Whether this process runs the portable kernels: the variables set, ATen's capability where
    torch is loaded, and no dispatch library loaded before they were set. False on an architecture
    with no portable level known here."""
    wanted = portable_env()
    if not wanted or any(os.environ.get(k) != v for k, v in wanted.items()):
        return False
    if _state.get("loaded_before"):
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
