"""The images a config's DAG pushes through models, per job, counted from the config alone.

Every job that runs a model records what it counted in its sidecar (``images``, counted by
``models.Classifier``): ``forward_backward`` (passes that record an autograd graph: training
steps, DA pairs, SSD's and SalUn's gradients, FGSM) and ``forward_only`` (probes, features,
teachers). The functions here give the same two numbers without running anything: training,
the probes and the features mirror ``train.py``, ``unlearn.py`` (the StepRecorder) and
``features.py``; an unlearning method's own passes are what the method declares beside its loop
(``images(count)`` in its module, ``methods/counting.py``; a user's method of ``unlearn.external``
the same way), with the split sizes ``data.prepare`` and ``splits.make_split`` produce. A finished
run's sidecars sum to ``workload_images`` exactly (tests/test_workload.py), so the hours ``make bench``
projects rest on counts, not on factors.

Counting an unlearning job imports its method's module (and so torch); nothing else here does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.datasets import DatasetInfo, dataset_info
from ..methods.counting import Count, Images, fb, fo, shuffled_sizes
from ..core.scenarios import parse_scenario

STAGES = ("original", "oracles", "unlearning", "features", "audit_logits")
FORWARD_ONLY_WEIGHT = 1 / 3  # a forward pass against forward + backward: the "total" of make bench

# images per class of the official test splits (balanced); digits has none (carved from its pool)
TEST_COUNTS: dict[str, tuple[int, ...]] = {"fashion_mnist": (1000,) * 10, "cifar10": (1000,) * 10,
                                           "cifar100": (100,) * 100}


# ------------------------------------------------------------------------------ data sizes
@dataclass(frozen=True)
class DataSizes:
    """Per-class sizes of the prepared splits (``data.prepare``)."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]

    @property
    def n_train(self) -> int:
        return sum(self.train)


def _held_out(counts: np.ndarray, fraction: float) -> np.ndarray:
    """``data.stratified_split``: ``int(round(fraction * n_c))`` of every class."""
    return np.array([int(round(fraction * int(c))) for c in counts], dtype=int)


def subset_counts(counts: np.ndarray, n: int) -> np.ndarray:
    """Per-class sizes ``data.stratified_subset`` keeps of classes with ``counts`` (largest remainder)."""
    counts = np.asarray(counts)
    present = counts > 0
    classes, c = np.flatnonzero(present), counts[present]
    exact = c * (n / int(c.sum()))
    take = np.floor(exact).astype(int)
    order = np.lexsort((classes, -(exact - take)))
    take[order[: n - int(take.sum())]] += 1
    out = np.zeros(len(counts), dtype=int)
    out[classes] = take
    return out


def data_sizes(config: dict[str, Any], info: DatasetInfo | None = None) -> DataSizes:
    """The split sizes ``data.prepare`` gives the config's data set (``data.subset`` included)."""
    info = info or dataset_info(config["dataset"])
    d = config["data"]
    pool = np.array(info.train_counts, dtype=int)
    if info.has_test_split:
        test = np.array(TEST_COUNTS[info.name], dtype=int)
    else:
        test = _held_out(pool, float(d["test_fraction"]))
        pool = pool - test
    if d.get("subset"):
        pool = subset_counts(pool, int(d["subset"]["train"]))
        test = subset_counts(test, int(d["subset"]["test"]))
    val = _held_out(pool, float(d["val_fraction"]))
    return DataSizes(tuple(int(v) for v in pool - val), tuple(int(v) for v in val), tuple(int(v) for v in test))


def forget_size(sizes: DataSizes, scenario: str) -> int:
    """|D_f| of ``splits.make_split`` (a backdoor's poisoned set: ``backdoor.draw_poisoned``)."""
    kind, value = parse_scenario(scenario)
    if kind == "class":
        return sizes.train[int(value)]
    return int(round(sizes.n_train * float(value) / 100.0))


