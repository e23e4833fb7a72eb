"""The workload counted from what runs: every job that runs a model records in its sidecar the images it
pushed through models (``models.Classifier`` counts them), and ``workload.workload_images`` gives the same
numbers from the config alone, job by job (what ``make bench`` and the README's cost block divide by a rate).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearn_da import pipeline as P
from unlearn_da.settings.config import load_config
from unlearn_da.methods.base import frozen_copy
from unlearn_da.core.models import build_model, images_counted, images_since, model_spec
from unlearn_da.tools.workload import data_sizes, forget_size, subset_counts, unlearn_job, workload_images, workload_jobs

STAGE_OF_RULE = {"train_original": "original", "train_retrain": "oracles", "unlearn": "unlearning",
                 "audit_logits": "audit_logits"}


def stage_of(artifact: str, meta: dict) -> str:
    """A model's features are written by the job that made the model: their stage is their own."""
    return "features" if "/features/" in artifact else STAGE_OF_RULE[meta["made_by"]]


def tiny_config(root: Path, overrides: dict | None = None) -> dict:
    """The tiny config as the run in ``root`` loaded it (the project's config.yaml, then tiny.yaml)."""
    return load_config([root / "tests/config/tiny.yaml"], overrides, base=root / "config/config.yaml")


def recorded_images(root: Path) -> dict[str, dict]:
    """artifact (from the project root) -> its sidecar, for every sidecar that records ``images``
    (tuning candidates, ``<method>__t<i>`` and ``<method>__d<i>+da``, aside: other tests run the
    tuning DAG in the same project)."""
    out = {}
    for path in sorted(root.glob("results/**/*.meta.json")):
        meta = json.loads(path.read_text())
        if "images" in meta and "__" not in path.name:
            out[str(path.relative_to(root)).removesuffix(".meta.json")] = meta
    return out


def test_the_tiny_run_pushes_through_its_models_exactly_the_images_workload_images_counts(tiny_project):
    config = tiny_config(tiny_project)
    recorded = recorded_images(tiny_project)
    jobs = workload_jobs(config)
    assert sorted(recorded) == sorted(job.artifact for job in jobs)  # every job that runs a model, no other
    for job in jobs:
        assert recorded[job.artifact]["images"] == job.images.as_dict(), job.artifact
    work = workload_images(config)
    for stage, expected in work["stages"].items():
        if not any(expected.values()):  # the audit's stage: not in the tiny run
            continue
        sidecars = [m["images"] for a, m in recorded.items() if stage_of(a, m) == stage]
        assert sidecars, stage
        assert {kind: sum(s[kind] for s in sidecars) for kind in expected} == expected, stage
    for kind in ("forward_backward", "forward_only"):
        assert work[kind] == sum(m["images"][kind] for m in recorded.values())
    assert work["total"] == pytest.approx(work["forward_backward"] + work["forward_only"] / 3)
    print(f"tiny run: {json.dumps(work)}")


def test_the_split_sizes_are_those_of_the_prepared_data(tiny_project):
    config = tiny_config(tiny_project)
    prepared = tiny_project / P.prepared_dir(config)
    sizes = data_sizes(config)
    meta = json.loads((prepared / "dataset.npz.meta.json").read_text())
    assert meta["sizes"] == {"train": sizes.n_train, "val": sum(sizes.val), "test": sum(sizes.test)}
    for scenario in config["scenarios"]:
        for seed in config["seeds"]:
            manifest = json.loads((prepared / f"splits/{scenario}/seed{seed}/manifest.json").read_text())
            assert manifest["n_forget"] == forget_size(sizes, scenario)
            assert manifest["n_retain"] == sizes.n_train - forget_size(sizes, scenario)


@pytest.mark.parametrize("n", [7, 100, 333])
def test_subset_sizes_are_those_stratified_subset_draws(n):
    from unlearn_da.data.prepared import stratified_subset

    y = np.repeat(np.arange(6), [0, 50, 77, 3, 120, 91])  # an absent class, uneven ones
    drawn = np.bincount(y[stratified_subset(y, n, seed=5)], minlength=6)
    assert subset_counts(np.bincount(y, minlength=6), n).tolist() == drawn.tolist()


def test_a_pass_counts_once_by_the_kind_its_autograd_graph_says():
    torch.manual_seed(0)
    model = build_model(model_spec("smallcnn", 10, 1, 8, 4))
    teacher = frozen_copy(model)
    x = torch.randn(5, 1, 8, 8)
    start = images_counted()
    model(x)  # a training forward: counted once, not again by the features() it runs
    assert images_since(start) == {"forward_backward": 5, "forward_only": 0}
    with torch.no_grad():
        model.features(x[:3])
        model(x[:2])
    teacher(x)  # a frozen teacher in grad mode records no graph (SCRUB's)
    assert images_since(start) == {"forward_backward": 5, "forward_only": 10}
    teacher(x.clone().requires_grad_(True))  # the input's gradient through it (FGSM)
    assert images_since(start) == {"forward_backward": 10, "forward_only": 10}


def test_counting_is_outside_the_compiled_region():
    """``model.compile()`` compiles ``forward``; the count in ``__call__`` neither recompiles nor breaks
    the graph as it changes (Dynamo's eager backend: the same tracing as Inductor, no C++ compile)."""
    import torch._dynamo

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build_model(model_spec("smallcnn", 10, 1, 8, 4)).eval()
    plain = frozen_copy(model)
    model.compile(backend="eager")
    x = torch.randn(4, 1, 8, 8)
    start = images_counted()
    with torch.no_grad():
        outs = [model(x) for _ in range(3)]
    assert images_since(start) == {"forward_backward": 0, "forward_only": 12}
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert not torch._dynamo.utils.counters["graph_break"]
    with torch.no_grad():
        assert all(torch.equal(out, plain(x)) for out in outs)


