"""Shipped expected results (issue 23): a run is checked against them exactly, the README's result
tables and verdicts are what the generator writes from them, and the statistics behind the verdicts."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

from conftest import env_with_venv
from unlearn_da.tools.readme_tables import run_readme_tables
from unlearn_da.tools.reproduction import compare, compare_model, load_expected
from unlearn_da.reporting.verdicts import paired_p, rank, t_interval, verdict


def check(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unlearn_da", "check-reproduction", *args], cwd=project,
                          env=env_with_venv(), capture_output=True, text=True)


@pytest.mark.slow
def test_the_tiny_run_reproduces_its_shipped_expected_results_exactly(tiny_project: Path):
    """Checkpoints, features and every metric of every model, to the bit: on a CI machine with another
    CPU this proves the portable kernels on every change."""
    proc = check(tiny_project, "--configfile", "tests/config/tiny.yaml", "--expected", "expected/tiny.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = load_expected(tiny_project / "expected" / "tiny.json")
    assert f"summary: {len(expected['models'])} identical, 0 different, 0 missing" in proc.stdout
    assert expected["cpu_kernels"] == "portable"


@pytest.mark.slow
def test_a_changed_file_or_number_is_reported_per_model_and_seed(tiny_project: Path, tmp_path: Path):
    expected = load_expected(tiny_project / "expected" / "tiny.json")
    forged = copy.deepcopy(expected)
    forged["models"]["class0/seed0/ft"]["metrics"]["UA"] += 0.5
    forged["models"]["random10/seed0/ga"]["checkpoint"] = "0" * 64
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(forged))
    proc = check(tiny_project, "--configfile", "tests/config/tiny.yaml", "--expected", str(path))
    assert proc.returncode == 1
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.split()}
    assert "different" in lines["class0/seed0/ft"] and "UA" in lines["class0/seed0/ft"]
    assert "|Δ| 0.5" in lines["class0/seed0/ft"]
    assert "checkpoint checksum differs" in lines["random10/seed0/ga"]
    assert "identical" in lines["class0/seed0/ga"]
    assert "2 different" in proc.stdout


def test_a_missing_expected_file_names_the_run_and_the_folder(tmp_path: Path, pristine: Path):
    proc = check(pristine, "--configfile", "config/quick.yaml", "--expected", str(tmp_path / "none.json"))
    assert proc.returncode == 2 and "no expected results for run 'digits-smallcnn-quick'" in proc.stderr


def test_compare_ignores_wall_clock_seconds_and_treats_nan_as_equal():
    a = {"checkpoint": "x", "features": "y", "metrics": {"UA": 1.0, "TA_forgotten": math.nan, "seconds": 3.0}}
    b = copy.deepcopy(a)
    b["metrics"]["seconds"] = 9.0
    b["metrics"]["TA_forgotten"] = math.nan
    assert compare_model(a, b)["status"] == "identical"
    result = compare({"models": {"s/seed0/m": a, "s/seed1/m": a}}, {"models": {"s/seed0/m": b}})
    assert result["counts"] == {"identical": 1, "different": 0, "missing": 1}


def test_the_readme_tables_are_what_the_generator_writes_from_the_shipped_results(pristine: Path):
    code, message = run_readme_tables(pristine, check=True)
    assert code == 0, message


@pytest.mark.parametrize("page,block,row", [("docs/results.md", "digits-avg-gap", "| original |"),
                                            ("README.md", "digits-excerpt", "| class0 | original |")])
def test_a_typed_number_in_a_generated_block_is_caught(pristine: Path, tmp_path: Path, page: str, block: str,
                                                       row: str):
    from unlearn_da.tools.smoke import copy_project

    project = copy_project(tmp_path / "p", root=pristine)
    text = (project / page).read_text()
    start = text.index(f"<!-- generated: {block} -->")
    at = text.index(row, start)
    cell = text.index("| ", at + len(row) - 1) + 2
    cell = next(i for i in range(cell, len(text)) if text[i].isdigit())
    edited = text[:cell] + str((int(text[cell]) + 1) % 10) + text[cell + 1:]  # one digit of a typed number
    (project / page).write_text(edited)
    code, message = run_readme_tables(project, check=True)
    assert code == 1 and "make readme-tables" in message and page in message
    assert run_readme_tables(project)[0] == 0 and (project / page).read_text() == text


def test_a_table_from_expected_results_of_an_earlier_config_says_so(pristine: Path, tmp_path: Path):
    """A profile changed (re-tuned, say) without its expected results re-made: its generated tables still
    render, headed by a line that says they are not today's numbers; re-made, the line goes."""
    from unlearn_da.tools.smoke import copy_project

    project = copy_project(tmp_path / "p", root=pristine)
    assert run_readme_tables(project)[0] == 0
    assert "Not today's numbers" not in (project / "docs/results.md").read_text().split("digits-avg-gap")[1][:600]
    quick = project / "config" / "config.yaml"
    quick.write_text(quick.read_text().replace("lr: 0.285", "lr: 0.286", 1))  # the digits FT rate, as a re-tune would
    assert run_readme_tables(project)[0] == 0
    block = (project / "docs/results.md").read_text().split("<!-- generated: digits-avg-gap -->")[1]
    assert block.lstrip().startswith("**Not today's numbers**: `expected/digits-smallcnn.json`"), block[:300]


