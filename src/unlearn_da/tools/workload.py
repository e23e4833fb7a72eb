"""The images a config's DAG pushes through models, per job, counted from the config alone.

Every job that runs a model records what it counted in its sidecar (``images``, counted by
``models.Classifier``): ``forward_backward`` (passes that record an autograd graph: training
steps, DA pairs, SSD's and SalUn's gradients, FGSM) and ``forward_only`` (probes, features,
teachers). The functions here give the same two numbers without running anything: they mirror
the loops of ``train.py``, ``unlearn.py`` (the StepRecorder's probes), every method in
``methods/`` and ``features.py``, with the split sizes ``data.prepare`` and ``splits.make_split``
produce. A finished run's sidecars sum to ``workload_images`` exactly (tests/test_workload.py),
so the hours ``make bench`` projects rest on counts, not on factors.

No torch import: ``make bench`` and the README generator read it on any machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.datasets import DatasetInfo, dataset_info
from ..core.scenarios import parse_scenario

STAGES = ("original", "oracles", "unlearning", "features", "audit_logits")
FORWARD_ONLY_WEIGHT = 1 / 3  # a forward pass against forward + backward: the "total" of make bench

# images per class of the official test splits (balanced); digits has none (carved from its pool)
TEST_COUNTS: dict[str, tuple[int, ...]] = {"fashion_mnist": (1000,) * 10, "cifar10": (1000,) * 10,
                                           "cifar100": (100,) * 100}


@dataclass(frozen=True)
class Images:
    """Images through models, by kind (the sidecars' ``images``)."""

    forward_backward: int = 0
    forward_only: int = 0

    def __add__(self, other: Images) -> Images:
        return Images(self.forward_backward + other.forward_backward, self.forward_only + other.forward_only)

    def times(self, k: int) -> Images:
        return Images(k * self.forward_backward, k * self.forward_only)

    def as_dict(self) -> dict[str, int]:
        return {"forward_backward": self.forward_backward, "forward_only": self.forward_only}


def fb(n: int) -> Images:
    return Images(forward_backward=int(n))


def fo(n: int) -> Images:
    return Images(forward_only=int(n))


# ------------------------------------------------------------------------------ batches
def shuffled_sizes(n: int, batch_size: int, min_batch: int = 2) -> list[int]:
    """Batch sizes of ``training.shuffled_batches``: a trailing batch below ``min(min_batch, n)`` is dropped."""
    sizes = [min(batch_size, n - start) for start in range(0, n, batch_size)]
    return [s for s in sizes if s >= min(min_batch, n)]


def split_sizes(n: int, batch_size: int) -> list[int]:
    """Batch sizes of ``torch.randperm(n).split(batch_size)`` with batches below 2 skipped (RL, Bad Teacher)."""
    return [s for s in (min(batch_size, n - start) for start in range(0, n, batch_size)) if s >= 2]


def cycled_sum(sizes: list[int], k: int) -> int:
    """Sum of the first ``k`` items of ``itertools.cycle(sizes)`` (NegGrad+'s forget batches)."""
    full, rest = divmod(k, len(sizes))
    return full * sum(sizes) + sum(sizes[:rest])


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


@dataclass(frozen=True)
class Unlearning:
    """What an unlearning job's count depends on: its params (``pipeline.unlearn_params``) and the split."""

    hp: dict[str, Any]
    n_forget: int
    n_retain: int
    da: dict[str, Any] | None = None  # the "+da" regulariser's settings (None without it)
    da_config: dict[str, Any] | None = None  # the unlearn.da block (MUDA builds its own regulariser)

    # the DA plug-in (methods/base.py, methods/da.py); all zero without "+da"
    def da_epoch(self) -> Images:
        """``ctx.start_epoch``: the epoch basis from a retain subset (no grad)."""
        if self.da is None or self.da["basis_source"] != "epoch":
            return Images()
        return fo(min(int(self.da.get("epoch_subset", 1024)), self.n_retain))

    def da_paired(self, batch: int, which: str) -> Images:
        """``ctx.da_paired``: the method's batch with a batch drawn from the other set, in one forward."""
        if self.da is None:
            return Images()
        other = self.n_retain if which == "forget" else self.n_forget
        return fb(batch + min(int(self.da["batch_size"]), other))

    def da_sampled(self) -> Images:
        """``ctx.da_sampled``: a fresh forget and retain batch, in one forward."""
        if self.da is None:
            return Images()
        bs = int(self.da["batch_size"])
        return fb(min(bs, self.n_forget) + min(bs, self.n_retain))


# a method: (its job's setting) -> (images of its passes, optimiser steps); steps drive the probes
MethodCount = Callable[[Unlearning], tuple[Images, int]]


def _fit(u: Unlearning, which: str) -> tuple[Images, int]:
    """``UnlearnContext.fit`` (FT, GA, l1-sparse): epochs over one set, each batch paired for "+da"."""
    n = u.n_forget if which == "forget" else u.n_retain
    sizes = shuffled_sizes(n, int(u.hp["batch_size"]))
    epoch = u.da_epoch() + fb(sum(sizes))
    for s in sizes:
        epoch += u.da_paired(s, which)
    epochs = int(u.hp["epochs"])
    return epoch.times(epochs), epochs * len(sizes)


def _neggrad_plus(u: Unlearning) -> tuple[Images, int]:
    """Each retain batch with the next of the cycled forget batches, two forwards; +da: a sampled pair per step."""
    bs = int(u.hp["batch_size"])
    retain = shuffled_sizes(u.n_retain, bs)
    forget = shuffled_sizes(u.n_forget, int(u.hp.get("forget_batch_size") or bs))
    epoch = u.da_epoch() + fb(sum(retain) + cycled_sum(forget, len(retain))) + u.da_sampled().times(len(retain))
    epochs = int(u.hp["epochs"])
    return epoch.times(epochs), epochs * len(retain)


def _rl(u: Unlearning) -> tuple[Images, int]:
    """Random labels: joint (one shuffled pass over D_f + D_r) or sequential (D_f, then D_r)."""
    bs = int(u.hp["batch_size"])
    parts = ([u.n_forget + u.n_retain] if u.hp.get("mode", "joint") == "joint" else [u.n_forget, u.n_retain])
    sizes = [s for n in parts for s in split_sizes(n, bs)]
    epoch = u.da_epoch() + fb(sum(sizes)) + u.da_sampled().times(len(sizes))
    epochs = int(u.hp["epochs"])
    return epoch.times(epochs), epochs * len(sizes)


def _salun(u: Unlearning) -> tuple[Images, int]:
    """The saliency mask (gradients over every batch of D_f, none skipped), then RL."""
    images, steps = _rl(u)
    return fb(u.n_forget) + images, steps


def _scrub(u: Unlearning) -> tuple[Images, int]:
    """Max passes over D_f (the first ``msteps`` epochs), a min pass over D_r every epoch; the frozen
    teacher runs beside each batch in grad mode but records no graph (forward only)."""
    epochs, msteps = int(u.hp["epochs"]), int(u.hp["msteps"])
    forget = shuffled_sizes(u.n_forget, int(u.hp["forget_batch_size"]))
    retain = shuffled_sizes(u.n_retain, int(u.hp["batch_size"]))
    max_pass = fb(sum(forget)) + fo(sum(forget)) + u.da_sampled().times(len(forget))
    min_pass = fb(sum(retain)) + fo(sum(retain))
    max_epochs = min(max(msteps, 0), epochs)
    images = u.da_epoch().times(epochs) + max_pass.times(max_epochs) + min_pass.times(epochs)
    return images, max_epochs * len(forget) + epochs * len(retain)


def _bad_teacher(u: Unlearning) -> tuple[Images, int]:
    """D_f with a random share of D_r, shuffled together; both teachers run without grad."""
    n_keep = max(1, int(float(u.hp["retain_fraction"]) * u.n_retain))
    sizes = split_sizes(u.n_forget + n_keep, int(u.hp["batch_size"]))
    epoch = u.da_epoch() + fb(sum(sizes)) + fo(2 * sum(sizes)) + u.da_sampled().times(len(sizes))
    epochs = int(u.hp["epochs"])
    return epoch.times(epochs), epochs * len(sizes)


def _ssd(u: Unlearning) -> tuple[Images, int]:
    """Importances: gradients over every batch of D (D_r then D_f), then of D_f, none skipped (the batch
    size, ``class_batch_size`` in a class scenario, changes no count); no training step."""
    return fb(u.n_retain + 2 * u.n_forget), 0


def _boundary_shrink(u: Unlearning) -> tuple[Images, int]:
    """Per forget batch: FGSM (the input's gradient through the frozen original), the original's argmax
    at the FGSM point (no grad), then the training forward (paired for "+da")."""
    sizes = shuffled_sizes(u.n_forget, int(u.hp["batch_size"]))
    epoch = u.da_epoch() + fb(2 * sum(sizes)) + fo(sum(sizes))
    for s in sizes:
        epoch += u.da_paired(s, "forget")
    epochs = int(u.hp["epochs"])
    return epoch.times(epochs), epochs * len(sizes)


def _muda(u: Unlearning) -> tuple[Images, int]:
    """Forget steps (a forget batch with a sampled retain batch, one forward) and recover steps (a
    sampled retain batch), the teacher without grad unless ``lambda_sd`` is 0 or it is the original's
    head on the student's features; the epoch basis (``basis_source: epoch``) without grad."""
    hp = u.hp
    bs = int(hp["batch_size"])
    f_steps, r_steps, alternate = int(hp["forget_steps"]), int(hp["recover_steps"]), bool(hp["alternate"])
    forget = shuffled_sizes(u.n_forget, bs)
    retain_batch = min(bs, u.n_retain)
    teacher = fo(retain_batch) if float(hp["lambda_sd"]) != 0 and hp["sd_target"] != "head" else Images()
    subset = int((u.da_config or {}).get("epoch_subset", 1024))
    basis = fo(min(subset, u.n_retain)) if hp["basis_source"] == "epoch" else Images()
    epoch = basis + fb(sum(forget) + len(forget) * retain_batch)
    steps = len(forget)
    if alternate:
        recovers = -(-len(forget) // f_steps) * r_steps
        epoch += (fb(retain_batch) + teacher).times(recovers)
        steps += recovers
    else:
        epoch += teacher.times(len(forget))
    epochs = int(hp["epochs"])
    return epoch.times(epochs), epochs * steps


METHODS: dict[str, MethodCount] = {
    "ft": lambda u: _fit(u, "retain"),
    "ga": lambda u: _fit(u, "forget"),
    "l1_sparse": lambda u: _fit(u, "retain"),
    "neggrad_plus": _neggrad_plus,
    "rl": _rl,
    "salun": _salun,
    "scrub": _scrub,
    "bad_teacher": _bad_teacher,
    "ssd": _ssd,
    "boundary_shrink": _boundary_shrink,
    "muda": _muda,
}


def probes(steps: int, log_every: int, probe_f: int, probe_r: int) -> Images:
    """``StepRecorder``: the start, step 1 and every ``log_every``-th step, and the final probe."""
    every = max(1, int(log_every))
    count = 2 + steps // every + (1 if steps >= 1 and every > 1 else 0)
    return fo(count * (probe_f + probe_r))


def unlearn_job(params: dict[str, Any], n_forget: int, n_retain: int) -> Images:
    """``unlearn.run_unlearn`` with ``params`` (``pipeline.unlearn_params``): the method, and the probes."""
    plus_da = params["method"].endswith("+da")
    u = Unlearning(params["hp"], n_forget, n_retain, params["da"] if plus_da else None, params.get("da"))
    images, steps = METHODS[params["base"]](u)
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
