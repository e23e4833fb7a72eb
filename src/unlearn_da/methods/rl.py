"""RL: train on D_f with random labels together with D_r (Golatkar et al.'s baseline), following SalUn
(OPTML-Group/Unlearn-Saliency, ``Classification/unlearn/RL.py``).

Labels are drawn uniformly over all classes, so about 1/C of the forget samples keep their true label
(``torch.randint(0, num_classes)`` in the reference); they are redrawn every epoch.
``random_labels: wrong_only`` (ours, off by default) draws only among the other classes.
``mode: sequential`` passes over relabelled D_f, then over D_r (the reference's CIFAR-10/SVHN loop);
``mode: joint`` shuffles relabelled D_f into D_r each epoch (its CIFAR-100/TinyImageNet loop).
"""

from __future__ import annotations

from typing import Any

import torch

from .base import UnlearnContext, ce_logits
from ..core.runtime import to_device


LABEL_RULES = ("uniform", "wrong_only")


def random_wrong_labels(y: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform over the classes other than ``y``."""
    shift = to_device(torch.randint(1, num_classes, (len(y),), generator=generator), y.device)
    return (y + shift) % num_classes


def random_labels(y: torch.Tensor, num_classes: int, generator: torch.Generator,
                  rule: str = "uniform") -> torch.Tensor:
    """``uniform``: over all classes (the reference); ``wrong_only``: over the classes other than ``y``."""
    if rule == "uniform":
        return to_device(torch.randint(0, num_classes, (len(y),), generator=generator), y.device)
    if rule == "wrong_only":
        return random_wrong_labels(y, num_classes, generator)
    raise ValueError(f"random_labels {rule!r} is not known; allowed: {', '.join(LABEL_RULES)}")


def run(ctx: UnlearnContext, hp: dict[str, Any], **trainer_hooks: Any) -> None:
    bs, epochs = int(hp["batch_size"]), int(hp["epochs"])
    mode = hp.get("mode", "joint")
    rule = str(hp.get("random_labels", "uniform"))
    n = len(ctx.y_forget) + len(ctx.y_retain)
    spe = -(-n // bs)
    trainer = ctx.trainer(hp, epochs * spe, spe, **trainer_hooks)
    for _ in range(epochs):
        ctx.model.train()
        ctx.start_epoch()  # the DA term's epoch basis (a no-op without +da)
        y_rand = random_labels(ctx.y_forget, ctx.num_classes, ctx.generator, rule)
        if mode == "joint":
            x = torch.cat([ctx.x_forget, ctx.x_retain])
            y = torch.cat([y_rand, ctx.y_retain])
            parts = [(x, y)]
        else:
            parts = [(ctx.x_forget, y_rand), (ctx.x_retain, ctx.y_retain)]
        for x, y in parts:
            for idx in torch.randperm(len(y), generator=ctx.generator).split(bs):
                if len(idx) < 2:
                    continue
                idx = to_device(idx, ctx.device)
                xb = ctx.prep(x[idx], train=True, generator=ctx.generator)
                with ctx.autocast():
                    loss, terms = ce_logits(ctx.model(xb), y[idx], ctx.model)
                    penalty, da_terms = ctx.da_sampled()  # +da: a fresh forget/retain pair
                trainer.step(loss + penalty, {**terms, **da_terms})


def images(count):
    """Random labels: joint (one shuffled pass over D_f + D_r) or sequential (D_f, then D_r)."""
    from .counting import fb, split_sizes

    bs = int(count.hp["batch_size"])
    parts = ([count.n_forget + count.n_retain] if count.hp.get("mode", "joint") == "joint" else [count.n_forget, count.n_retain])
    sizes = [s for n in parts for s in split_sizes(n, bs)]
    epoch = count.da_epoch() + fb(sum(sizes)) + count.da_sampled().times(len(sizes))
    epochs = int(count.hp["epochs"])
    return epoch.times(epochs), epochs * len(sizes)
