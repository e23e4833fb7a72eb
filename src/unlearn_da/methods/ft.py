"""FT: continue training on the retain set only, following OPTML-Group/Unlearn-Saliency
``Classification/unlearn/FT.py`` (``FT_iter`` without l1; Unlearn-Sparse ``unlearn/FT.py`` is the same):
CE on D_r, SGD with momentum 0.9 and weight decay 5e-4 (``arg_parser.py`` defaults); ~10 epochs, lr searched."""

from __future__ import annotations

from typing import Any

from .base import UnlearnContext, ce_logits


def run(ctx: UnlearnContext, hp: dict[str, Any]) -> None:
    ctx.fit("retain", hp, ce_logits)


def images(count):
    """What a job pushes through the model (``methods/counting.py``): ``ctx.fit``'s epochs over one set."""
    return count.fit("retain")
