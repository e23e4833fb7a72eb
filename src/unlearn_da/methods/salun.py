"""SalUn (Fan et al. 2024, Unlearn-Saliency): a weight-saliency mask, then random labelling on masked weights only.

Mask: the top ``mask_ratio`` fraction (global threshold over all parameters) of
|grad of -CE on D_f| at the original weights. Training: RL (random wrong labels on
D_f with D_r). Masked-out weights stay exactly unchanged: their gradients are
zeroed before each step, and after each step their values are restored and their
momentum cleared, so weight decay and momentum cannot move them (the leak fixed
in Unlearn-Saliency PR #33).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..models import Classifier
from ..training import Preprocessor, Trainer
from . import rl
from .base import UnlearnContext


def saliency_mask(model: Classifier, x: torch.Tensor, y: torch.Tensor, prep: Preprocessor, ratio: float,
                  batch_size: int = 256) -> dict[str, torch.Tensor]:
    """name -> bool mask of the salient weights (``ratio`` of all weights, globally)."""
    params = dict(model.named_parameters())
    grads = {n: torch.zeros_like(p) for n, p in params.items()}
    was_training = model.training
    model.eval()  # no BN statistics change while probing
    for start in range(0, len(y), batch_size):
        model.zero_grad(set_to_none=True)
        loss = -F.cross_entropy(model(prep(x[start:start + batch_size])), y[start:start + batch_size])
        loss.backward()
        for n, p in params.items():
            if p.grad is not None:
                grads[n] += p.grad.detach()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    flat = torch.cat([g.abs().flatten() for g in grads.values()])
    k = max(1, int(round(ratio * flat.numel())))
    threshold = torch.topk(flat, k, sorted=True).values[-1]
    return {n: g.abs() >= threshold for n, g in grads.items()}


def masked_update_hooks(model: Classifier, mask: dict[str, torch.Tensor]):
    """(before_step, after_step) that confine SGD updates to ``mask``."""
    params = dict(model.named_parameters())
    frozen = {n: params[n].detach().clone() for n in params}

    def before_step(trainer: Trainer) -> None:
        for n, p in params.items():
            if p.grad is not None:
                p.grad.mul_(mask[n])

    @torch.no_grad()
    def after_step(trainer: Trainer) -> None:
        for n, p in params.items():
            keep = ~mask[n]
            p.copy_(torch.where(keep, frozen[n], p))
            state = trainer.opt.state.get(p, {})
            if state.get("momentum_buffer") is not None:
                state["momentum_buffer"].mul_(mask[n])

    return before_step, after_step


def run(ctx: UnlearnContext, hp: dict[str, Any]) -> None:
    mask = saliency_mask(ctx.model, ctx.x_forget, ctx.y_forget, ctx.prep, float(hp["mask_ratio"]))
    ctx.extra["mask"] = mask
    before, after = masked_update_hooks(ctx.model, mask)
    rl.run(ctx, hp, before_step=before, after_step=after)
