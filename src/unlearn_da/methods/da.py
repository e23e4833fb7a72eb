"""The DA regulariser: L_DA = 1 - DA(Z_f, Z_r), a plug-in for MUDA and every ``<method>+da``.

PAPER.md, "MUDA: the unlearning objective": the retain eigenspace comes from
the current model with eigenvectors detached (``detach_basis``); its source is
``basis_source``: ``batch`` (the paired retain mini-batch; rank <= batch size,
so a batch smaller than the feature dimension gives a rank-deficient basis),
``ema`` (a running estimate of C_r across steps) or ``epoch`` (recomputed on a
retain subset at each epoch start).
"""

from __future__ import annotations

from typing import Any

import torch

from ..metrics.alignment import eigenspace_of, projected_share, second_moment
from ..models import Classifier


def _full_precision(z: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 features (autocast) -> float32; float32 and float64 stay as they are."""
    return z if z.dtype in (torch.float32, torch.float64) else z.float()


class DARegularizer:
    def __init__(self, cfg: dict[str, Any]):
        self.weight = float(cfg["lambda_da"])
        self.energy = float(cfg["energy"])
        self.k = cfg.get("k")
        self.center = bool(cfg["center"])
        self.detach_basis = bool(cfg["detach_basis"])
        self.source = cfg["basis_source"]
        self.ema_decay = float(cfg.get("ema_decay", 0.9))
        self.epoch_subset = int(cfg.get("epoch_subset", 1024))
        self.batch_size = int(cfg["batch_size"])
        self._cov: torch.Tensor | None = None
        self._mean: torch.Tensor | None = None

    # ---- basis ----------------------------------------------------------------------
    @torch.no_grad()
    def on_epoch_start(self, model: Classifier, ctx: Any) -> None:
        """For ``basis_source: epoch``: second moment of a retain subset under the current model."""
        if self.source != "epoch":
            return
        was_training = model.training
        model.eval()
        n = len(ctx.y_retain)
        idx = torch.randperm(n, generator=ctx.generator)[: min(self.epoch_subset, n)].to(ctx.device)
        with ctx.autocast():
            z = _full_precision(model.features(ctx.prep(ctx.x_retain[idx])))
        self._cov, self._mean = second_moment(z, self.center)
        model.train(was_training)

    def _space(self, z_retain: torch.Tensor):
        z = _full_precision(z_retain)
        if self.detach_basis:
            z = z.detach()
        if self.source == "batch" or (self.source == "epoch" and self._cov is None):
            cov, mean = second_moment(z, self.center)
        elif self.source == "ema":
            batch_cov, batch_mean = second_moment(z.detach(), self.center)
            if self._cov is None:
                self._cov, self._mean = batch_cov, batch_mean
            else:
                d = self.ema_decay
                self._cov = d * self._cov + (1 - d) * batch_cov
                self._mean = d * self._mean + (1 - d) * batch_mean
            cov, mean = self._cov, self._mean
        else:  # epoch
            cov, mean = self._cov, self._mean
        return eigenspace_of(cov, mean, energy=self.energy, k=self.k)

    # ---- loss -----------------------------------------------------------------------
    def loss(self, z_forget: torch.Tensor, z_retain: torch.Tensor) -> torch.Tensor:
        """1 - DA(Z_f, Z_r) for one pair of feature batches (differentiable in Z_f, and in Z_r unless detached)."""
        space = self._space(z_retain)
        return 1.0 - projected_share(_full_precision(z_forget), space, eps=1e-12)

    def penalty(self, z_forget: torch.Tensor, z_retain: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        l_da = self.loss(z_forget, z_retain)
        return self.weight * l_da, {"l_da": l_da}

    def penalty_on_sampled(self, model: Classifier, ctx: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Draw a paired forget/retain batch, compute their features, return lambda * L_DA."""
        xf, _ = ctx.sample("forget", self.batch_size)
        xr, _ = ctx.sample("retain", self.batch_size)
        z = model.features(torch.cat([xf, xr]))
        return self.penalty(z[: len(xf)], z[len(xf):])
