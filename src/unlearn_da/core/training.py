"""The one training loop: tensors on the device, no DataLoader workers, SGD (or Adam) + schedule.

Used by the original model, the retrained oracle and every fine-tuning-style
unlearning method (through ``loss_fn`` and the Trainer's hooks).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from typing import Any
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .models import Classifier
from .runtime import autocast, exact_float32, to_device

try:  # progress bars where tqdm is installed (it is a dependency here; GPU machines may lack it)
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover - exercised by `make gpu-check` on bare machines
    tqdm = None

LossFn = Callable[[Classifier, torch.Tensor, torch.Tensor], "tuple[torch.Tensor, dict[str, torch.Tensor]]"]


class Preprocessor:
    """uint8 images -> normalised float tensors; random crop/flip on the device when training."""

    def __init__(
        self,
        mean: np.ndarray,
        std: np.ndarray,
        scale: float,
        device: torch.device,
        augment: str = "none",
        padding: int = 0,
        channels_last: bool = False,
        crop_fill: str = "black",
    ):
        shape = (1, -1, 1, 1)
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device).view(shape)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device).view(shape)
        self.scale = float(scale)
        self.device = device
        self.augment = augment
        self.padding = int(padding)
        self.channels_last = channels_last
        if crop_fill not in ("black", "mean"):
            raise ValueError(f"crop_fill {crop_fill!r} is not known; allowed: black, mean")
        self.crop_fill = crop_fill

    def __call__(self, x: torch.Tensor, train: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        augment = train and self.augment != "none"
        if augment and self.crop_fill == "black":
            # torchvision's RandomCrop(32, padding=4) pads black pixels before the model's
            # normalisation (SalUn, Classification/dataset.py; NormalizeByChannelMeanStd in the
            # model): crop the raw scale, then normalise; interior pixels get the same bits
            out = (self._augment(x.float() / self.scale, generator) - self.mean) / self.std
        else:
            out = (x.float() / self.scale - self.mean) / self.std
            if augment:  # crop_fill "mean": pads zeros after normalising, i.e. the mean colour
                out = self._augment(out, generator)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def _augment(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        b, _, h, w = x.shape
        p = self.padding
        if p > 0 and self.augment in ("crop", "crop_flip"):
            padded = F.pad(x, (p, p, p, p))
            offs = to_device(torch.randint(0, 2 * p + 1, (b, 2), generator=generator), x.device)
            rows = offs[:, 0, None] + torch.arange(h, device=x.device)[None, :]  # b x h
            cols = offs[:, 1, None] + torch.arange(w, device=x.device)[None, :]  # b x w
            bi = torch.arange(b, device=x.device)[:, None, None, None]
            ci = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
            x = padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]
        if self.augment == "crop_flip":
            flip = to_device(torch.rand(b, generator=generator) < 0.5, x.device)[:, None, None, None]
            x = torch.where(flip, x.flip(3), x)
        return x


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, min_batch: int = 2) -> Iterator[torch.Tensor]:
    """Yield CPU index tensors of a fresh permutation; a trailing batch below ``min_batch`` is dropped."""
    perm = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        idx = perm[start : start + batch_size]
        if len(idx) >= min(min_batch, n):
            yield idx


def batches_per_epoch(n: int, batch_size: int, min_batch: int = 2) -> int:
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= min(min_batch, n) else 0)


def lr_factor(step: int, total: int, hp: dict[str, Any], steps_per_epoch: int) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based)."""
    warmup = int(round(float(hp.get("warmup_epochs", 0)) * steps_per_epoch))
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    schedule = hp.get("schedule", "constant")
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if schedule == "multistep":
        # torch's MultiStepLR stepped once per epoch (SalUn, Classification/main_train.py:
        # MultiStepLR(milestones=decreasing_lr), scheduler.step() after each epoch): every step of
        # epoch e (from 0) runs at gamma ** (number of milestones <= e)
        epoch = step // max(1, steps_per_epoch)
        passed = sum(epoch >= int(m) for m in hp.get("milestones", []))
        return float(hp.get("gamma", 0.1)) ** passed
    return 1.0


OPTIMIZERS = ("sgd", "adam")


