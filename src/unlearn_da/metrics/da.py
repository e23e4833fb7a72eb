"""Dimensional alignment (DA): how far the forget features lie in the retain eigenspace.

Definitions (docs/muda.md, "Dimensional alignment"; docs/metrics.md, the DA row):
    C_r = Z_r^T Z_r / n_r (uncentred second moment by default; ``center`` subtracts the
    retain mean mu_r, and the forget features are then centred by mu_r too, so both sides
    live in the same frame), U_k = top-k eigenvectors of C_r (k the smallest count holding
    ``energy`` of the spectrum, or a fixed ``k``), P_k = U_k U_k^T, C_f = Z_f^T Z_f / n_f;
    form ``energy``:    DA = ||Z_f U_k||_F^2 / ||Z_f||_F^2  (= sum_j mu_j w_j / sum_j mu_j),
    form ``frobenius``: DA = ||C_f P_k||_F / ||C_f||_F     (DA^2 = sum_j mu_j^2 w_j / sum_j mu_j^2),
with (mu_j, v_j) the forget eigen-pairs and w_j = ||U_k^T v_j||^2. Both are in [0, 1], are 1
when the forget features lie in span(U_k) and do not change when Z_f is scaled.
Direction: match the retrained oracle. Unit: fraction (0..1).

Works on numpy arrays and on torch tensors alike (the DA loss reuses it), by calling
only operations both libraries name the same way. Torch inputs are computed in float32
(float64 stays) with autocast disabled: CUDA has no bf16 ``eigh``, and a bf16 second
moment would lose the small eigenvalues that decide k.
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

EPS = 1e-12
FORMS = ("frobenius", "energy")


def _xp(arr: Any) -> Any:
    """The array namespace of ``arr``: numpy or torch."""
    if type(arr).__module__.startswith("torch"):
        import torch

        return torch
    import numpy

    return numpy


def _precise(arr: Any) -> contextlib.AbstractContextManager:
    """Autocast off for a torch tensor's device (a no-op for numpy)."""
    if _xp(arr).__name__ == "numpy":
        return contextlib.nullcontext()
    from ..core.runtime import full_precision

    return full_precision(arr.device)


def _wide(arr: Any) -> Any:
    """Torch bf16/fp16 -> float32; everything else unchanged."""
    if _xp(arr).__name__ == "numpy":
        return arr
    from ..core.runtime import float32

    return float32(arr)


def _check_form(form: str) -> None:
    if form not in FORMS:
        raise ValueError(f"DA form must be one of {', '.join(FORMS)}, got {form!r}")


class Eigenspace(NamedTuple):
    basis: Any  # d x k, orthonormal columns
    eigenvalues: Any  # all d eigenvalues, descending
    k: int
    mean: Any  # the retain mean subtracted before projecting (zeros when uncentred)


def second_moment(z: Any, center: bool = False) -> tuple[Any, Any]:
    """``(C, mean)``: C = (Z - mean)^T (Z - mean) / n with mean = 0 unless ``center``."""
    n = z.shape[0]
    if n == 0:
        raise ValueError("second_moment: no samples")
    with _precise(z):
        zc, mean = _centred(z, center)
        return (zc.T @ zc) / n, mean


def _centred(z: Any, center: bool) -> tuple[Any, Any]:
    """``(Z - mean, mean)`` in float32 or wider, mean = 0 (same shape, namespace) unless ``center``."""
    z = _wide(z)
    mean = z.mean(0) if center else z[:1].sum(0) * 0
    return z - mean, mean


