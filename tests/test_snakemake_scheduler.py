"""Snakemake's scheduler with one pending wake-up (unlearn_da/plumbing/snakemake_scheduler.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from conftest import env_with_venv


class _Scheduler:
    """What the replaced method touches of a JobScheduler: the semaphore a wake-up releases."""

    def __init__(self) -> None:
        self._open_jobs = threading.Semaphore(0)


def _wake_ups(scheduler: _Scheduler) -> int:
    count = 0
    while scheduler._open_jobs.acquire(blocking=False):
        count += 1
    return count


def test_rounds_that_each_ask_for_a_wake_up_get_one_not_one_each():
    """Stock Snakemake 9 starts a timer per round, and each wake-up is a round that starts another: 50
    rounds in one window gave 50 wake-ups, and 50 chains of them while jobs were ready."""
    from snakemake.scheduling.job_scheduler import JobScheduler

    from unlearn_da.plumbing.snakemake_scheduler import install

    assert install()
    scheduler = _Scheduler()
    for _ in range(50):
        JobScheduler._schedule_reevalutation(scheduler, 0.05)
    time.sleep(0.3)
    assert _wake_ups(scheduler) == 1
    JobScheduler._schedule_reevalutation(scheduler, 0.05)  # the next window gets its own
    time.sleep(0.3)
    assert _wake_ups(scheduler) == 1


def test_the_stock_scheduler_stays_when_asked_and_on_an_unknown_snakemake():
    code = ("from snakemake.scheduling.job_scheduler import JobScheduler as J\n"
            "from unlearn_da.plumbing import snakemake_scheduler as S\n"
            "print(S.install(), getattr(J._schedule_reevalutation, '_unlearn_da', False))\n"
            "class Other:\n"
            "    def _schedule_reevalutation(self, delay):\n"
            "        pass\n"
            "print(S._compatible(Other))\n")
    env = {**env_with_venv(), "UNLEARN_DA_SNAKEMAKE_SCHEDULER": "stock"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["False", "False", "False"], out.stdout + out.stderr
