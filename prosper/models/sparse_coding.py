"""ℓq sparse coding: the energy, the four penalties and the dictionary update.

A data point y ∈ R^D is coded by the MAP estimate of its latents under a sparse prior,

    s* = argmin_s E(s; y, W),   E(s; y, W) = ½ ||y − W s||² + Σ_h ψ(s_h),

with ψ(u) = λ φ(u) for the ℓ1 (φ = |u|), ℓ1/2 (φ = sqrt|u|) and ℓ0 (φ = 1{u ≠ 0}) penalties,
and for CEL0 (Soubies, Blanc-Féraud & Aubert 2015) the continuous exact relaxation of ℓ0,

    ψ(u) = λ − (a_h²/2) (|u| − sqrt(2λ)/a_h)²  for |u| <= sqrt(2λ)/a_h,   λ beyond,

with a_h = ||W_h||. The dictionary is updated from the statistics A = Σ_n s_n s_nᵀ and
B = Σ_n y_n s_nᵀ (with forgetting) by block coordinate descent over its unit-norm columns
(Mairal et al. 2010; MODELS.md section 5).

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

    def update_dictionary_bcd(
        self, A: np.ndarray, B: np.ndarray, W: np.ndarray, spare: np.ndarray
    ) -> tuple[np.ndarray, int]:
        """One sweep of block coordinate descent on the atoms (Mairal et al. 2010, alg. 2).

        Minimises ½ tr(Wᵀ W A) − tr(Wᵀ B) over one column at a time on the unit sphere:

            u_h = W_h + (B_h − W A_h) / A_hh,   W_h ← u_h / ||u_h||,

        which is the exact minimiser over W_h (the objective is isotropic in W_h). An atom
        with A_hh at most 1e-6 times the mean of diag(A) (no recent data point used it) is
        replaced by ``spare`` (a data residual), one atom per call, so that atoms never die.

        Parameters
        ----------
        A : ndarray of shape (H, H)
            Σ s sᵀ with forgetting.
        B : ndarray of shape (D, H)
            Σ y sᵀ with forgetting.
        W : ndarray of shape (D, H)
            Current dictionary (not modified).
        spare : ndarray of shape (D,)
            Replacement for an unused atom (ignored when zero).

        Returns
        -------
        W_new : ndarray of shape (D, H)
            Unit-norm columns.
        n_replaced : int
        """
        W = np.array(W, dtype=np.float64)
        diag = np.diagonal(A)
        floor = 1e-6 * float(diag.mean()) if diag.size else 0.0
        spare_norm = float(np.linalg.norm(spare))
        n_replaced = 0
        for h in range(self.H):
            if diag[h] > floor and diag[h] > 0:
                u = W[:, h] + (B[:, h] - W @ A[:, h]) / diag[h]
            elif n_replaced == 0 and spare_norm > 0 and floor > 0:
                u = spare
                n_replaced = 1
            else:
                continue
            norm = float(np.linalg.norm(u))
            if norm > 1e-12:
                W[:, h] = u / norm
        return W, n_replaced

    def reconstruct(self, S: np.ndarray, W: np.ndarray) -> np.ndarray:
        """W s for every code, shape (N, D)."""
        return S @ W.T
