"""The method API: what ``run(ctx, hp)`` of a method may use, by version (docs/method-api.md).

A method's file declares the version it was written for (``API_VERSION``); the package refuses a version
it does not serve (``external.API_VERSIONS``). Within a version nothing listed here is removed or changes
its parameters: tests/test_own_method.py compares every entry with the code, and a change that breaks one
is a new version. What is not listed (``ctx.recorder``, ``ctx.prep``, ``ctx.da_config``, the DA
regulariser's internals) may change in any release.

No torch import: the docs page is generated from this module.
"""

from __future__ import annotations

API_VERSION = 1

#: ``UnlearnContext`` attributes: name -> what it holds
CONTEXT_ATTRIBUTES: dict[str, str] = {
    "model": "the network to change in place (starts as a copy of the original; `features(x)`, `head(z)`, `model(x)`)",
    "original": "a frozen copy of the original model (eval mode, no gradients): a teacher or a reference",
    "spec": "the model spec, to build a fresh network of the same architecture (`core.models.build_model(spec)`)",
    "x_forget": "the forget set's images on the device, unnormalised (`ctx.epoch` and `ctx.sample` preprocess them)",
    "y_forget": "their labels (a backdoor scenario: the poisoned labels)",
    "x_retain": "the retain set's images",
    "y_retain": "their labels",
    "num_classes": "the number of classes",
    "generator": "the job's seeded random generator: draw with it for results that repeat bit for bit",
    "device": "the torch device the job runs on",
    "amp": "whether the job trains in bf16 autocast (enter it with `ctx.autocast()`)",
    "da": "the DA regulariser when the job runs as `<name>+da`, else None",
    "log": "`log(message)`: a line in the job's log",
    "extra": "a dict the method may fill (kept for the job's lifetime only)",
    "forgotten_class": "the class a class-wise scenario forgets, else None",
}

#: ``UnlearnContext`` methods: name -> (parameters as ``inspect`` names them, what it does)
CONTEXT_METHODS: dict[str, tuple[str, str]] = {
    "fit": ("which, hp, loss_fn, labels=None, **hooks",
            "epochs over `\"forget\"` or `\"retain\"` with `loss_fn(logits, labels, model) -> (loss, terms)`, "
            "the optimiser and schedule of `hp`; the loss's named terms go into the job's step log "
            "(`models/<name>.steps.csv`, with probe accuracies); as `+da` every batch also carries the DA term"),
    "epoch": ("which, batch_size", "one shuffled pass over a set: `(x, y)` batches, preprocessed"),
    "sample": ("which, batch_size, generator=None", "one random batch `(x, y)` of a set"),
    "steps_per_epoch": ("which, batch_size", "batches `ctx.epoch` yields"),
    "trainer": ("hp, total_steps, steps_per_epoch, **hooks",
                "the optimiser and schedule of `hp` for a loop of one's own: `trainer.step(loss, terms)` steps "
                "and logs"),
    "autocast": ("", "a context manager: bf16 autocast where the job trains in it, else nothing"),
    "start_epoch": ("", "call at the start of every epoch of a loop of one's own (the DA term's epoch basis)"),
    "da_paired": ("xb, which", "`(penalty, terms)`: λ·L_DA of batch `xb` of set `which` paired with a batch "
                  "of the other set; `(0.0, {})` without `+da`"),
    "da_sampled": ("", "`(penalty, terms)`: λ·L_DA on a freshly drawn forget/retain pair; `(0.0, {})` without `+da`"),
}

#: helpers a method may import from ``unlearn_da.methods.base``: name -> (parameters, what it does)
BASE_HELPERS: dict[str, tuple[str, str]] = {
    "ce_logits": ("logits, yb, model", "cross-entropy as a `ctx.fit` loss: `(loss, {\"ce\": loss})`"),
    "distill_kl": ("student_logits, teacher_logits, temperature", "T²·KL(teacher ‖ student) in float32 (Hinton KD)"),
    "frozen_copy": ("model", "a deep copy in eval mode with gradients off"),
}

#: what ``images(count)`` receives (``unlearn_da.methods.counting.Count``): name -> (parameters, what it gives)
COUNT_API: dict[str, tuple[str, str]] = {
    "fit": ("which", "`(images, steps)` of `ctx.fit(which, hp, ...)` with this job's `hp`, `+da` included"),
    "da_paired": ("batch, which", "images of one `ctx.da_paired` (nothing without `+da`)"),
    "da_sampled": ("", "images of one `ctx.da_sampled` (nothing without `+da`)"),
    "da_epoch": ("", "images of one `ctx.start_epoch` (the epoch basis; nothing otherwise)"),
    "forward_backward": ("n", "`n` images through a pass that records a graph (a training step, a gradient)"),
    "forward_only": ("n", "`n` images through a pass without a graph (a teacher, `torch.no_grad`)"),
    "shuffled_sizes": ("n, batch_size, min_batch=2", "the batch sizes `ctx.epoch` yields over `n` samples"),
}
COUNT_ATTRIBUTES: dict[str, str] = {
    "hp": "the job's hyper-parameters", "n_forget": "|D_f|", "n_retain": "|D_r|",
    "da": "the DA settings of a `+da` job, else None",
}
