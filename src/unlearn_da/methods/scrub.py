"""SCRUB (Kurmanji et al. 2023), following meghdadk/SCRUB: ``large_scale_unlearning.ipynb`` (the CIFAR-10
run: SGD, momentum 0.9, weight decay 5e-4, kd_T 4, lr_decay_epochs [3, 5, 9], lr_decay_rate 0.1),
``thirdparty/repdistiller/helper/loops.py`` (``train_distill``) and ``.../helper/util.py``
(``adjust_learning_rate``).

The student starts at the original (the frozen teacher). Epochs count from 1; the first ``msteps`` epochs
start with a max-pass over D_f that maximises KL(teacher || student) (``DistillKL``: T^2 * KL summed over
classes, averaged over the batch), and every epoch has a min-pass over D_r minimising
``gamma * CE + alpha * KL``. Before each epoch the learning rate is ``lr * lr_decay_rate ** n`` with n the
number of ``lr_decay_epochs`` the epoch number exceeds (as ``adjust_learning_rate``); SCRUB's ``gamma``
is its CE weight, not a schedule factor.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F

from ..core.training import Trainer
from .base import UnlearnContext, distill_kl


def decay_factor(epoch: int, decay_epochs: list[int], rate: float) -> float:
    """``adjust_learning_rate``: rate ** #(decay epochs strictly below ``epoch``), ``epoch`` counted from 1."""
    return float(rate) ** sum(int(epoch) > int(d) for d in decay_epochs)


def _scale_lr(trainer: Trainer, base_lrs: list[float], factor: float) -> None:
    """Multiply the schedule's peak learning rate by ``factor`` from the next step on."""
    sched = trainer.sched
    sched.base_lrs = [base * factor for base in base_lrs]
    for group, base, fn in zip(trainer.opt.param_groups, sched.base_lrs, sched.lr_lambdas, strict=True):
        group["lr"] = base * fn(sched.last_epoch)


def run(ctx: UnlearnContext, hp: dict[str, Any]) -> None:
    epochs, msteps = int(hp["epochs"]), int(hp["msteps"])
    bs_r, bs_f = int(hp["batch_size"]), int(hp["forget_batch_size"])
    temp, alpha, gamma = float(hp["T"]), float(hp["alpha"]), float(hp["gamma"])
    decay_epochs, decay_rate = list(hp.get("lr_decay_epochs", [])), float(hp.get("lr_decay_rate", 0.1))
    spe_r, spe_f = ctx.steps_per_epoch("retain", bs_r), ctx.steps_per_epoch("forget", bs_f)
    total = epochs * spe_r + min(msteps, epochs) * spe_f
    trainer = ctx.trainer(hp, total, spe_r)
    base_lrs = list(trainer.sched.base_lrs)
    for epoch in range(1, epochs + 1):
        _scale_lr(trainer, base_lrs, decay_factor(epoch, decay_epochs, decay_rate))
        ctx.model.train()
        ctx.start_epoch()  # the DA term's epoch basis (a no-op without +da)
        if epoch <= msteps:
            ctx.recorder.phase = "max"
            for xf, _ in ctx.epoch("forget", bs_f):
                with ctx.autocast():
                    kl = distill_kl(ctx.model(xf), ctx.original(xf), temp)
                    penalty, da_terms = ctx.da_sampled()
                    loss = -kl + penalty
                trainer.step(loss, {"forget_kl": kl, **da_terms})
        ctx.recorder.phase = "min"
        for xr, yr in ctx.epoch("retain", bs_r):
            with ctx.autocast():
                logits = ctx.model(xr)
                ce = F.cross_entropy(logits, yr)
                kl = distill_kl(logits, ctx.original(xr), temp)
                loss = gamma * ce + alpha * kl
            trainer.step(loss, {"retain_ce": ce, "retain_kl": kl})


def images(count):
    """Max passes over D_f (the first ``msteps`` epochs), a min pass over D_r every epoch; the frozen
    teacher runs beside each batch in grad mode but records no graph (forward only)."""
    from .counting import fb, fo, shuffled_sizes

    epochs, msteps = int(count.hp["epochs"]), int(count.hp["msteps"])
    forget = shuffled_sizes(count.n_forget, int(count.hp["forget_batch_size"]))
    retain = shuffled_sizes(count.n_retain, int(count.hp["batch_size"]))
    max_pass = fb(sum(forget)) + fo(sum(forget)) + count.da_sampled().times(len(forget))
    min_pass = fb(sum(retain)) + fo(sum(retain))
    max_epochs = min(max(msteps, 0), epochs)
    images = count.da_epoch().times(epochs) + max_pass.times(max_epochs) + min_pass.times(epochs)
    return images, max_epochs * len(forget) + epochs * len(retain)
