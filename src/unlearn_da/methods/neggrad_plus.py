"""NegGrad+: alpha * CE(D_r) - (1 - alpha) * CE(D_f) per paired batch (SCRUB's notebooks; alpha ~ 0.95)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .base import UnlearnContext


def run(ctx: UnlearnContext, hp: dict[str, Any]) -> None:
    alpha, bs, epochs = float(hp["alpha"]), int(hp["batch_size"]), int(hp["epochs"])
    spe = ctx.steps_per_epoch("retain", bs)
    trainer = ctx.trainer(hp, epochs * spe, spe)
    for _ in range(epochs):
        ctx.model.train()
        for xr, yr in ctx.epoch("retain", bs):
            xf, yf = ctx.sample("forget", bs)
            with ctx.autocast():
                z = ctx.model.features(torch.cat([xr, xf]))
                logits = ctx.model.head(z)
                ce_r = F.cross_entropy(logits[: len(xr)], yr)
                ce_f = F.cross_entropy(logits[len(xr):], yf)
                penalty, da_terms = ctx.da_penalty(z[len(xr):], z[: len(xr)])
                loss = alpha * ce_r - (1 - alpha) * ce_f + penalty
            trainer.step(loss, {"retain_ce": ce_r, "forget_ce": ce_f, **da_terms})