def build_optimizer(params: Any, hp: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimiser ``hp['optimizer']`` names (default ``sgd``).

    ``sgd``: torch's SGD with ``momentum``, ``weight_decay`` (coupled L2) and ``nesterov``, as in the
    SalUn / Unlearn-Sparse / SCRUB code. ``adam``: torch's Adam with its default betas and ``weight_decay``
    (coupled L2, as ``torch.optim.Adam(model.parameters(), lr=lr)`` in Bad Teacher's ``unlearn.py``);
    ``momentum`` and ``nesterov`` are SGD's and are not used by Adam.

    Adam runs torch's fused kernel (``fused=True``) on the CPU and on CUDA: the same update, but its
    square root is the CPU's exact instruction. The default for-loop Adam takes ``torch.sqrt``, which
    MKL's vector library computes to within an ulp by a code path chosen by the CPU model, even with
    ``MKL_CBWR=COMPATIBLE``: an Intel Xeon, an AMD EPYC and an emulated Haswell gave three different
    Bad Teacher checkpoints from one seed (tests/test_cpu_models.py).
    """
    name = str(hp.get("optimizer", "sgd"))
    lr, weight_decay = float(hp["lr"]), float(hp.get("weight_decay", 0.0))
    if name == "sgd":
        momentum = float(hp.get("momentum", 0.0))
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               nesterov=bool(hp.get("nesterov", False)) and momentum > 0)
    if name == "adam":
        params = list(params)
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=_fused_adam_runs(params))
    raise ValueError(f"optimizer {name!r} is not known; allowed: {', '.join(OPTIMIZERS)}")


FUSED_ADAM_DEVICES = ("cpu", "cuda")


def _fused_adam_runs(params: list[Any]) -> bool | None:
    """True where torch's fused Adam exists for every parameter's device; None (torch's default) else."""
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    return True if tensors and all(t.device.type in FUSED_ADAM_DEVICES for t in tensors) else None


class Trainer:
    """The optimiser ``hp['optimizer']`` names (SGD by default) + per-step schedule + hooks;
    ``step(loss)`` does one update.

    Hooks: ``before_step(trainer)`` runs between backward and the optimiser step
    (gradient masks), ``after_step(trainer)`` after it (weight restores),
    ``on_step(step, terms)`` records the detached loss terms.
    """

    def __init__(
        self,
        model: Classifier,
        hp: dict[str, Any],
        total_steps: int,
        steps_per_epoch: int,
        params: list[torch.nn.Parameter] | None = None,
        before_step: Callable[[Trainer], None] | None = None,
        after_step: Callable[[Trainer], None] | None = None,
        on_step: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
    ):
        self.model = model
        self.opt = build_optimizer(params if params is not None else model.parameters(), hp)
        total = max(1, total_steps)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(s, total, hp, max(1, steps_per_epoch))
        )
        self.before_step, self.after_step, self.on_step = before_step, after_step, on_step
        self.steps = 0

    def step(self, loss: torch.Tensor, terms: dict[str, torch.Tensor] | None = None) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.before_step is not None:
            self.before_step(self)
        self.opt.step()
        self.sched.step()
        self.steps += 1
        if self.after_step is not None:
            self.after_step(self)
        if self.on_step is not None:
            self.on_step(self.steps, {k: v.detach() for k, v in (terms or {"loss": loss}).items()})

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]


def cross_entropy_loss(label_smoothing: float = 0.0) -> LossFn:
    def loss_fn(model: Classifier, xb: torch.Tensor, yb: torch.Tensor):
        loss = F.cross_entropy(model(xb), yb, label_smoothing=label_smoothing)
        return loss, {"ce": loss}

    return loss_fn


def fit(
    model: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    prep: Preprocessor,
    hp: dict[str, Any],
    *,
    generator: torch.Generator,
    amp: bool = False,
    loss_fn: LossFn | None = None,
    augment: bool = True,
    desc: str = "train",
    log: Callable[[str], None] | None = None,
    **trainer_hooks: Any,
) -> dict[str, Any]:
    """Train ``model`` on (x, y) for ``hp['epochs']`` epochs; return a per-epoch history."""
    device = x.device
    n, bs, epochs = len(y), int(hp["batch_size"]), int(hp["epochs"])
    spe = batches_per_epoch(n, bs)
    trainer = Trainer(model, hp, epochs * spe, spe, **trainer_hooks)
    loss_fn = loss_fn or cross_entropy_loss(float(hp.get("label_smoothing", 0.0)))
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    history = []
    bar = tqdm(range(epochs), desc=desc, disable=None, leave=False) if tqdm is not None else range(epochs)
    for epoch in bar:
        model.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        seen = 0
        for idx in shuffled_batches(n, bs, generator):
            idx = to_device(idx, device)
            xb = prep(x[idx], train=augment, generator=generator)
            with autocast(device, amp):
                loss, terms = loss_fn(model, xb, y[idx])
            trainer.step(loss, terms)
            loss_sum += loss.detach().float() * len(idx)
            seen += len(idx)
        mean_loss = float(loss_sum) / max(1, seen)
        history.append({"epoch": epoch + 1, "loss": mean_loss, "lr": trainer.lr, "seconds": time.perf_counter() - t0})
        if tqdm is not None:
            bar.set_postfix(loss=f"{mean_loss:.4f}")
        log(f"{desc}: epoch {epoch + 1}/{epochs} loss {mean_loss:.4f} lr {trainer.lr:.4g} "
            f"({history[-1]['seconds']:.2f}s)")
        _fault_injection(epoch + 1)
    return {"history": history, "steps": trainer.steps}


def _fault_injection(epochs_done: int) -> None:
    """Test hook: UNLEARN_DA_TEST_KILL_AFTER_EPOCH=N kills this job's whole process group
    (Snakemake included) with SIGKILL after N epochs, like a power cut in mid-training."""
    target = os.environ.get("UNLEARN_DA_TEST_KILL_AFTER_EPOCH")
    if target and epochs_done >= int(target):
        os.killpg(os.getpgid(0), signal.SIGKILL)


@torch.no_grad()
def predict(
    model: Classifier, x: torch.Tensor, prep: Preprocessor, batch_size: int = 1024, amp: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features and logits (float32) of ``x`` in eval mode, no augmentation.

    ``amp``: computed under bf16 autocast (quick accuracy probes during training); without it,
    in true float32 whatever autocast or TF32 state the caller is in (what the metrics read).
    """
    model.eval()
    feats, logits = [], []
    for start in range(0, len(x), batch_size):
        xb = prep(x[start : start + batch_size])
        with autocast(x.device, True) if amp else exact_float32(x.device):
            z = model.features(xb)
            out = model.head(z)
        feats.append(z.float())
        logits.append(out.float())
    if not feats:
        dim = model.feature_dim
        return torch.zeros(0, dim, device=x.device), torch.zeros(0, model.fc.out_features, device=x.device)
    return torch.cat(feats), torch.cat(logits)


@torch.no_grad()
def accuracy(model: Classifier, x: torch.Tensor, y: torch.Tensor, prep: Preprocessor, batch_size: int = 1024, amp: bool = False) -> float:
    """Top-1 accuracy in percent (eval mode)."""
    if len(y) == 0:
        return float("nan")
    _, logits = predict(model, x, prep, batch_size, amp)
    return 100.0 * float((logits.argmax(1) == y).float().mean())