# ------------------------------------------------------------------------------ jobs
def train_job(n: int, n_val: int, recipe: dict[str, Any]) -> Images:
    """``train.run_train``: ``fit`` over ``n`` samples for every epoch, then the validation accuracy."""
    per_epoch = sum(shuffled_sizes(n, int(recipe["batch_size"])))
    return fb(int(recipe["epochs"]) * per_epoch) + fo(n_val)


def features_job(sizes: DataSizes, n_trigger: int = 0) -> Images:
    """``features.extract_features``: train, val and test once (and a backdoor's triggered test images)."""
    return fo(sizes.n_train + sum(sizes.val) + sum(sizes.test) + n_trigger)


def method_images(params: dict[str, Any]) -> Callable[[Count], tuple[Images, int]]:
    """The method's own declaration of its count: ``images(count)`` in its module (built-in, or the user's
    source of ``unlearn.external``; ``methods/counting.py``)."""
    import importlib

    from ..methods import METHOD_MODULES
    from ..methods.external import MethodSourceError, load_module

    source = params.get("source")
    module = load_module(params["base"], source) if source else \
        importlib.import_module(f"unlearn_da.methods.{METHOD_MODULES[params['base']]}")
    declared = getattr(module, "images", None)
    if not callable(declared):
        raise MethodSourceError(f"method {params['base']!r} declares no images(count) beside its run(ctx, hp): "
                                "what one of its jobs pushes through the model cannot be counted "
                                "(docs/own-method.md)")
    return declared


def probes(steps: int, log_every: int, probe_f: int, probe_r: int) -> Images:
    """``StepRecorder``: the start, step 1 and every ``log_every``-th step, and the final probe."""
    every = max(1, int(log_every))
    count = 2 + steps // every + (1 if steps >= 1 and every > 1 else 0)
    return fo(count * (probe_f + probe_r))


def unlearn_job(params: dict[str, Any], n_forget: int, n_retain: int) -> Images:
    """``unlearn.run_unlearn`` with ``params`` (``pipeline.unlearn_params``): the method, and the probes."""
    plus_da = params["method"].endswith("+da")
    count = Count(params["hp"], n_forget, n_retain, params["da"] if plus_da else None, params.get("da"))
    images, steps = method_images(params)(count)
    n_probe = int(params["probe_size"])
    return images + probes(steps, int(params["log_every"]), min(n_probe, n_forget), min(n_probe, n_retain))


@dataclass(frozen=True)
class Job:
    """One artifact written by a job of the DAG that runs models (a model's features are written by
    the job that made the model): its stage, the artifact, what it counts."""

    stage: str
    artifact: str  # path from the project root; its sidecar records ``images``
    images: Images
    job: str = ""  # the checkpoint of the job that writes it ("" for itself: a features file names its model's)
    after: tuple[str, ...] = ()  # checkpoints its job reads (an unlearning job: its original)

    @property
    def made_in(self) -> str:
        """The artifact that names the job writing this one (its checkpoint, or itself)."""
        return self.job or self.artifact


def workload_jobs(config: dict[str, Any], sizes: DataSizes | None = None) -> list[Job]:
    """Every artifact of the config's default target (``rule all``) that a model job writes with an image
    count: checkpoints and logits (one per job) and the models' features (each in its model's job)."""
    from .. import pipeline as P

    info = dataset_info(config["dataset"])
    sizes = sizes or data_sizes(config, info)
    run, scenarios = P.run_name(config), list(config["scenarios"])
    recipe, n_val = config["train"], sum(sizes.val)
    methods = {m: P.unlearn_params(config, m) for m in config["unlearn"]["methods"]}
    jobs: dict[str, Job] = {}

    def add(stage: str, scenario: str, seed: int, model: str, images: Images, n_trigger: int) -> None:
        """A model's checkpoint and its features, keyed by path: the shared original's come once."""
        checkpoint, features = P.model_checkpoint(run, scenario, seed, model), P.model_features(run, scenario, seed, model)
        after = (P.model_checkpoint(run, scenario, seed, "original"),) if stage == "unlearning" else ()
        jobs[checkpoint] = Job(stage, checkpoint, images, after=after)
        jobs[features] = Job("features", features, features_job(sizes, n_trigger), job=checkpoint)

    audit = P.audit_enabled(config)
    if audit:
        jobs.update({job.artifact: job for job in audit_jobs(config, sizes)})
        if config["audit"]["only"]:
            return list(jobs.values())
    for scenario in scenarios:
        kind, _ = parse_scenario(scenario)
        n_f = forget_size(sizes, scenario)
        n_r = sizes.n_train - n_f
        target = int(config["backdoor"]["target_class"])
        n_trigger = sum(sizes.test) - sizes.test[target] if kind == "backdoor" else 0
        for seed in config["seeds"]:
            # the per-seed original is shared by the clean scenarios (one job, one path)
            add("original", scenario, seed, "original", train_job(sizes.n_train, n_val, recipe), n_trigger)
            for oracle in P.oracle_models(config):
                add("oracles", scenario, seed, oracle, train_job(n_r, n_val, recipe), n_trigger)
            for method, params in methods.items():
                add("unlearning", scenario, seed, method, unlearn_job(params, n_f, n_r), n_trigger)
    return list(jobs.values())


