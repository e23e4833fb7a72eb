"""What an unlearning method receives (``UnlearnContext``) and the per-step log it writes.

A method is a function ``run(ctx, hp)`` that changes ``ctx.model`` in place,
starting from the original weights. It sees the forget and retain sets, a
frozen copy of the original model, and never the test or validation sets.

One form for every loss and one for the DA term: a loss takes ``(logits, labels, model)`` and returns
``(loss, named terms)``; a ``+da`` run's term comes from ``ctx.da_paired`` (paired with the method's
batch) or ``ctx.da_sampled`` (a fresh pair) as ``(penalty, terms)`` to add to it, ``(0.0, {})`` otherwise.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.models import Classifier
from ..core.runtime import autocast, to_device
from ..core.training import Preprocessor, Trainer, batches_per_epoch, shuffled_batches

# loss on a batch's logits: (logits, labels, model) -> (loss, named terms)
OutputLoss = Callable[[torch.Tensor, torch.Tensor, Classifier], "tuple[torch.Tensor, dict[str, torch.Tensor]]"]


class StepRecorder:
    """Per-step loss terms, plus forget/retain accuracy on fixed probe batches every ``log_every`` steps.

    Probe evaluation is timed separately so the method's wall-clock excludes it.
    """

    def __init__(self, model: Classifier, probes: dict[str, tuple[torch.Tensor, torch.Tensor]],
                 prep: Preprocessor, log_every: int, amp: bool = False,
                 log: Callable[[str], None] | None = None):
        self.model, self.probes, self.prep, self.log = model, probes, prep, log
        self.log_every, self.amp = max(1, int(log_every)), amp
        self.rows: list[dict[str, Any]] = []
        self.step = 0
        self.eval_seconds = 0.0
        self.phase = "train"

    @torch.no_grad()
    def probe_accuracy(self) -> dict[str, float]:
        if self.model.fc.weight.is_cuda:  # queued training kernels finish first: they are not evaluation time
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        out = {}
        for name, (x, y) in self.probes.items():
            with autocast(x.device, self.amp):
                logits = self.model(self.prep(x))
            out[f"{name}_acc"] = 100.0 * float((logits.argmax(1) == y).float().mean()) if len(y) else float("nan")
        self.model.train(was_training)
        self.eval_seconds += time.perf_counter() - t0
        return out

    def __call__(self, _trainer_step: int, terms: dict[str, torch.Tensor]) -> None:
        self.step += 1
        if self.step == 1 or self.step % self.log_every == 0:
            t0 = time.perf_counter()
            row: dict[str, Any] = {"step": self.step, "phase": self.phase}
            row.update({k: float(v) for k, v in terms.items()})
            self.eval_seconds += time.perf_counter() - t0
            row.update(self.probe_accuracy())
            self.rows.append(row)
            if self.log is not None:  # progress in the job's log
                self.log(f"step {self.step} [{self.phase}]: "
                         + ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("step", "phase")))

    def initial(self) -> None:
        """Record the starting point (step 0) before any update."""
        self.rows.append({"step": 0, "phase": "start", **self.probe_accuracy()})


@contextlib.contextmanager
def running_stats_frozen(model: nn.Module) -> Iterator[None]:
    """Train-mode BatchNorm normalises with the batch's statistics but updates no buffer.

    ``track_running_stats = False`` makes BatchNorm pass no running buffers to the kernel and
    skip ``num_batches_tracked``; restored on exit. For the DA term's extra forwards, which
    the base method would not have made.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in layers:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in layers:
            m.track_running_stats = True


def batch_stat_features(model: Classifier, x: torch.Tensor) -> torch.Tensor:
    """Features of ``x`` as a training forward computes them, leaving every BatchNorm buffer untouched."""
    with running_stats_frozen(model):
        return model.features(x)


def da_seed(seed: int) -> int:
    """Seed of the DA sampling generator, an independent stream derived from the run's seed."""
    return int(np.random.SeedSequence([int(seed), 0xDA]).generate_state(1, dtype=np.uint64)[0] >> 1)