# every method on the tiny run's data, split and original, with settings that reach each branch of its
# count: a batch of one left over (skipped or not), "+da" with a batch and an epoch basis, each mode
TINY_SPLITS = {"random10": (130, 1165), "class0": (128, 1167)}  # |D_f|, |D_r| of the tiny run (checked below)
VARIANTS = {
    "ft_odd": {"base": "ft", "batch_size": 1164},  # 1165 = 1164 + 1: the last batch (1) is dropped
    "ga_odd": {"base": "ga", "batch_size": 43, "epochs": 2},  # 130 = 3 x 43 + 1
    "ng_odd": {"base": "neggrad_plus", "batch_size": 97, "forget_batch_size": 43, "epochs": 2},
    "rl_seq": {"base": "rl", "mode": "sequential", "batch_size": 43},
    "salun_seq": {"base": "salun", "mode": "sequential", "batch_size": 43},
    "scrub_more_max": {"base": "scrub", "epochs": 2, "msteps": 5, "forget_batch_size": 43},
    "scrub_no_max": {"base": "scrub", "epochs": 2, "msteps": 0},
    "bt_half": {"base": "bad_teacher", "retain_fraction": 0.5, "epochs": 2},
    "ssd_class": {"base": "ssd", "class_batch_size": 43},
    "muda_joint": {"base": "muda", "alternate": False, "epochs": 2, "basis_source": "batch"},
    "muda_head": {"base": "muda", "sd_target": "head", "forget_steps": 2, "recover_steps": 3, "epochs": 1},
    "muda_no_sd": {"base": "muda", "lambda_sd": 0.0, "basis_source": "ema", "epochs": 1},
}
# the example of a user's own method (docs/own-method.md): counted by the declaration in its own file
EXAMPLE = {"external": {"forget_penalty": {"file": "examples/own-method/forget_penalty.py"}},
           "forget_penalty": {"epochs": 2, "batch_size": 43, "lr": 0.01, "beta": 0.5, "forget_batch_size": 200}}
SHORT = {m: {"epochs": 1} for m in ("ft", "ga", "neggrad_plus", "rl", "boundary_shrink", "l1_sparse", "salun",
                                    "scrub", "bad_teacher", "muda")}
CASES = [  # (scenario, method, unlearn overrides)
    *[("random10", m, {}) for m in ("ft", "ga", "neggrad_plus", "rl", "boundary_shrink", "l1_sparse", "salun",
                                     "scrub", "bad_teacher", "ssd", "muda")],
    *[("class0", m, {}) for m in ("ssd", "ssd_class", "muda_joint", "muda_head", "muda_no_sd", "scrub_no_max")],
    *[("random10", f"{m}+da", {}) for m in ("ft", "ga", "neggrad_plus", "rl", "boundary_shrink", "l1_sparse",
                                            "salun", "scrub", "bad_teacher")],
    *[("random10", m, {}) for m in ("ft_odd", "ga_odd", "ng_odd", "rl_seq", "salun_seq", "scrub_more_max",
                                    "bt_half")],
    # an epoch basis for "+da", a probe at every step, probes larger than D_f
    *[("class0", m, {"log_every": 1, "probe_size": 500, "da": {"basis_source": "epoch", "epoch_subset": 300,
                                                               "batch_size": 50}})
      for m in ("ft+da", "ga_odd+da", "rl_seq+da", "scrub_more_max+da", "bt_half+da", "boundary_shrink+da",
                "ng_odd+da", "salun+da", "muda", "forget_penalty+da")],
    ("random10", "forget_penalty", {}),  # a forget batch larger than D_f: the whole of it
]


@pytest.mark.parametrize(("scenario", "method", "unlearn"), CASES, ids=[f"{s}-{m}-{i}" for i, (s, m, _) in
                                                                          enumerate(CASES)])
def test_every_method_pushes_through_models_what_workload_counts(tiny_project, tmp_path, scenario, method,
                                                                 unlearn):
    from unlearn_da.jobs.unlearn import run_unlearn

    config = tiny_config(tiny_project, {"unlearn": {**SHORT, **EXAMPLE, **unlearn, "variants": VARIANTS}})
    sizes = data_sizes(config)
    n_f = forget_size(sizes, scenario)
    assert (n_f, sizes.n_train - n_f) == TINY_SPLITS[scenario]
    params = P.unlearn_params(config, method)
    run = P.run_name(config)
    meta = run_unlearn(str(tiny_project / P.prepared_dir(config) / "dataset.npz"),
                       str(tiny_project / P.prepared_dir(config) / f"splits/{scenario}/seed0"),
                       str(tiny_project / P.model_checkpoint(run, scenario, 0, "original")), method, 0, 1, params,
                       str(tmp_path / "model.pt"), str(tmp_path / "steps.csv"))
    assert meta["images"] == unlearn_job(params, n_f, sizes.n_train - n_f).as_dict()



def test_the_tail_counts_from_the_end_of_the_work():
    """startup.work_done marks where a job's work ends; every later sidecar records the seconds since."""
    import time

    from unlearn_da.core import startup

    saved = dict(startup._state)
    try:
        startup._state["work_end"] = None
        assert startup.tail_seconds() is None
        startup.work_done()
        time.sleep(0.05)
        first = startup.tail_seconds()
        startup.work_done()  # once: a second call does not move the mark
        assert first is not None and 0.0 < first <= startup.tail_seconds()
    finally:
        startup._state.update(saved)
