"""How long a job took from its process start to its first unit of work (its fixed cost), and after
its work until its last file was written (its tail).

Each GPU job is a new process: interpreter, imports, CUDA context, reading and hashing its inputs,
moving data to the device. ``mark()`` is called where the timed work begins (a training or
unlearning loop, a feature pass); the seconds from the process start to that point go into the
job's sidecar (``startup_s``) and ``make bench`` reports them per rule.
"""

from __future__ import annotations

import os
import time

_IMPORTED_AT = time.time()
_state: dict[str, float | None] = {"startup_s": None, "work_end": None, "started": None}


def set_process_start(epoch: float) -> None:
    """Count this process's age from ``epoch`` (a warm-started job: its client's start, not the fork's)."""
    _state["started"] = epoch


def process_age() -> float:
    """Seconds since this process started: /proc on Linux (to 10 ms); elsewhere since this module loaded."""
    started_at = _state.get("started")
    if started_at is not None:
        return max(0.0, time.time() - started_at)
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 (starttime), after the command name
        with open("/proc/uptime") as f:
            return max(0.0, float(f.read().split()[0]) - started)
    except (OSError, ValueError, IndexError):
        return time.time() - _IMPORTED_AT


def mark() -> float:
    """Record (once) the seconds from the process start to now; return them."""
    if _state["startup_s"] is None:
        _state["startup_s"] = process_age()
    return float(_state["startup_s"])


def seconds() -> float | None:
    return _state["startup_s"]


def work_done() -> None:
    """Record (once) where the job's work ends: what follows (saving, reloading, features, checksums) is
    its tail, which every sidecar written afterwards records (``tail_s``; the job's last sidecar holds it
    whole)."""
    if _state["work_end"] is None:
        _state["work_end"] = process_age()


def tail_seconds() -> float | None:
    """Seconds since :func:`work_done`, or None before it."""
    end = _state["work_end"]
    return None if end is None else max(0.0, process_age() - end)
