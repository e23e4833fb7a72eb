"""gpu-check's and make bench's projection of a paper table's hours (``tools/devicecost.py``): what it
counts, at which rate, and how the jobs fill the devices."""

from __future__ import annotations

import dataclasses

import pytest

from unlearn_da.settings.config import REPO_ROOT, load_config
from unlearn_da.tools import devicecost as dc
from unlearn_da.tools.workload import workload_images

CIFAR10 = load_config([REPO_ROOT / "config" / "cifar10.yaml"])


def test_model_jobs_carry_their_features_and_split_their_images_by_step_kind():
    """One entry per model job (its features counted in it), every image of the workload counted once,
    each job at the step it runs: DA for ``+da`` and MUDA, NegGrad+'s small batches, plain otherwise."""
    jobs = dc.model_jobs(CIFAR10)
    work = workload_images(CIFAR10)
    assert sum(j["train"] for j in jobs) == work["forward_backward"]
    assert sum(j["forward_only"] for j in jobs) == work["forward_only"]
    methods = CIFAR10["unlearn"]["methods"]
    seeds, scenarios = len(CIFAR10["seeds"]), len(CIFAR10["scenarios"])
    # per seed and scenario: every method and both oracles; per seed the clean original and the backdoor's
    assert len(jobs) == seeds * scenarios * (len(methods) + 2) + seeds * 2
    kinds = {j["name"].rsplit("/", 1)[-1][: -len(".pt")]: j["kind"] for j in jobs if j["stage"] == "unlearning"}
    assert kinds["muda"] == kinds["ft+da"] == kinds["neggrad_plus+da"] == "da"
    assert kinds["neggrad_plus"] == "small_batch" and kinds["ft"] == kinds["ssd"] == "plain"
    names = {j["name"] for j in jobs}
    for job in jobs:  # an unlearning job waits for its scenario's original, which is a job of the table
        assert (job["stage"] == "unlearning") == bool(job["after"])
        assert all(a in names and a.endswith("/original.pt") for a in job["after"])
    mix = dc.table_mix(CIFAR10)
    assert sum(mix.values()) == pytest.approx(1.0) and set(mix) == {"plain", "da", "small_batch"}


def test_makespan_starts_the_longest_ready_job_whenever_a_slot_frees():
    durations = {"a": 3.0, "b": 2.0, "c": 2.0, "d": 1.0}
    after = {"c": ("a",), "d": ("elsewhere",)}  # an input no job of the table makes waits for nothing
    # two slots: a and b start; b ends at 2, d runs 2-3 (c waits for a); a ends at 3, c runs 3-5
    assert dc.makespan(durations, after, 2) == 5.0
    assert dc.makespan(durations, after, 1) == 8.0
    assert dc.makespan(durations, after, 10) == 5.0  # a then c: the chain bounds it
    with pytest.raises(ValueError, match="cycle"):
        dc.makespan({"a": 1.0, "b": 1.0}, {"a": ("b",), "b": ("a",)}, 2)


def test_the_projection_prices_each_step_kind_forward_passes_and_fixed_costs():
    base = dc.Rates(img_s={"plain": 10_000.0})
    one = dc.project_config(CIFAR10, base)
    work = workload_images(CIFAR10)
    assert one["images_h"] == pytest.approx(work["forward_backward"] / 10_000 / 3600)
    assert one["forward_h"] == pytest.approx(work["forward_only"] * dc.FORWARD_ONLY_COST_ASSUMED / 10_000 / 3600)
    assert one["hours"] == pytest.approx(one["images_h"] + one["forward_h"])  # one slot: the jobs back to back
    slower = dc.project_config(CIFAR10, dataclasses.replace(base, img_s={"plain": 10_000.0, "da": 5_000.0}))
    assert slower["images_h"] - one["images_h"] == pytest.approx(one["da_images"] / 10_000 / 3600)
    costly = dc.project_config(CIFAR10, dataclasses.replace(base, forward_only_cost=5.0))
    assert costly["forward_h"] == pytest.approx(15 * one["forward_h"])
    node = dc.project_config(CIFAR10, dataclasses.replace(base, devices=8, jobs_per_device=2, scaling=1.5,
                                                          fixed_s=6.0))
    # two jobs per device at 1.5 x one job's rate: each job runs at 0.75 of it, 16 slots
    assert node["images_h"] == pytest.approx(one["images_h"] / 0.75 / 16)
    assert node["fixed_h"] == pytest.approx(node["jobs"] * 6.0 / 16 / 3600)
    summed = node["images_h"] + node["forward_h"] + node["fixed_h"]
    assert summed <= node["hours"] < summed + one["hours"] / 50  # no slot idles long: jobs are small
    by_devices = dc.projection(dataclasses.replace(base, fixed_s=6.0), (8,))
    assert set(by_devices) == {"cifar10", "cifar100"} and set(by_devices["cifar10"]) == {1, 8}
    assert by_devices["cifar10"][1]["fixed_h"] == pytest.approx(one["jobs"] * 6.0 / 3600)


def test_a_job_s_fixed_cost_is_start_up_and_tail_less_the_feature_pass_at_its_measured_rate():
    rows = [{"rule": "train_original", "startup_s": [9.0, 4.0], "tail_s": [3.0, 3.0], "features_images": [1000, 1000]},
            {"rule": "unlearn", "startup_s": [5.0], "tail_s": [1.0], "features_images": [4000]}]
    # train: fastest 4 + (3 - 1000/500 = 1) = 5; unlearn: 5 + max(0, 1 - 8) = 5
    assert dc.fixed_seconds(rows, features_img_s=500.0) == 5.0
    assert dc.fixed_seconds(rows[:1], features_img_s=1e9) == pytest.approx(7.0)
