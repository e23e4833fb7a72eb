"""SalUn (Fan et al. 2024): a weight-saliency mask, then random labelling on masked weights only, following
OPTML-Group/Unlearn-Saliency: ``Classification/generate_mask.py`` (``save_gradient_ratio``) for the mask and
``Classification/unlearn/RL.py`` (with its masked update) for the training.

Mask: gradients of -CE are summed over the batches of D_f (``batch_size``, shuffled, with the training
augmentation of the profile, model in eval mode: the reference iterates the forget loader of the
training set, RandomCrop + flip); the ``mask_ratio`` share of all weights with the largest summed
|gradient| (one global ranking, exactly ``int(N * mask_ratio)`` weights, ties broken by position) is
trainable. Training: RL (random labels on D_f with D_r, see ``rl.py``). Masked-out weights stay exactly
unchanged: their gradients are zeroed before each step, and after each step their values are restored
and their optimiser state (momentum; Adam's moments) cleared, so weight decay and momentum cannot move
them (the leak fixed in Unlearn-Saliency PR #33).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..core.models import Classifier
from ..core.training import Preprocessor, Trainer, shuffled_batches
from . import rl
from .base import UnlearnContext
from ..core.runtime import to_device


def saliency_mask(model: Classifier, x: torch.Tensor, y: torch.Tensor, prep: Preprocessor, ratio: float,
                  batch_size: int = 256, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """name -> bool mask of the salient weights: exactly ``int(ratio * N)`` of all N weights, globally.

    With a ``generator`` the batches are shuffled and augmented as in training (the reference); without
    one they are taken in order, unaugmented.
    """
    params = dict(model.named_parameters())
    grads = {n: torch.zeros_like(p) for n, p in params.items()}
    was_training = model.training
    model.eval()  # no BN statistics change while probing (generate_mask.py: model.eval())
    if generator is None:
        batches = [torch.arange(start, min(start + batch_size, len(y))) for start in range(0, len(y), batch_size)]
    else:
        batches = list(shuffled_batches(len(y), batch_size, generator, min_batch=1))
    for idx in batches:
        idx = to_device(idx, y.device)
        xb = prep(x[idx], train=True, generator=generator) if generator is not None else prep(x[idx])
        model.zero_grad(set_to_none=True)
        loss = -F.cross_entropy(model(xb), y[idx])
        loss.backward()
        for n, p in params.items():
            if p.grad is not None:
                grads[n] += p.grad.detach()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    flat = torch.cat([g.abs().flatten() for g in grads.values()])
    k = int(len(flat) * float(ratio))
    # generate_mask.py ranks every |grad| and keeps the first k ranks: a stable descending sort gives each
    # weight one rank, so zero gradients tied at the threshold are not all taken
    order = torch.sort(flat, descending=True, stable=True).indices
    chosen = torch.zeros(len(flat), dtype=torch.bool, device=flat.device)
    chosen[order[:k]] = True
    out, start = {}, 0
    for n, g in grads.items():
        out[n] = chosen[start:start + g.numel()].view_as(g)
        start += g.numel()
    return out


def masked_update_hooks(model: Classifier, mask: dict[str, torch.Tensor]):
    """(before_step, after_step) that confine SGD updates to ``mask``.

    Multiplying by the 0/1 mask is exact, so the multi-tensor ``torch._foreach_mul_`` (one kernel
    launch per step on CUDA instead of one per parameter) gives the per-parameter loop's bits."""
    params = dict(model.named_parameters())
    frozen = {n: params[n].detach().clone() for n in params}
    scale = {n: mask[n].to(params[n].dtype) for n in params}  # 0./1. in the parameter's dtype
    keep = {n: ~mask[n] for n in params}

    def before_step(trainer: Trainer) -> None:
        names = [n for n, p in params.items() if p.grad is not None]
        if names:
            torch._foreach_mul_([params[n].grad for n in names], [scale[n] for n in names])

    @torch.no_grad()
    def after_step(trainer: Trainer) -> None:
        buffers, factors = [], []
        for n, p in params.items():
            p.copy_(torch.where(keep[n], frozen[n], p))
            state = trainer.opt.state.get(p, {})
            for key in ("momentum_buffer", "exp_avg", "exp_avg_sq"):  # SGD momentum; Adam's moments
                if state.get(key) is not None:
                    buffers.append(state[key])
                    factors.append(scale[n])
        if buffers:
            torch._foreach_mul_(buffers, factors)

    return before_step, after_step


def run(ctx: UnlearnContext, hp: dict[str, Any]) -> None:
    mask = saliency_mask(ctx.model, ctx.x_forget, ctx.y_forget, ctx.prep, float(hp["mask_ratio"]),
                         int(hp["batch_size"]), ctx.generator)
    ctx.extra["mask"] = mask
    before, after = masked_update_hooks(ctx.model, mask)
    rl.run(ctx, hp, before_step=before, after_step=after)


def images(count):
    """The saliency mask (gradients over every batch of D_f, none skipped), then RL."""
    from .counting import fb

    images, steps = rl.images(count)
    return fb(count.n_forget) + images, steps
