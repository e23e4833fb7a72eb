"""Dimensional alignment (DA): how much of the forget features' energy lies in the retain eigenspace.

Definition (PAPER.md, "Dimensional alignment"):
    C_r = Z_r^T Z_r / n_r (uncentred second moment by default),
    U_k = top-k eigenvectors of C_r, k the smallest count holding ``energy`` of the spectrum,
    DA(Z_f, Z_r) = ||Z_f U_k||_F^2 / ||Z_f||_F^2  in [0, 1].
Direction: match the retrained oracle. Unit: fraction (0..1).

Works on numpy arrays and on torch tensors alike (the DA loss reuses it), by
calling only operations both libraries name the same way.
"""

from __future__ import annotations

from typing import Any, NamedTuple

EPS = 1e-12


def _xp(arr: Any) -> Any:
    """The array namespace of ``arr``: numpy or torch."""
    if type(arr).__module__.startswith("torch"):
        import torch

        return torch
    import numpy

    return numpy


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
    mean = z.mean(0) if center else z[:1].sum(0) * 0
    zc = z - mean
    return (zc.T @ zc) / n, mean


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
    """Top eigenvectors of the retain features' second moment (fixed ``k`` wins over ``energy``)."""
    cov, mean = second_moment(z_retain, center)
    return eigenspace_of(cov, mean, energy=energy, k=k)


def eigenspace_of(cov: Any, mean: Any, energy: float | None = 0.95, k: int | None = None) -> Eigenspace:
    """Eigen-decompose a (d x d) second moment and keep the top-k directions."""
    xp = _xp(cov)
    evals, evecs = xp.linalg.eigh(cov)  # ascending
    evals, evecs = xp.flip(evals, (0,)), xp.flip(evecs, (1,))
    d = int(evals.shape[0])
    if k is not None:
        if not 1 <= k <= d:
            raise ValueError(f"k must be in 1..{d}, got {k}")
        kk = int(k)
    else:
        kk = energy_rank(evals, 0.95 if energy is None else energy)
    return Eigenspace(evecs[:, :kk], evals, kk, mean)


def projected_share(z: Any, space: Eigenspace, eps: float = 0.0) -> Any:
    """||(Z - mean) U_k||^2 / ||Z - mean||^2 (a 0-d array/tensor, differentiable in torch)."""
    zc = z - space.mean
    num = ((zc @ space.basis) ** 2).sum()
    den = (zc**2).sum()
    return num / (den + eps)


def dimensional_alignment(
    z_forget: Any, z_retain: Any, energy: float | None = 0.95, k: int | None = None, center: bool = False
) -> float:
    """DA(Z_f, Z_r) as a float in [0, 1]; nan when the forget features are all zero."""
    xp = _xp(z_forget)
    if xp.__name__ == "numpy":
        z_forget, z_retain = z_forget.astype("float64"), z_retain.astype("float64")
    if z_forget.shape[0] == 0:
        raise ValueError("dimensional_alignment: no forget samples")
    space = retain_eigenspace(z_retain, energy=energy, k=k, center=center)
    zc = z_forget - space.mean
    if float((zc**2).sum()) == 0.0:
        return float("nan")
    return float(projected_share(z_forget, space))


def eigenspace_alignment(
    z_forget: Any, z_retain: Any, energy: float | None = 0.95, k: int | None = None, center: bool = False
) -> float:
    """The same quantity via the forget eigen-pairs: sum_j mu_j ||U_k^T v_j||^2 / sum_j mu_j.

    Kept as an independent route to DA (tests check the two agree).
    """
    space = retain_eigenspace(z_retain, energy=energy, k=k, center=center)
    zc = z_forget - space.mean
    cov_f = (zc.T @ zc) / zc.shape[0]
    xp = _xp(cov_f)
    mu, v = xp.linalg.eigh(cov_f)
    weights = ((space.basis.T @ v) ** 2).sum(0)
    return float((mu * weights).sum() / mu.sum())


def normalized_spectrum(z: Any, top: int | None = None, center: bool = False) -> list[float]:
    """Eigenvalues of the second moment, descending, divided by their sum (first ``top``)."""
    import numpy

    cov, _ = second_moment(numpy.asarray(z, dtype="float64"), center)
    vals = numpy.clip(numpy.linalg.eigvalsh(cov)[::-1], 0, None)
    total = vals.sum()
    vals = vals / total if total > 0 else vals
    return [float(v) for v in (vals[:top] if top else vals)]
