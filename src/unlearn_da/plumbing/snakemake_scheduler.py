"""One pending re-evaluation in Snakemake's scheduler, not one more per scheduling round.

Snakemake 9's ``JobScheduler.schedule`` ends every round that had ready jobs by starting a timer that
wakes the scheduler again one rate-limit window later (``--max-jobs-per-timespan``, default 100 jobs
per 1 s): a job submitted now may make room for more after the window. Each such wake-up is itself a
round that starts another timer, so every finished job adds a chain of one-second wake-ups that lasts
while any job is ready. In the default run (470 jobs, 2 cores) the chains grew to hundreds of rounds a
second by the end, each walking every remaining job: most of Snakemake's own CPU. One wake-up pending
at a time gives the scheduler the same information: whatever woke it, it looks at all ready jobs.

The Snakefile installs it (``install``); ``UNLEARN_DA_SNAKEMAKE_SCHEDULER=stock`` leaves Snakemake's
scheduler as it is. It replaces one private method, so it is installed only where that method has the
signature and body it was written for (``_compatible``); elsewhere Snakemake runs unchanged and a
line on stderr says so.
"""

from __future__ import annotations

import inspect
import os
import sys
import threading
from typing import Any

ENV = "UNLEARN_DA_SNAKEMAKE_SCHEDULER"
_EXPECTED_SOURCE = "threading.Timer(delay, lambda: self._open_jobs.release(), ).start()"


def _compatible(cls: Any) -> bool:
    method = getattr(cls, "_schedule_reevalutation", None)
    if method is None or getattr(method, "_unlearn_da", False):
        return False
    try:
        source = inspect.getsource(method)
    except (OSError, TypeError):
        return False
    body = " ".join(source.split()).replace("( ", "(").replace(" )", ")")
    return list(inspect.signature(method).parameters) == ["self", "delay"] and \
        _EXPECTED_SOURCE.replace(" ", "") in body.replace(" ", "")


def _one_pending(self: Any, delay: float) -> None:
    """Wake the scheduler after ``delay`` seconds unless a wake-up is already pending."""
    lock = self.__dict__.setdefault("_unlearn_da_reevaluation_lock", threading.Lock())
    with lock:
        if self.__dict__.get("_unlearn_da_reevaluation_pending"):
            return
        self.__dict__["_unlearn_da_reevaluation_pending"] = True

    def wake() -> None:
        with lock:
            self.__dict__["_unlearn_da_reevaluation_pending"] = False
        self._open_jobs.release()

    timer = threading.Timer(delay, wake)
    timer.daemon = True  # an exiting Snakemake does not wait for it
    timer.start()


_one_pending._unlearn_da = True  # type: ignore[attr-defined]


def install() -> bool:
    """Replace ``JobScheduler._schedule_reevalutation`` (sic) with :func:`_one_pending`; True when it did."""
    if os.environ.get(ENV, "").strip().lower() == "stock":
        return False
    try:
        from snakemake.scheduling.job_scheduler import JobScheduler
    except ImportError:
        return False
    if getattr(getattr(JobScheduler, "_schedule_reevalutation", None), "_unlearn_da", False):
        return True
    if not _compatible(JobScheduler):
        print(f"unlearn-da: this Snakemake's scheduler is not the one {__name__} was written for; it runs "
              "unchanged (more of its own CPU per job)", file=sys.stderr)
        return False
    JobScheduler._schedule_reevalutation = _one_pending
    return True
