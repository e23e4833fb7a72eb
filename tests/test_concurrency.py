"""gpu-check's jobs-per-device measurement, at toy size on the CPU (the same code runs on a GPU)."""

from __future__ import annotations

import pytest

from unlearn_da.tools.concurrency import choose_jobs_per_device, measure, profile_spec
from unlearn_da.settings.config import load_config


def test_jobs_per_device_is_the_fewest_processes_within_five_percent_of_the_best():
    rows = [{"processes": 1, "aggregate_img_s": 1000.0}, {"processes": 2, "aggregate_img_s": 1900.0},
            {"processes": 4, "aggregate_img_s": 2000.0}, {"processes": 8, "aggregate_img_s": 1990.0}]
    assert choose_jobs_per_device(rows) == 2  # 1900 >= 0.95 * 2000
    rows[1]["aggregate_img_s"] = 1890.0
    assert choose_jobs_per_device(rows) == 4
    assert choose_jobs_per_device(rows[:1]) == 1


def test_concurrent_workers_train_the_profiles_step_in_one_window(tmp_path):
    spec = profile_spec(load_config(), "cpu", amp=False, channels_last=True, threads=1, window_s=1.0,
                        warmup_steps=2)
    assert spec["arch"] == "smallcnn" and spec["batch_size"] == load_config()["train"]["batch_size"]
    row = measure(spec, 2)
    assert row["processes"] == 2 and row["aggregate_img_s"] > 0
    assert row["aggregate_img_s"] == pytest.approx(2 * row["per_process_img_s"])
    assert row["slowest_img_s"] > 0 and row["peak_mb"] > 0


def test_the_da_step_counts_the_paired_batch_as_the_workload_does(tmp_path):
    """``+da``: each step is the method's forward of the batch and the pair's forward of the batch again beside
    a DA batch of the profile's size, counted as the workload counts them (``counting.Count.da_paired``);
    the worker reports its warm-up and its steps."""
    from unlearn_da.tools.devicecost import da_settings

    config = load_config()
    spec = profile_spec(config, "cpu", amp=False, channels_last=True, threads=1, window_s=1.0, warmup_steps=2)
    da = da_settings(config)
    assert da["batch_size"] == config["unlearn"]["da"]["batch_size"] and da["basis_source"] == "batch"
    # the epoch basis (computed once in the worker) runs the most code; the step is the same for every source
    row = measure({**spec, "da": {**da, "basis_source": "epoch", "epoch_subset": 32}}, 1)
    per_step = row["aggregate_img_s"] * row["ms_per_step"] / 1000
    from unlearn_da.methods.counting import Count, fb

    batch = spec["batch_size"]
    job = Count(hp={"batch_size": batch}, n_forget=10**6, n_retain=10**6, da=da)
    counted = fb(batch) + job.da_paired(batch, "retain")  # one step of UnlearnContext.fit with +da
    assert per_step == pytest.approx(counted.forward_backward)  # 2 x batch + DA batch (it counted batch + DA batch)
    assert row["warmup_s"] > 0


def test_each_step_kind_counts_its_images_and_a_mix_runs_them_in_their_shares():
    """The kinds a table's jobs run (``devicecost.STEP_KINDS`` and the feature pass), each counted as the
    workload counts it; a mix picks, at every step, the kind furthest behind its share of the images."""
    from unlearn_da.methods import neggrad_plus
    from unlearn_da.methods.counting import Count

    config = load_config()
    spec = {**profile_spec(config, "cpu", amp=False, channels_last=True, threads=1, window_s=0.5, warmup_steps=1),
            "small_batch": {"batch_size": 12, "forget_batch_size": 5}, "features_batch": 40}
    for kind, per_step in (("small_batch", 12 + 5), ("features", 40)):
        row = measure({**spec, "kind": kind}, 1)
        assert row["aggregate_img_s"] * row["ms_per_step"] / 1000 == pytest.approx(per_step)
    # NegGrad+'s count per step in the workload: a retain batch and a forget batch
    images, steps = neggrad_plus.images(Count({"batch_size": 12, "forget_batch_size": 5, "epochs": 1}, 50, 120))
    assert images.forward_backward == 120 + 5 * steps  # 10 retain batches of 12, each with a forget batch of 5
    row = measure({**spec, "mix": {"plain": 0.75, "small_batch": 0.25}, "window_s": 1.0}, 1)
    done = row["images_by_kind"]
    assert set(done) == {"plain", "small_batch"}
    share = done["plain"] / (done["plain"] + done["small_batch"])
    assert abs(share - 0.75) * (done["plain"] + done["small_batch"]) <= spec["batch_size"]  # within one step
