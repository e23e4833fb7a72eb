"""No host synchronisation per training step (the CUDA contract, counted on the CPU).

On CUDA, every ``.item()``, ``float(t)``, ``bool(t)``, ``.cpu()``/``.numpy()``/``.tolist()`` and every
blocking host-to-device ``.to(device)`` makes the host wait for the GPU. No GPU is needed to count
them: these tests patch those Tensor methods and run each training loop twice, with twice as many
steps the second time. Outside logging steps the count must not grow with the number of steps
(original/oracle training and every method without DA), and grow by at most one per step with DA.
"""

from __future__ import annotations

import sys
from collections import Counter
from contextlib import contextmanager

import pytest
import torch

from unlearn_da.settings.config import load_config
from unlearn_da.methods import get_method, method_base
from unlearn_da.methods.base import StepRecorder, UnlearnContext, frozen_copy
from unlearn_da.methods.da import DARegularizer
from unlearn_da.core.models import build_model, model_spec
from unlearn_da.core.training import Preprocessor, fit

CONFIG = load_config()
SPEC = model_spec("smallcnn", 10, 1, 8, 4)
READS = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__")
NO_LOG = 10**9  # the recorder then logs step 1 only

@contextmanager
def host_syncs(monkeypatch):
    counts: Counter = Counter()
    with monkeypatch.context() as m:
        for name in READS:
            original = getattr(torch.Tensor, name)

            def counted(self, *args, _original=original, _name=name, **kwargs):
                # torch.optim keeps its step counters on the host on purpose (no sync on CUDA)
                if not sys._getframe(1).f_globals.get("__name__", "").startswith("torch.optim"):
                    counts[_name] += 1
                return _original(self, *args, **kwargs)

            m.setattr(torch.Tensor, name, counted)
        original_to = torch.Tensor.to

        def to(self, *args, **kwargs):
            target = kwargs.get("device", next((a for a in args if isinstance(a, (torch.device, str))), None))
            if target is not None and self.device.type == "cpu" and not kwargs.get("non_blocking", False):
                counts["blocking .to(device)"] += 1
            return original_to(self, *args, **kwargs)

        m.setattr(torch.Tensor, "to", to)
        yield counts

def _data(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 17, (n, 1, 8, 8), dtype=torch.uint8, generator=g), torch.arange(n) % 10

def _prep(augment: str = "crop_flip"):
    return Preprocessor([0.5], [0.25], 16.0, torch.device("cpu"), augment=augment, padding=1)

def test_the_training_loop_reads_nothing_back_per_step(monkeypatch):
    hp = {"epochs": 1, "batch_size": 16, "lr": 0.01, "momentum": 0.9, "schedule": "cosine"}
    totals = []
    for n in (64, 256):  # 4 and 16 steps
        x, y = _data(n)
        torch.manual_seed(0)
        model = build_model(SPEC)
        with host_syncs(monkeypatch) as counts:
            fit(model, x, y, _prep(), hp, generator=torch.Generator().manual_seed(0), log=lambda m: None)
        totals.append(sum(counts.values()))
    assert totals[0] == totals[1], f"host reads grow with the step count: {totals}"

def _ctx(method: str, n_forget: int, n_retain: int) -> UnlearnContext:
    torch.manual_seed(0)
    original = build_model(SPEC).eval()
    model = build_model(SPEC).train()
    model.load_state_dict(original.state_dict())
    xf, yf = _data(n_forget, 1)
    xr, yr = _data(n_retain, 2)
    prep = _prep()
    base, plus_da = method_base(method)
    da_cfg = {**CONFIG["unlearn"]["da"], "batch_size": 16, "epoch_subset": 32}
    recorder = StepRecorder(model, {"forget": (xf[:8], yf[:8]), "retain": (xr[:8], yr[:8])}, prep, NO_LOG)
    return UnlearnContext(model=model, original=frozen_copy(original), spec=SPEC, x_forget=xf, y_forget=yf,
                          x_retain=xr, y_retain=yr, prep=prep, num_classes=10,
                          generator=torch.Generator().manual_seed(0), recorder=recorder,
                          da=DARegularizer({**da_cfg, "lambda_da": 1.0}) if plus_da else None,
                          da_config=da_cfg, log=lambda m: None)

def _hp(base: str) -> dict:
    hp = {**CONFIG["unlearn"][base], "epochs": 1, "batch_size": 16}
    for key in ("forget_batch_size",):
        if key in hp:
            hp[key] = 16
    if base == "scrub":
        hp["msteps"] = 1
    return hp

METHODS = list(CONFIG["unlearn"]["methods"])

@pytest.mark.parametrize("method", METHODS)
def test_unlearning_steps_read_back_at_most_what_da_needs(method, monkeypatch):
    base, plus_da = method_base(method)
    counts, steps = [], []
    for scale in (1, 2):
        ctx = _ctx(method, 32 * scale, 64 * scale)
        with host_syncs(monkeypatch) as c:
            get_method(method)(ctx, _hp(base))
        counts.append(sum(c.values()))
        steps.append(ctx.recorder.step)
    extra_steps = steps[1] - steps[0]
    if base == "ssd":  # no training loop: its per-batch Fisher passes are the "steps"
        assert counts[1] == counts[0], f"{method}: host reads grow with the data: {counts}"
        return
    assert extra_steps > 0
    allowed = extra_steps if (plus_da or base == "muda") else 0
    assert counts[1] - counts[0] <= allowed, (
        f"{method}: {counts[1] - counts[0]} more host reads for {extra_steps} more steps (allowed {allowed})")

def test_the_counter_sees_a_per_step_read(monkeypatch):
    """The counter itself: a loop that reads its loss every step is caught."""
    x, y = _data(64)
    model = build_model(SPEC)
    with host_syncs(monkeypatch) as counts:
        for i in range(4):
            loss = torch.nn.functional.cross_entropy(model(x[i * 16:(i + 1) * 16].float()), y[i * 16:(i + 1) * 16])
            float(loss.detach())
            x[:1].to(torch.device("cpu"))
    assert counts["__float__"] == 4 and counts["blocking .to(device)"] == 4



def test_method_time_excludes_only_the_probes_made_while_it_ran():
    """The starting point's probe (recorded before the method runs) must not be subtracted from its time."""
    import time as _time

    from unlearn_da.jobs.unlearn import method_seconds

    class Recorder:
        eval_seconds = 5.0  # e.g. the initial probe, before the method started

    rec = Recorder()

    def run(ctx, hp):
        _time.sleep(0.05)
        rec.eval_seconds += 0.02  # a probe inside the run

    seconds = method_seconds(run, None, {}, rec, torch.device("cpu"))
    assert 0.025 <= seconds < 1.0
