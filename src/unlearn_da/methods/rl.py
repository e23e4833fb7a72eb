"""RL: train on D_f with random wrong labels together with D_r (SalUn's RL; Golatkar et al.'s baseline).

``mode: joint`` shuffles relabelled D_f into D_r each epoch (SalUn's CIFAR-100 variant);
``mode: sequential`` passes over relabelled D_f, then over D_r (SalUn's CIFAR-10 loop).
Labels are redrawn every epoch, always different from the true label.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import UnlearnContext, ce


def random_wrong_labels(y: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform over the classes other than ``y``."""
    shift = torch.randint(1, num_classes, (len(y),), generator=generator).to(y.device)
    return (y + shift) % num_classes


def run(ctx: UnlearnContext, hp: dict[str, Any], **trainer_hooks: Any) -> None:
    bs, epochs = int(hp["batch_size"]), int(hp["epochs"])
    mode = hp.get("mode", "joint")
    n = len(ctx.y_forget) + len(ctx.y_retain)
    spe = -(-n // bs)
    trainer = ctx.trainer(hp, epochs * spe, spe, **trainer_hooks)
    loss_fn = ctx.with_da(ce)
    for _ in range(epochs):
        ctx.model.train()
        y_rand = random_wrong_labels(ctx.y_forget, ctx.num_classes, ctx.generator)
        if mode == "joint":
            x = torch.cat([ctx.x_forget, ctx.x_retain])
            y = torch.cat([y_rand, ctx.y_retain])
            parts = [(x, y)]
        else:
            parts = [(ctx.x_forget, y_rand), (ctx.x_retain, ctx.y_retain)]
        for x, y in parts:
            for idx in torch.randperm(len(y), generator=ctx.generator).split(bs):
                if len(idx) < 2:
                    continue
                idx = idx.to(ctx.device)
                xb = ctx.prep(x[idx], train=True, generator=ctx.generator)
                with ctx.autocast():
                    loss, terms = loss_fn(ctx.model, xb, y[idx])
                trainer.step(loss, terms)
