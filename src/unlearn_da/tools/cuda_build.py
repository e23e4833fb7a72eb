"""Does this machine's NVIDIA driver fit the CUDA build of the installed torch? One line for
``gpu-slots --explain`` and ``gpu-check``, and the note for a CPU profile that would run on a GPU."""

from __future__ import annotations

from typing import Any

from ..core.cuda_check import MIN_DRIVER


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def build_fit(driver: str | None | bool = False, build: str | None | bool = False) -> str:
    """The driver, the CUDA version torch was built for, the oldest driver that build runs on, and
    whether they fit (``driver``/``build``: for tests; by default read from this machine)."""
    import torch

    from ..core.device_pool import driver_version

    build = torch.version.cuda if build is False else build
    driver = driver_version() if driver is False else driver
    if build is None:
        return f"torch {torch.__version__} is a CPU-only build; NVIDIA driver: {driver or 'none'}"
    need = MIN_DRIVER.get(_version(build)[0])
    wants = f"torch built for CUDA {build} (needs NVIDIA driver {need or 'unknown'} or later)"
    if driver is None:
        return f"{wants}; no NVIDIA driver is loaded here"
    if need is None:
        return f"NVIDIA driver {driver}, {wants}: whether they fit is not known"
    if _version(driver) >= _version(need):
        return f"NVIDIA driver {driver}, {wants}: they fit"
    return (f"NVIDIA driver {driver}, {wants}: they do NOT fit; install a torch build for this driver, "
            "e.g. make torch TORCH_CUDA=cu126 (docs/gpu.md)")


def auto_device_note(config: dict[str, Any], cuda_available: bool, expected_made_on_cpu: bool) -> str | None:
    """``device: auto`` takes a GPU where torch sees one, in bf16: a profile whose shipped expected results
    were made on the CPU then gives other numbers. Say so before the run, with what to do."""
    if config.get("device") != "auto" or not cuda_available or not expected_made_on_cpu:
        return None
    return ("note: device: auto runs this profile on the GPU (bf16 autocast); its shipped expected results were "
            "made on the CPU, so make check-reproduction will find other numbers. To reproduce them bit for bit, "
            "put device: cpu in an overlay after the profile")
