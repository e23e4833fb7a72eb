"""GA: gradient ascent on the forget set, loss = -CE (SalUn / l1-sparse code; very lr-sensitive)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F

from .base import UnlearnContext


def neg_ce(logits, yb, model):
    ce = F.cross_entropy(logits, yb)
    return -ce, {"forget_ce": ce}


def run(ctx: UnlearnContext, hp: dict[str, Any]) -> None:
    ctx.fit("forget", hp, neg_ce)
