"""Every profile validates, and the paper DAG plans on the SLURM profile without a cluster."""

from __future__ import annotations

import json

from pathlib import Path

import pytest

from conftest import copy_project, dry_run_jobs, snakemake
from unlearn_da.settings.config import load_config, tuning_space, validate_config

PROFILES = [[], ["config/quick.yaml"], ["config/fashion-mnist.yaml"], ["config/cifar10.yaml"],
            ["config/cifar10.yaml", "config/cifar100.yaml"], ["tests/config/tiny.yaml"]]


@pytest.mark.parametrize("files", PROFILES, ids=lambda f: "+".join(Path(p).stem for p in f) or "default")
def test_profile_is_valid(files):
    validate_config(load_config(files), sources=["config/config.yaml", *files])


@pytest.mark.parametrize("files, trace", [([], "digits"), (["config/fashion-mnist.yaml"], "fashion-mnist")])
def test_tuned_values_in_the_profile_match_its_tuning_trace(files, trace):
    """The config and the tracked selection cannot drift apart: every chosen value is the config's, the
    DA weight of a "+da" variant is its unlearn.da.weights entry, and every searched method was chosen."""
    selection = json.loads(Path(f"config/tuning/{trace}-selection.json").read_text())
    chosen = {method: entry["values"] for method, entry in selection["chosen"].items()}
    cfg = load_config(files)
    assert {m for m in chosen if not m.endswith("+da")} == set(tuning_space(cfg))
    for method, values in chosen.items():
        base = method.removesuffix("+da")
        for key, value in values.items():
            if key == "da_weight":
                actual = cfg["unlearn"]["da"]["weights"].get(base)
            elif method.endswith("+da"):
                continue  # the base's values, checked with the base
            else:
                actual = cfg["unlearn"][base][key]
            assert actual == value and isinstance(actual, float) == isinstance(value, float), \
                f"{method}.{key}: config {actual!r}, selection {value!r}"


def test_cifar10_profile_follows_the_paper_recipe():
    cfg = load_config(["config/cifar10.yaml"])
    assert cfg["arch"] == "resnet18" and cfg["data"]["val_fraction"] == 0.1
    t = cfg["train"]
    assert (t["epochs"], t["batch_size"], t["lr"], t["momentum"], t["weight_decay"]) == (182, 256, 0.1, 0.9, 5e-4)
    assert t["augment"] == "crop_flip" and len(cfg["seeds"]) >= 3


def test_slurm_profile_plans_the_paper_dag(tmp_path):
    root = copy_project(tmp_path / "proj")
    args = ("--workflow-profile", "workflow/profiles/slurm", "--configfile", "config/cifar10.yaml")
    jobs = dry_run_jobs(root, *args)
    # 3 seeds x (random10, class0, backdoor10); the backdoor scenario has its own (poisoned) original
    assert jobs["train_original"] == 3 and jobs["train_original_backdoor"] == 3 and jobs["train_retrain"] == 18
    assert jobs["unlearn"] == 9 * len(load_config(["config/cifar10.yaml"])["unlearn"]["methods"])
    out = snakemake(root, "-n", *args).stdout
    for rule in ("train_original", "train_original_backdoor"):
        train = out[out.index(f"rule {rule}:"):][:2500]
        assert "slurm_partition=gpu" in train and "gpu=1" in train and "runtime=600" in train


def test_workload_estimate_scales_with_the_config():
    from unlearn_da.tools.bench import workload_images

    one = workload_images(load_config(["config/cifar10.yaml"]))
    more = load_config(["config/cifar10.yaml"])
    more["seeds"] = [0, 1, 2, 3, 4, 5]
    two = workload_images(more)
    assert two["stages"] == {stage: {kind: 2 * n for kind, n in v.items()} for stage, v in one["stages"].items()}
    assert two["total"] == pytest.approx(2 * one["total"])
    # 3 seeds x 182 epochs x 45,000 training images for the original models, twice: the shared
    # original and the backdoor scenario's poisoned one; then each one's 5,000 validation images
    assert one["stages"]["original"] == {"forward_backward": 2 * 3 * 182 * 45000, "forward_only": 2 * 3 * 5000}
    assert one["total"] == pytest.approx(one["forward_backward"] + one["forward_only"] / 3)


def test_the_workflow_passes_snakemake_lint(tmp_path):
    """`make lint`'s first step: functions in common.smk, names instead of indices, no paths built with +."""
    proc = snakemake(copy_project(tmp_path / "proj"), "--lint", check=False)
    assert proc.returncode == 0 and "good condition" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
