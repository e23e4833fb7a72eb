"""A pool of (GPU, slot) places shared by the jobs of one machine, taken with OS file locks.

Snakemake hands out a ``gpu`` resource as a count; it never says *which* GPU a job should use
(snakemake/snakemake #281, #116), so every job used ``cuda:0``. Here a job takes a free slot
before it touches CUDA: ``jobs_per_device`` slots per device, one lock file each in the pool
directory, held with ``flock`` for the job's life. The kernel drops the lock when the process
ends, however it ends, so a killed job frees its slot. Slots are tried slot-major (slot 0 of
every device before slot 1 of any), which spreads jobs over the devices before stacking them.
A job that finds every slot taken waits (``wait_s``, with a message every minute) and then
fails with a message, instead of oversubscribing a device.

Lock files are named by the device's UUID and live in a folder per host, so jobs that see the
same GPU under different indices (``CUDA_VISIBLE_DEVICES``, SLURM) still share its slots. The pool
folder (``gpu.pool_dir``) is by default on the machine's own temporary file system, not in the
project: slots belong to a machine's GPUs, every clone on it shares them, and a shared file system
may not lock at all (Lustre without ``flock``, NFSv3 without lockd). A file system that cannot
lock is refused at once, by name, instead of read as "every slot taken".

The Snakefile passes the config's ``gpu`` block to every job through the environment (not its
params: where a job runs does not change what it computes, so it does not rerun anything).
``UNLEARN_DA_FAKE_GPUS=N`` (tests only) makes N fake device ids on ``device: cpu``: the same
locking, the computation stays on the CPU.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable

from .errors import PipelineError

ENV_DEVICES = "UNLEARN_DA_GPU_DEVICES"  # "auto" or "0,1,..."
ENV_JOBS = "UNLEARN_DA_JOBS_PER_DEVICE"
ENV_POOL = "UNLEARN_DA_DEVICE_POOL"  # the pool directory
ENV_WAIT = "UNLEARN_DA_POOL_WAIT_S"
ENV_FAKE = "UNLEARN_DA_FAKE_GPUS"  # tests: this many fake device ids on the CPU
ENV_EXCLUSIVE = "UNLEARN_DA_EXCLUSIVE_TIMING"  # "1": timed jobs take every slot of their device
POOL_AUTO = "auto"
DEFAULT_WAIT_S = 3600.0
POLL_S = 0.2
LOG_FILE = "acquisitions.jsonl"


@dataclass(frozen=True)
class PoolSettings:
    devices: str | list[int]  # "auto" or device indices as torch numbers them
    jobs_per_device: int
    pool_dir: Path
    wait_s: float
    fake: int  # > 0: fake device ids (tests)
    exclusive_timing: bool = False  # timed (unlearning) jobs hold every slot of their device


@dataclass
class Slot:
    device: int
    slot: int
    key: str  # the device's UUID (or fake-<i>)
    path: Path
    fd: int
    fake: bool
    waited_s: float
    sharing_at_acquire: int
    extra: list[tuple[Path, int]]  # the device's other slots, held too by an exclusive (timed) job

    def record(self) -> dict[str, Any]:
        """What a sidecar keeps: which device and slot, and how many jobs shared the device."""
        return {"device": self.device, "slot": self.slot, "device_uuid": self.key, "fake": self.fake,
                "exclusive": bool(self.extra), "waited_s": round(self.waited_s, 3),
                "jobs_on_device_at_start": self.sharing_at_acquire, "jobs_on_device_now": jobs_on_device(self)}


_held: dict[str, Slot | None] = {"slot": None}


def settings_from_environment(env: dict[str, str] | None = None) -> PoolSettings:
    """The pool as the Snakefile passed it (defaults: every visible GPU, one job each)."""
    env = os.environ if env is None else env
    raw = env.get(ENV_DEVICES, "auto").strip() or "auto"
    devices: str | list[int] = "auto" if raw == "auto" else [int(d) for d in raw.split(",") if d.strip()]
    return PoolSettings(devices=devices, jobs_per_device=max(1, int(env.get(ENV_JOBS, "1"))),
                        pool_dir=Path(env.get(ENV_POOL) or default_pool_dir()), wait_s=float(env.get(ENV_WAIT, DEFAULT_WAIT_S)),
                        fake=int(env.get(ENV_FAKE, "0") or 0), exclusive_timing=env.get(ENV_EXCLUSIVE) == "1")


def default_pool_dir() -> Path:
    """``gpu.pool_dir: auto``: this user's folder in the machine's temporary directory (local, per host)."""
    import tempfile

    return Path(tempfile.gettempdir()) / f"unlearn-da-device-pool-{os.getuid()}"


def pool_dir_of(gpu: dict[str, Any]) -> Path:
    """The pool folder the config's ``gpu.pool_dir`` names (``auto``: :func:`default_pool_dir`)."""
    value = gpu.get("pool_dir", POOL_AUTO)
    return default_pool_dir() if value in (None, POOL_AUTO) else Path(str(value)).expanduser().resolve()


