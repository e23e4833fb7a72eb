"""SSD, Selective Synaptic Dampening (Foster et al. 2024): no training. Diagonal Fisher importances
(squared gradients of CE, averaged over batches) on D_f and on D; where I_f > alpha * I_D, a weight is
multiplied by min(lambda * I_D / I_f, 1).

Importances are means of squared mini-batch gradients, so their ratio depends on the batch size; the
reference computes them at 128 for random forgetting (if-loops/selective-synaptic-dampening,
``src/forget_random_main.py``: ``DataLoader(..., batch_size=128)``) and at 64 for a whole class
(``src/forget_full_class_main.py``: ``-b`` default 64): ``batch_size`` and ``class_batch_size`` (null: the
same). The batches of D follow the reference's unshuffled ``full_train_dl = DataLoader(ConcatDataset(
(retain_train_dl.dataset, forget_train_dl.dataset)), batch_size)`` (both scripts): D_r first, then D_f, so
the same samples share a batch. No augmentation (``src/datasets.py``: ``transform_unlearning`` is
ToTensor + Normalize): the batches are never augmented, whatever ``augment_data`` says."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..core.models import Classifier
from ..core.training import Preprocessor
from .base import UnlearnContext


def importances(model: Classifier, x: torch.Tensor, y: torch.Tensor, prep: Preprocessor,
                batch_size: int) -> dict[str, torch.Tensor]:
    """Mean over batches of the squared batch gradient of CE, per parameter."""
    params = dict(model.named_parameters())
    imp = {n: torch.zeros_like(p) for n, p in params.items()}
    was_training = model.training
    model.eval()
    batches = 0
    for start in range(0, len(y), batch_size):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(prep(x[start:start + batch_size])), y[start:start + batch_size]).backward()
        for n, p in params.items():
            if p.grad is not None:
                imp[n] += p.grad.detach() ** 2
        batches += 1
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {n: v / max(1, batches) for n, v in imp.items()}


@torch.no_grad()
def dampen(model: Classifier, imp_full: dict[str, torch.Tensor], imp_forget: dict[str, torch.Tensor],
           alpha: float, lam: float) -> dict[str, int]:
    """Apply the SSD update in place; return how many weights of each tensor were dampened."""
    changed = {}
    for n, p in model.named_parameters():
        selected = imp_forget[n] > alpha * imp_full[n]
        factor = (lam * imp_full[n] / imp_forget[n].clamp_min(1e-30)).clamp(max=1.0)
        p.copy_(torch.where(selected, p * factor, p))
        changed[n] = int(selected.sum())
    return changed


def run(ctx: UnlearnContext, hp: dict[str, Any]) -> None:
    bs = int(hp["batch_size"])
    if ctx.forgotten_class is not None and hp.get("class_batch_size"):
        bs = int(hp["class_batch_size"])
    x_all = torch.cat([ctx.x_retain, ctx.x_forget])  # ConcatDataset((retain, forget)), unshuffled
    y_all = torch.cat([ctx.y_retain, ctx.y_forget])
    imp_full = importances(ctx.model, x_all, y_all, ctx.prep, bs)
    imp_forget = importances(ctx.model, ctx.x_forget, ctx.y_forget, ctx.prep, bs)
    changed = dampen(ctx.model, imp_full, imp_forget, float(hp["alpha"]), float(hp["lambda"]))
    total = sum(p.numel() for p in ctx.model.parameters())
    ctx.extra["dampened"] = changed
    ctx.log(f"ssd: dampened {sum(changed.values())} of {total} weights")
