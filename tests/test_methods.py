"""Each unlearning method moves the loss it should, on a tiny model and the digits data."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unlearn_da.settings.config import load_config, method_names
from unlearn_da.methods import METHOD_MODULES, NO_DA_PLUGIN, get_method
from unlearn_da.methods.base import StepRecorder, UnlearnContext, distill_kl, frozen_copy
from unlearn_da.methods.boundary_shrink import fgsm_labels
from unlearn_da.methods.da import DARegularizer
from unlearn_da.methods.ssd import importances
from unlearn_da.metrics.da import dimensional_alignment
from unlearn_da.core.models import build_model, model_spec
from unlearn_da.data.splits import make_split

from conftest import train_small_cnn

SPEC = model_spec("smallcnn", 10, 1, 8, 8)
CONFIG = load_config()


@pytest.fixture(scope="module")
def trained(digits_file):
    """A small CNN trained on the digits train set, and the data as tensors."""
    return train_small_cnn(digits_file, epochs=6)


def make_ctx(trained, scenario="class0", da=None, seed=0):
    model, x, y, prep = trained
    split = make_split(y.numpy(), scenario, seed)
    f, r = torch.from_numpy(split.forget), torch.from_numpy(split.retain)
    student = copy.deepcopy(model).train()
    recorder = StepRecorder(student, {"forget": (x[f][:64], y[f][:64]), "retain": (x[r][:64], y[r][:64])}, prep, 5)
    return UnlearnContext(model=student, original=frozen_copy(model), spec=SPEC, x_forget=x[f], y_forget=y[f],
                          x_retain=x[r], y_retain=y[r], prep=prep, num_classes=10,
                          generator=torch.Generator().manual_seed(seed), recorder=recorder,
                          da=DARegularizer(da) if da else None, da_config=CONFIG["unlearn"]["da"],
                          log=lambda m: None)


@torch.no_grad()
def ce_on(model, x, y, prep):
    model.eval()
    return float(F.cross_entropy(model(prep(x)), y))


@torch.no_grad()
def acc_on(model, x, y, prep):
    model.eval()
    return 100.0 * float((model(prep(x)).argmax(1) == y).float().mean())


def hp(method, **over):
    return {**CONFIG["unlearn"][method], **over}


def test_registry_matches_schema():
    assert sorted(METHOD_MODULES) == method_names()
    for name in METHOD_MODULES:
        assert callable(get_method(name)) and callable(get_method(name + "+da"))


def test_ft_lowers_retain_loss(trained):
    ctx = make_ctx(trained, "random10")
    before = ce_on(ctx.model, ctx.x_retain, ctx.y_retain, ctx.prep)
    get_method("ft")(ctx, hp("ft", epochs=2, lr=0.02))
    assert ce_on(ctx.model, ctx.x_retain, ctx.y_retain, ctx.prep) < before


def test_ga_raises_forget_loss(trained):
    ctx = make_ctx(trained)
    before = ce_on(ctx.model, ctx.x_forget, ctx.y_forget, ctx.prep)
    get_method("ga")(ctx, hp("ga", lr=0.01, epochs=3))
    after = ce_on(ctx.model, ctx.x_forget, ctx.y_forget, ctx.prep)
    assert after > 5 * before and after > before + 0.3, (before, after)


def test_neggrad_plus_forgets_and_keeps_retain(trained):
    ctx = make_ctx(trained)
    get_method("neggrad_plus")(ctx, hp("neggrad_plus", epochs=2, lr=0.05, alpha=0.9))  # plain SGD (no momentum)
    assert acc_on(ctx.model, ctx.x_forget, ctx.y_forget, ctx.prep) < 50
    assert acc_on(ctx.model, ctx.x_retain, ctx.y_retain, ctx.prep) > 85


def test_rl_forgets_a_class(trained):
    ctx = make_ctx(trained)
    get_method("rl")(ctx, hp("rl", epochs=2))
    assert acc_on(ctx.model, ctx.x_forget, ctx.y_forget, ctx.prep) < 20
    assert acc_on(ctx.model, ctx.x_retain, ctx.y_retain, ctx.prep) > 85


def test_boundary_shrink_labels_are_the_attack_point_argmax_and_learned(trained):
    ctx = make_ctx(trained)
    xf = ctx.prep(ctx.x_forget)
    nearest_wrong = fgsm_labels(ctx.original, xf, ctx.y_forget, ctx.prep, 0.5, exclude_true_class=True)
    assert (nearest_wrong != ctx.y_forget).all()
    labels = fgsm_labels(ctx.original, xf, ctx.y_forget, ctx.prep, 0.5)  # the reference: plain argmax
    assert ((labels == ctx.y_forget) | (labels == nearest_wrong)).all() and (labels != ctx.y_forget).any()
    get_method("boundary_shrink")(ctx, hp("boundary_shrink", epochs=3, lr=0.01, fgsm_eps=0.5))
    assert acc_on(ctx.model, ctx.x_forget, ctx.y_forget, ctx.prep) < 50


def test_l1_sparse_shrinks_weights_more_than_ft(trained):
    norms = {}
    for method, extra in (("ft", {}), ("l1_sparse", {"alpha": 5e-3})):
        ctx = make_ctx(trained, "random10")
        get_method(method)(ctx, {**hp("l1_sparse", epochs=2, lr=0.02, weight_decay=0.0), **extra}
                           if method == "l1_sparse" else hp("ft", epochs=2, lr=0.02, weight_decay=0.0))
        norms[method] = float(sum(p.detach().abs().sum() for p in ctx.model.parameters()))
    assert norms["l1_sparse"] < 0.95 * norms["ft"]


def test_salun_leaves_masked_out_weights_bit_identical(trained):
    ctx = make_ctx(trained)
    before = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
    get_method("salun")(ctx, hp("salun", epochs=2, lr=0.02, momentum=0.9, weight_decay=5e-3, mask_ratio=0.3))
    mask = ctx.extra["mask"]
    share = sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
    assert 0.25 < share < 0.35
    moved = 0
    for n, p in ctx.model.named_parameters():
        assert torch.equal(p[~mask[n]], before[n][~mask[n]]), n  # exactly unchanged
        moved += int((p[mask[n]] != before[n][mask[n]]).sum())
    assert moved > 0
    assert acc_on(ctx.model, ctx.x_forget, ctx.y_forget, ctx.prep) < 50


def test_scrub_raises_forget_divergence_from_teacher(trained):
    ctx = make_ctx(trained)
    get_method("scrub")(ctx, hp("scrub", epochs=2, msteps=2))
    with torch.no_grad():
        ctx.model.eval()
        xf = ctx.prep(ctx.x_forget)
        kl_f = float(distill_kl(ctx.model(xf), ctx.original(xf), 1.0))
        xr = ctx.prep(ctx.x_retain)
        kl_r = float(distill_kl(ctx.model(xr), ctx.original(xr), 1.0))
    assert kl_f > 10 * kl_r


def test_bad_teacher_moves_forget_outputs_towards_random_teacher(trained):
    ctx = make_ctx(trained)
    torch.manual_seed(123)
    bad = build_model(SPEC).eval()  # the same draw the method makes first
    xf = ctx.prep(ctx.x_forget)

    def kl_to_bad():
        with torch.no_grad():
            ctx.model.eval()
            return float(distill_kl(ctx.model(xf), bad(xf), 4.0))

    before = kl_to_bad()
    torch.manual_seed(123)
    get_method("bad_teacher")(ctx, hp("bad_teacher", epochs=2, lr=0.02))
    assert kl_to_bad() < 0.5 * before
    assert acc_on(ctx.model, ctx.x_retain, ctx.y_retain, ctx.prep) > 80


def test_ssd_changes_only_high_forget_importance_weights(trained):
    ctx = make_ctx(trained)
    # the reference's full_train_dl: ConcatDataset((retain, forget)), unshuffled
    x_all, y_all = torch.cat([ctx.x_retain, ctx.x_forget]), torch.cat([ctx.y_retain, ctx.y_forget])
    imp_d = importances(ctx.model, x_all, y_all, ctx.prep, 32)
    imp_f = importances(ctx.model, ctx.x_forget, ctx.y_forget, ctx.prep, 32)
    before = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
    get_method("ssd")(ctx, hp("ssd", alpha=10.0, **{"lambda": 1.0}, batch_size=32))
    n_changed = 0
    for n, p in ctx.model.named_parameters():
        selected = imp_f[n] > 10.0 * imp_d[n]
        assert torch.equal(p[~selected], before[n][~selected]), n
        assert (p[selected].abs() <= before[n][selected].abs() + 1e-12).all()
        n_changed += int((p != before[n]).sum())
    assert 0 < n_changed == sum(ctx.extra["dampened"].values()) or n_changed <= sum(ctx.extra["dampened"].values())


def test_muda_raises_forget_alignment_and_forgets_class(trained):
    ctx = make_ctx(trained)
    with torch.no_grad():
        zf0 = ctx.model.eval().features(ctx.prep(ctx.x_forget)).numpy()
        zr0 = ctx.model.features(ctx.prep(ctx.x_retain)).numpy()
    get_method("muda")(ctx, hp("muda", epochs=15, lr=0.03, lambda_da=5.0))
    with torch.no_grad():
        ctx.model.eval()
        zf1 = ctx.model.features(ctx.prep(ctx.x_forget)).numpy()
        zr1 = ctx.model.features(ctx.prep(ctx.x_retain)).numpy()
    assert dimensional_alignment(zf1, zr1) > dimensional_alignment(zf0, zr0) + 0.1
    assert acc_on(ctx.model, ctx.x_retain, ctx.y_retain, ctx.prep) > 85
    rows = ctx.recorder.rows
    assert {"forget", "recover"} <= {r["phase"] for r in rows}


@pytest.mark.parametrize("method", sorted(set(METHOD_MODULES) - set(NO_DA_PLUGIN)))
def test_every_method_runs_with_the_da_plugin(trained, method):
    ctx = make_ctx(trained, da=CONFIG["unlearn"]["da"])
    small = {"epochs": 1} if "epochs" in CONFIG["unlearn"][method] else {}
    get_method(method + "+da")(ctx, hp(method, **small))
    assert any("l_da" in row for row in ctx.recorder.rows)
    for p in ctx.model.parameters():
        assert torch.isfinite(p).all()


def test_da_loss_gradient_matches_finite_differences():
    torch.manual_seed(0)
    zr = torch.randn(40, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64)
    zf = torch.randn(10, 6, dtype=torch.float64, requires_grad=True)
    reg = DARegularizer({**CONFIG["unlearn"]["da"], "k": 3, "detach_basis": True, "form": "energy"})
    loss = reg.loss(zf, zr)
    (grad,) = torch.autograd.grad(loss, zf)
    eps = 1e-6
    numeric = torch.zeros_like(zf)
    with torch.no_grad():
        for i in range(zf.shape[0]):
            for j in range(zf.shape[1]):
                plus, minus = zf.clone(), zf.clone()
                plus[i, j] += eps
                minus[i, j] -= eps
                numeric[i, j] = (reg.loss(plus, zr) - reg.loss(minus, zr)) / (2 * eps)
    assert torch.allclose(grad, numeric, rtol=1e-5, atol=1e-8)
    # and the loss is 1 - DA as the metric computes it
    assert float(loss.detach()) == pytest.approx(1 - dimensional_alignment(zf.detach().numpy(), zr.numpy(), k=3), abs=1e-9)


def test_da_basis_sources_give_a_valid_loss(trained):
    for source in ("batch", "ema", "epoch"):
        ctx = make_ctx(trained, da={**CONFIG["unlearn"]["da"], "basis_source": source})
        ctx.da.on_epoch_start(ctx.model, ctx)
        penalty, terms = ctx.da.penalty_on_sampled(ctx.model, ctx)
        assert 0.0 <= float(terms["l_da"].detach()) <= 1.0
        penalty.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in ctx.model.parameters())


def test_same_seed_same_unlearned_weights(trained):
    outs = []
    for _ in range(2):
        ctx = make_ctx(trained, "random10")
        torch.manual_seed(0)
        get_method("rl")(ctx, hp("rl", epochs=1))
        outs.append(np.concatenate([p.detach().numpy().ravel() for p in ctx.model.parameters()]))
    assert np.array_equal(outs[0], outs[1])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_salun_masked_update_hooks_give_the_per_parameter_loops_bits(optimizer):
    """The multi-tensor hooks equal the per-parameter definition (grad * mask before the step; masked
    weights restored and optimiser buffers masked after it) to the bit."""
    from unlearn_da.methods.salun import masked_update_hooks
    from unlearn_da.core.training import build_optimizer

    torch.manual_seed(0)
    spec = model_spec("smallcnn", 10, 1, 8, 8)
    fused_model = build_model(spec)
    loop_model = copy.deepcopy(fused_model)
    mask = {n: torch.rand(p.shape) < 0.5 for n, p in fused_model.named_parameters()}
    hp = {"optimizer": optimizer, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))

    class Holder:  # what the hooks read from the Trainer
        def __init__(self, model):
            self.opt = build_optimizer(model.parameters(), hp)

    fused, loop = Holder(fused_model), Holder(loop_model)
    before, after = masked_update_hooks(fused_model, mask)
    frozen = {n: p.detach().clone() for n, p in loop_model.named_parameters()}
    for _ in range(4):
        for model, holder in ((fused_model, fused), (loop_model, loop)):
            holder.opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
        before(fused)
        for n, p in loop_model.named_parameters():
            p.grad.mul_(mask[n])
        fused.opt.step()
        loop.opt.step()
        after(fused)
        with torch.no_grad():
            for n, p in loop_model.named_parameters():
                p.copy_(torch.where(~mask[n], frozen[n], p))
                for buf in loop.opt.state[p].values():
                    if torch.is_tensor(buf) and buf.shape == p.shape:
                        buf.mul_(mask[n])
    for (n, a), (_, b) in zip(fused_model.named_parameters(), loop_model.named_parameters(), strict=True):
        assert torch.equal(a, b), n


def _ssd_batches(ctx, monkeypatch, **over):
    """The (x, y, batch size) that SSD hands to ``importances``: D first, then D_f."""
    from unlearn_da.methods import ssd

    seen = []
    real = ssd.importances

    def spy(model, x, y, prep, batch_size):
        seen.append((x.clone(), y.clone(), batch_size))
        return real(model, x, y, prep, batch_size)

    monkeypatch.setattr(ssd, "importances", spy)
    get_method("ssd")(ctx, hp("ssd", **over))
    return seen


def test_ssd_batches_a_class_as_build_retain_forget_sets_does(trained, monkeypatch):
    """forget_full_class_strategies.py build_retain_forget_sets: D_r class by class in ascending order, each
    class in data-set order, then D_f (the class, data-set order); ConcatDataset((retain, forget)) unshuffled."""
    ctx = make_ctx(trained, "class0")
    ctx.forgotten_class = 0
    (x_d, y_d, _), (x_f, y_f, _) = _ssd_batches(ctx, monkeypatch)
    n_r = len(ctx.y_retain)
    assert torch.equal(y_d[:n_r], torch.sort(ctx.y_retain).values)  # one class after the other
    for c in range(1, 10):  # within a class: the data-set order of D_r
        assert torch.equal(x_d[:n_r][y_d[:n_r] == c], ctx.x_retain[ctx.y_retain == c])
    assert torch.equal(x_d[n_r:], ctx.x_forget) and torch.equal(x_f, ctx.x_forget)


def test_ssd_batches_a_random_set_as_random_split_does(trained, monkeypatch):
    """forget_random_main.py: random_split returns D_f and D_r in a random order (seeded by the run); D is
    D_r then D_f, and D_f's importances are taken over the same D_f order."""
    ctx = make_ctx(trained, "random10")
    (x_d, y_d, _), (x_f, y_f, _) = _ssd_batches(ctx, monkeypatch)
    n_r = len(ctx.y_retain)
    assert torch.equal(x_d[n_r:], x_f) and torch.equal(y_d[n_r:], y_f)
    assert not torch.equal(y_d[:n_r], ctx.y_retain) and not torch.equal(y_f, ctx.y_forget)  # permuted
    assert torch.equal(torch.sort(y_d[:n_r]).values, torch.sort(ctx.y_retain).values)  # the same samples
    assert torch.equal(torch.sort(y_f).values, torch.sort(ctx.y_forget).values)
    again = _ssd_batches(make_ctx(trained, "random10"), monkeypatch)
    assert torch.equal(again[0][0], x_d)  # the run's seed fixes the order


def test_ssd_takes_the_class_alpha_in_a_class_scenario(trained):
    """One alpha per reference script: class_alpha (forget_full_class_main.py) when set, else alpha."""
    from unlearn_da.methods.ssd import scenario_values

    params = hp("ssd", alpha=10.0, class_alpha=5.0, batch_size=128, class_batch_size=64)
    ctx = make_ctx(trained, "class0")
    assert scenario_values(ctx, params) == (128, 10.0)  # forgotten_class unset: the random script
    ctx.forgotten_class = 0
    assert scenario_values(ctx, params) == (64, 5.0)
    assert scenario_values(ctx, {**params, "class_alpha": None, "class_batch_size": None}) == (128, 10.0)