@dataclass
class UnlearnContext:
    """Everything a method may use. The test and validation sets are deliberately absent."""

    model: Classifier
    original: Classifier  # frozen copy of the original model (eval mode, no grad)
    spec: dict[str, Any]  # the model spec (to build fresh networks, e.g. a random teacher)
    x_forget: torch.Tensor
    y_forget: torch.Tensor
    x_retain: torch.Tensor
    y_retain: torch.Tensor
    prep: Preprocessor
    num_classes: int
    generator: torch.Generator
    recorder: StepRecorder
    amp: bool = False
    da: Any = None  # DARegularizer when the method runs as "<name>+da"
    da_config: dict[str, Any] | None = None  # the unlearn.da block (MUDA builds its own regulariser)
    log: Callable[[str], None] = print
    extra: dict[str, Any] = field(default_factory=dict)
    # draws of the DA term (paired batches, epoch subsets); default: derived from ``generator``'s seed
    da_generator: torch.Generator | None = None
    forgotten_class: int | None = None  # class-wise scenarios: the class (SSD's batch size depends on it)

    def __post_init__(self) -> None:
        if self.da_generator is None:
            self.da_generator = torch.Generator().manual_seed(da_seed(self.generator.initial_seed()))

    @property
    def device(self) -> torch.device:
        return self.x_forget.device

    # ---- batches ---------------------------------------------------------------------
    def _get(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.x_forget, self.y_forget) if which == "forget" else (self.x_retain, self.y_retain)

    def epoch(self, which: str, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One shuffled pass over the forget or retain set, preprocessed (with training augmentation)."""
        x, y = self._get(which)
        for idx in shuffled_batches(len(y), batch_size, self.generator):
            idx = to_device(idx, self.device)
            yield self.prep(x[idx], train=True, generator=self.generator), y[idx]

    def sample(self, which: str, batch_size: int,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch (without replacement inside the batch), drawn with ``generator``
        (default: the method's own; the DA term passes ``da_generator``)."""
        gen = self.generator if generator is None else generator
        x, y = self._get(which)
        n = len(y)
        idx = to_device(torch.randperm(n, generator=gen)[: min(batch_size, n)], self.device)
        return self.prep(x[idx], train=True, generator=gen), y[idx]

    def steps_per_epoch(self, which: str, batch_size: int) -> int:
        return batches_per_epoch(len(self._get(which)[1]), batch_size)

    # ---- training --------------------------------------------------------------------
    def trainer(self, hp: dict[str, Any], total_steps: int, steps_per_epoch: int, **hooks: Any) -> Trainer:
        hooks.setdefault("on_step", self.recorder)
        return Trainer(self.model, hp, total_steps, steps_per_epoch, **hooks)

    def autocast(self):
        return autocast(self.device, self.amp)

    def start_epoch(self) -> None:
        """Every method calls this at the start of each epoch: the DA term's ``epoch`` basis is
        recomputed here (a no-op without DA or with another basis source)."""
        if self.da is not None:
            self.da.on_epoch_start(self.model, self)

    def da_paired(self, xb: torch.Tensor, which: str):
        """lambda * L_DA of the method's batch ``xb`` (from set ``which``) paired with a batch drawn
        from the other set (0 unless running as ``+da``).

        The pair goes through its own forward (batch statistics of the pair, no BatchNorm
        buffer updated), so the method's own forward of ``xb`` stays exactly as without DA.
        """
        if self.da is None:
            return 0.0, {}
        other = "forget" if which == "retain" else "retain"
        xo, _ = self.sample(other, self.da.batch_size, generator=self.da_generator)
        xf, xr = (xb, xo) if which == "forget" else (xo, xb)
        z = batch_stat_features(self.model, torch.cat([xf, xr]))
        return self.da.penalty(z[: len(xf)], z[len(xf):])

    def da_sampled(self):
        """lambda * L_DA on a freshly drawn forget/retain pair (0 unless running as ``+da``)."""
        if self.da is None:
            return 0.0, {}
        return self.da.penalty_on_sampled(self.model, self)

    def fit(self, which: str, hp: dict[str, Any], loss_fn: OutputLoss, labels: torch.Tensor | None = None,
            **hooks: Any) -> None:
        """Epochs over one set with ``loss_fn(logits, labels, model)``.

        For ``+da`` runs each batch is paired with a batch drawn from the other set
        (forget with retain and vice versa) for the DA penalty (``da_paired``); the
        method's own forward, batches and BatchNorm buffers are those of the run without DA.
        """
        x, y = self._get(which)
        if labels is not None:
            y = labels
        bs, epochs = int(hp["batch_size"]), int(hp["epochs"])
        spe = batches_per_epoch(len(y), bs)
        trainer = self.trainer(hp, epochs * spe, spe, **hooks)
        for _ in range(epochs):
            self.model.train()
            self.start_epoch()
            for idx in shuffled_batches(len(y), bs, self.generator):
                idx = to_device(idx, self.device)
                xb, yb = self.prep(x[idx], train=True, generator=self.generator), y[idx]
                with self.autocast():
                    logits = self.model(xb)
                    loss, terms = loss_fn(logits, yb, self.model)
                    penalty, da_terms = self.da_paired(xb, which)
                trainer.step(loss + penalty, {**terms, **da_terms})


def ce_logits(logits: torch.Tensor, yb: torch.Tensor, model: Classifier):
    loss = F.cross_entropy(logits, yb)
    return loss, {"ce": loss}


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), averaged over the batch (Hinton KD).

    In float32 whatever the autocast state: CPU autocast runs log_softmax in bf16, and bf16
    log-probabilities (8 mantissa bits) blur the small student-teacher differences KD follows.
    """
    t = float(temperature)
    return F.kl_div(
        F.log_softmax(student_logits.float() / t, dim=1),
        F.log_softmax(teacher_logits.detach().float() / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)


def frozen_copy(model: Classifier) -> Classifier:
    """A deep copy in eval mode with gradients off (teachers, the original model)."""
    twin = copy.deepcopy(model).eval()
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin
