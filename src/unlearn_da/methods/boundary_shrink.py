"""Boundary Shrinking (Chen et al. 2023, SalUn's ``boundary_ex``): relabel each forget sample to its
nearest wrong class, found by an FGSM probe on the original model, then fine-tune on D_f with those labels."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..models import Classifier
from ..training import Preprocessor
from .base import UnlearnContext, ce_logits


def nearest_wrong_labels(model: Classifier, x: torch.Tensor, y: torch.Tensor, prep: Preprocessor, eps: float,
                         batch_size: int = 512) -> torch.Tensor:
    """One FGSM step of size ``eps`` (normalised input space) up the CE of the true label;
    the new label is the top class other than the true one at the perturbed point."""
    labels = []
    model.eval()
    for start in range(0, len(y), batch_size):
        xb = prep(x[start:start + batch_size]).detach().requires_grad_(True)
        # ``model`` is a frozen copy: gradients flow to the input only
        yb = y[start:start + batch_size]
        loss = F.cross_entropy(model(xb), yb)
        (grad,) = torch.autograd.grad(loss, xb)
        with torch.no_grad():
            logits = model(xb + eps * grad.sign())
            logits[torch.arange(len(yb)), yb] = float("-inf")
            labels.append(logits.argmax(1))
    return torch.cat(labels)


def run(ctx: UnlearnContext, hp: dict[str, Any]) -> None:
    # ctx.prep without train=True applies no augmentation
    new_labels = nearest_wrong_labels(ctx.original, ctx.x_forget, ctx.y_forget, ctx.prep, float(hp["fgsm_eps"]))
    ctx.fit("forget", hp, ce_logits, labels=new_labels)
