"""Why torch sees no CUDA GPU, and the refusal of a GPU profile on a machine without one.

A paper profile sets ``device: cuda``: on a login node, with an empty ``CUDA_VISIBLE_DEVICES``, in a
container started without GPUs or on a driver older than torch's CUDA build needs, ResNet-18 would
otherwise train on the CPU without a word (``device: auto``) for days.
"""

from __future__ import annotations

import os

from .device_pool import driver_version
from .errors import ConfigError

#: the oldest Linux driver each CUDA major version of a torch build runs on (NVIDIA's CUDA
#: compatibility tables: 13.x needs the R580 driver; 12.x runs on R525 and later through minor-version
#: compatibility; 11.x on R450)
MIN_DRIVER = {13: "580.65.06", 12: "525.60.13", 11: "450.80.02"}


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def cuda_diagnosis(env: dict[str, str] | None = None, driver: str | None | bool = False,
                   build: str | None | bool = False) -> str:
    """Why torch sees no CUDA GPU, from what can be read: the torch build, CUDA_VISIBLE_DEVICES,
    the loaded driver against the oldest driver the build runs on (``driver``/``build``: for tests)."""
    import torch

    env = os.environ if env is None else env
    build = torch.version.cuda if build is False else build
    driver = driver_version() if driver is False else driver
    reasons = []
    if build is None:
        reasons.append(f"this torch ({torch.__version__}) is a CPU-only build")
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        reasons.append(f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU")
    if driver is None:
        reasons.append("no NVIDIA driver is loaded (a login node, or a container started without GPUs)")
    elif build is not None:
        need = MIN_DRIVER.get(_version_tuple(build)[0])
        if need and _version_tuple(driver) < _version_tuple(need):
            reasons.append(f"the NVIDIA driver {driver} is older than the {need} that torch's CUDA {build} build "
                           "needs: install a torch build for this driver (docs/gpu.md)")
        else:
            reasons.append(f"NVIDIA driver {driver}, torch built for CUDA {build}")
    return "; ".join(reasons) or "torch finds no CUDA device"


def require_cuda(preference: str) -> None:
    """``device: cuda`` on a machine where torch sees no GPU: refused, with the reason and what to do."""
    import torch

    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: cuda, but torch sees no CUDA GPU: {cuda_diagnosis()}. Run on a GPU node, "
                          "or put device: cpu in an overlay after the profile to run on the CPU on purpose")