def environment_for_jobs(gpu: dict[str, Any]) -> dict[str, str]:
    """The variables the Snakefile sets for its jobs from the config's ``gpu`` block."""
    devices = gpu.get("devices", "auto")
    return {ENV_DEVICES: "auto" if devices == "auto" else ",".join(str(int(d)) for d in devices),
            ENV_JOBS: str(int(gpu.get("jobs_per_device", 1))), ENV_POOL: str(pool_dir_of(gpu)),
            ENV_WAIT: str(float(gpu.get("wait_s", DEFAULT_WAIT_S))),
            ENV_EXCLUSIVE: "1" if gpu.get("exclusive_timing", False) else "0"}


def device_ids(settings: PoolSettings) -> list[tuple[int, str]]:
    """(index, uuid) of the pool's devices: the fake ones, or the CUDA devices torch sees."""
    if settings.fake > 0:
        ids = range(settings.fake) if settings.devices == "auto" else settings.devices
        return [(int(i), f"fake-{int(i)}") for i in ids]
    if not nvidia_driver_present():
        return []  # no NVIDIA driver: no CUDA device, and no torch import (seconds) to find that out
    import torch

    count = torch.cuda.device_count()
    ids = range(count) if settings.devices == "auto" else settings.devices
    out = []
    for i in ids:
        if not 0 <= int(i) < count:
            raise ValueError(f"gpu.devices names device {i}, but torch sees {count} CUDA device(s)")
        out.append((int(i), str(torch.cuda.get_device_properties(int(i)).uuid)))
    return out


def nvidia_driver_present() -> bool:
    """An NVIDIA driver is loaded (Linux: /proc/driver/nvidia; WSL2: /dev/dxg), or this is not Linux."""
    if not sys.platform.startswith("linux"):
        return True  # no cheap test: ask torch
    return os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/dxg")


def driver_version() -> str | None:
    """The loaded NVIDIA kernel driver's version (Linux: /proc/driver/nvidia/version), or None."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text(errors="replace")[:4096]
    except OSError:
        return None
    import re

    found = re.search(r"Kernel Module(?: for [\w-]+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    return found.group(1) if found else None


def slot_count(settings: PoolSettings) -> int:
    """devices x jobs_per_device: what Snakemake's ``gpu`` resource is bounded by (0 without GPUs)."""
    return len(device_ids(settings)) * settings.jobs_per_device


def _host_dir(pool_dir: Path) -> Path:
    d = Path(pool_dir) / socket.gethostname()
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PoolError(f"cannot make the GPU pool folder {d}: {exc.strerror}; set gpu.pool_dir to a writable "
                        "folder on a local file system") from None
    return d


def _lock_path(pool_dir: Path, key: str, slot: int) -> Path:
    return _host_dir(pool_dir) / f"{key}.slot{slot}.lock"


class PoolError(PipelineError):
    """The pool cannot work here (its folder cannot be written or locked): a setup error, not a busy GPU."""


#: errno values of flock that mean "another process holds the lock"; any other is the file system's refusal
BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


def _try_lock(path: Path) -> int | None:
    """The locked file's descriptor, or None when another process holds it; a file system that cannot
    lock (ENOLCK, ENOSYS, EOPNOTSUPP, ...) raises :class:`PoolError` instead of reading as busy."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise PoolError(f"cannot open the GPU pool's lock file {path}: {exc.strerror}; set gpu.pool_dir to a "
                        "writable folder on a local file system") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in BUSY:
            return None
        raise PoolError(f"the file system of the GPU pool folder {path.parent} cannot lock files "
                        f"(flock: {errno.errorcode.get(exc.errno, exc.errno)}, {exc.strerror}); set gpu.pool_dir "
                        "to a folder on a local file system, e.g. under /tmp (the default, auto)") from None
    return fd


def _is_held(path: Path) -> bool:
    """Whether another process holds ``path`` now (a probe: lock and let go at once)."""
    if not path.exists():
        return False
    fd = _try_lock(path)
    if fd is None:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    return False


def jobs_on_device(slot: Slot) -> int:
    """Jobs holding a slot of ``slot``'s device now, this one included."""
    own = {slot.path, *(p for p, _ in slot.extra)}
    others = [p for p in slot.path.parent.glob(f"{slot.key}.slot*.lock") if p not in own]
    return 1 + sum(_is_held(p) for p in others)


def _log(pool_dir: Path, event: str, slot: Slot) -> None:
    line = json.dumps({"t": round(time.time(), 6), "pid": os.getpid(), "event": event, "device": slot.device,
                       "slot": slot.slot, "device_uuid": slot.key})
    with open(_host_dir(pool_dir) / LOG_FILE, "a") as f:  # one short append per line: atomic on POSIX
        f.write(line + "\n")


