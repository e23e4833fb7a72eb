"""GA: gradient ascent on the forget set, loss = -CE, following OPTML-Group/Unlearn-Saliency
``Classification/unlearn/GA.py`` (the same as Unlearn-Sparse ``unlearn/GA.py``): SGD with the reference's
momentum 0.9 and weight decay 5e-4 (``arg_parser.py`` defaults), train mode, one pass over D_f per epoch.
Very sensitive to the learning rate."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F

from .base import UnlearnContext


def neg_ce(logits, yb, model):
    ce = F.cross_entropy(logits, yb)
    return -ce, {"forget_ce": ce}


def run(ctx: UnlearnContext, hp: dict[str, Any]) -> None:
    ctx.fit("forget", hp, neg_ce)


def images(count):
    """What a job pushes through the model (``methods/counting.py``): ``ctx.fit``'s epochs over one set."""
    return count.fit("forget")
