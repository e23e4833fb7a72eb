"""l1-sparse (Jia et al. 2023, Unlearn-Sparse): fine-tune on D_r with alpha * (1 - t/T) * ||theta||_1."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F

from .base import UnlearnContext


def run(ctx: UnlearnContext, hp: dict[str, Any]) -> None:
    alpha = float(hp["alpha"])
    total = int(hp["epochs"]) * ctx.steps_per_epoch("retain", int(hp["batch_size"]))
    step = {"t": 0}

    def loss_fn(logits, yb, model):
        ce = F.cross_entropy(logits, yb)
        l1 = sum(p.abs().sum() for p in model.parameters())
        weight = alpha * (1 - step["t"] / max(1, total))
        step["t"] += 1
        return ce + weight * l1, {"ce": ce, "l1": l1.detach()}

    ctx.fit("retain", hp, loss_fn)