def energy_rank(eigenvalues_desc: Any, energy: float) -> int:
    """Smallest k whose top-k eigenvalues hold at least ``energy`` of their sum."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    xp = _xp(eigenvalues_desc)
    vals = xp.clip(eigenvalues_desc, 0, None) if xp.__name__ == "numpy" else eigenvalues_desc.clamp(min=0)
    total = vals.sum()
    if float(total) <= 0:
        return 1
    cum = xp.cumsum(vals, 0)
    k = int((cum < energy * total * (1 - 1e-9)).sum()) + 1
    return min(k, int(vals.shape[0]))


def retain_eigenspace(
    z_retain: Any, energy: float | None = 0.95, k: int | None = None, center: bool = False
) -> Eigenspace:
    """Top eigenvectors of the retain features' second moment (fixed ``k`` wins over ``energy``).

    Fewer samples than dimensions (a DA mini-batch of 256 against ResNet-18's 512 features):
    the n x n Gram matrix is decomposed instead of the d x d second moment (:func:`gram_eigenspace`).
    """
    if int(z_retain.shape[0]) < int(z_retain.shape[1]):
        return gram_eigenspace(z_retain, energy=energy, k=k, center=center)
    cov, mean = second_moment(z_retain, center)
    return eigenspace_of(cov, mean, energy=energy, k=k)


def gram_eigenspace(
    z: Any, energy: float | None = 0.95, k: int | None = None, center: bool = False
) -> Eigenspace:
    """The eigenspace of C = Zc^T Zc / n from the Gram matrix G = Zc Zc^T / n (n x n).

    G and C share their non-zero eigenvalues; an eigenvector u of G with eigenvalue l > 0 gives
    C's v = Zc^T u / sqrt(n l). The d - n eigenvalues C has beyond G's are zeros (appended, so
    ``eigenvalues`` still holds all d). Directions of numerically zero eigenvalues (rank below n,
    e.g. after centring) get a zero column: C has no direction there that the batch spans, and
    the energy rule never keeps them. Same projector as :func:`eigenspace_of` on C up to rounding
    (tests/test_da.py), at O(n^3) instead of O(d^3).
    """
    xp = _xp(z)
    n, d = int(z.shape[0]), int(z.shape[1])
    if n == 0:
        raise ValueError("gram_eigenspace: no samples")
    with _precise(z):
        zc, mean = _centred(z, center)
        evals, u = xp.linalg.eigh((zc @ zc.T) / n)  # ascending
        evals, u = xp.flip(evals, (0,)), xp.flip(u, (1,))
        finfo = xp.finfo(evals.dtype)
        tol = evals[:1].sum() * max(n, d) * finfo.eps  # evals[0] as a 0-d array/tensor: no host read
        if xp.__name__ == "numpy":
            scale = xp.where(evals > tol, 1.0 / xp.sqrt(xp.clip(evals, finfo.tiny, None) * n), 0.0)
            full = xp.concatenate([evals, xp.zeros(d - n, dtype=evals.dtype)])
        else:
            scale = (evals.clamp(min=finfo.tiny) * n).rsqrt().where(evals > tol, evals.new_zeros(()))
            full = xp.cat([evals, evals.new_zeros(d - n)])
        basis = (zc.T @ u) * scale  # d x n, orthonormal columns where scale > 0
    return _top_k(basis, full, mean, energy, k)


def eigenspace_of(cov: Any, mean: Any, energy: float | None = 0.95, k: int | None = None) -> Eigenspace:
    """Eigen-decompose a (d x d) second moment and keep the top-k directions."""
    xp = _xp(cov)
    with _precise(cov):
        evals, evecs = xp.linalg.eigh(_wide(cov))  # ascending
    return _top_k(xp.flip(evecs, (1,)), xp.flip(evals, (0,)), mean, energy, k)


def _top_k(basis: Any, eigenvalues: Any, mean: Any, energy: float | None, k: int | None) -> Eigenspace:
    """Keep ``basis``'s first k columns (descending eigenvalues; all d of them in ``eigenvalues``):
    a fixed ``k``, or the ``energy`` rule; on torch k stays on the device (columns past k zeroed,
    no host read)."""
    xp = _xp(eigenvalues)
    d = int(eigenvalues.shape[0])
    if k is not None:
        if not 1 <= k <= d:
            raise ValueError(f"k must be in 1..{d}, got {k}")
        return Eigenspace(basis[:, : int(k)], eigenvalues, int(k), mean)
    if xp.__name__ == "numpy":
        kk = energy_rank(eigenvalues, 0.95 if energy is None else energy)
        return Eigenspace(basis[:, :kk], eigenvalues, kk, mean)
    k_t = _energy_rank_on_device(eigenvalues, 0.95 if energy is None else energy)
    keep = (xp.arange(int(basis.shape[1]), device=eigenvalues.device) < k_t).to(basis.dtype)
    return Eigenspace(basis * keep, eigenvalues, k_t, mean)


def _energy_rank_on_device(eigenvalues_desc: Any, energy: float) -> Any:
    """:func:`energy_rank` as a 0-d tensor, so that a training step on CUDA does not wait for the host.

    Choosing k from the spectrum with ``int(...)`` would add a host synchronisation per
    step on top of the one ``eigh`` makes; the basis keeps all d columns, those past k zeroed.
    """
    if not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    vals = eigenvalues_desc.clamp(min=0)
    total = vals.sum()
    k = (vals.cumsum(0) < energy * total * (1 - 1e-9)).sum() + 1
    k = k.clamp(max=vals.shape[0])
    return k.where(total > 0, k.new_ones(()))


def projected_share(z: Any, space: Eigenspace, eps: float = 0.0) -> Any:
    """Form ``energy``: ||(Z - mean) U_k||^2 / ||Z - mean||^2 (0-d array/tensor, differentiable in torch)."""
    with _precise(z):
        zc = _wide(z) - space.mean
        num = ((zc @ space.basis) ** 2).sum()
        den = (zc**2).sum()
        return num / (den + eps)


def moment_share(z: Any, space: Eigenspace, eps: float = 0.0) -> Any:
    """Form ``frobenius``, squared: ||C_f P_k||_F^2 / ||C_f||_F^2 = ||C_f U_k||_F^2 / ||C_f||_F^2.

    C_f = (Z - mean)^T (Z - mean) / n. Squared because the loss 1 - DA_frob^2 then has no
    square root to differentiate (same gradient as the paper's -DA^2).
    """
    with _precise(z):
        zc = _wide(z) - space.mean
        cov = (zc.T @ zc) / zc.shape[0]
        num = ((cov @ space.basis) ** 2).sum()
        den = (cov**2).sum()
        return num / (den + eps)


def alignment_share(z: Any, space: Eigenspace, form: str, eps: float = 0.0) -> Any:
    """What L_DA = 1 - share uses: DA itself (``energy``) or DA^2 (``frobenius``)."""
    _check_form(form)
    return projected_share(z, space, eps) if form == "energy" else moment_share(z, space, eps)


def dimensional_alignments(
    z_forget: Any, z_retain: Any, energy: float | None = 0.95, k: int | None = None, center: bool = False
) -> dict[str, float]:
    """DA in both forms from one retain eigen-decomposition: {"frobenius": ..., "energy": ...}.

    nan for both when the (centred) forget features are all zero.
    """
    xp = _xp(z_forget)
    if xp.__name__ == "numpy":
        z_forget, z_retain = z_forget.astype("float64"), z_retain.astype("float64")
    if z_forget.shape[0] == 0:
        raise ValueError("dimensional_alignment: no forget samples")
    space = retain_eigenspace(z_retain, energy=energy, k=k, center=center)
    with _precise(z_forget):
        zc = _wide(z_forget) - space.mean
        if float((zc**2).sum()) == 0.0:
            return {form: float("nan") for form in FORMS}
    return {"energy": float(projected_share(z_forget, space)),
            "frobenius": float(moment_share(z_forget, space)) ** 0.5}


def dimensional_alignment(
    z_forget: Any, z_retain: Any, energy: float | None = 0.95, k: int | None = None, center: bool = False,
    form: str = "energy",
) -> float:
    """DA(Z_f, Z_r) in ``form`` as a float in [0, 1]; nan when the forget features are all zero.

    The function's default form stays ``energy`` (the first definition, kept for callers
    that predate ``form``); the config default is ``frobenius`` and is always passed.
    """
    _check_form(form)
    return dimensional_alignments(z_forget, z_retain, energy=energy, k=k, center=center)[form]


def eigenspace_alignment(
    z_forget: Any, z_retain: Any, energy: float | None = 0.95, k: int | None = None, center: bool = False,
    form: str = "energy",
) -> float:
    """The same quantity via the forget eigen-pairs (mu_j, v_j), w_j = ||U_k^T v_j||^2:
    energy: sum_j mu_j w_j / sum_j mu_j; frobenius: sqrt(sum_j mu_j^2 w_j / sum_j mu_j^2).

    Kept as an independent route to DA (tests check the routes agree).
    """
    _check_form(form)
    if _xp(z_forget).__name__ == "numpy":
        z_forget, z_retain = z_forget.astype("float64"), z_retain.astype("float64")
    space = retain_eigenspace(z_retain, energy=energy, k=k, center=center)
    with _precise(z_forget):
        zc = _wide(z_forget) - space.mean
        cov_f = (zc.T @ zc) / zc.shape[0]
        mu, v = _xp(cov_f).linalg.eigh(cov_f)
        weights = ((space.basis.T @ v) ** 2).sum(0)
        if form == "energy":
            return float((mu * weights).sum() / mu.sum())
        return float(((mu**2 * weights).sum() / (mu**2).sum()) ** 0.5)


def alignment_curves(z_forget: Any, z_retain: Any, center: bool = False) -> dict[str, Any]:
    """DA against the top-k retain eigenvectors for every k = 1..d, both forms (numpy, float64).

    Returns arrays indexed by k - 1: ``k``; ``retain_energy`` (share of the retain spectrum the
    top k hold, i.e. the ``energy`` whose rule picks this k); ``energy`` and ``frobenius`` (DA).
    One eigen-decomposition: per-direction contributions are summed cumulatively, because
    ||Z U_k||^2 = sum_{j<=k} ||Z u_j||^2 and ||C_f U_k||^2 = sum_{j<=k} ||C_f u_j||^2.
    """
    import numpy as np

    zf, zr = np.asarray(z_forget, dtype=np.float64), np.asarray(z_retain, dtype=np.float64)
    if len(zf) == 0:
        raise ValueError("alignment_curves: no forget samples")
    cov_r, mean = second_moment(zr, center)
    evals, evecs = np.linalg.eigh(cov_r)
    evals, evecs = np.clip(evals[::-1], 0, None), evecs[:, ::-1]
    zc = zf - mean
    per_dir = ((zc @ evecs) ** 2).sum(0)
    cov_f = zc.T @ zc / len(zc)
    per_dir_moment = ((cov_f @ evecs) ** 2).sum(0)
    total_r = evals.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "k": np.arange(1, len(evals) + 1),
            "retain_energy": np.cumsum(evals) / total_r if total_r > 0 else np.ones_like(evals),
            "energy": np.clip(np.cumsum(per_dir) / per_dir.sum(), 0.0, 1.0),
            "frobenius": np.sqrt(np.clip(np.cumsum(per_dir_moment) / (cov_f**2).sum(), 0.0, 1.0)),
        }


def energy_grid() -> list[float]:
    """Candidate spectrum shares for the ``energy`` rule: 0.05, 0.06, ..., 0.99, 0.995, 0.999."""
    return [round(0.05 + 0.01 * i, 2) for i in range(95)] + [0.995, 0.999]


def da_at_energy(curves: dict[str, Any], energy: float, form: str) -> tuple[int, float]:
    """``(k, DA)`` the energy rule gives on one model's curves (k from its own retain spectrum)."""
    _check_form(form)
    k = _rank_from_cumulative(curves["retain_energy"], energy)
    return k, float(curves[form][k - 1])


def _rank_from_cumulative(cum_share: Any, energy: float) -> int:
    """Smallest k with cumulative share >= energy: :func:`energy_rank` on a normalised cumulative spectrum."""
    import numpy as np

    cum = np.asarray(cum_share, dtype=np.float64)
    k = int((cum < energy * (1 - 1e-9)).sum()) + 1
    return min(k, len(cum))


def separating_rule(pairs: list[tuple[dict[str, Any], dict[str, Any]]], form: str,
                    grid: list[float] | None = None) -> dict[str, Any]:
    """The eigenspace size at which DA tells the original from the oracle best.

    ``pairs``: one ``(original curves, oracle curves)`` per (scenario, seed), each from
    :func:`alignment_curves` on TRAINING features (retain and forget) of the same split.
    Maximises the mean over pairs of |DA_original - DA_oracle| two ways: over a fixed k
    (``by_k``; both models cut at the same k) and over the ``energy`` rule (``by_energy``;
    each model cuts its own spectrum at the same share, as the metric does with ``k: null``).
    Ties go to the smaller k / energy.
    """
    import numpy as np

    _check_form(form)
    if not pairs:
        raise ValueError("separating_rule: no (original, oracle) pairs")
    d = min(len(o["k"]) for o, _ in pairs)
    diff_k = np.mean([np.abs(o[form][:d] - r[form][:d]) for o, r in pairs], axis=0)
    best_k = int(np.argmax(diff_k)) + 1
    grid = grid or energy_grid()
    per_energy = []
    for tau in grid:
        gaps = [abs(da_at_energy(o, tau, form)[1] - da_at_energy(r, tau, form)[1]) for o, r in pairs]
        per_energy.append(float(np.mean(gaps)))
    best = int(np.argmax(per_energy))
    tau = grid[best]
    return {
        "form": form,
        "by_k": {
            "k": best_k,
            "mean_abs_difference": float(diff_k[best_k - 1]),
            "retain_energy_original": [float(o["retain_energy"][best_k - 1]) for o, _ in pairs],
            "retain_energy_oracle": [float(r["retain_energy"][best_k - 1]) for _, r in pairs],
            "curve": [float(v) for v in diff_k],
        },
        "by_energy": {
            "energy": tau,
            "mean_abs_difference": per_energy[best],
            "k_original": [da_at_energy(o, tau, form)[0] for o, _ in pairs],
            "k_oracle": [da_at_energy(r, tau, form)[0] for _, r in pairs],
            "grid": list(grid),
            "curve": per_energy,
        },
    }


def normalized_spectrum(z: Any, top: int | None = None, center: bool = False) -> list[float]:
    """Eigenvalues of the second moment, descending, divided by their sum (first ``top``)."""
    import numpy

    cov, _ = second_moment(numpy.asarray(z, dtype="float64"), center)
    vals = numpy.clip(numpy.linalg.eigvalsh(cov)[::-1], 0, None)
    total = vals.sum()
    vals = vals / total if total > 0 else vals
    return [float(v) for v in (vals[:top] if top else vals)]
