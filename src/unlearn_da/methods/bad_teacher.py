"""Bad Teacher (Chundawat et al. 2023): distil from the original on D_r and from a randomly initialised
("incompetent") teacher on D_f, on D_f plus a random ``retain_fraction`` of D_r, usually for one epoch."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..models import build_model
from .base import UnlearnContext, frozen_copy


def run(ctx: UnlearnContext, hp: dict[str, Any]) -> None:
    temp = float(hp["T"])
    bad = frozen_copy(build_model(ctx.spec).to(ctx.device))  # init drawn from the seeded global RNG
    n_keep = max(1, int(round(float(hp["retain_fraction"]) * len(ctx.y_retain))))
    keep = torch.randperm(len(ctx.y_retain), generator=ctx.generator)[:n_keep].to(ctx.device)
    x = torch.cat([ctx.x_forget, ctx.x_retain[keep]])
    is_forget = torch.cat([torch.ones(len(ctx.y_forget), device=ctx.device),
                           torch.zeros(n_keep, device=ctx.device)])
    bs, epochs = int(hp["batch_size"]), int(hp["epochs"])
    spe = -(-len(is_forget) // bs)
    trainer = ctx.trainer(hp, epochs * spe, spe)
    for _ in range(epochs):
        ctx.model.train()
        for idx in torch.randperm(len(is_forget), generator=ctx.generator).split(bs):
            if len(idx) < 2:
                continue
            idx = idx.to(ctx.device)
            xb, u = ctx.prep(x[idx], train=True, generator=ctx.generator), is_forget[idx, None]
            with ctx.autocast():
                with torch.no_grad():
                    target = u * F.softmax(bad(xb) / temp, 1) + (1 - u) * F.softmax(ctx.original(xb) / temp, 1)
                student = F.log_softmax(ctx.model(xb) / temp, 1)
                kl = F.kl_div(student, target, reduction="batchmean")
                penalty, da_terms = ctx.da_sampled()
                loss = kl + penalty
            trainer.step(loss, {"kl": kl, **da_terms})
