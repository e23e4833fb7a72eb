"""NegGrad+: alpha * CE(D_r) - (1 - alpha) * CE(D_f) per paired batch, following SCRUB
(meghdadk/SCRUB, ``thirdparty/repdistiller/helper/loops.py`` ``train_negrad`` as called by
``negative_grad`` in its notebooks, e.g. ``MIA_experiments.ipynb``).

One epoch is one pass over D_r; each retain batch is paired with the next batch of a shuffled pass over
D_f, cycled (``zip(train_loader, cycle(delete_loader))``). The retain and the forget batch go through
the model in two separate forward passes (train mode), so BatchNorm normalises and tracks each set on its
own, as ``output = model(input); del_output = model(del_input)`` does. The reference optimiser is plain
SGD (``torch.optim.SGD(model.parameters(), lr=lr, weight_decay=0.0)``: no momentum, no weight decay).
The two batch sizes are separate: ``batch_size`` for D_r, ``forget_batch_size`` for D_f
(``MIA_experiments.ipynb``: ``args.retain_bs = 32``, ``args.forget_bs = 16``). No augmentation by default
(``augment_data: false``: the notebook builds its loaders with ``get_loaders(..., augment=False)``).
As ``neggrad_plus+da``, the DA term is taken on a forget/retain pair of ``unlearn.da.batch_size`` drawn
for it (``UnlearnContext.da_sampled``), as in every ``+da``, not on the method's own batches (16 and 32 in
the reference's setting: a retain basis of rank 32 at most against ResNet-18's 512 features).
The eval-mode loop with an l2 pull towards the initial weights of ``small_scale_unlearning.ipynb``
(``run_neggrad_epoch``) is another method and is not implemented.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch.nn.functional as F

from ..core.training import shuffled_batches
from .base import UnlearnContext
from ..core.runtime import to_device


def run(ctx: UnlearnContext, hp: dict[str, Any]) -> None:
    alpha, bs, epochs = float(hp["alpha"]), int(hp["batch_size"]), int(hp["epochs"])
    forget_bs = int(hp.get("forget_batch_size") or bs)
    spe = ctx.steps_per_epoch("retain", bs)
    trainer = ctx.trainer(hp, epochs * spe, spe)
    for _ in range(epochs):
        ctx.model.train()
        ctx.start_epoch()  # the DA term's epoch basis (a no-op without +da)
        forget_batches = itertools.cycle(list(shuffled_batches(len(ctx.y_forget), forget_bs, ctx.generator)))
        for xr, yr in ctx.epoch("retain", bs):
            idx = to_device(next(forget_batches), ctx.device)
            xf = ctx.prep(ctx.x_forget[idx], train=True, generator=ctx.generator)
            yf = ctx.y_forget[idx]
            with ctx.autocast():
                zr = ctx.model.features(xr)
                ce_r = F.cross_entropy(ctx.model.head(zr), yr)
                zf = ctx.model.features(xf)
                ce_f = F.cross_entropy(ctx.model.head(zf), yf)
                penalty, da_terms = ctx.da_sampled()  # +da: paired batches of da.batch_size, as every +da
                loss = alpha * ce_r - (1 - alpha) * ce_f + penalty
            trainer.step(loss, {"retain_ce": ce_r, "forget_ce": ce_f, **da_terms})


def images(count):
    """Each retain batch with the next of the cycled forget batches, two forwards; +da: a sampled pair per step."""
    from .counting import fb, shuffled_sizes, cycled_sum

    bs = int(count.hp["batch_size"])
    retain = shuffled_sizes(count.n_retain, bs)
    forget = shuffled_sizes(count.n_forget, int(count.hp.get("forget_batch_size") or bs))
    epoch = count.da_epoch() + fb(sum(retain) + cycled_sum(forget, len(retain))) + count.da_sampled().times(len(retain))
    epochs = int(count.hp["epochs"])
    return epoch.times(epochs), epochs * len(retain)
