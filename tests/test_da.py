"""DA: float32 numerics under autocast (issue 12), the paper's Frobenius form (13), ``+da`` variants that
differ from their base method only by the DA term (13), and the DA(k) curves and the choice of k (13)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from unlearn_da import pipeline as P
from unlearn_da.core.artifacts import save_npz, write_sidecar
from unlearn_da.settings.config import load_config
from unlearn_da.reporting.da_curves import choose_energy, run_choose_energy, run_da_k
from unlearn_da.jobs.evaluate import feature_metrics
from unlearn_da.methods import METHOD_MODULES, NO_DA_PLUGIN, get_method
from unlearn_da.methods.base import StepRecorder, UnlearnContext, batch_stat_features, distill_kl, frozen_copy
from unlearn_da.methods.da import DARegularizer
from unlearn_da.metrics.da import (
    alignment_curves,
    alignment_share,
    dimensional_alignment,
    eigenspace_alignment,
    eigenspace_of,
    energy_grid,
    gram_eigenspace,
    retain_eigenspace,
    second_moment,
    separating_rule,
)
from unlearn_da.core.models import model_spec
from unlearn_da.reporting.plots import da_k_figure
from unlearn_da.data.splits import make_split, write_split

from conftest import train_small_cnn

CONFIG = load_config()
DA_CFG = CONFIG["unlearn"]["da"]
SPEC = model_spec("smallcnn", 10, 1, 8, 8)
PLUGIN_METHODS = sorted(set(METHOD_MODULES) - set(NO_DA_PLUGIN))
RNG = np.random.default_rng(0)


# ---------------------------------------------------------------------------------- A: numerics
def _spy_eigh(monkeypatch) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    real = torch.linalg.eigh

    def spy(a, *args, **kwargs):
        seen.append(a.dtype)
        return real(a, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigh", spy)
    return seen


@pytest.mark.parametrize("source", ["batch", "ema"])
def test_da_loss_hands_eigh_a_float32_matrix_under_autocast(monkeypatch, source):
    """CPU autocast computes z.T @ z in bf16; CUDA has no bf16 eigh, so this must be float32."""
    seen = _spy_eigh(monkeypatch)
    torch.manual_seed(0)
    zr, zf = torch.randn(64, 16).bfloat16(), torch.randn(32, 16).bfloat16()
    reg = DARegularizer({**DA_CFG, "basis_source": source})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for _ in range(2):
            loss = reg.loss(zf, zr)
        dimensional_alignment(zf, zr)  # the metric's torch path too
    assert seen and all(d == torch.float32 for d in seen), seen
    assert loss.dtype == torch.float32


def test_the_first_ema_step_never_decomposes_a_rank_deficient_d_by_d_moment(monkeypatch):
    """The first ema step's running moment is one batch's (rank <= batch size). A float32 eigh of that
    d x d matrix may return NaN (a CUDA solver on a rank-deficient batch); the step takes the batch's
    Gram matrix instead, as a batch basis does, and later steps decompose the running moment."""
    real = torch.linalg.eigh
    sizes = []

    def eigh_failing_on_rank_deficient(a, *args, **kwargs):
        sizes.append(a.shape[0])
        vals, vecs = real(a, *args, **kwargs)
        if a.shape[0] == 32:  # the d x d moment: NaN as the solver gives it
            return vals * float("nan"), vecs * float("nan")
        return vals, vecs

    monkeypatch.setattr(torch.linalg, "eigh", eigh_failing_on_rank_deficient)
    torch.manual_seed(0)
    zr, zf = torch.randn(8, 32), torch.randn(8, 32)
    reg = DARegularizer({**DA_CFG, "basis_source": "ema"})
    first = reg.loss(zf, zr)
    assert torch.isfinite(first) and sizes == [8]  # the 8 x 8 Gram matrix only
    space = retain_eigenspace(zr, energy=DA_CFG["energy"], center=DA_CFG["center"])
    assert torch.allclose(first, 1.0 - alignment_share(zf, space, DA_CFG["form"], eps=1e-12), atol=1e-6)
    assert reg._cov is not None and torch.allclose(reg._cov, zr.T @ zr / 8)  # the running moment starts here


@pytest.mark.parametrize("form", ["frobenius", "energy"])
def test_da_loss_under_autocast_equals_the_float32_loss(form):
    """Same (bf16-rounded) features in, same loss out: no bf16 matmul anywhere in the DA computation."""
    torch.manual_seed(1)
    zr = (torch.randn(64, 24) @ torch.randn(24, 24)).bfloat16()
    zf = torch.randn(32, 24).bfloat16()
    reg = DARegularizer({**DA_CFG, "form": form})
    plain = reg.loss(zf, zr)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = reg.loss(zf, zr)
    assert float(mixed) == pytest.approx(float(plain), abs=1e-6)


def test_distill_kl_is_float32_under_autocast():
    """CPU autocast runs log_softmax in bf16; the KD loss must not lose its precision to it."""
    torch.manual_seed(2)
    student, teacher = (torch.randn(64, 10) * 3).bfloat16(), (torch.randn(64, 10) * 3).bfloat16()
    exact = distill_kl(student.float(), teacher.float(), 3.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = distill_kl(student, teacher, 3.0)
    assert mixed.dtype == torch.float32
    assert float(mixed) == pytest.approx(float(exact), rel=1e-6)


# ---------------------------------------------------------------------------------- B: the Frobenius form
def _frob_by_definition(zf: np.ndarray, zr: np.ndarray, k: int, center: bool) -> float:
    """||C_f P_k||_F / ||C_f||_F written out, with P_k = U_k U_k^T."""
    space = retain_eigenspace(zr, k=k, center=center)
    zc = zf - space.mean
    cf = zc.T @ zc / len(zc)
    pk = space.basis @ space.basis.T
    return float(np.linalg.norm(cf @ pk) / np.linalg.norm(cf))


@pytest.mark.parametrize("form", ["frobenius", "energy"])
def test_both_forms_are_one_inside_the_retain_span(form):
    basis = RNG.normal(size=(32, 4))
    zr = RNG.normal(size=(500, 4)) @ basis.T
    zf = RNG.normal(size=(50, 4)) @ basis.T
    assert dimensional_alignment(zf, zr, energy=0.999, form=form) == pytest.approx(1.0, abs=1e-9)
    tf, tr = torch.tensor(zf, dtype=torch.float32), torch.tensor(zr, dtype=torch.float32)
    assert dimensional_alignment(tf, tr, energy=0.999, form=form) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("center", [False, True])
def test_forms_do_not_change_when_the_forget_features_are_scaled(center):
    zr, zf = RNG.normal(size=(300, 12)) * np.arange(1, 13), RNG.normal(size=(80, 12)) + 0.3
    for form in ("frobenius", "energy"):
        base = dimensional_alignment(zf, zr, k=5, form=form)
        assert dimensional_alignment(7.3 * zf, zr, k=5, form=form) == pytest.approx(base, abs=1e-12)
    if not center:  # uncentred: scaling the retain side does not move its eigenvectors either
        assert dimensional_alignment(zf, 0.2 * zr, k=5, form="frobenius") == \
            pytest.approx(dimensional_alignment(zf, zr, k=5, form="frobenius"), abs=1e-12)


@pytest.mark.parametrize("center", [False, True])
def test_frobenius_form_agrees_with_its_definition_and_the_eigen_pair_formula(center):
    zr, zf = RNG.normal(size=(300, 12)) * np.arange(1, 13), RNG.normal(size=(80, 12)) * 2 + 0.5
    for k in (1, 3, 7, 12):
        value = dimensional_alignment(zf, zr, k=k, center=center, form="frobenius")
        assert value == pytest.approx(_frob_by_definition(zf, zr, k, center), abs=1e-10)
        assert eigenspace_alignment(zf, zr, k=k, center=center, form="frobenius") == pytest.approx(value, abs=1e-10)
        assert 0.0 <= value <= 1.0
    # the two forms differ (mu^2 vs mu weighting) and the frobenius one is not its own square
    assert dimensional_alignment(zf, zr, k=3, form="frobenius") != \
        pytest.approx(dimensional_alignment(zf, zr, k=3, form="energy"), abs=1e-3)


def test_frobenius_form_of_isotropic_features_is_sqrt_k_over_d():
    zr, zf = RNG.normal(size=(20000, 40)), RNG.normal(size=(20000, 40))
    assert dimensional_alignment(zf, zr, k=10, form="frobenius") == pytest.approx((10 / 40) ** 0.5, abs=0.02)


def test_frobenius_loss_gradient_matches_finite_differences():
    torch.manual_seed(0)
    zr = torch.randn(40, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64)
    zf = torch.randn(10, 6, dtype=torch.float64, requires_grad=True)
    reg = DARegularizer({**DA_CFG, "k": 3, "detach_basis": True, "form": "frobenius"})
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
    da = dimensional_alignment(zf.detach().numpy(), zr.numpy(), k=3, form="frobenius")
    assert float(loss.detach()) == pytest.approx(1 - da**2, abs=1e-9)


@pytest.mark.parametrize("form", ["frobenius", "energy"])
def test_feature_metrics_report_da_in_the_configured_form_and_both_forms_by_name(form):
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(3), 40)
    z = rng.normal(size=(120, 6)) + np.eye(3, 6)[y] * 4
    arrays = {"train_features": z, "test_features": rng.normal(size=(30, 6)) + np.eye(3, 6)[np.arange(30) % 3] * 4}
    labels = {"train": y, "test": np.arange(30) % 3}
    forget, retain = np.arange(0, 40), np.arange(40, 120)
    cfg = {"seed": 0, "da": {"form": form, "energy": 0.9, "k": None, "center": False, "max_retain": 10_000},
           "probe": {"train": "auto", "max_train": 10_000, "C": 1.0}, "clustering": {"n_init": 2},
           "spectrum_top": 4}
    out, _ = feature_metrics(arrays, labels, forget, retain, 0, 3, cfg)
    assert out["DA"] == out[f"DA_{form}"] and out["DA_test"] == out[f"DA_test_{form}"]
    assert out["DA_frobenius"] == pytest.approx(
        dimensional_alignment(z[forget], z[retain], energy=0.9, form="frobenius"), abs=1e-12)
    assert out["DA_energy"] == pytest.approx(dimensional_alignment(z[forget], z[retain], energy=0.9), abs=1e-12)


# ---------------------------------------------------------------------------------- C: +da differs only by DA
@pytest.fixture(scope="module")
def start(digits_file):
    """A small CNN with BatchNorm, trained briefly on digits, and the data as tensors."""
    return train_small_cnn(digits_file, epochs=2, seed_init=False)


def _ctx(start, da: dict | None, scenario: str = "class0") -> UnlearnContext:
    model, x, y, prep = start
    split = make_split(y.numpy(), scenario, 0)
    f, r = torch.from_numpy(split.forget), torch.from_numpy(split.retain)
    student = copy.deepcopy(model).train()
    recorder = StepRecorder(student, {"forget": (x[f][:32], y[f][:32]), "retain": (x[r][:32], y[r][:32])}, prep, 5)
    return UnlearnContext(model=student, original=frozen_copy(model), spec=SPEC, x_forget=x[f], y_forget=y[f],
                          x_retain=x[r], y_retain=y[r], prep=prep, num_classes=10,
                          generator=torch.Generator().manual_seed(0), recorder=recorder,
                          da=DARegularizer(da) if da else None, da_config=DA_CFG, log=lambda m: None)


def _hp(method: str, **over) -> dict:
    hp = {**CONFIG["unlearn"][method], **over}
    if "epochs" in hp:
        hp["epochs"] = over.get("epochs", 1)
    return hp


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _run(start, method: str, da: dict | None, **hp_over) -> UnlearnContext:
    ctx = _ctx(start, da)
    torch.manual_seed(123)  # Bad Teacher draws its random teacher from the global generator
    get_method(method + ("+da" if da else ""))(ctx, _hp(method, **hp_over))
    return ctx


@pytest.mark.parametrize("method, source", [(m, "batch") for m in PLUGIN_METHODS]
                         + [(m, "epoch") for m in ("ft", "rl", "scrub")])
def test_plus_da_with_zero_weight_leaves_every_weight_and_buffer_as_the_base_method(start, method, source):
    """The DA term may add a gradient, nothing else: not the data order, not BatchNorm statistics."""
    base = _run(start, method, None)
    plus = _run(start, method, {**DA_CFG, "lambda_da": 0.0, "basis_source": source})
    assert any("l_da" in row for row in plus.recorder.rows)  # the DA term was computed
    a, b = _state(base.model), _state(plus.model)
    assert a.keys() == b.keys()
    assert any("running_mean" in k for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), f"{method}+da (lambda_da 0, {source}): {key} differs"


def test_neggrad_plus_da_takes_the_da_term_on_a_pair_of_da_batch_size(start, monkeypatch):
    """NegGrad+'s own batches are small (reference: 32 retain, 16 forget): a retain basis of rank <= 32.
    Its DA term, as every +da's, is taken on a forget/retain pair of unlearn.da.batch_size."""
    shapes = []
    real = DARegularizer.penalty

    def spy(self, z_forget, z_retain):
        shapes.append((len(z_forget), len(z_retain)))
        return real(self, z_forget, z_retain)

    monkeypatch.setattr(DARegularizer, "penalty", spy)
    _run(start, "neggrad_plus", {**DA_CFG, "batch_size": 48}, batch_size=32, forget_batch_size=16)
    assert shapes and set(shapes) == {(48, 48)}, set(shapes)


