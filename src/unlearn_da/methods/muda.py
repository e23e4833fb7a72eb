"""MUDA (Seo, Kim and Han, WACV 2025), as specified in docs/muda.md.

Forget step: a forget batch paired with a retain batch;
    loss = lambda_da * L_DA(Z_f, Z_r) + forget_weight * forget_loss(forget batch)
(L_DA in methods/da.py), with the retain eigenspace of the current model (``unlearn.da``:
form, energy, centring, detached basis; the basis source is MUDA's own ``basis_source``,
part of its tuning grid). ``forget_loss``: ``none`` | ``neg_ce`` (gradient ascent,
switched off for good once the forget CE exceeds ``forget_loss_cap``) | ``random_label``
(CE towards random wrong labels).
Recover step: a retain batch;
    loss = CE + lambda_sd * T^2 * KL(softmax(teacher / T) || softmax(student / T)),
the teacher being the frozen original model (``sd_target: outputs``) or, (ours), the
original head on the current features (``sd_target: head``).
Alternation: ``forget_steps`` forget steps, then ``recover_steps`` recover steps,
repeated over one pass of D_f per epoch. ``alternate: false`` sums all losses in one
step (the "without alternation" ablation); ``lambda_da: 0`` and ``lambda_sd: 0`` are
the other two ablations.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .base import UnlearnContext, distill_kl
from .da import DARegularizer
from .rl import random_wrong_labels


class ForgetLoss:
    """The optional extra forgetting term on the forget batch."""

    def __init__(self, kind: str, cap: float, num_classes: int, generator: torch.Generator):
        self.kind, self.cap, self.num_classes, self.generator = kind, cap, num_classes, generator
        self.stopped: torch.Tensor | None = None  # 0-d bool on the device once a neg_ce step ran

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor | float, dict]:
        if self.kind == "none":
            return 0.0, {}
        if self.kind == "random_label":
            loss = F.cross_entropy(logits, random_wrong_labels(y, self.num_classes, self.generator))
            return loss, {"forget_rl": loss}
        ce = F.cross_entropy(logits, y)
        # the stop flag stays a device tensor: reading the loss on the host would make every
        # forget step wait for the GPU; once the cap is exceeded the term is multiplied by 0 for good
        over = ce.detach() > self.cap
        self.stopped = over if self.stopped is None else self.stopped | over
        return -ce * (~self.stopped).to(ce.dtype), {"forget_ce": ce}


def recover_loss(ctx: UnlearnContext, z: torch.Tensor, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                 hp: dict[str, Any]) -> tuple[torch.Tensor, dict]:
    ce = F.cross_entropy(logits, y)
    lambda_sd = float(hp["lambda_sd"])
    if lambda_sd == 0:
        return ce, {"retain_ce": ce}
    with torch.no_grad():
        teacher = ctx.original.head(z) if hp["sd_target"] == "head" else ctx.original(x)
    sd = distill_kl(logits, teacher, float(hp["T"]))
    return ce + lambda_sd * sd, {"retain_ce": ce, "sd": sd}


def run(ctx: UnlearnContext, hp: dict[str, Any]) -> None:
    # unlearn.da (form, energy, centring, ...) with MUDA's own weight and basis source (tuned)
    da = DARegularizer({**ctx.da_config, "lambda_da": hp["lambda_da"], "basis_source": hp["basis_source"]})
    forget_loss = ForgetLoss(hp["forget_loss"], float(hp["forget_loss_cap"]), ctx.num_classes, ctx.generator)
    weight_f = float(hp["forget_weight"])
    bs, epochs = int(hp["batch_size"]), int(hp["epochs"])
    f_steps, r_steps, alternate = int(hp["forget_steps"]), int(hp["recover_steps"]), bool(hp["alternate"])
    forget_batches = ctx.steps_per_epoch("forget", bs)
    cycles = -(-forget_batches // f_steps)
    per_epoch = forget_batches + (cycles * r_steps if alternate else 0)
    trainer = ctx.trainer(hp, epochs * per_epoch, per_epoch)
    for _ in range(epochs):
        ctx.model.train()
        da.on_epoch_start(ctx.model, ctx)
        forget_iter = iter(ctx.epoch("forget", bs))
        while True:
            ctx.recorder.phase = "forget"
            done = 0
            for _ in range(f_steps):
                batch = next(forget_iter, None)
                if batch is None:
                    break
                xf, yf = batch
                xr, yr = ctx.sample("retain", bs)
                with ctx.autocast():
                    z = ctx.model.features(torch.cat([xf, xr]))
                    logits = ctx.model.head(z)
                    zf, zr = z[: len(xf)], z[len(xf):]
                    l_da = da.loss(zf, zr)
                    l_f, f_terms = forget_loss(logits[: len(xf)], yf)
                    loss = da.weight * l_da + weight_f * l_f
                    terms = {"l_da": l_da, **f_terms}
                    if not alternate:
                        l_r, r_terms = recover_loss(ctx, zr, logits[len(xf):], xr, yr, hp)
                        loss, terms = loss + l_r, {**terms, **r_terms}
                trainer.step(loss, terms)
                done += 1
            if done == 0:
                break
            if alternate:
                ctx.recorder.phase = "recover"
                for _ in range(r_steps):
                    xr, yr = ctx.sample("retain", bs)
                    with ctx.autocast():
                        z = ctx.model.features(xr)
                        l_r, r_terms = recover_loss(ctx, z, ctx.model.head(z), xr, yr, hp)
                    trainer.step(l_r, r_terms)
            if done < f_steps:
                break


def images(count):
    """Forget steps (a forget batch with a sampled retain batch, one forward) and recover steps (a
    sampled retain batch), the teacher without grad unless ``lambda_sd`` is 0 or it is the original's
    head on the student's features; the epoch basis (``basis_source: epoch``) without grad."""
    from .counting import fb, fo, shuffled_sizes, Images

    hp = count.hp
    bs = int(hp["batch_size"])
    f_steps, r_steps, alternate = int(hp["forget_steps"]), int(hp["recover_steps"]), bool(hp["alternate"])
    forget = shuffled_sizes(count.n_forget, bs)
    retain_batch = min(bs, count.n_retain)
    teacher = fo(retain_batch) if float(hp["lambda_sd"]) != 0 and hp["sd_target"] != "head" else Images()
    subset = int((count.da_config or {}).get("epoch_subset", 1024))
    basis = fo(min(subset, count.n_retain)) if hp["basis_source"] == "epoch" else Images()
    epoch = basis + fb(sum(forget) + len(forget) * retain_batch)
    steps = len(forget)
    if alternate:
        recovers = -(-len(forget) // f_steps) * r_steps
        epoch += (fb(retain_batch) + teacher).times(recovers)
        steps += recovers
    else:
        epoch += teacher.times(len(forget))
    epochs = int(hp["epochs"])
    return epoch.times(epochs), epochs * steps
