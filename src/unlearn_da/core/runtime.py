"""Device choice, thread pinning, seeding and mixed precision, in one place."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

from .errors import ConfigError


def select_device(preference: str = "auto") -> torch.device:
    """``auto`` -> cuda when present, else cpu; ``cuda`` without a GPU is an error."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for, but torch sees no CUDA GPU; use device: auto or cpu")
    if preference not in ("cpu", "cuda"):
        raise ConfigError(f"device: '{preference}' is not allowed; allowed: auto, cpu, cuda")
    return torch.device(preference)


def setup(threads: int, device: torch.device, deterministic: bool = True) -> None:
    """Pin the thread count and, on CUDA, ask for deterministic kernels.

    On the CPU the kernels used here are deterministic already: the same seed and
    the same thread count give the same bits. ``use_deterministic_algorithms``
    is skipped there because it imports torch's compiler stack (~0.9 s per job).
    """
    torch.set_num_threads(max(1, int(threads)))
    if deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def import_optimizer_machinery() -> None:
    """Import what torch.optim imports the first time an optimizer is built: ``torch._dynamo``
    (1.4-2.2 s on a 2-core Intel Xeon guest; every optimizer's constructor and ``step`` import it).
    A timed job calls this before its clock starts, so that its ``seconds`` (Time, RTE) hold the
    method's own work and its ``startup_s`` the whole fixed cost; on the digits data set the import
    was most of a model's Time."""
    import torch._dynamo  # noqa: F401


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator for data order."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_switch(value: str, auto: bool) -> bool:
    """'auto' | 'on' | 'off' -> bool; 'auto' takes the measured default ``auto``."""
    if value == "auto":
        return auto
    return value == "on"


def amp_default(device: torch.device) -> bool:
    """bf16 autocast pays off on CUDA; on the CPU it is slower and changes numbers."""
    return device.type == "cuda"


def compile_default(device: torch.device) -> bool:
    """Off until measured: on the CPU a small CNN's first compile took 80 s (3.6 s from the cache)
    against seconds of training; no GPU measurement has shown that it pays off there yet."""
    return False


INDUCTOR_CACHE = ".cache/inductor"  # under the project (the jobs' working directory): shared by every job


def compile_model(model: torch.nn.Module) -> torch.nn.Module:
    """``model.compile()`` in place (its state_dict keys stay as they are), Inductor's cache shared by jobs."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.abspath(INDUCTOR_CACHE))
    model.compile()
    return model


def channels_last_default(device: torch.device) -> bool:
    """channels_last is faster on both: measured on 2 CPU cores, small-CNN training at 28x28
    1,600 -> 3,000 img/s, at 8x8 9,500 -> 11,800, ResNet-18 80 -> 101, inference 3x."""
    return True


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    """bf16 autocast when enabled; a no-op otherwise."""
    if enabled:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


@contextlib.contextmanager
def full_precision(device: torch.device | str) -> Iterator[None]:
    """Autocast off for ``device``'s type, whatever the caller's state.

    For linear algebra that must not run in bf16: CUDA autocast hands matmuls bf16
    and CUDA has no bf16 ``eigh``; CPU autocast upcasts ``eigh`` silently but still
    computes the second moment in bf16. Cast the inputs with :func:`float32` inside.
    """
    kind = device.type if isinstance(device, torch.device) else str(device)
    with torch.autocast(device_type=kind, enabled=False):
        yield


@contextlib.contextmanager
def exact_float32(device: torch.device | str) -> Iterator[None]:
    """Autocast off and TF32 off (CUDA matmuls and cuDNN convolutions): true float32 arithmetic.

    What the metrics read (features, logits) is computed here, so MIA, DA spectra, probes and
    clustering see float32 numbers on every device, whatever precision the model trained in.
    The TF32 switches are process-wide; they are restored on exit.
    """
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        with full_precision(device):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def float32(t: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 -> float32; float32 and float64 (tests, gradient checks) stay as they are."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor (indices, random offsets) on ``device`` without a host synchronisation.

    A plain ``.to("cuda")`` from pageable memory waits for the stream, i.e. for every kernel
    queued so far: once per training step that stalls the GPU. Pinned memory with
    ``non_blocking=True`` does not; torch keeps the pinned buffer alive until the copy is done.
    """
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device, non_blocking=True)