def test_batch_stat_features_use_batch_statistics_and_update_no_buffer(start):
    model = copy.deepcopy(start[0]).train()
    x = start[3](start[1][:48])
    before = _state(model)
    z = batch_stat_features(model, x)
    for key, value in _state(model).items():
        assert torch.equal(value, before[key]), key
    twin = copy.deepcopy(model).train()
    assert torch.allclose(z, twin.features(x), atol=1e-6)  # = a train-mode forward (which updates buffers)
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("method", PLUGIN_METHODS + ["muda"])
def test_epoch_basis_is_recomputed_at_every_epoch_start(start, method, monkeypatch):
    """basis_source: epoch must not fall back to a batch basis in any method."""
    made = []
    real = DARegularizer.on_epoch_start

    def counting(self, model, ctx):
        real(self, model, ctx)
        made.append(self.epoch_bases)

    monkeypatch.setattr(DARegularizer, "on_epoch_start", counting)
    regs = []
    real_init = DARegularizer.__init__

    def keeping(self, cfg):
        real_init(self, cfg)
        regs.append(self)

    monkeypatch.setattr(DARegularizer, "__init__", keeping)
    cfg = {**DA_CFG, "basis_source": "epoch", "epoch_subset": 128}
    ctx = _ctx(start, None if method == "muda" else cfg)
    over = {"basis_source": "epoch"} if method == "muda" else {}
    if method == "muda":
        ctx.da_config = cfg
    epochs = 2 if "epochs" in CONFIG["unlearn"][method] else 1
    get_method(method if method == "muda" else method + "+da")(ctx, _hp(method, epochs=epochs, **over))
    assert made == list(range(1, epochs + 1)), made
    assert any("l_da" in row for row in ctx.recorder.rows)
    # the epoch's basis is decomposed once at its start, not at every step of the epoch
    assert [r.decompositions for r in regs] == [epochs], [r.decompositions for r in regs]