def _unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _take_device(settings: PoolSettings, key: str) -> tuple[Path, int, list[tuple[Path, int]]] | None:
    """Every slot of one device (an exclusive, timed job), or None without keeping any."""
    taken: list[tuple[Path, int]] = []
    for s in range(settings.jobs_per_device):
        path = _lock_path(settings.pool_dir, key, s)
        fd = _try_lock(path)
        if fd is None:
            for _, held_fd in taken:
                _unlock(held_fd)
            return None
        taken.append((path, fd))
    return taken[0][0], taken[0][1], taken[1:]


def _candidates(settings: PoolSettings, devices: list[tuple[int, str]], exclusive: bool):
    """(index, key, slot) in the order slots are tried: slot-major, or one whole device at a time."""
    if exclusive:
        return [(index, key, None) for index, key in devices]
    return [(index, key, s) for s in range(settings.jobs_per_device) for index, key in devices]


def acquire(settings: PoolSettings, log: Callable[[str], None] | None = None, exclusive: bool = False) -> Slot:
    """Take a free (device, slot), waiting up to ``settings.wait_s``; the lock lives as long as the process.

    ``exclusive``: every slot of one device (a timed job that must not share its GPU)."""
    if _held["slot"] is not None:
        return _held["slot"]
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    devices = device_ids(settings)
    if not devices:
        raise RuntimeError("the device pool has no device: torch sees no CUDA GPU and gpu.devices names none")
    start, next_note = time.monotonic(), time.monotonic() + 60.0
    while True:
        for index, key, s in _candidates(settings, devices, exclusive):
            if s is None:
                whole = _take_device(settings, key)
                if whole is None:
                    continue
                path, fd, extra = whole
                s = 0
            else:
                path, extra = _lock_path(settings.pool_dir, key, s), []
                fd = _try_lock(path)
                if fd is None:
                    continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            slot = Slot(index, s, key, path, fd, settings.fake > 0, time.monotonic() - start, 0, extra)
            slot.sharing_at_acquire = jobs_on_device(slot)
            _held["slot"] = slot
            for _ in range(1 + len(extra)):
                _log(settings.pool_dir, "acquire", slot)
            atexit.register(release)
            return slot
        waited = time.monotonic() - start
        if waited >= settings.wait_s:
            raise TimeoutError(
                f"no free GPU slot after {waited:.0f} s: {len(devices)} device(s) x {settings.jobs_per_device} "
                f"job(s) per device are all taken (pool {settings.pool_dir}); raise gpu.wait_s or bound "
                f"Snakemake's jobs with --resources gpu={len(devices) * settings.jobs_per_device}")
        if time.monotonic() >= next_note:
            log(f"waiting for a GPU slot: all {len(devices) * settings.jobs_per_device} are taken "
                f"({waited:.0f} s so far, at most {settings.wait_s:.0f} s)")
            next_note += 60.0
        time.sleep(POLL_S)


def release() -> None:
    """Give the slot back (also done by the kernel when the process dies)."""
    slot = _held["slot"]
    if slot is None:
        return
    _held["slot"] = None
    try:
        for _ in range(1 + len(slot.extra)):
            _log(slot.path.parent.parent, "release", slot)
    finally:
        for fd in [slot.fd, *(fd for _, fd in slot.extra)]:
            _unlock(fd)


def held() -> Slot | None:
    return _held["slot"]


def held_record() -> dict[str, Any] | None:
    slot = _held["slot"]
    return None if slot is None else slot.record()


def place_job(device: Any, settings: PoolSettings | None = None, timed: bool = False) -> Any:
    """The torch device a job runs on: on CUDA, the pool's device (``cuda:<i>``, made current);
    on the CPU, the CPU (a slot is still taken where fake devices are set, for the tests).

    ``timed``: the job's seconds are a reported result (Time, RTE); with ``gpu.exclusive_timing``
    it holds every slot of its device, so no other job shares the GPU while it is timed."""
    settings = settings or settings_from_environment()
    exclusive = timed and settings.exclusive_timing
    if device.type == "cuda":
        import torch

        slot = acquire(settings, exclusive=exclusive)
        torch.cuda.set_device(slot.device)
        return torch.device("cuda", slot.device)
    if settings.fake > 0:
        acquire(settings, exclusive=exclusive)
    return device


def overlap_summary(log_file: str | os.PathLike) -> dict[str, Any]:
    """From an acquisitions log: the most slots held at once, per device and overall, and the count."""
    events = [json.loads(line) for line in Path(log_file).read_text().splitlines() if line.strip()]
    events.sort(key=lambda e: (e["t"], 0 if e["event"] == "release" else 1))  # a release at t frees first
    now: dict[int, int] = {}
    most: dict[int, int] = {}
    total_most = acquisitions = 0
    for e in events:
        d = int(e["device"])
        now[d] = now.get(d, 0) + (1 if e["event"] == "acquire" else -1)
        acquisitions += e["event"] == "acquire"
        most[d] = max(most.get(d, 0), now[d])
        total_most = max(total_most, sum(now.values()))
    return {"acquisitions": acquisitions, "most_per_device": most, "most_overall": total_most}