def audit_jobs(config: dict[str, Any], sizes: DataSizes) -> list[Job]:
    """The oracle-ensemble audit's jobs (``workflow/rules/audit.smk``): per scenario and training seed
    the original (the run's per-seed one, whose job also extracts its features), two oracles and one
    model per method; per scenario and model kind, the logits of its K models on the audit's examples (``jobs/audit_logits.py``)."""
    from .. import pipeline as P

    run, a = P.run_name(config), config["audit"]
    recipe, n_val, n_test = config["train"], sum(sizes.val), sum(sizes.test)
    seeds = P.audit_train_seeds(config)
    jobs: dict[str, Job] = {}
    for scenario in a["scenarios"]:
        n_f = forget_size(sizes, scenario)
        n_r = sizes.n_train - n_f
        scored = n_f + min(int(a["retain_sample"]), n_r) + n_val + min(n_test, n_r) + n_test
        for t in seeds:
            path = P.audit_checkpoint(run, scenario, t, "original")
            original = P.audit_checkpoint(run, scenario, t, "original")
            jobs[original] = Job("original", original, train_job(sizes.n_train, n_val, recipe))
            features = P.model_features(run, "", t, "original")  # the run's rule extracts them too
            jobs[features] = Job("features", features, features_job(sizes), job=original)
            for oracle in ("retrain", "retrain_alt"):
                path = P.audit_checkpoint(run, scenario, t, oracle)
                jobs[path] = Job("oracles", path, train_job(n_r, n_val, recipe))
            for method in a["methods"]:
                path = P.audit_checkpoint(run, scenario, t, method)
                jobs[path] = Job("unlearning", path, unlearn_job(P.unlearn_params(config, method), n_f, n_r),
                                 after=(original,))
        for model in ["retrain", *P.audit_rows(config)]:
            path = P.audit_logits_file(run, scenario, model)
            models = tuple(p for p in (P.audit_checkpoint(run, scenario, t, model) for t in seeds) if p in jobs)
            jobs[path] = Job("audit_logits", path, fo(len(seeds) * scored), after=models)
    return list(jobs.values())


def workload_images(config: dict[str, Any], sizes: DataSizes | None = None) -> dict[str, Any]:
    """Images the config's DAG pushes through models, by stage and in all, both kinds.

    ``stages``: stage -> {forward_backward, forward_only}; ``forward_backward`` and ``forward_only``:
    the sums; ``total``: forward + backward equivalents, a forward-only image as ``FORWARD_ONLY_WEIGHT``
    of one (the number ``make bench`` divides by a measured training rate).
    """
    stages = dict.fromkeys(STAGES, Images())
    for job in workload_jobs(config, sizes):
        stages[job.stage] += job.images
    everything = sum(stages.values(), Images())
    return {"stages": {name: images.as_dict() for name, images in stages.items()},
            **everything.as_dict(),
            "total": everything.forward_backward + FORWARD_ONLY_WEIGHT * everything.forward_only}