def _projector(space) -> np.ndarray:
    b = np.asarray(space.basis.detach() if isinstance(space.basis, torch.Tensor) else space.basis, dtype=np.float64)
    return b @ b.T


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("k", [None, 5, 40])
@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_gram_basis_has_the_projector_of_the_second_moment_basis(center, k, lib):
    """Fewer samples than dimensions: the n x n Gram matrix gives C's top-k subspace (same projector).
    k 40 of 48 samples: past the rank of a centred batch the columns are zero, not noise."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=(48, 128)) * np.linspace(3.0, 0.1, 128)  # distinct spectrum, n < d
    z = torch.from_numpy(z).float() if lib == "torch" else z
    via_gram = gram_eigenspace(z, energy=0.9, k=k, center=center)
    cov, mean = second_moment(z, center)
    via_cov = eigenspace_of(cov, mean, energy=0.9, k=k)
    assert int(via_gram.k) == int(via_cov.k)
    tol = 1e-3 if lib == "torch" else 1e-8
    np.testing.assert_allclose(np.asarray(via_gram.eigenvalues)[:48], np.asarray(via_cov.eigenvalues)[:48],
                               rtol=tol, atol=tol * float(via_cov.eigenvalues[0]))
    if k is None or k <= 40:
        rank = int(k if k is not None else via_cov.k)
        if rank < 47:  # inside the batch's span: the subspaces are the same
            np.testing.assert_allclose(_projector(via_gram), _projector(via_cov), atol=20 * tol)
    assert np.isfinite(_projector(via_gram)).all()
    assert retain_eigenspace(z, energy=0.9, k=k, center=center).basis.shape == via_gram.basis.shape


@pytest.mark.parametrize("n, d, decomposed", [(64, 128, 64), (256, 16, 16)])
def test_batch_basis_decomposes_the_smaller_of_gram_and_second_moment(monkeypatch, n, d, decomposed):
    shapes = []
    real = torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "eigh", lambda a, *args, **kw: shapes.append(tuple(a.shape)) or real(a, *args, **kw))
    torch.manual_seed(0)
    reg = DARegularizer({**DA_CFG, "basis_source": "batch"})
    zf, zr = torch.randn(32, d), torch.randn(n, d)
    loss = reg.loss(zf, zr)
    assert shapes == [(decomposed, decomposed)] and reg.decompositions == 1
    cov, mean = second_moment(zr, reg.center)  # the loss as the d x d decomposition gives it
    from unlearn_da.metrics.da import alignment_share
    expected = 1.0 - alignment_share(zf, eigenspace_of(cov, mean, energy=reg.energy, k=reg.k), reg.form, eps=1e-12)
    assert float(loss) == pytest.approx(float(expected), abs=1e-4)


def test_epoch_basis_without_its_hook_is_an_error_not_a_batch_basis():
    reg = DARegularizer({**DA_CFG, "basis_source": "epoch"})
    with pytest.raises(RuntimeError, match="start_epoch"):
        reg.loss(torch.randn(8, 4), torch.randn(16, 4))


# ---------------------------------------------------------------------------------- D: DA(k) and the choice of k
def _class_features(seed: int, leak: float, n: int = 400, d: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Retain classes 1..4 on their own directions; the forget class 0 on direction 0 (``leak`` of it
    outside the retain span): leak 1 imitates the original, leak 0 the oracle."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, size=n)
    z = rng.normal(scale=0.3, size=(n, d))
    for c in range(1, 5):
        z[y == c, c] += 3.0 + c
    z[y == 0, 0] += 3.0 * leak
    z[y == 0, 1:5] += 1.5
    return z, np.flatnonzero(y == 0), np.flatnonzero(y != 0)


def test_alignment_curves_equal_the_metric_at_every_k():
    z, forget, retain = _class_features(0, 1.0)
    curves = alignment_curves(z[forget], z[retain])
    assert curves["retain_energy"][-1] == pytest.approx(1.0)
    assert np.all(np.diff(curves["retain_energy"]) >= -1e-12)
    for form in ("frobenius", "energy"):
        assert curves[form][-1] == pytest.approx(1.0)
        for k in (1, 2, 5, 9, 16):
            assert curves[form][k - 1] == pytest.approx(dimensional_alignment(z[forget], z[retain], k=k, form=form),
                                                        abs=1e-10)
    for energy in (0.5, 0.9, 0.99):
        k = retain_eigenspace(z[retain], energy=energy).k
        assert curves["retain_energy"][k - 1] >= energy - 1e-9 and (k == 1 or curves["retain_energy"][k - 2] < energy)


@pytest.mark.parametrize("form", ["frobenius", "energy"])
def test_separating_rule_picks_the_k_and_energy_of_the_largest_original_oracle_gap(form):
    pairs, raw = [], []
    for seed in (0, 1):
        zo, f, r = _class_features(seed, 1.0)
        zr, _, _ = _class_features(seed, 0.0)
        pairs.append((alignment_curves(zo[f], zo[r]), alignment_curves(zr[f], zr[r])))
        raw.append((zo, zr, f, r))
    rule = separating_rule(pairs, form)
    brute_k = [np.mean([abs(dimensional_alignment(zo[f], zo[r], k=k, form=form)
                            - dimensional_alignment(zr[f], zr[r], k=k, form=form)) for zo, zr, f, r in raw])
               for k in range(1, 17)]
    assert rule["by_k"]["k"] == int(np.argmax(brute_k)) + 1
    brute_e = [np.mean([abs(dimensional_alignment(zo[f], zo[r], energy=e, form=form)
                            - dimensional_alignment(zr[f], zr[r], energy=e, form=form)) for zo, zr, f, r in raw])
               for e in energy_grid()]
    assert rule["by_energy"]["energy"] == energy_grid()[int(np.argmax(brute_e))]
    assert rule["by_energy"]["mean_abs_difference"] == pytest.approx(max(brute_e), abs=1e-10)
    assert rule["by_energy"]["mean_abs_difference"] > 0.1  # the leak is visible


def _feature_file(path, train: np.ndarray, test: np.ndarray) -> str:
    arrays = {"train_features": train.astype(np.float32), "test_features": test.astype(np.float32),
              "val_features": test[:5].astype(np.float32)}
    for s in ("train", "val", "test"):
        arrays[f"{s}_logits"] = np.zeros((len(arrays[f"{s}_features"]), 5), np.float32)
    save_npz(path, arrays)
    write_sidecar(path, "unlearn", {"model": path.stem})
    return str(path)


def _split_dir(tmp_path, forget: np.ndarray, retain: np.ndarray, name: str = "split") -> str:
    from unlearn_da.data.splits import Split

    dataset = tmp_path / "dataset.npz"
    dataset.write_bytes(b"stand-in")
    out = tmp_path / name
    write_split(Split("class0", 100, forget, retain, 0), out, dataset)
    return str(out)


def test_choose_energy_reads_only_training_features_of_the_tuning_pairs(tmp_path):
    zo, f, r = _class_features(5, 1.0)
    zr, _, _ = _class_features(5, 0.0)
    split = _split_dir(tmp_path, f, r)
    da_cfg = {"form": "frobenius", "center": False, "max_retain": 10_000}
    results = []
    for trial, test in enumerate((np.zeros((20, 16)), RNG.normal(size=(20, 16)) * 100)):
        pair = {"scenario": "class0", "seed": 100, "split": split,
                "original": _feature_file(tmp_path / f"original{trial}.npz", zo, test),
                "oracle": _feature_file(tmp_path / f"retrain{trial}.npz", zr, -test)}
        results.append(choose_energy([pair], da_cfg, seed=0))
    assert results[0]["chosen_energy"] == results[1]["chosen_energy"]
    assert results[0]["rule"] == results[1]["rule"]
    out = run_choose_energy([pair], da_cfg, 0, tmp_path / "tuning" / "da_energy")
    assert json.loads((tmp_path / "tuning" / "da_energy.json").read_text())["chosen_energy"] == out["chosen_energy"]
    assert f"**energy: {out['chosen_energy']}**" in (tmp_path / "tuning" / "da_energy.md").read_text()


def test_da_energy_choice_uses_tuning_seeds_only():
    cfg = load_config()
    pairs = P.da_energy_pairs(cfg)
    assert {p["seed"] for p in pairs} == set(cfg["tuning"]["seeds"])
    assert not {p["seed"] for p in pairs} & set(cfg["seeds"])
    assert all("/seed100/" in p["oracle"] and p["original"].endswith("seed100/features/original.npz") for p in pairs)
    # the DA(k) curve's model list is not a metric parameter: changing it reruns no metrics job
    assert "da_k_curve" not in P.metrics_params(cfg)


def test_da_k_curves_table_json_and_figure(tmp_path):
    zo, f, r = _class_features(7, 1.0)
    zr, _, _ = _class_features(7, 0.0)
    zm, _, _ = _class_features(7, 0.3)
    split = _split_dir(tmp_path, f, r)
    test = RNG.normal(size=(40, 16))
    files = [_feature_file(tmp_path / f"{m}.npz", z, test) for m, z in (("original", zo), ("retrain", zr), ("muda", zm))]
    da_cfg = {**CONFIG["evaluation"]["da"], "form": "frobenius"}
    table, summary = run_da_k(files, split, da_cfg, 0, tmp_path / "da_k")
    assert set(table["model"]) == {"original", "retrain", "muda"} and set(table["set"]) == {"forget", "test"}
    assert len(table) == 3 * 2 * 16
    saved = json.loads((tmp_path / "da_k.json").read_text())
    best = saved["max_difference_by_k"]
    assert saved["form"] == "frobenius" and 1 <= best["k"] <= 16
    assert 0 < best["retain_energy_original"] <= 1 and best["difference"] > 0.1
    assert best["difference"] == pytest.approx(abs(best["da_original"] - best["da_oracle"]))
    assert (tmp_path / "da_k.csv").read_text().startswith("model,set,k,retain_energy,da_frobenius,da_energy")
    da_k_figure(table, summary, ["retrain", "original", "muda"], "test", tmp_path / "da_k.png")
    assert (tmp_path / "da_k.png").stat().st_size > 0 and (tmp_path / "da_k.pdf").stat().st_size > 0


def test_fgsm_labels_run_in_float32_under_bf16_autocast(start):
    """Boundary Shrinking's attack and argmax run as the reference's float32, whatever the caller's autocast."""
    from unlearn_da.methods.boundary_shrink import fgsm_labels

    model, x, y, prep = start
    dtypes = []
    hook = model.fc.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            labels = fgsm_labels(model, prep(x[:16]), y[:16], prep, 0.1)
    finally:
        hook.remove()
    assert dtypes and set(dtypes) == {torch.float32}
    assert labels.shape == (16,)


def test_bad_teacher_loss_is_float32_for_bf16_logits():
    from unlearn_da.methods.bad_teacher import unlearner_loss

    g = torch.Generator().manual_seed(0)
    s, good, bad = (torch.randn(32, 10, generator=g) * 4 for _ in range(3))
    u = (torch.arange(32) % 2).float()
    low = [v.to(torch.bfloat16) for v in (s, good, bad)]
    got = unlearner_loss(*low, u, 1.0)
    want = unlearner_loss(*(v.float() for v in low), u, 1.0)
    assert got.dtype == torch.float32 and torch.equal(got, want)
