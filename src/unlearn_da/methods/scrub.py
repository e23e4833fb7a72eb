"""SCRUB (Kurmanji et al. 2023): the student starts at the original (the frozen teacher); ``msteps`` max-epochs
maximise KL(teacher || student) on D_f, every epoch ends with a min-epoch of gamma * CE + alpha * KL on D_r."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F

from .base import UnlearnContext, distill_kl


def run(ctx: UnlearnContext, hp: dict[str, Any]) -> None:
    epochs, msteps = int(hp["epochs"]), int(hp["msteps"])
    bs_r, bs_f = int(hp["batch_size"]), int(hp["forget_batch_size"])
    temp, alpha, gamma = float(hp["T"]), float(hp["alpha"]), float(hp["gamma"])
    spe_r, spe_f = ctx.steps_per_epoch("retain", bs_r), ctx.steps_per_epoch("forget", bs_f)
    total = epochs * spe_r + min(msteps, epochs) * spe_f
    trainer = ctx.trainer(hp, total, spe_r)
    for epoch in range(epochs):
        ctx.model.train()
        if epoch < msteps:
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
