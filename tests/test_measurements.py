"""The measurements file (``tools/measurements.py``): what ``measure`` records, and how the pages render it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import env_with_venv
from unlearn_da.tools import measurements as M
from unlearn_da.tools import readme_tables as R


def test_a_command_s_output_gives_its_jobs_and_tests():
    snakemake = "1 of 3 steps (33%) done\n3 of 3 steps (100%) done\nreport\n1 of 2 steps (50%) done\n2 of 2 steps (100%) done\n"
    assert M.counts_from_output(snakemake) == {"jobs": 5}
    pytest_out = "....\n676 passed, 3 skipped, 2 warnings in 428.19s (0:07:08)\n"
    assert M.counts_from_output(pytest_out) == {"passed": 676, "skipped": 3}
    assert M.counts_from_output("1 failed, 2 passed in 3.0s") == {"failed": 1, "passed": 2}
    assert M.counts_from_output("nothing to count") == {}


@pytest.mark.parametrize("seconds, text", [(45.4, "45 s"), (59.6, "1 min 00 s"), (571, "9 min 31 s"),
                                           (3599.6, "1 h 00 min"), (4740, "1 h 19 min")])
def test_a_measured_time_is_written_one_way(seconds, text):
    assert M.duration(seconds) == text


def test_measure_records_a_successful_command_and_nothing_for_a_failed_one(tmp_path: Path):
    file = tmp_path / "m.json"
    ok = [sys.executable, "-c", "print('2 of 2 steps (100%) done'); print('3 passed in 0.1s')"]
    assert M.measure(ok, key="a command", path=file, note="a remark") == 0
    entry = json.loads(file.read_text())["entries"]["a command"]
    assert entry["jobs"] == 2 and entry["passed"] == 3 and entry["note"] == "a remark"
    assert entry["seconds"] >= 0 and entry["machine"].endswith("cores") and entry["date"]
    assert M.measure([sys.executable, "-c", "raise SystemExit(3)"], key="failing", path=file) == 3
    assert set(json.loads(file.read_text())["entries"]) == {"a command"}
    file.write_text('{"entries": []}')
    with pytest.raises(ValueError, match="not a measurements file"):
        M.read(file)


def test_measuring_into_a_project_s_file_renders_its_pages_again(tmp_path: Path):
    """A page that states a measured time says what the file says once measure has written it (a
    stale page fails the generated-blocks test)."""
    from conftest import copy_project

    project = copy_project(tmp_path / "project")
    file = project / "measurements" / "measurements.json"
    assert M.measure([sys.executable, "-c", "print('12 of 12 steps (100%) done')"], key="make reproduce",
                     path=file) == 0
    assert "`make reproduce` (12 jobs):" in (project / "README.md").read_text()
    assert R.run_readme_tables(project, check=True)[0] == 0


def test_the_measure_command_takes_the_command_after_a_double_dash(tmp_path: Path):
    file = tmp_path / "m.json"
    done = subprocess.run([sys.executable, "-m", "unlearn_da", "measure", "--file", str(file), "--",
                           sys.executable, "-c", "print('hi')"], capture_output=True, text=True,
                          env=env_with_venv(), timeout=120)
    assert done.returncode == 0, done.stderr
    (key,) = json.loads(file.read_text())["entries"]
    assert key.endswith("-c print('hi')") and "hi" in done.stdout


def test_the_pages_render_the_measured_times_with_their_machine():
    measured = {"format": 1, "entries": {
        "make reproduce": {"seconds": 571.0, "machine": "AMD EPYC, 2 cores", "date": "2026-12-07",
                           "commit": "abc1234", "jobs": 471, "note": "a fresh clone"},
        "make test": {"seconds": 430.0, "machine": "AMD EPYC, 2 cores", "date": "2026-12-07", "commit": None,
                      "passed": 680, "skipped": 3}}}
    quick = R.quick_start_block(measured, "measurements/measurements.json")
    assert "`make reproduce` (471 jobs): 9 min 31 s on AMD EPYC, 2 cores (2026-12-07, commit `abc1234`; a fresh " \
        "clone)" in quick.replace("\n", " ")
    assert "`make test` (680 tests passed, 3 skipped: they need qemu or a GPU): 7 min 10 s" in quick.replace("\n", " ")
    profiles = R.profiles_block(measured, "measurements/measurements.json")
    assert "| `config/config.yaml` | 225 | 9 min 31 s on AMD EPYC, 2 cores" in profiles
    assert "| `config/quick.yaml` | 65 | not measured |" in profiles


def test_a_single_measured_run_renders_as_one_value_not_a_range():
    from unlearn_da.tools.readme_tables import _span

    assert _span(31, 31, "{:.0f}") == "31"
    assert _span(73.41, 73.44, "{:.1f}") == "73.4"
    assert _span(101, 117, "{:.0f}") == "101–117"
