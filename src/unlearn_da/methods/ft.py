"""FT: continue training on the retain set only (SalUn family: ~10 epochs, lr searched)."""

from __future__ import annotations

from typing import Any

from .base import UnlearnContext, ce_logits


def run(ctx: UnlearnContext, hp: dict[str, Any]) -> None:
    ctx.fit("retain", hp, ce_logits)
