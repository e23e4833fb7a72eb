"""gpu-check's projection of a paper table's hours (``tools/devicecost.py``): what it counts and adds."""

from __future__ import annotations

import pytest

from unlearn_da.settings.config import REPO_ROOT, load_config
from unlearn_da.tools import devicecost as dc
from unlearn_da.tools.workload import workload_images


def test_counted_work_splits_the_workload_by_the_da_term_and_counts_model_jobs():
    config = load_config([REPO_ROOT / "config" / "cifar10.yaml"])
    work = dc.counted_work(config)
    assert work["plain"] + work["da"] == pytest.approx(workload_images(config)["total"])
    methods = config["unlearn"]["methods"]
    with_da = [m for m in methods if m.endswith("+da") or m == "muda"]
    assert 0 < len(with_da) < len(methods) and work["da"] > 0
    # per seed and scenario: every method and both oracles; per seed the clean original and the backdoor's
    seeds, scenarios = len(config["seeds"]), len(config["scenarios"])
    assert work["jobs"] == seeds * scenarios * (len(methods) + 2) + seeds * 2


def test_the_projection_runs_da_jobs_at_their_measured_ratio_and_spreads_start_up_over_the_slots():
    base = dc.projection(10_000.0, devices=1, jobs_per_device=1, startup_s=0.0)["cifar10"]
    config = load_config([REPO_ROOT / "config" / "cifar10.yaml"])
    work = dc.counted_work(config)
    assert base["images_h"] == pytest.approx((work["plain"] + work["da"]) / 10_000 / 3600)
    slower = dc.projection(10_000.0, 1, 1, 0.0, da_rate_ratio=0.5)["cifar10"]
    assert slower["images_h"] - base["images_h"] == pytest.approx(work["da"] / 10_000 / 3600)
    node = dc.projection(10_000.0, devices=8, jobs_per_device=2, startup_s=6.0)["cifar10"]
    assert node["images_h"] == pytest.approx(base["images_h"] / 8)
    assert node["startup_h"] == pytest.approx(work["jobs"] * 6.0 / 16 / 3600)
    assert node["hours"] == pytest.approx(node["images_h"] + node["startup_h"])


def test_the_typical_start_up_is_the_median_over_rules_of_their_fastest_run():
    rows = [{"rule": "train_retrain", "startup_s": [9.0, 4.0]}, {"rule": "unlearn", "startup_s": [7.0, 6.0]},
            {"rule": "other", "startup_s": [5.0]}]
    assert dc.typical_startup(rows) == 5.0
