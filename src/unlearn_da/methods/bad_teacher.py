"""Bad Teacher (Chundawat et al. 2023), following vikram2000b/bad-teaching-unlearning: ``unlearn.py``
(``UnlearnerLoss``, ``unlearning_step``, ``blindspot_unlearner``) as run in
``CIFARSuper20_Rocket_Unlearn.ipynb`` (Adam lr 1e-4, KL temperature 1, one epoch, batch 256, a random 30 %
of D_r).

The student starts at the original and trains (train mode) on D_f plus a random ``retain_fraction`` of
D_r (``int(fraction * |D_r|)`` samples), shuffled together, towards a per-sample target: softmax(bad / T)
of a randomly initialised ("incompetent") teacher for forget samples, softmax(original / T) for retain
samples. The loss is ``F.kl_div(log_softmax(student / T), target)``; ``kl_reduction: mean`` (the
reference: F.kl_div's default, the sum over batch and classes divided by batch x classes, no T^2 factor)
or ``batchmean`` (ours, off by default: divided by the batch size only). The optimiser is the config's
``optimizer`` (``adam`` in every profile, as the reference).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..core.models import build_model
from .base import UnlearnContext, frozen_copy
from ..core.runtime import to_device

KL_REDUCTIONS = ("mean", "batchmean")


def unlearner_loss(student_logits: torch.Tensor, good_logits: torch.Tensor, bad_logits: torch.Tensor,
                   is_forget: torch.Tensor, temperature: float, reduction: str = "mean") -> torch.Tensor:
    """KL(target || student) with the bad teacher's target on forget samples, the original's on the rest."""
    if reduction not in KL_REDUCTIONS:
        raise ValueError(f"kl_reduction {reduction!r} is not known; allowed: {', '.join(KL_REDUCTIONS)}")
    t = float(temperature)
    # float32 whatever autocast produced: softmax/log-softmax of bf16 logits lose the small
    # probabilities the KL is made of (distill_kl does the same)
    student_logits, good_logits, bad_logits = (v.float() for v in (student_logits, good_logits, bad_logits))
    u = is_forget[:, None].to(student_logits.dtype)
    target = u * F.softmax(bad_logits.detach() / t, 1) + (1 - u) * F.softmax(good_logits.detach() / t, 1)
    total = F.kl_div(F.log_softmax(student_logits / t, 1), target, reduction="sum")
    # F.kl_div(reduction="mean") is the reference's default; spelt out (torch warns it may change)
    return total / (student_logits.numel() if reduction == "mean" else student_logits.shape[0])


def run(ctx: UnlearnContext, hp: dict[str, Any]) -> None:
    temp, reduction = float(hp["T"]), str(hp.get("kl_reduction", "mean"))
    bad = frozen_copy(build_model(ctx.spec).to(ctx.device))  # init drawn from the seeded global RNG
    n_keep = max(1, int(float(hp["retain_fraction"]) * len(ctx.y_retain)))  # random.sample(retain, int(0.3 n))
    keep = to_device(torch.randperm(len(ctx.y_retain), generator=ctx.generator)[:n_keep], ctx.device)
    x = torch.cat([ctx.x_forget, ctx.x_retain[keep]])
    is_forget = torch.cat([torch.ones(len(ctx.y_forget), device=ctx.device),
                           torch.zeros(n_keep, device=ctx.device)])
    bs, epochs = int(hp["batch_size"]), int(hp["epochs"])
    spe = -(-len(is_forget) // bs)
    trainer = ctx.trainer(hp, epochs * spe, spe)
    for _ in range(epochs):
        ctx.model.train()
        ctx.start_epoch()  # the DA term's epoch basis (a no-op without +da)
        for idx in torch.randperm(len(is_forget), generator=ctx.generator).split(bs):
            if len(idx) < 2:
                continue
            idx = to_device(idx, ctx.device)
            xb, u = ctx.prep(x[idx], train=True, generator=ctx.generator), is_forget[idx]
            with ctx.autocast():
                with torch.no_grad():
                    good_logits, bad_logits = ctx.original(xb), bad(xb)
                kl = unlearner_loss(ctx.model(xb), good_logits, bad_logits, u, temp, reduction)
                penalty, da_terms = ctx.da_sampled()
                loss = kl + penalty
            trainer.step(loss, {"kl": kl, **da_terms})


def images(count):
    """D_f with a random share of D_r, shuffled together; both teachers run without grad."""
    from .counting import fb, fo, split_sizes

    n_keep = max(1, int(float(count.hp["retain_fraction"]) * count.n_retain))
    sizes = split_sizes(count.n_forget + n_keep, int(count.hp["batch_size"]))
    epoch = count.da_epoch() + fb(sum(sizes)) + fo(2 * sum(sizes)) + count.da_sampled().times(len(sizes))
    epochs = int(count.hp["epochs"])
    return epoch.times(epochs), epochs * len(sizes)
