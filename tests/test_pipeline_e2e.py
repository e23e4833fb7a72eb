"""One run of the tiny config through every rule, then the caching contract."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import dry_run_jobs, snakemake, tiny_copy
from unlearn_da import pipeline as P
from unlearn_da.settings.config import load_config

pytestmark = pytest.mark.slow
TINY = ("--configfile", "tests/config/tiny.yaml")


def test_every_rule_ran_and_wrote_tables(tiny_project: Path):
    run = tiny_project / "results" / "digits-smallcnn"
    for scenario in ("random10", "class0"):
        names = ["table.md", "table.csv", "table_features.csv", "table.tex", "summary.json", "headline.json"]
        names += [f"figures/{fig}.{ext}" for fig in P.FIGURES for ext in ("png", "pdf")]
        for name in names:
            assert (run / scenario / name).stat().st_size > 0, name
        table = pd.read_csv(run / scenario / "table.csv")
        assert list(table["model"]) == ["retrain", "retrain_alt", "original", "ft", "ga", "ft+da"]
        assert table["UA_mean"].between(0, 100).all()
        steps = pd.read_csv(run / scenario / "seed0" / "models" / "ft+da.steps.csv")
        assert {"step", "forget_acc", "retain_acc", "l_da"} <= set(steps.columns)
    summary = json.loads((run / "class0" / "summary.json").read_text())
    # a class-wise oracle never saw the class: it cannot classify its train samples
    assert summary["models"]["retrain"]["forget_acc"]["mean"] <= 5.0
    # Snakemake's own CPU, recorded by its onsuccess handler for `make bench`
    usage = json.loads((run / "benchmarks" / "snakemake.json").read_text())
    assert 0 < usage["cpu_s"] < usage["wall_s"] * 4


def test_second_run_is_a_no_op(tiny_project: Path):
    assert dry_run_jobs(tiny_project, *TINY) == {}


def test_changing_one_method_lr_reruns_only_that_method(tiny_project: Path, tmp_path: Path):
    overlay = tmp_path / "lr.yaml"
    overlay.write_text("unlearn:\n  ga:\n    lr: 0.0005\n")
    jobs = dry_run_jobs(tiny_project, *TINY, str(overlay))
    # ga in 2 scenarios x 1 seed: its unlearn (which extracts its features) and metrics jobs; then aggregation
    assert jobs == {"unlearn": 2, "metrics": 2, "aggregate": 2, "plots": 2, "all": 1}


def test_changing_the_training_recipe_reruns_models_not_data(tiny_project: Path, tmp_path: Path):
    overlay = tmp_path / "recipe.yaml"
    overlay.write_text("train:\n  epochs: 2\n")
    jobs = dry_run_jobs(tiny_project, *TINY, str(overlay))
    assert "prepare_data" not in jobs and "split" not in jobs
    assert jobs["train_original"] == 1 and jobs["train_retrain"] == 4 and jobs["unlearn"] == 6


def test_rule_code_hashes_cover_every_module_a_job_runs(tiny_project: Path):
    """The tiny DAG ran with module tracing (the fixture); every module a job imports must be in its rule's hash."""
    trace = tiny_project / "trace.jsonl"
    rule_of = {"prepare-data": "prepare_data", "split": "split", "train": "train",
               "metrics": "metrics", "aggregate": "aggregate", "plot": "plots"}
    config = load_config(["tests/config/tiny.yaml"])
    seen, problems = set(), set()
    for line in trace.read_text().splitlines():
        rec = json.loads(line)
        seen.add(rec["command"])
        if rec["command"] == "unlearn":
            allowed = P.method_sources(config, rec["method"])
        else:
            allowed = P.RULE_SOURCES[rule_of[rec["command"]]]
        files = {m.removeprefix("unlearn_da").lstrip(".").replace(".", "/") for m in rec["modules"]}
        files = {(f + ".py") if f else "__init__.py" for f in files}
        files = {f if (P.PACKAGE_DIR / f).exists() else f.removesuffix(".py") + "/__init__.py" for f in files}
        files -= {"cli.py", "__main__.py"}  # argument parsing only
        missing = files - set(P.with_packages(tuple(allowed)))
        if missing:
            problems.add(f"{rec['command']} ({rec['method']}) imports {sorted(missing)}, not in its code hash")
    assert not problems, "\n".join(sorted(problems))
    assert seen == set(rule_of) | {"unlearn"}


