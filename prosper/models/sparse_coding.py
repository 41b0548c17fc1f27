"""ℓq sparse coding: the energy, the four penalties and the dictionary update.

A data point y ∈ R^D is coded by the MAP estimate of its latents under a sparse prior,

    s* = argmin_s E(s; y, W),   E(s; y, W) = ½ ||y − W s||² + Σ_h ψ(s_h),

with ψ(u) = λ φ(u) for the ℓ1 (φ = |u|), ℓ1/2 (φ = sqrt|u|) and ℓ0 (φ = 1{u ≠ 0}) penalties,
and for CEL0 (Soubies, Blanc-Féraud & Aubert 2015) the continuous exact relaxation of ℓ0,

    ψ(u) = λ − (a_h²/2) (|u| − sqrt(2λ)/a_h)²  for |u| <= sqrt(2λ)/a_h,   λ beyond,

with a_h = ||W_h||. The dictionary is updated from the sums Σ_n y_n s_nᵀ and Σ_n s_n s_nᵀ
(least squares, the "method of optimal directions"), then its columns are scaled to unit
norm (MODELS.md section 5; Rentzeperis et al. 2023).

This module is mathematics only: no loops over iterations, no MPI, no files.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PENALTIES", "SparseCodingModel", "energy", "penalty_value"]

#: the supported penalties, in the order they are documented
PENALTIES = ("l1", "l1/2", "l0", "cel0")


def penalty_value(S: np.ndarray, penalty: str, lam: float, a: np.ndarray | None = None):
    """Elementwise penalty ψ(s) of a code matrix.

    Parameters
    ----------
    S : ndarray of shape (N, H)
        Codes.
    penalty : {"l1", "l1/2", "l0", "cel0"}
    lam : float
        Penalty weight λ > 0.
    a : ndarray of shape (H,) or None
        Atom norms ||W_h|| (CEL0 only; None means unit norms).

    Returns
    -------
    ndarray of shape (N, H)
    """
    absS = np.abs(S)
    if penalty == "l1":
        return lam * absS
    if penalty == "l1/2":
        return lam * np.sqrt(absS)
    if penalty == "l0":
        return lam * (absS > 0)
    if penalty == "cel0":
        a = np.ones(S.shape[-1], dtype=S.dtype) if a is None else np.asarray(a, dtype=S.dtype)
        # written as a sqrt(2λ)|u| − a²u²/2 on the inner interval: the same function, no
        # division by a (a zero atom has ψ = 0)
        inner = a * np.sqrt(2.0 * lam) * absS - 0.5 * a**2 * absS**2
        edge = np.sqrt(2.0 * lam) / np.where(a > 0, a, 1.0)
        return np.where((absS <= edge) | (a == 0), inner, lam)
    raise ValueError(f"penalty must be one of {PENALTIES}; got {penalty!r}.")


def energy(Y: np.ndarray, S: np.ndarray, W: np.ndarray, penalty: str, lam: float) -> np.ndarray:
    """Energy E(s_n; y_n, W) of every data point.

    Parameters
    ----------
    Y : ndarray of shape (N, D)
    S : ndarray of shape (N, H)
    W : ndarray of shape (D, H)
    penalty : {"l1", "l1/2", "l0", "cel0"}
    lam : float

    Returns
    -------
    ndarray of shape (N,)
        ½ ||y_n − W s_n||² + Σ_h ψ(s_nh).
    """
    R = Y - S @ W.T
    a = np.sqrt(np.einsum("dh,dh->h", W, W))
    return 0.5 * np.einsum("nd,nd->n", R, R) + penalty_value(S, penalty, lam, a).sum(axis=1)


class SparseCodingModel:
    """The mathematics of ℓq sparse coding. Parameters: W (D, H) with unit-norm columns.

    Parameters
    ----------
    H : int
        Number of atoms (latents).
    D : int
        Number of observed dimensions.
    penalty : {"l1", "l1/2", "l0", "cel0"}
    lam : float
        Penalty weight λ > 0.
    """

    name = "sparse_coding"
    param_names = ("W",)

    def __init__(self, H: int, D: int, penalty: str, lam: float) -> None:
        if penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {PENALTIES}; got {penalty!r}.")
        self.H, self.D, self.penalty, self.lam = int(H), int(D), penalty, float(lam)

    def energy(self, Y: np.ndarray, S: np.ndarray, W: np.ndarray) -> np.ndarray:
        """Per-point energy, shape (N,) (see :func:`energy`)."""
        return energy(Y, S, W, self.penalty, self.lam)

    def penalty_sum(self, S: np.ndarray, a: np.ndarray | None = None) -> float:
        """Σ_n Σ_h ψ(s_nh) of a code matrix S (N, H); ``a`` are the atom norms (CEL0)."""
        return float(penalty_value(S, self.penalty, self.lam, a).sum(dtype=np.float64))

    def normalize(self, W: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Scale the columns of W to unit norm; a zero column is replaced by a random one."""
        W = np.array(W, dtype=np.float64)
        norms = np.linalg.norm(W, axis=0)
        dead = norms <= 1e-12 * max(1.0, float(norms.max(initial=0.0)))
        if dead.any():
            W[:, dead] = rng.standard_normal((self.D, int(dead.sum())))
            norms[dead] = np.linalg.norm(W[:, dead], axis=0)
        return W / norms

    def update_dictionary(
        self, YS: np.ndarray, SS: np.ndarray, W: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Least-squares dictionary from the summed statistics, columns scaled to unit norm.

        W_used = (Σ y sᵀ)_used (Σ s sᵀ)_used⁻¹ over the atoms some data point used; atoms no
        data point used keep their column (their codes are all zero, so the least-squares
        problem says nothing about them).

        Parameters
        ----------
        YS : ndarray of shape (D, H)
            Σ_n y_n s_nᵀ over all data points.
        SS : ndarray of shape (H, H)
            Σ_n s_n s_nᵀ over all data points.
        W : ndarray of shape (D, H)
            Current dictionary.

        Returns
        -------
        W_new : ndarray of shape (D, H)
            Unit-norm columns.
        scale : ndarray of shape (H,)
            Norm of each least-squares column before normalisation (1 for kept columns):
            codes fitted for the least-squares dictionary are ``s * scale`` for ``W_new``.
        """
        diag = np.diag(SS)
        used = diag > 1e-12 * max(float(diag.max(initial=0.0)), 1e-300)
        W_new = np.array(W, dtype=np.float64)
        scale = np.ones(self.H)
        if used.any():
            sub = SS[np.ix_(used, used)]
            # a tiny ridge keeps the solve defined when two atoms are used by the same points
            ridge = 1e-10 * float(np.trace(sub)) / int(used.sum())
            sol = np.linalg.solve(sub + ridge * np.eye(sub.shape[0]), YS[:, used].T).T
            norms = np.linalg.norm(sol, axis=0)
            ok = norms > 0
            cols = np.flatnonzero(used)[ok]
            W_new[:, cols] = sol[:, ok] / norms[ok]
            scale[cols] = norms[ok]
        return W_new, scale

    def reconstruct(self, S: np.ndarray, W: np.ndarray) -> np.ndarray:
        """W s for every code, shape (N, D)."""
        return S @ W.T
