"""l1-sparse (Jia et al. 2023), following OPTML-Group/Unlearn-Sparse ``unlearn/FT.py`` (``FT_l1`` /
``FT_iter(with_l1=True)``; the same code is ``Classification/unlearn/FT.py`` in Unlearn-Saliency).

Fine-tune on D_r with CE + alpha_e * ||theta||_1 (the l1 norm of all parameters). The weight is constant
within an epoch and decays per epoch: alpha_e = alpha * (1 - e / T) for epoch e = 0 .. T-1, so the first
epoch has alpha and the last alpha / T (the reference's ``current_alpha`` with ``no_l1_epochs = 0``).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F

from .base import UnlearnContext


def epoch_weight(alpha: float, epoch: int, epochs: int) -> float:
    """``current_alpha = alpha * (1 - epoch / unlearn_epochs)``, ``epoch`` counted from 0."""
    return float(alpha) * (1 - int(epoch) / max(1, int(epochs)))


def run(ctx: UnlearnContext, hp: dict[str, Any]) -> None:
    alpha, epochs = float(hp["alpha"]), int(hp["epochs"])
    spe = ctx.steps_per_epoch("retain", int(hp["batch_size"]))  # the batches ctx.fit makes per epoch
    step = {"t": 0}

    def loss_fn(logits, yb, model):
        ce = F.cross_entropy(logits, yb)
        l1 = sum(p.abs().sum() for p in model.parameters())
        weight = epoch_weight(alpha, step["t"] // max(1, spe), epochs)
        step["t"] += 1
        return ce + weight * l1, {"ce": ce, "l1": l1.detach()}

    ctx.fit("retain", hp, loss_fn)


def images(count):
    """What a job pushes through the model (``methods/counting.py``): ``ctx.fit``'s epochs over one set."""
    return count.fit("retain")
