"""Boundary Shrinking (Chen et al. 2023), following SalUn's implementation
(OPTML-Group/Unlearn-Saliency, ``Classification/unlearn/boundary_sh.py``, ``FGSM_perturb`` and
``boundary_shrink_iter``).

For every batch of D_f it trains on (augmented where the profile augments), one FGSM step on the
frozen original model finds the label: the input, in [0, 1] pixel space, moves by ``fgsm_eps`` (a
pixel-space bound; the reference hard-codes 0.1) along the sign of the gradient of CE with the true
label, is clamped to [0, 1] and rounded to the pixel grid (1/255 there, 1/``scale`` here: the data
set's own quantisation), then normalised as the model expects. The new label is the original's plain
argmax there, so a sample the attack does not flip keeps its label. The model is then trained with CE
on the clean batch and these labels.

``exclude_true_class: true`` (ours, off by default) removes the true class before the argmax, so every
sample is relabelled to its nearest wrong class (our earlier rule; much stronger than the reference).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..core.models import Classifier
from ..core.runtime import full_precision
from ..core.training import Preprocessor
from .base import UnlearnContext


def fgsm_perturb(model: Classifier, xb: torch.Tensor, yb: torch.Tensor, prep: Preprocessor,
                 eps: float) -> torch.Tensor:
    """One FGSM step of ``eps`` in [0, 1] pixel space on a normalised batch ``xb``; returns it normalised.

    ``model`` is a frozen copy in eval mode: the gradient flows to the input only.
    """
    mean, std = prep.mean, prep.std
    pixels = (xb.detach().float() * std + mean).requires_grad_(True)  # what the reference's models take
    loss = F.cross_entropy(model(((pixels - mean) / std).to(xb.dtype)).float(), yb)
    (grad,) = torch.autograd.grad(loss, pixels)
    with torch.no_grad():
        adv = (pixels + float(eps) * grad.sign()).clamp(0.0, 1.0)
        adv = torch.round(adv * prep.scale) / prep.scale  # the reference's discretize() on our grid
        out = ((adv - mean) / std).to(xb.dtype)
    if prep.channels_last:
        out = out.contiguous(memory_format=torch.channels_last)
    return out


@torch.no_grad()
def _argmax(model: Classifier, x: torch.Tensor, y: torch.Tensor, exclude_true_class: bool) -> torch.Tensor:
    logits = model(x).float()
    if exclude_true_class:
        logits[torch.arange(len(y), device=y.device), y] = float("-inf")
    return logits.argmax(1)


def fgsm_labels(model: Classifier, xb: torch.Tensor, yb: torch.Tensor, prep: Preprocessor, eps: float,
                exclude_true_class: bool = False) -> torch.Tensor:
    """The original's argmax at the FGSM point of each sample of the (normalised) batch ``xb``."""
    was_training = model.training
    model.eval()
    # float32 whatever the caller's autocast, as the reference runs: under bf16 the gradient's
    # signs (FGSM) and near-ties of the argmax would come from bf16 activations
    with full_precision(xb.device):
        adv = fgsm_perturb(model, xb.float(), yb, prep, eps)
        labels = _argmax(model, adv, yb, exclude_true_class)
    model.train(was_training)
    return labels


def run(ctx: UnlearnContext, hp: dict[str, Any]) -> None:
    eps = float(hp["fgsm_eps"])
    exclude = bool(hp.get("exclude_true_class", False))
    bs, epochs = int(hp["batch_size"]), int(hp["epochs"])
    spe = ctx.steps_per_epoch("forget", bs)
    trainer = ctx.trainer(hp, epochs * spe, spe)
    for _ in range(epochs):
        ctx.model.train()
        ctx.start_epoch()  # the DA term's epoch basis (a no-op without +da)
        for xb, yb in ctx.epoch("forget", bs):
            with ctx.autocast():
                # relabelled on the batch actually trained, as boundary_shrink_iter does per batch
                labels = fgsm_labels(ctx.original, xb, yb, ctx.prep, eps, exclude_true_class=exclude)
                ce = F.cross_entropy(ctx.model(xb), labels)
                penalty, da_terms = ctx.da_paired(xb, "forget")
            trainer.step(ce + penalty, {"ce": ce, "relabelled": (labels != yb).float().mean(), **da_terms})


def images(count):
    """Per forget batch: FGSM (the input's gradient through the frozen original), the original's argmax
    at the FGSM point (no grad), then the training forward (paired for "+da")."""
    from .counting import fb, fo, shuffled_sizes

    sizes = shuffled_sizes(count.n_forget, int(count.hp["batch_size"]))
    epoch = count.da_epoch() + fb(2 * sum(sizes)) + fo(sum(sizes))
    for s in sizes:
        epoch += count.da_paired(s, "forget")
    epochs = int(count.hp["epochs"])
    return epoch.times(epochs), epochs * len(sizes)