def test_html_report_is_self_contained(tiny_project: Path, tmp_path: Path):
    snakemake(tiny_project, *TINY, "--report", str(tmp_path / "report.html"))
    html = (tmp_path / "report.html").read_text()
    for fig in P.FIGURES:
        assert f"{fig}.png" in html
    assert "table.md" in html and "table_features.csv" in html
    assert "src=\"http" not in html  # nothing fetched from the network


def test_tuning_spends_the_same_budget_per_method_through_both_checkpoints(tiny_project: Path, tmp_path: Path):
    """`snakemake tune` (tests/config/tiny-tune.yaml: budget 2, 1 of them in round 2, two DA weights):
    round 2 and the DA-weight round are planned by checkpoints from the earlier rounds' metrics, every
    searched method ran exactly the budget, "+da" candidates carry their base's choice, the selection
    names each choice, and a figure per method exists. Then a second `tune` has nothing to do."""
    args = ("--configfile", "tests/config/tiny.yaml", "tests/config/tiny-tune.yaml")
    root = tiny_copy(tiny_project, tmp_path / "project")  # the tuning runs go into a copy
    snakemake(root, *args, "--", "tune")
    tuning = root / "results" / "digits-smallcnn" / "tuning"
    metrics = root / "results" / "digits-smallcnn" / "class0" / "seed0" / "metrics"
    ran = sorted(p.stem for p in metrics.glob("*__*.json"))
    assert [n for n in ran if n.startswith("ft__") and "+da" not in n] == ["ft__t00", "ft__w00"]
    assert [n for n in ran if n.startswith("ga__")] == ["ga__t00", "ga__w00"]
    assert [n for n in ran if n.endswith("+da")] == ["ft__d00+da", "ft__d01+da"]
    selection = json.loads((tuning / "selection.json").read_text())["chosen"]
    assert {m: c["tried"] for m, c in selection.items()} == {"ft": 2, "ga": 2, "ft+da": 2}
    da_plan = json.loads((tuning / "da_round.json").read_text())["candidates"]
    ft_values = selection["ft"]["values"]
    assert [c["da_weight"] for c in da_plan.values()] == [0.5, 2.0]
    assert all({k: v for k, v in c.items() if k not in ("base", "da_weight")} == ft_values for c in da_plan.values())
    # the DA weight reached the job: the candidate's checkpoint sidecar records it
    for name, spec in da_plan.items():
        meta = json.loads((metrics.parent / "models" / f"{name}+da.pt.meta.json").read_text())
        assert meta["params"]["da"]["lambda_da"] == spec["da_weight"]
        assert meta["params"]["hp"]["lr"] == ft_values["lr"]
    assert sorted(p.name for p in (tuning / "figures").glob("*.png")) == ["ft+da.png", "ft.png", "ga.png"]
    assert "| ft | " in (tuning / "selection.md").read_text()
    assert dry_run_jobs(root, *args, "--", "tune") == {}
    # a plan removed (as a failed checkpoint job leaves it) is made again, and the selection, still
    # valid for this config, is kept
    plan, selection_file = tuning / "da_round.json", tuning / "selection.json"
    before, selected_at = plan.read_bytes(), selection_file.stat().st_mtime_ns
    plan.unlink()
    assert dry_run_jobs(root, *args, "--", "tune").get("plan_da_weights") == 1
    snakemake(root, *args, "--", "tune")
    assert plan.read_bytes() == before and selection_file.stat().st_mtime_ns == selected_at