def test_confidence_interval_and_paired_test_match_scipy():
    low, high = t_interval([1.0, 2.0, 3.0])
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert (low, high) == pytest.approx((2 - half, 2 + half))
    a, b = [1.0, 2.5, 2.0, 4.0], [0.5, 2.0, 2.1, 3.0]
    assert paired_p(a, b) == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert paired_p([1, 2], [1, 2]) == 1.0 and paired_p([2, 3], [1, 2]) == 0.0  # no spread in the differences
    assert math.isnan(paired_p([1.0], [2.0])) and math.isnan(t_interval([1.0])[0])


def test_rank_marks_what_the_seeds_cannot_tell_apart():
    values = {"a": {0: 1.0, 1: 1.2, 2: 0.9}, "b": {0: 1.1, 1: 1.0, 2: 1.3},  # a and b: noise
              "c": {0: 5.0, 1: 5.1, 2: 5.3},                                 # clearly worse
              "floor": {0: 0.8, 1: 1.1, 2: 1.0}}
    rows = rank(values, ["c", "b", "a"], floor="floor")
    assert [r.model for r in rows] == ["a", "b", "c"]
    assert rows[0].best and rows[1].tied_with_best and rows[2].tied_with_best is False
    assert rows[0].at_floor and rows[1].at_floor and rows[2].at_floor is False
    text = verdict(rows, "random10", rank(values, ["floor"])[0], focus="b")
    assert "lowest Avg. Gap (per seed) a" in text and "Cannot be told apart from it: b (1 of 2)" in text
    assert "Worse than it (p < 0.05): c" in text and "b: 1.13" in text and "cannot be told apart from a" in text
    one_seed = rank({"a": {0: 1.0}, "b": {0: 2.0}}, ["a", "b"])
    assert one_seed[1].tied_with_best is None and "Too few seeds" in verdict(one_seed, "x", None)
    alone = rank({"a": {0: 1.0, 1: 2.0}}, ["a"])  # a single method: nothing to compare, nothing claimed
    assert "Too few seeds" not in verdict(alone, "x", None) and "Cannot be told" not in verdict(alone, "x", None)
    with_nan = rank({"a": {0: 1.0, 1: math.nan, 2: 1.5}, "b": {0: 2.0, 1: 2.5, 2: 2.2}}, ["a", "b"])
    assert with_nan[0].model == "a" and with_nan[0].n == 2  # an undefined value is left out, not ranked


def test_a_model_whose_files_are_missing_is_reported_missing_not_a_crash():
    a = {"checkpoint": "x", "features": "y", "metrics": {"UA": 1.0}}
    row = compare_model(a, {"missing_files": ["results/r/s/seed0/models/m.pt"]})
    assert row["status"] == "missing" and "no results/r/s/seed0/models/m.pt" in row["details"]
