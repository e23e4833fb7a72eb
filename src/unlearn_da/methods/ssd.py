"""SSD, Selective Synaptic Dampening (Foster et al. 2024): no training. Diagonal Fisher importances
(squared gradients of CE, averaged over batches) on D_f and on D; where I_f > alpha * I_D, a weight is
multiplied by min(lambda * I_D / I_f, 1).

Reference: if-loops/selective-synaptic-dampening at cdfdc0e. ``src/ssd.py`` ``calc_importance``
(lines 151-180: the sum of each batch's squared gradient, divided by the number of batches) and
``modify_weight`` (lines 182-216); ``ssd_tuning`` runs both in eval mode
(``src/forget_full_class_strategies.py`` lines 646-685, ``src/forget_random_strategies.py`` 311-345).
The two scripts batch D and D_f differently, and the importances are batch means, so the batches set
what alpha selects:

- **class-wise** (``src/forget_full_class_main.py``): ``build_retain_forget_sets``
  (``src/forget_full_class_strategies.py`` lines 35-63) builds D_r class by class in ascending class
  order, each class in data-set order (``get_classwise_ds``, lines 24-32), and D_f as the forgotten class
  in data-set order; ``full_train_dl = DataLoader(ConcatDataset((retain, forget)), batch_size)``
  (lines 152-156), unshuffled, so nearly every batch of D holds one class. Batch ``-b``, default 64
  (line 58): ``class_batch_size``. alpha: ``selection_weighting = 10`` (line 177): ``class_alpha``.
- **random** (``src/forget_random_main.py``): ``torch.utils.data.random_split`` (lines 117-119) returns
  D_f and D_r each in a random order (drawn here from the run's seed); ``forget_train_dl`` at batch 128
  (line 120) and ``full_train_dl`` over D_r then D_f at ``-b``, default 128 (lines 57, 133-136):
  ``batch_size``. alpha: ``selection_weighting = 10`` (line 148): ``alpha``. Backdoor scenarios (a random
  poisoned subset) follow this script.

No augmentation (``src/datasets.py``: ``transform_unlearning`` is ToTensor + Normalize): the batches are
never augmented, whatever ``augment_data`` says. Like the reference, a last batch smaller than the others
counts as a whole batch; the profiles choose batch sizes that leave no small last forget batch
(docs/methods.md, "SSD's batches").
"""

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


def reference_order(ctx: UnlearnContext) -> tuple[torch.Tensor, torch.Tensor]:
    """Index orders of D_r and D_f as the reference script of the scenario kind builds them.

    Class-wise: D_r sorted by class (stable: data-set order within a class), D_f in data-set order.
    Random and backdoor: a random permutation of each (``random_split``), drawn with the run's generator.
    """
    n_r, n_f = len(ctx.y_retain), len(ctx.y_forget)
    if ctx.forgotten_class is not None:
        labels = ctx.y_retain.detach().cpu()
        return torch.sort(labels, stable=True).indices, torch.arange(n_f)
    return torch.randperm(n_r, generator=ctx.generator), torch.randperm(n_f, generator=ctx.generator)


def scenario_values(ctx: UnlearnContext, hp: dict[str, Any]) -> tuple[int, float]:
    """(batch size, alpha) of the scenario kind: the class-wise keys when set, else the random ones."""
    classwise = ctx.forgotten_class is not None
    bs = int(hp["class_batch_size"]) if classwise and hp.get("class_batch_size") else int(hp["batch_size"])
    alpha = float(hp["class_alpha"]) if classwise and hp.get("class_alpha") else float(hp["alpha"])
    return bs, alpha


def run(ctx: UnlearnContext, hp: dict[str, Any]) -> None:
    bs, alpha = scenario_values(ctx, hp)
    order_r, order_f = (o.to(ctx.device) for o in reference_order(ctx))
    xr, yr = ctx.x_retain[order_r], ctx.y_retain[order_r]
    xf, yf = ctx.x_forget[order_f], ctx.y_forget[order_f]
    imp_full = importances(ctx.model, torch.cat([xr, xf]), torch.cat([yr, yf]), ctx.prep, bs)  # D_r, then D_f
    imp_forget = importances(ctx.model, xf, yf, ctx.prep, bs)
    changed = dampen(ctx.model, imp_full, imp_forget, alpha, float(hp["lambda"]))
    total = sum(p.numel() for p in ctx.model.parameters())
    ctx.extra["dampened"] = changed
    last = len(yf) % bs
    ctx.log(f"ssd: alpha {alpha:g}, batch {bs} (D_f: {len(yf) // bs} full batches"
            f"{f' and one of {last}' if last else ''}); dampened {sum(changed.values())} of {total} weights")


def images(count):
    """Importances: gradients over every batch of D (D_r then D_f), then of D_f, none skipped (the batch
    size, ``class_batch_size`` in a class scenario, changes no count); no training step."""
    from .counting import fb

    return fb(count.n_retain + 2 * count.n_forget), 0
