"""How a method declares what one of its jobs pushes through the model, without running it.

Every method module (built-in, or a user's file of ``unlearn.external``) may define ``images(count)``
beside its ``run``: given a ``Count`` (the job's hyper-parameters, the forget and retain set sizes, the
DA settings) it returns the images its passes push through models, by kind (``Images``), and the
optimiser steps it takes (which set how many probe evaluations the job adds). ``make bench``,
``make gpu-check`` and the CIFAR cost read these declarations (``tools/workload.py``); every job
records what it really pushed (its sidecar's ``images``), and tests/test_workload.py checks the two
agree for every method, a user's example included.

The ``Count`` helpers mirror the parts of ``UnlearnContext`` a method calls: ``fit`` for ``ctx.fit``,
``da_paired``/``da_sampled``/``da_epoch`` for the DA term, ``shuffled_sizes`` for ``ctx.epoch``'s
batches. No torch import: the counts are read where no model runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Images:
    """Images through models, by kind (the sidecars' ``images``): ``forward_backward`` passes record an
    autograd graph (training steps, DA pairs, gradients), ``forward_only`` passes do not (probes, teachers)."""

    forward_backward: int = 0
    forward_only: int = 0

    def __add__(self, other: Images) -> Images:
        return Images(self.forward_backward + other.forward_backward, self.forward_only + other.forward_only)

    def times(self, k: int) -> Images:
        return Images(k * self.forward_backward, k * self.forward_only)

    def as_dict(self) -> dict[str, int]:
        return {"forward_backward": self.forward_backward, "forward_only": self.forward_only}


def fb(n: int) -> Images:
    """``n`` images through a pass that records a graph."""
    return Images(forward_backward=int(n))


def fo(n: int) -> Images:
    """``n`` images through a pass that records none."""
    return Images(forward_only=int(n))


def shuffled_sizes(n: int, batch_size: int, min_batch: int = 2) -> list[int]:
    """Batch sizes of ``training.shuffled_batches`` (``ctx.epoch``, ``ctx.fit``): a trailing batch below
    ``min(min_batch, n)`` is dropped."""
    sizes = [min(batch_size, n - start) for start in range(0, n, batch_size)]
    return [s for s in sizes if s >= min(min_batch, n)]


def split_sizes(n: int, batch_size: int) -> list[int]:
    """Batch sizes of ``torch.randperm(n).split(batch_size)`` with batches below 2 skipped (RL, Bad Teacher)."""
    return [s for s in (min(batch_size, n - start) for start in range(0, n, batch_size)) if s >= 2]


def cycled_sum(sizes: list[int], k: int) -> int:
    """Sum of the first ``k`` items of ``itertools.cycle(sizes)`` (NegGrad+'s forget batches)."""
    full, rest = divmod(k, len(sizes))
    return full * sum(sizes) + sum(sizes[:rest])


@dataclass(frozen=True)
class Count:
    """What an unlearning job's count depends on: its hyper-parameters, the split and the DA settings."""

    hp: dict[str, Any]
    n_forget: int
    n_retain: int
    da: dict[str, Any] | None = None  # the "+da" regulariser's settings (None without it)
    da_config: dict[str, Any] | None = None  # the unlearn.da block (MUDA builds its own regulariser)

    forward_backward = staticmethod(fb)
    forward_only = staticmethod(fo)
    shuffled_sizes = staticmethod(shuffled_sizes)

    def size(self, which: str) -> int:
        return self.n_forget if which == "forget" else self.n_retain

    # the DA plug-in (methods/base.py, methods/da.py); all zero without "+da"
    def da_epoch(self) -> Images:
        """``ctx.start_epoch``: the epoch basis from a retain subset (no grad)."""
        if self.da is None or self.da["basis_source"] != "epoch":
            return Images()
        return fo(min(int(self.da.get("epoch_subset", 1024)), self.n_retain))

    def da_paired(self, batch: int, which: str) -> Images:
        """``ctx.da_paired``: the method's batch with a batch drawn from the other set, in one forward."""
        if self.da is None:
            return Images()
        other = self.n_retain if which == "forget" else self.n_forget
        return fb(batch + min(int(self.da["batch_size"]), other))

    def da_sampled(self) -> Images:
        """``ctx.da_sampled``: a fresh forget and retain batch, in one forward."""
        if self.da is None:
            return Images()
        bs = int(self.da["batch_size"])
        return fb(min(bs, self.n_forget) + min(bs, self.n_retain))

    def fit(self, which: str) -> tuple[Images, int]:
        """``ctx.fit(which, hp, ...)``: epochs over one set, each batch paired for "+da"; (images, steps)."""
        sizes = shuffled_sizes(self.size(which), int(self.hp["batch_size"]))
        epoch = self.da_epoch() + fb(sum(sizes))
        for s in sizes:
            epoch += self.da_paired(s, which)
        epochs = int(self.hp["epochs"])
        return epoch.times(epochs), epochs * len(sizes)
