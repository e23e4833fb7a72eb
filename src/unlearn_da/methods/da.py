"""The DA regulariser: L_DA = 1 - DA_frob^2 (``form: frobenius``, default) or 1 - DA (``form: energy``),
a plug-in for MUDA and every ``<method>+da``.

docs/muda.md ("Dimensional alignment", "The objective"): the retain
eigenspace comes from the current model with eigenvectors detached (``detach_basis``); its
source is ``basis_source``:
- ``batch``: the paired retain mini-batch. Its second moment has rank <= batch size, so a
  batch smaller than the feature dimension (64 vs ResNet-18's 512) gives a rank-deficient
  basis: every direction the batch does not span is "outside" the retain eigenspace, and
  ``energy`` picks k among at most batch-size non-zero eigenvalues;
- ``ema``: a running estimate of C_r across steps (full rank after enough steps);
- ``epoch``: recomputed on a retain subset (``epoch_subset`` samples, eval-mode features) at
  each epoch start; every method calls ``ctx.start_epoch()`` there, and a missing call is an
  error rather than a silent fall-back to ``batch``.

Every DA computation (second moment, eigen-decomposition, projection) runs in float32 with
autocast off, whatever the caller's autocast state (``runtime.full_precision``). Paired
batches are drawn with the context's own DA generator, so drawing them does not change the
data order of the method the regulariser is added to.
"""

from __future__ import annotations

from typing import Any

import torch

from ..metrics.da import FORMS, Eigenspace, alignment_share, eigenspace_of, retain_eigenspace, second_moment
from ..core.models import Classifier
from ..core.runtime import float32, full_precision, to_device
from .base import batch_stat_features


class DARegularizer:
    def __init__(self, cfg: dict[str, Any]):
        self.weight = float(cfg["lambda_da"])
        self.form = str(cfg["form"])
        if self.form not in FORMS:
            raise ValueError(f"unlearn.da.form must be one of {', '.join(FORMS)}, got {self.form!r}")
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
        self._epoch_space: Eigenspace | None = None
        self.epoch_bases = 0  # how many epoch bases were computed (tests check every method refreshes it)
        self.decompositions = 0  # eigen-decompositions made (an epoch basis: one per epoch, not per step)

    # ---- basis ----------------------------------------------------------------------
    @torch.no_grad()
    def on_epoch_start(self, model: Classifier, ctx: Any) -> None:
        """For ``basis_source: epoch``: second moment of a retain subset under the current model.

        Eval mode (running BatchNorm statistics, nothing updated); the subset is drawn with
        ``ctx.da_generator``, never with the method's generator.
        """
        if self.source != "epoch":
            return
        was_training = model.training
        model.eval()
        n = len(ctx.y_retain)
        idx = to_device(torch.randperm(n, generator=ctx.da_generator)[: min(self.epoch_subset, n)], ctx.device)
        with ctx.autocast():
            z = model.features(ctx.prep(ctx.x_retain[idx]))
        with full_precision(z.device):
            self._cov, self._mean = second_moment(float32(z), self.center)
            self._epoch_space = self._decompose(self._cov, self._mean)
        model.train(was_training)
        self.epoch_bases += 1

    def _decompose(self, cov: torch.Tensor, mean: torch.Tensor) -> Eigenspace:
        self.decompositions += 1
        return eigenspace_of(cov, mean, energy=self.energy, k=self.k)

    def _space(self, z_retain: torch.Tensor) -> Eigenspace:
        """The step's retain eigenspace: from the batch (the smaller of its Gram matrix and its second
        moment is decomposed), the running second moment (ema), or the epoch's, decomposed once."""
        z = float32(z_retain)
        if self.detach_basis:
            z = z.detach()
        if self.source == "batch":
            self.decompositions += 1
            return retain_eigenspace(z, energy=self.energy, k=self.k, center=self.center)
        if self.source == "ema":
            batch_cov, batch_mean = second_moment(z.detach(), self.center)
            if self._cov is None:
                # the first step's running moment is this one batch's (rank <= batch size): decomposed
                # through the batch's Gram matrix, as a ``batch`` basis is (a float32 eigh of a
                # rank-deficient d x d moment can return NaN)
                self._cov, self._mean = batch_cov, batch_mean
                self.decompositions += 1
                return retain_eigenspace(z.detach(), energy=self.energy, k=self.k, center=self.center)
            d = self.ema_decay
            self._cov = d * self._cov + (1 - d) * batch_cov
            self._mean = d * self._mean + (1 - d) * batch_mean
            return self._decompose(self._cov, self._mean)
        if self._epoch_space is None:  # epoch
            raise RuntimeError("basis_source 'epoch': no epoch basis yet; the method must call "
                               "ctx.start_epoch() at the start of every epoch")
        return self._epoch_space

    # ---- loss -----------------------------------------------------------------------
    def loss(self, z_forget: torch.Tensor, z_retain: torch.Tensor) -> torch.Tensor:
        """1 - DA (energy) or 1 - DA_frob^2 (frobenius) for one pair of feature batches
        (differentiable in Z_f, and in Z_r unless detached); float32, autocast off."""
        with full_precision(z_forget.device):
            space = self._space(z_retain)
            return 1.0 - alignment_share(float32(z_forget), space, self.form, eps=1e-12)

    def penalty(self, z_forget: torch.Tensor, z_retain: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        l_da = self.loss(z_forget, z_retain)
        return self.weight * l_da, {"l_da": l_da}

    def penalty_on_sampled(self, model: Classifier, ctx: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Draw a paired forget/retain batch (``ctx.da_generator``), return lambda * L_DA on their features.

        One forward of the pair with BatchNorm on the pair's batch statistics and no running
        statistic updated (``batch_stat_features``): the base method's buffers stay its own.
        """
        xf, _ = ctx.sample("forget", self.batch_size, generator=ctx.da_generator)
        xr, _ = ctx.sample("retain", self.batch_size, generator=ctx.da_generator)
        z = batch_stat_features(model, torch.cat([xf, xr]))
        return self.penalty(z[: len(xf)], z[len(xf):])
