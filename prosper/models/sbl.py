"""Sparse Bayesian learning: the Gaussian posterior of x and the EM updates of γ and σ².

The model (MODELS.md section 4): every snapshot y_l (a row of Y) is y_l = Φ x_l + ε_l with
ε_l ~ N(0, σ² I) and x_l ~ N(0, Γ), Γ = diag(γ) shared by all snapshots. Classic SBL
(:class:`SBLModel`) has an unstructured γ and any dense Φ; Kronecker SBL
(:class:`KroneckerSBLModel`, He & Joseph 2023) has Φ = Φ_1 ⊗ … ⊗ Φ_I and γ = γ_1 ⊗ … ⊗ γ_I.

Posterior (same covariance for every snapshot)::

    Σ = Γ^{1/2} (I + B/σ²)^{-1} Γ^{1/2},  B = Γ^{1/2} Φᵀ Φ Γ^{1/2},  μ_l = Σ Φᵀ y_l / σ².

Writing it with Γ^{1/2} on both sides keeps pruned (zero) γ_j exact: their rows and columns
of Σ and their μ_j are zero. For Kronecker Φ and Γ, B = ⊗_i B_i with the small
B_i = Γ_i^{1/2} Φ_iᵀ Φ_i Γ_i^{1/2} = U_i diag(λ_i) U_iᵀ, so U = ⊗ U_i diagonalises B and
Φ, Σ, Γ are never formed: μ and diag(Σ) cost O(Σ_i n_i³ + n Σ_i n_i) (n = Π n_i), every
product with a Kronecker matrix being reshapes and small matrix products
(:func:`kron_matvec`).

The log evidence of one snapshot, used as the free energy (EM increases it), is::

    log p(y_l) = -½ [m log(2πσ²) + Σ_k log(1 + λ_k/σ²) + ||y_l - Φμ_l||²/σ² + μ_lᵀ Γ^{-1} μ_l]

(Sylvester's determinant identity and yᵀC⁻¹y = ||y - Φμ||²/σ² + μᵀΓ⁻¹μ, C = σ²I + ΦΓΦᵀ).

The M-step receives Σ_l μ_l² summed over all snapshots of all ranks and the residual
sum R = Σ_l ||y_l - Φμ_l||². With q = mean_l μ_l² + diag(Σ) (L snapshots) and, on the
active entries, s_j = mean_l μ_lj² / γ_j and g_j = 1 - Σ_jj/γ_j ∈ [0, 1] (how well the data
determine x_j; Σ_j g_j = tr(ΦΣΦᵀ)/σ²), the evidence is stationary in γ_j where s_j = g_j:

- classic SBL: the EM update γ = q (= γ (s + 1 - g));
- KroSBL "am": γ = ⊗ γ_i, each factor by the fixed-point (MacKay-type) update of
  :func:`fixed_point_update`, γ_i[a] ← γ_i[a] · Σ s / Σ g over the slice of entries that
  γ_i[a] scales (a whole γ_i[a] slice is stationary where these sums agree). Unlike the EM
  update, whose irrelevant entries decay like 1/t, an entry the data do not support shrinks
  geometrically, so fits take tens instead of hundreds of iterations. (Earlier versions
  took the exact EM M-step over Kronecker γ by alternating closed-form factor updates; it
  never decreases the evidence but needed a median of ~450 iterations on 16×32 factors.)
- KroSBL "svd": γ = the non-negative best rank-one approximation of q reshaped to an
  n_1 × … × n_I tensor (SVD for I = 2, higher-order power iteration for I > 2) during the
  first ``SVD_ITERATIONS`` iterations, without pruning, then the "am" update (see
  :meth:`KroneckerSBLModel.update_gamma`);
- σ² = (R + L tr(ΦΣΦᵀ)) / (L m), tr(ΦΣΦᵀ) = Σ_k λ_k σ² / (σ² + λ_k) (the EM update of
  Tipping 2001, eq. 46 with the EM form of Wipf & Rao 2004).

Classic SBL with an entry cost κ (the solver's penalised phase) also needs, for every entry,
its evidence gain at its best γ_j with the others fixed (:meth:`SBLModel.entry_gains`,
Tipping & Faul 2003), from S_j = φ_jᵀC⁻¹φ_j (:meth:`GaussianPosterior.column_precisions`)
and the correlations φ_jᵀ(y_l - Φμ_l) of the residuals.

Kronecker SBL removes dead factor entries (``remove_dead``): the log evidence as a function
of a scaling c of one factor entry γ_i[a], all else fixed, is a closed form
(:func:`slice_evidence`) of the whitened posterior variances of the entry's slice in the
other factors' eigenbases (:meth:`GaussianPosterior.slice_variances`) and the sums over
snapshots of its squared means there (:meth:`GaussianPosterior.slice_means2`, an E-step
statistic); an entry whose evidence is largest at c = 0 is removed (:func:`dead_slices`).

Block sparsity (He & Joseph's block KroSBL): γ_i is constant on consecutive blocks of
``block_sizes[i]`` entries; both updates then act on block sums/means. The slice of a block
of b entries has a posterior covariance made of independent b × b blocks, one per eigen
index of the other factors; in the eigenvectors of each of them the same closed form holds,
so whole blocks are tested and removed alike.
Entries below ``prune`` times the largest entry of their factor are set to zero for good.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "GaussianPosterior",
    "KroneckerSBLModel",
    "SBLModel",
    "dead_slices",
    "fixed_point_update",
    "kron_matvec",
    "kron_vectors",
    "log_binomial",
    "rank_one_update",
    "slice_evidence",
]

Params = dict[str, np.ndarray]

#: σ² is kept above this fraction of the model's signal power per measurement, so that a
#: noiseless problem cannot drive it to 0 (1/σ² would then amplify round-off).
SIGMA2_FLOOR = 1e-10
#: inner sweeps of the higher-order power iteration (rank-one γ update for I > 2)
MAX_INNER = 100
INNER_RTOL = 1e-9
#: KroSBL "svd": iterations with the rank-one γ update (and no pruning) before the
#: fixed-point refinement takes over
SVD_ITERATIONS = 10
#: KroSBL "svd": fixed-point iterations after the rank-one phase before pruning starts (the
#: rank-one fit can shrink a weak true row far below its fixed-point value; these
#: iterations restore it)
SVD_UNPRUNED_REFINEMENT = 5
_TINY = np.finfo(np.float64).tiny


def kron_vectors(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """``np.kron(v_1, v_2, ...)`` of 1-D arrays, shape (Π len(v_i),).

    Formed as flattened outer products: the same products as ``np.kron`` (bit for bit) at a
    fraction of its call overhead, which dominates for the small factors of an iteration.
    """
    return functools.reduce(lambda a, b: np.multiply.outer(a, b).ravel(), vectors)


def kron_matvec(mats: Sequence[np.ndarray], X: np.ndarray) -> np.ndarray:
    """Multiply every row of ``X`` by ``np.kron(A_1, A_2, ...)`` without forming it.

    Parameters
    ----------
    mats : sequence of ndarray, A_i of shape (r_i, c_i)
    X : ndarray of shape (B, Π c_i)

    Returns
    -------
    ndarray of shape (B, Π r_i)
        Row b is ``np.kron(A_1, ..., A_I) @ X[b]`` (row-major vec convention).
    """
    B = X.shape[0]
    rest = math.prod(A.shape[1] for A in mats)
    if rest == 0:  # no active entry (γ all zero): the product is zero
        return np.zeros((B, math.prod(A.shape[0] for A in mats)))
    T = X
    # contracting mode 1 with A_i appends mode r_i at the end: after I steps the modes are
    # back in order (B, r_1, ..., r_I). Each step is np.tensordot(T, A_i, axes=([1], [1]))
    # written out (the same transposed copy and matrix product, so the same round-off)
    # without its per-call overhead.
    for A in mats:
        r, c = A.shape
        rest //= c
        T = np.dot(T.reshape(B, c, rest).transpose(0, 2, 1).reshape(-1, c), A.T)
        rest *= r
    return T.reshape(B, -1)


class GaussianPosterior:
    """The part of the posterior shared by all snapshots, for one setting of (γ, σ²).

    Only the active entries (γ_j > 0) enter the linear algebra: pruned entries have μ_j = 0
    and Σ_jj = 0 exactly, so the work shrinks as γ is pruned.

    Attributes
    ----------
    index : ndarray of int, shape (n_active,)
        Active entries of x, increasing (row-major order of the Kronecker factors).
    scale : ndarray of shape (n_active,)
        Γ^{1/2} on the active entries.
    sigma2 : float
    diag_cov : ndarray of shape (n,)
        diag(Σ) (zero on pruned entries).
    determined : ndarray of shape (n,)
        g_j = 1 - Σ_jj/γ_j = γ_j φ_jᵀ C⁻¹ φ_j ∈ [0, 1] (zero on pruned entries), computed
        without the cancellation of the difference (which loses all digits for small γ_j).
    trace : float
        tr(Φ Σ Φᵀ) = Σ_k λ_k σ² / (σ² + λ_k).
    logdet : float
        log det(I + B/σ²) = log det(C) - m log σ².
    """

    index: np.ndarray
    scale: np.ndarray
    sigma2: float
    diag_cov: np.ndarray
    determined: np.ndarray
    trace: float
    logdet: float

    def coordinates(self, Y: np.ndarray) -> np.ndarray | None:
        """What :meth:`whitened` and :meth:`slice_means2` compute alike from the rows of Y,
        so that an E-step batch computes it once (None: nothing to share)."""
        return None

    def whitened(self, Y: np.ndarray, coords: np.ndarray | None = None) -> np.ndarray:
        """v_l = Γ^{-1/2} μ_l on the active entries for the rows of Y, shape (B, n_active)
        (``coords``: :meth:`coordinates` of Y, when already computed)."""
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Φ x for rows of X given on the active entries (B, n_active), shape (B, m)."""
        raise NotImplementedError

    def column_precisions(self, dictionary: np.ndarray) -> np.ndarray:
        """S_j = φ_jᵀ C⁻¹ φ_j for every column of the dense Φ (m, n), shape (n,), with
        C = σ² I + Φ Γ Φᵀ (classic SBL only)."""
        raise NotImplementedError

    def slice_means2(self, Y: np.ndarray, coords: np.ndarray | None = None) -> list[np.ndarray]:
        """Per factor, the sums over the rows of Y of the squared whitened slice means in
        the other factors' eigenbases, each (n_active,) (Kronecker SBL only; ``coords``
        as in :meth:`whitened`)."""
        raise NotImplementedError

    def slice_variances(self) -> list[np.ndarray]:
        """Per factor, the posterior variances that go with :meth:`slice_means2`, each
        (n_active,) (Kronecker SBL only)."""
        raise NotImplementedError

    def _scatter_diag(self, diag_active: np.ndarray, determined: np.ndarray, n: int) -> None:
        self.diag_cov = np.zeros(n)
        self.diag_cov[self.index] = diag_active
        self.determined = np.zeros(n)
        self.determined[self.index] = np.minimum(np.maximum(determined, 0.0), 1.0)


class _EigenPosterior(GaussianPosterior):
    """Posterior through the eigendecompositions of the small factors B_i.

    Also the dense case with a single factor (classic SBL with few active entries).

    Parameters
    ----------
    factors : sequence of ndarray, the active columns of Φ_i, (m_i, a_i)
    grams : sequence of ndarray, their Φ_iᵀΦ_i, (a_i, a_i)
    scales : sequence of ndarray, sqrt(γ_i) on the active entries, (a_i,)
    sigma2 : float
    index : ndarray of int, (Π a_i,)
        Position of the active entries in the full x.
    n : int
        Length of the full x.
    blocks : sequence of int or None, default=None
        Per factor, the length b_i of the blocks whose slices :meth:`slice_means2` and
        :meth:`slice_variances` describe (the active entries of factor i must form whole
        consecutive blocks); None: 1 for every factor.
    """

    def __init__(
        self,
        factors: Sequence[np.ndarray],
        grams: Sequence[np.ndarray],
        scales: Sequence[np.ndarray],
        sigma2: float,
        index: np.ndarray,
        n: int,
        blocks: Sequence[int] | None = None,
    ) -> None:
        self.factors = factors
        self.blocks = [1] * len(factors) if blocks is None else [int(b) for b in blocks]
        self._bases: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.factors_t = [A.T for A in factors]
        self.sigma2 = sigma2
        self.index = index
        B = [s[:, None] * G * s[None, :] for G, s in zip(grams, scales, strict=True)]
        if len(B) > 1 and all(b.shape == B[0].shape for b in B):
            # one call for the stack: LAPACK runs on each matrix as it would alone
            values, vectors = np.linalg.eigh(np.array(B))
            lams, self.U = list(np.maximum(values, 0.0)), list(vectors)
        else:
            pairs = [np.linalg.eigh(b) for b in B]
            lams = [np.maximum(values, 0.0) for values, _ in pairs]
            self.U = [vectors for _, vectors in pairs]
        # (the eigenvalues are clipped at 0: B_i is PSD, negative ones are round-off)
        self.U_t = [U.T for U in self.U]
        lam = kron_vectors(lams)
        self.scale = kron_vectors(scales)
        # (I + Λ/σ²)^{-1} written as σ²/(σ² + λ): finite for any σ² > 0
        denominator = sigma2 + lam
        shrink = sigma2 / denominator
        self.inv = 1.0 / denominator
        # diag(U D Uᵀ) = (⊗ U_i∘U_i) d; Σ_jj/γ_j = diag(U shrink Uᵀ)_j and, as the rows of
        # U have unit norm, g_j = 1 - Σ_jj/γ_j = diag(U (1 - shrink) Uᵀ)_j
        squares = [U * U for U in self.U]
        inner = kron_matvec(squares, np.array([shrink, lam * self.inv]))
        self._scatter_diag(self.scale**2 * inner[0], inner[1], n)
        self.trace = float((lam * shrink).sum())
        self.logdet = float(np.log1p(lam / sigma2).sum())
        self._shrink = shrink
        self._dims = [U.shape[0] for U in self.U]

    def coordinates(self, Y: np.ndarray) -> np.ndarray:
        """Z = Λ-weighted eigen coordinates of the rows of Y, v = (⊗ U_i) Z, (B, n_active)."""
        W = kron_matvec(self.factors_t, Y) * self.scale
        return kron_matvec(self.U_t, W) * self.inv

    def whitened(self, Y: np.ndarray, coords: np.ndarray | None = None) -> np.ndarray:
        return kron_matvec(self.U, self.coordinates(Y) if coords is None else coords)

    def slice_means2(self, Y: np.ndarray, coords: np.ndarray | None = None) -> list[np.ndarray]:
        """Per factor i, Σ_l of the squared whitened posterior means of the block slices
        of factor i in a basis that makes their posterior covariance diagonal, shape
        (n_active,) each (variances: :meth:`slice_variances`).

        The slice of a block β of factor i (b_i consecutive entries) holds the entries of x
        whose i-th index is in β. In whitened coordinates (v = Γ^{-1/2} x), rotated by the
        eigenvectors of every other factor, its posterior mean is M = (U_i applied along
        mode i of Z)[.., β, ..], and its covariance splits into independent b_i × b_i
        blocks, one per eigen index κ of the other factors: D_κ = U_i[β] diag(shrink_κ)
        U_i[β]ᵀ. The means are rotated into the eigenvectors Q_κ of D_κ (b_i = 1: Q = 1).
        Layout: as the active entries of x, with the b_i rotated coordinates of a block at
        the positions of its entries along mode i.
        """
        B, dims = Y.shape[0], self._dims
        Z = (self.coordinates(Y) if coords is None else coords).reshape(B, *dims)
        out = []
        for i, U in enumerate(self.U):
            # np.moveaxis(np.tensordot(Z, U, axes=([1 + i], [1])), -1, 1), written out
            last = [0, *(k + 1 for k in range(len(dims)) if k != i), i + 1]
            M = np.dot(Z.transpose(last).reshape(-1, dims[i]), U.T)
            M = M.reshape(B, *(d for k, d in enumerate(dims) if k != i), dims[i])
            M = M.transpose(0, len(dims), *range(1, len(dims)))
            b = self.blocks[i]
            if b > 1:
                # (B, a_i, ...) -> (B, blocks, b, R), rotated by Q (blocks, R, b, b)
                Q = self._block_basis(i)[1]
                M = M.reshape(Y.shape[0], -1, b, Q.shape[1])
                M = np.einsum("lxpr,xrpk->lxkr", M, Q)
            sums = np.einsum("lx...,lx...->x...", M, M).reshape(self._dims[i], -1)
            out.append(self._to_entry_layout(sums, i))
        return out

    def slice_variances(self) -> list[np.ndarray]:
        """Per factor i, the posterior variances of the rotated whitened block slices of
        :meth:`slice_means2`, shape (n_active,) each. Without blocks, Σ_k U_i[a, k]²
        σ²/(σ² + λ_k) along mode i (the slice covariance is diagonal in the other
        factors' eigenbases); with blocks, the eigenvalues of each D_κ."""
        return [self._to_entry_layout(self.factor_variances(i), i) for i in range(len(self.U))]

    def factor_variances(self, i: int) -> np.ndarray:
        """The variances of :meth:`slice_variances` of factor i with mode i first: rows the
        a_i entries (b_i consecutive rows a block), columns the R = Π_{k≠i} a_k eigen
        indices of the other factors, shape (a_i, R)."""
        if self.blocks[i] == 1:  # what _block_basis gives for b = 1, without its reshapes
            return (self.U[i] * self.U[i]) @ self._mode_first(self._shrink, i)
        variances = self._block_basis(i)[0]  # (blocks, R, b)
        return np.swapaxes(variances, 1, 2).reshape(self._dims[i], -1)

    def _mode_first(self, values: np.ndarray, i: int) -> np.ndarray:
        """Values in the row-major layout of the active x -> (a_i, R), mode i first."""
        dims = self._dims
        if i == 0:
            return values.reshape(dims[0], -1)
        order = [i, *(k for k in range(len(dims)) if k != i)]
        return values.reshape(dims).transpose(order).reshape(dims[i], -1)

    def _block_basis(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (blocks, R, b) and eigenvectors (blocks, R, b, b) of the slice
        covariances D_κ of the blocks of factor i (R = Π_{k≠i} a_k), cached."""
        if i not in self._bases:
            U, b = self.U[i], self.blocks[i]
            S = self._mode_first(self._shrink, i)
            P = U.reshape(-1, b, U.shape[1])  # rows of U_i grouped by block
            pairs = (P[:, :, None, :] * P[:, None, :, :]).reshape(-1, U.shape[1])
            D = np.moveaxis((pairs @ S).reshape(P.shape[0], b, b, -1), 3, 1)
            if b == 1:
                self._bases[i] = (D[..., 0], np.ones_like(D))
            else:
                self._bases[i] = np.linalg.eigh(D)
        return self._bases[i]

    def _to_entry_layout(self, values: np.ndarray, i: int) -> np.ndarray:
        """(a_i, R) values along mode i first -> the row-major layout of the active x."""
        if i == 0:
            return values.ravel()
        dims = [self._dims[i], *(d for k, d in enumerate(self._dims) if k != i)]
        # np.moveaxis(values.reshape(dims), 0, i).ravel(), without its overhead
        return (
            values.reshape(dims).transpose([*range(1, i + 1), 0, *range(i + 1, len(dims))]).ravel()
        )

    def column_precisions(self, dictionary: np.ndarray) -> np.ndarray:
        if len(self.factors) != 1:
            raise NotImplementedError("column precisions of a Kronecker posterior")
        # Woodbury with K = Φ_a Γ_a^{1/2} = (K U) Uᵀ: C⁻¹ = (I - K U diag(inv) Uᵀ Kᵀ)/σ²,
        # O(m n a) for a active entries
        P = dictionary.T @ ((self.factors[0] * self.scale) @ self.U[0])
        norms2 = np.einsum("mn,mn->n", dictionary, dictionary)
        return np.maximum(norms2 - (P * P) @ self.inv, 0.0) / self.sigma2

    def predict(self, X: np.ndarray) -> np.ndarray:
        return kron_matvec(self.factors, X)


class _MeasurementPosterior(GaussianPosterior):
    """Posterior through the m × m matrix ΦΓΦᵀ (dense Φ, more active entries than rows).

    Parameters
    ----------
    dictionary : ndarray of shape (m, n_active)
        The active columns of Φ.
    scale : ndarray of shape (n_active,)
    sigma2 : float
    index : ndarray of int, (n_active,)
    n : int
    """

    def __init__(
        self, dictionary: np.ndarray, scale: np.ndarray, sigma2: float, index: np.ndarray, n: int
    ) -> None:
        self.dictionary = dictionary
        self.scale = scale
        self.sigma2 = sigma2
        self.index = index
        K = dictionary * scale[None, :]  # Φ Γ^{1/2}, (m, n_active)
        lam, V = np.linalg.eigh(K @ K.T)
        lam = np.maximum(lam, 0.0)
        self.inv = 1.0 / (sigma2 + lam)
        self.KtV = K.T @ V  # (n_active, m)
        self.V = V
        # diag Σ = γ - γ² diag(Φᵀ C⁻¹ Φ), C = σ² I + ΦΓΦᵀ, and (KᵀV)² C-weighted rows give
        # g_j = γ_j φ_jᵀ C⁻¹ φ_j; clip the round-off of the difference
        determined = (self.KtV**2) @ self.inv
        self._scatter_diag(scale**2 * np.maximum(1.0 - determined, 0.0), determined, n)
        self.trace = float(np.sum(lam * sigma2 * self.inv))
        self.logdet = float(np.sum(np.log1p(lam / sigma2)))

    def whitened(self, Y: np.ndarray, coords: np.ndarray | None = None) -> np.ndarray:
        # v = Γ^{1/2} Φᵀ C⁻¹ y
        return ((Y @ self.V) * self.inv) @ self.KtV.T

    def column_precisions(self, dictionary: np.ndarray) -> np.ndarray:
        P = dictionary.T @ self.V  # C⁻¹ = V diag(inv) Vᵀ: O(m² n)
        return (P * P) @ self.inv

    def predict(self, X: np.ndarray) -> np.ndarray:
        return X @ self.dictionary.T


class _SBLBase:
    """Shared E-step statistics, evidence and σ² update of classic and Kronecker SBL."""

    param_names: tuple[str, ...] = ()
    n_features: int  # m
    n_components: int  # n

    # -- model-specific -------------------------------------------------------------------
    def gamma(self, params: Params) -> np.ndarray:
        """The full prior variance vector γ, shape (n,)."""
        raise NotImplementedError

    def posterior(self, params: Params) -> GaussianPosterior:
        """Posterior quantities shared by all snapshots for ``params``."""
        raise NotImplementedError

    def init_gamma(self, value: float) -> Params:
        """γ params with every entry of the full γ equal to ``value``."""
        raise NotImplementedError

    def update_gamma(
        self, q: np.ndarray, ratios: tuple[np.ndarray, np.ndarray], params: Params, **kwargs: Any
    ) -> Params:
        """New γ params from q = mean_l μ_l² + diag Σ (n,) and (s, g) (each (n,), zero on
        pruned entries); ``kwargs``: ``prune`` (float) and ``iteration`` (int)."""
        raise NotImplementedError

    def column_norms2(self) -> np.ndarray:
        """||φ_j||² of every column of Φ, shape (n,)."""
        raise NotImplementedError

    def dead_test_phase(self, prune: float, iteration: int) -> bool:
        """Whether the M-step of ``iteration`` may remove dead factor entries (and needs
        the sums of :meth:`statistic_names`)."""
        return False

    def fixed_point_phase(self, iteration: int) -> bool:
        """Whether the γ update of ``iteration`` is the fixed-point map that
        :meth:`log_coordinates` describes (and a solver may extrapolate)."""
        return False

    def prune_threshold(self, prune: float, iteration: int) -> float:
        """The pruning threshold in force at ``iteration``."""
        return prune

    def log_parameters(self, params: Params) -> list[np.ndarray]:
        """Logs of the parameters (-inf on pruned entries), the input of
        :meth:`gauge_coordinates`."""
        raise NotImplementedError

    def gauge_coordinates(
        self, logs: Sequence[np.ndarray], active: Sequence[np.ndarray]
    ) -> np.ndarray:
        """The parameters given by :meth:`log_parameters` as a vector of log coordinates
        on the ``active`` entries."""
        raise NotImplementedError

    def log_coordinates(self, params: Params, active: Sequence[np.ndarray]) -> np.ndarray:
        """``gauge_coordinates(log_parameters(params), active)``."""
        return self.gauge_coordinates(self.log_parameters(params), active)

    def expected_power(self, params: Params) -> float:
        """E||Φx||² = Σ_j ||φ_j||² γ_j under the prior of ``params``."""
        return float(self.column_norms2() @ self.gamma(params))

    def n_active(self, params: Params) -> int:
        """Number of non-zero entries of γ."""
        return int(np.count_nonzero(self.gamma(params)))

    def support_log_prior(self, params: Params) -> float:
        """log P(S) - log P(∅) of the support S = {j : γ_j > 0} of ``params`` under the
        Beta(1, 1)-binomial prior on supports (see :func:`log_binomial`)."""
        raise NotImplementedError

    def empty_params(self, sigma2: float) -> Params:
        """The empty model: every γ entry zero (x = 0), noise variance ``sigma2``."""
        raise NotImplementedError

    def from_log_coordinates(
        self, vector: np.ndarray, active: Sequence[np.ndarray], prune: float
    ) -> Params:
        """Inverse of :meth:`log_coordinates` (entries outside ``active`` are zero), pruned."""
        raise NotImplementedError

    def active_factors(self, params: Params) -> list[np.ndarray]:
        """Boolean masks of the non-zero entries of each γ factor."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------
    #: without a given σ, σ² starts at this fraction of the mean power per measurement
    initial_noise_fraction = 0.1

    def init_params(self, power: float, sigma: float | None) -> Params:
        """Initial γ and σ from the mean snapshot power ``power`` = mean_l ||y_l||².

        γ is constant with E||Φx||² = power; σ is ``sigma`` when given, else
        σ² = ``initial_noise_fraction`` · power / m (0.1: the noise of a 10 dB
        signal-to-noise ratio).
        """
        value = power / float(np.sum(self.column_norms2()))
        params = self.init_gamma(value)
        if sigma is None:
            sigma2 = self.initial_noise_fraction * power / self.n_features
        else:
            sigma2 = float(sigma) ** 2
        params["sigma"] = np.array(np.sqrt(sigma2))
        return params

    def coef(self, Y: np.ndarray, post: GaussianPosterior) -> np.ndarray:
        """Posterior means μ of the rows of Y (B, m), shape (B, n) (zero where γ_j = 0)."""
        Y = np.asarray(Y, dtype=np.float64)
        mu = np.zeros((Y.shape[0], self.n_components))
        mu[:, post.index] = post.whitened(Y) * post.scale
        return mu

    def _active_terms(
        self, Y: np.ndarray, post: GaussianPosterior, coords: np.ndarray | None = None
    ):
        """μ on the active entries (B, a), the residuals y - Φμ (B, m), ||y - Φμ||² (B,),
        and the evidence terms (B,) (``coords``: :meth:`GaussianPosterior.coordinates`)."""
        Y = np.asarray(Y, dtype=np.float64)
        v = post.whitened(Y, coords)
        mu = v * post.scale
        r = Y - post.predict(mu)
        resid = np.einsum("bm,bm->b", r, r)
        return mu, r, resid, self._log_evidence(resid, np.einsum("ba,ba->b", v, v), post)

    def residual_correlations(self, R: np.ndarray) -> np.ndarray:
        """Φᵀ r for residual rows R (B, m), shape (B, n) (classic SBL only)."""
        raise NotImplementedError

    def statistic_names(self) -> tuple[str, ...]:
        """Names of the extra (n,)-shaped sums :meth:`estep_batch` returns with
        ``slices=True`` (none for classic SBL)."""
        return ()

    def estep_batch(
        self,
        Y: np.ndarray,
        post: GaussianPosterior,
        *,
        correlations: bool = False,
        slices: bool = False,
    ) -> dict[str, np.ndarray]:
        """Summed statistics of one batch of snapshots Y (B, m).

        Returns
        -------
        dict
            ``mu2`` (n,) = Σ_l μ_l², ``resid`` = Σ_l ||y_l - Φμ_l||², ``free_energy`` =
            Σ_l log p(y_l | γ, σ²); with ``correlations`` also ``corr2`` (n,) =
            Σ_l (φ_jᵀ (y_l - Φμ_l))²; with ``slices`` the arrays of
            :meth:`statistic_names` (Kronecker SBL: ``slice_1`` .. ``slice_I``, the sums
            of :meth:`GaussianPosterior.slice_means2`, zero on pruned entries).
        """
        Y = np.asarray(Y, dtype=np.float64)
        # the slice sums start from the same eigen coordinates as μ: computed once
        coords = post.coordinates(Y) if slices else None
        mu, r, resid, log_ev = self._active_terms(Y, post, coords)
        mu2 = np.zeros(self.n_components)
        mu2[post.index] = np.einsum("ba,ba->a", mu, mu)
        out = {
            "mu2": mu2,
            "resid": np.array(resid.sum()),
            "free_energy": np.array(log_ev.sum()),
        }
        if correlations:
            corr = self.residual_correlations(r)
            out["corr2"] = np.einsum("bn,bn->n", corr, corr)
        if slices:
            sums_of = post.slice_means2(Y, coords)
            for name, sums in zip(self.statistic_names(), sums_of, strict=True):
                out[name] = np.zeros(self.n_components)
                out[name][post.index] = sums
        return out

    def log_evidence(self, Y: np.ndarray, post: GaussianPosterior) -> np.ndarray:
        """log p(y_l | γ, σ²) of every row of Y (B, m), shape (B,)."""
        return self._active_terms(Y, post)[3]

    def _log_evidence(
        self, resid: np.ndarray, vnorm2: np.ndarray, post: GaussianPosterior
    ) -> np.ndarray:
        m = self.n_features
        return -0.5 * (
            m * np.log(2 * np.pi * post.sigma2) + post.logdet + resid / post.sigma2 + vnorm2
        )

    def mstep(
        self,
        stats: dict[str, np.ndarray],
        params: Params,
        post: GaussianPosterior,
        n_total: int,
        *,
        learn_sigma: bool,
        prune: float,
        iteration: int = 0,
    ) -> Params:
        """New (γ, σ) from statistics summed over all ``n_total`` snapshots.

        ``post`` is the posterior of ``params`` used in the E-step that gave ``stats``;
        ``iteration`` (0-based) selects the phase of KroSBL "svd".
        """
        mean_mu2 = stats["mu2"] / n_total
        q = mean_mu2 + post.diag_cov
        gamma, index = self.gamma(params), post.index
        s = np.zeros_like(q)
        s[index] = mean_mu2[index] / gamma[index]
        sigma2 = (float(stats["resid"]) + n_total * post.trace) / (n_total * self.n_features)
        new = self.update_gamma(
            q,
            (s, post.determined),
            params,
            prune=prune,
            iteration=iteration,
            stats=stats,
            post=post,
            n_total=n_total,
            sigma_falling=learn_sigma and sigma2 < (1.0 - DEAD_SIGMA) * post.sigma2,
        )
        if learn_sigma:
            signal = self.expected_power(new) / self.n_features
            sigma2 = max(sigma2, SIGMA2_FLOOR * signal, np.finfo(np.float64).tiny)
            new["sigma"] = np.array(np.sqrt(sigma2))
        else:
            new["sigma"] = np.array(float(params["sigma"]))
        return new


def _prune(gamma: np.ndarray, prune: float) -> np.ndarray:
    top = np.maximum.reduce(gamma, initial=0.0)
    return np.where(gamma >= prune * top, gamma, 0.0) if top > 0 else gamma


def log_binomial(n: int, k: int) -> float:
    """log C(n, k), the log prior odds of the empty support against one support of k of
    n entries under a Beta(1, 1) (uniform) prior on the inclusion probability.

    With that prior a support of k entries has probability 1 / ((n + 1) C(n, k)) (Scott &
    Berger 2010): the prior corrects for the number of supports of each size, so the
    cost of one more entry, log((n - k)/(k + 1)), is log n for the first one and falls
    as the data support more of them.
    """
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


class SBLModel(_SBLBase):
    """Classic SBL (Tipping 2001; Wipf & Rao 2004) with a dense dictionary.

    Parameters
    ----------
    dictionary : ndarray of shape (m, n)
        Φ. With a active (unpruned) entries, the posterior works in the m × m measurement
        space when a > m (O(m² a) per iteration), otherwise in the a × a coefficient space
        (O(m a² + a³)).
    """

    param_names = ("gamma", "sigma")

    def __init__(self, dictionary: np.ndarray) -> None:
        self.dictionary = np.asarray(dictionary, dtype=np.float64)
        self.n_features, self.n_components = self.dictionary.shape

    def gamma(self, params: Params) -> np.ndarray:
        return np.asarray(params["gamma"], dtype=np.float64)

    def posterior(self, params: Params) -> GaussianPosterior:
        gamma = self.gamma(params)
        sigma2 = float(params["sigma"]) ** 2
        index = np.flatnonzero(gamma > 0)
        A = self.dictionary if index.size == gamma.size else self.dictionary[:, index]
        scale = np.sqrt(gamma[index])
        if index.size > self.n_features:
            return _MeasurementPosterior(A, scale, sigma2, index, self.n_components)
        return _EigenPosterior([A], [A.T @ A], [scale], sigma2, index, self.n_components)

    def column_norms2(self) -> np.ndarray:
        return np.einsum("mn,mn->n", self.dictionary, self.dictionary)

    def init_gamma(self, value: float) -> Params:
        return {"gamma": np.full(self.n_components, value)}

    def support_log_prior(self, params: Params) -> float:
        return -log_binomial(self.n_components, self.n_active(params))

    def empty_params(self, sigma2: float) -> Params:
        return {"gamma": np.zeros(self.n_components), "sigma": np.array(math.sqrt(sigma2))}

    def update_gamma(
        self, q: np.ndarray, ratios: tuple[np.ndarray, np.ndarray], params: Params, **kwargs: Any
    ) -> Params:
        # the EM update; pruned entries have μ_j = Σ_jj = 0, so q_j = 0 keeps them at zero
        return {"gamma": _prune(q, kwargs["prune"])}

    def residual_correlations(self, R: np.ndarray) -> np.ndarray:
        return R @ self.dictionary

    def entry_gains(
        self, stats: dict[str, np.ndarray], params: Params, post: GaussianPosterior, n_total: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Log-evidence gain of every entry at its best γ_j, the others held fixed.

        With s_j = φ_jᵀ C_{-j}⁻¹ φ_j and mean_l q_lj², q_lj = φ_jᵀ C_{-j}⁻¹ y_l (C_{-j}: C
        without entry j), log p(Y) as a function of γ_j alone is largest at
        γ_j* = (mean q² - s)/s² when r_j = mean q²/s > 1 (Tipping & Faul 2003), and exceeds
        its value at γ_j = 0 by ℓ_j = (L/2)(r_j - 1 - log r_j) (0 when r_j <= 1). Active
        entries: r_j = (mean_l μ_lj²/γ_j)/(g_j (1 - g_j)); inactive ones: C_{-j} = C, so
        s_j = :meth:`GaussianPosterior.column_precisions` and q_lj = φ_jᵀ(y_l - Φμ_l)/σ².

        Parameters
        ----------
        stats : dict
            Reduced E-step sums with ``corr2`` (:meth:`estep_batch` with ``correlations``).
        params : dict
            The parameters of ``post``.
        post : GaussianPosterior
        n_total : int
            L, snapshots over all ranks.

        Returns
        -------
        gain : ndarray of shape (n,)
            ℓ_j (inf for an entry the data determine completely, g_j = 1).
        best : ndarray of shape (n,)
            γ_j* of the inactive entries (0 where r_j <= 1 and on active entries).
        """
        gamma = self.gamma(params)
        active = gamma > 0
        tiny = np.finfo(np.float64).tiny
        S = post.column_precisions(self.dictionary)
        Q2 = stats["corr2"] / n_total / post.sigma2**2
        g = post.determined
        with np.errstate(divide="ignore", invalid="ignore"):
            s_ratio = stats["mu2"] / n_total / np.where(active, gamma, 1.0)
            r_active = np.where(g < 1.0, s_ratio / np.maximum(g * (1.0 - g), tiny), np.inf)
            r_inactive = Q2 / np.maximum(S, tiny)
        r = np.where(active, r_active, np.where(S > 0, r_inactive, 0.0))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            finite = np.where(np.isfinite(r) & (r > 1.0), r, 1.0)
            gain = np.where(r > 1.0, 0.5 * n_total * (finite - 1.0 - np.log(finite)), 0.0)
            gain[np.isinf(r)] = np.inf
            best = np.where(~active & (r > 1.0), (Q2 - S) / np.maximum(S, tiny) ** 2, 0.0)
        return gain, best


def _block_sum(v: np.ndarray, block: int) -> np.ndarray:
    return v if block == 1 else v.reshape(-1, block).sum(axis=1)


def _contract_except(Q: np.ndarray, vectors: Sequence[np.ndarray], i: int) -> np.ndarray:
    """Σ over every mode k ≠ i of Q[..] Π_k vectors[k][idx_k], shape (Q.shape[i],)."""
    T = Q
    # from the last mode down, so the lower mode numbers stay valid; each step is
    # np.tensordot(T, vectors[k], axes=([k], [0])) written out (same round-off, less overhead)
    for k in reversed(range(Q.ndim)):
        if k != i:
            keep = [j for j in range(T.ndim) if j != k]
            moved = T.transpose([*keep, k]).reshape(-1, T.shape[k])
            T = np.dot(moved, vectors[k]).reshape([T.shape[j] for j in keep])
    return T


def _balance(gammas: list[np.ndarray]) -> list[np.ndarray]:
    """Rescale the factors to equal maxima without changing their Kronecker product."""
    tops = np.array([np.maximum.reduce(g, initial=0.0) for g in gammas])
    if (tops <= 0).any():
        return [np.zeros_like(g) for g in gammas]
    target = np.exp(np.add.reduce(np.log(tops)) / tops.size)  # the geometric mean
    return [g * (target / t) for g, t in zip(gammas, tops, strict=True)]


def fixed_point_update(
    S: np.ndarray, G: np.ndarray, gammas: Sequence[np.ndarray], blocks: Sequence[int]
) -> list[np.ndarray]:
    """Fixed-point (MacKay-type) update of Kronecker-structured γ = ⊗_i γ_i.

    With s_j = mean_l μ_lj²/γ_j and g_j = 1 - Σ_jj/γ_j, the derivative of the log evidence
    along log γ_i[a] is ½ Σ (s_j - g_j) over the entries j of the slice that γ_i[a] scales.
    Each factor entry (block) is multiplied by the ratio of the two sums, the Kronecker form
    of MacKay's γ_j ← μ_j²/g_j (Tipping 2001, eq. 45); the overall scale, which every factor
    would otherwise change by the same global ratio Σ s / Σ g, is changed once. Entries the
    data do not support shrink geometrically (their ratio stays below 1). Not an EM step:
    the evidence is not guaranteed to increase at every iteration.

    Parameters
    ----------
    S, G : ndarray of shape (n_1, ..., n_I)
        s and g reshaped (zero on pruned entries).
    gammas : sequence of ndarray of shape (n_i,)
        Current factors (their zero entries stay zero).
    blocks : sequence of int
        Block length of each factor (1: no blocks); sums run over whole blocks.

    Returns
    -------
    list of ndarray of shape (n_i,)
    """
    I = len(gammas)
    ones = [np.ones(n) for n in S.shape]
    overall = float(S.sum()) / max(float(G.sum()), _TINY)
    shared = overall ** ((I - 1) / I)
    out = []
    for i, (gamma, b) in enumerate(zip(gammas, blocks, strict=True)):
        s_i = _block_sum(_contract_except(S, ones, i), b)
        g_i = _block_sum(_contract_except(G, ones, i), b)
        # g_i = 0 only where γ underflowed: such an entry is dead
        positive = g_i > 0
        ratio = np.where(positive, s_i / np.where(positive, g_i, 1.0), 0.0)
        ratio = (ratio if b == 1 else np.repeat(ratio, b)) / shared
        out.append(np.asarray(gamma, dtype=np.float64) * ratio)
    return _balance(out)


def rank_one_update(
    Q: np.ndarray, gammas: Sequence[np.ndarray], blocks: Sequence[int]
) -> list[np.ndarray]:
    """Non-negative best rank-one approximation ⊗_i γ_i of the (block-averaged) tensor Q.

    I = 2: leading singular pair of the n_1 × n_2 matrix; I > 2: higher-order power
    iteration started from the current factors. Q is entrywise non-negative, so the leading
    singular vectors can be taken non-negative (their absolute values are used).

    Parameters
    ----------
    Q : ndarray of shape (n_1, ..., n_I)
    gammas : sequence of ndarray of shape (n_i,)
        Current factors (start of the power iteration; their zero entries stay zero).
    blocks : sequence of int
        Block length of each factor.

    Returns
    -------
    list of ndarray of shape (n_i,)
    """
    I = len(gammas)
    active = [np.asarray(g) > 0 for g in gammas]
    # block means: a block-constant rank-one fit of Q is a rank-one fit of its block means
    shape = []
    for n_i, b in zip(Q.shape, blocks, strict=True):
        shape += [n_i // b, b]
    Qb = Q.reshape(shape).mean(axis=tuple(range(1, 2 * I, 2)))
    if I == 1:
        small = [Qb]
    elif I == 2:
        U, S, Vt = np.linalg.svd(Qb, full_matrices=False)
        root = np.sqrt(S[0])
        small = [root * np.abs(U[:, 0]), root * np.abs(Vt[0])]
    else:
        u = [
            np.abs(_block_sum(np.asarray(g, dtype=np.float64), b))
            for g, b in zip(gammas, blocks, strict=True)
        ]
        u = [x / max(np.linalg.norm(x), np.finfo(float).tiny) for x in u]
        for _ in range(MAX_INNER):
            old = [x.copy() for x in u]
            for i in range(I):
                x = np.abs(_contract_except(Qb, u, i))
                u[i] = x / max(np.linalg.norm(x), np.finfo(float).tiny)
            if max(np.linalg.norm(a - b) for a, b in zip(u, old, strict=True)) < INNER_RTOL:
                break
        value = float(_contract_except(Qb, u, 0) @ u[0])
        small = [max(value, 0.0) ** (1.0 / I) * x for x in u]
    out = [np.repeat(g, b) * a for g, b, a in zip(small, blocks, active, strict=True)]
    return _balance(out)


#: the dead-entry test of Kronecker SBL is skipped in an iteration whose σ² update falls
#: below (1 - DEAD_SIGMA) times σ²: while σ falls, the current σ overstates the noise (it
#: starts at 0.3 × the power per measurement, 15× σ at 30 dB), and at such a σ weak true
#: slices look dead; at a steady or rising σ the test errs, if at all, on keeping entries
DEAD_SIGMA = 0.05
#: scalings c of one factor entry at which :func:`dead_slices` evaluates the evidence
#: (4 per decade; the profile is smooth in log c)
SLICE_GRID = np.geomspace(1e-6, 1e3, 37)


def slice_evidence(c: np.ndarray, T: np.ndarray, D: np.ndarray, L: int) -> np.ndarray:
    """Change of the log evidence when one factor entry γ_i[a] (or one block of entries)
    is scaled by c, all else fixed.

    In the whitened coordinates of the slice of entry a (rotated into the other factors'
    eigenbases and, for a block, into the eigenvectors of each b × b block of its
    covariance, :meth:`GaussianPosterior.slice_means2`) the prior N(0, I) becomes N(0, c I)
    and the posterior of snapshot l is N(m_l, diag d); the evidence ratio is the posterior
    expectation of the prior ratio::

        log p(Y | c) - log p(Y | 1) = Σ_k [ -(L/2) log(c + (1 - c) d_k)
                                            - (1 - c) T_k / (2 (c + (1 - c) d_k)) ],

    T_k = Σ_l m_lk². At c = 0 it is the Savage-Dickey ratio of removing the slice.

    Parameters
    ----------
    c : ndarray of shape (C,)
        Scalings (>= 0).
    T, D : ndarray of shape (A, r)
        Per entry (row) the sums T_k and the variances d_k of its r slice coordinates.
    L : int
        Snapshots.

    Returns
    -------
    ndarray of shape (A, C)
    """
    d = np.minimum(np.maximum(D, _TINY), 1.0)[:, None, :]
    c = np.asarray(c, dtype=np.float64)[None, :, None]
    # L log(v) + (1 - c) T / v with v = c + (1 - c) d, in place: the (A, C, r) arrays of
    # the grid are the largest of a KroSBL iteration
    v = d * (1.0 - c)
    v += c
    terms = (1.0 - c) * T[:, None, :]
    terms /= v
    logs = np.log(v, out=v)
    logs *= L
    terms += logs
    return -0.5 * terms.sum(axis=2)


def _removal_evidence(T: np.ndarray, D: np.ndarray, L: int) -> np.ndarray:
    """``slice_evidence(np.zeros(1), T, D, L)[:, 0]`` (the same arithmetic) without the
    grid axis, shape (A,)."""
    d = np.minimum(np.maximum(D, _TINY), 1.0)
    return -0.5 * (L * np.log(d) + T / d).sum(axis=1)


def dead_slices(T: np.ndarray, D: np.ndarray, L: int) -> np.ndarray:
    """Factor entries (or blocks) whose evidence, the others fixed, is largest at zero.

    The Kronecker form of the deletion rule of Tipping & Faul (2003): an entry is dead
    when removing its slice raises the evidence (:func:`slice_evidence` at c = 0 above
    its value at c = 1) and no scaling on ``SLICE_GRID`` beats removal.

    Parameters
    ----------
    T, D : ndarray of shape (A, r)
        As in :func:`slice_evidence`.
    L : int

    Returns
    -------
    ndarray of bool, shape (A,)
    """
    removed = _removal_evidence(T, D, L)
    dead = removed > 0.0
    if dead.any():
        best = slice_evidence(SLICE_GRID, T[dead], D[dead], L).max(axis=1)
        dead[np.flatnonzero(dead)] = removed[dead] >= best
    return dead


class KroneckerSBLModel(_SBLBase):
    """Kronecker-structured SBL (He & Joseph 2023): Φ = ⊗_i Φ_i, γ = ⊗_i γ_i.

    Parameters
    ----------
    factors : sequence of ndarray, Φ_i of shape (m_i, n_i)
        Φ = ``np.kron(Φ_1, Φ_2, ...)``; any m_i (more or fewer rows than columns).
    method : {"am", "svd"}, default="am"
        γ update: per-factor fixed-point updates (:func:`fixed_point_update`), or
        ``SVD_ITERATIONS`` rank-one approximations of the EM update followed by them.
    block_sizes : sequence of int or None, default=None
        Length of the blocks of each factor within which γ_i is shared (None: 1).
    remove_dead : bool, default=False
        Remove the factor entries (whole blocks) whose evidence is largest at zero
        (:func:`dead_slices`), from :meth:`dead_test_phase` on.

    Notes
    -----
    Parameters are ``gamma_1 .. gamma_I`` (each (n_i,), balanced to equal maxima) and
    ``sigma``. Without a given σ, σ² starts at 0.3 × the mean power per measurement
    (``initial_noise_fraction``; classic SBL starts at 0.1, the noise of a 10 dB SNR): from
    there the fixed-point updates reach the same or a better NMSE than from 0.1 (fewer
    noise entries survive at low SNR), while 1.0 (all noise) ended at worse stationary
    points in some high-SNR problems (benchmarks/RESULTS.md, 2026-12-02).
    """

    initial_noise_fraction = 0.3

    def __init__(
        self,
        factors: Sequence[np.ndarray],
        *,
        method: str = "am",
        block_sizes: Sequence[int] | None = None,
        remove_dead: bool = False,
    ) -> None:
        self.factors = [np.asarray(A, dtype=np.float64) for A in factors]
        self.method = method
        self.remove_dead = remove_dead
        self.block_sizes = [1] * len(self.factors) if block_sizes is None else list(block_sizes)
        self.shapes = [A.shape for A in self.factors]
        self.n_features = int(np.prod([s[0] for s in self.shapes]))
        self.n_components = int(np.prod([s[1] for s in self.shapes]))
        self._grams = [A.T @ A for A in self.factors]
        self._factor_norms2 = [np.einsum("mn,mn->n", A, A) for A in self.factors]
        self._restricted: tuple[tuple[bytes, ...], Any] | None = None
        self.param_names = (*(f"gamma_{i + 1}" for i in range(len(self.factors))), "sigma")
        self._slice_names = tuple(f"slice_{i + 1}" for i in range(len(self.factors)))

    def gamma_factors(self, params: Params) -> list[np.ndarray]:
        """[γ_1, ..., γ_I]."""
        return [np.asarray(params[name], dtype=np.float64) for name in self.param_names[:-1]]

    def gamma(self, params: Params) -> np.ndarray:
        return kron_vectors(self.gamma_factors(params))

    def posterior(self, params: Params) -> GaussianPosterior:
        gammas = self.gamma_factors(params)
        active = [(g > 0).nonzero()[0] for g in gammas]  # (np.flatnonzero of 1-D)
        factors, grams, index, blocks = self._restriction(active)
        scales = [np.sqrt(g[a]) for g, a in zip(gammas, active, strict=True)]
        sigma2 = float(params["sigma"]) ** 2
        return _EigenPosterior(
            factors, grams, scales, sigma2, index, self.n_components, blocks=blocks
        )

    def _restriction(
        self, active: list[np.ndarray]
    ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, list[int]]:
        """The factors and Gram matrices restricted to the ``active`` entries of each γ_i,
        the position of the active entries in x and the block length of the slices of
        each factor. Kept from the last call: they change only when entries are pruned,
        a few times per fit, while the posterior is formed every iteration."""
        key = tuple(a.tobytes() for a in active)
        if self._restricted is not None and self._restricted[0] == key:
            return self._restricted[1]
        dims = [s[1] for s in self.shapes]
        if all(a.size == n for a, n in zip(active, dims, strict=True)):
            factors, grams = self.factors, self._grams
            index = np.arange(self.n_components)
        else:
            factors = [A[:, a] for A, a in zip(self.factors, active, strict=True)]
            grams = [G[a][:, a] for G, a in zip(self._grams, active, strict=True)]
            # np.ravel_multi_index(np.ix_(*active), dims).ravel(), built factor by factor
            index = functools.reduce(
                lambda idx, an: (idx[:, None] * an[1] + an[0][None, :]).ravel(),
                zip(active[1:], dims[1:], strict=True),
                active[0],
            )
        # the dead-entry test of a factor with blocks needs its active entries to form
        # whole blocks (they do: γ_i is constant on blocks, and pruning and removal act on
        # whole blocks); where not, its slices are described entry by entry
        blocks = [
            b
            if b == 1 or (a.size % b == 0 and np.all(a.reshape(-1, b) // b == a[::b, None] // b))
            else 1
            for a, b in zip(active, self.block_sizes, strict=True)
        ]
        self._restricted = (key, (factors, grams, index, blocks))
        return self._restricted[1]

    def column_norms2(self) -> np.ndarray:
        return kron_vectors(self._factor_norms2)

    def expected_power(self, params: Params) -> float:
        # Σ_j ||φ_j||² γ_j factorises over the Kronecker factors
        factors = zip(self._factor_norms2, self.gamma_factors(params), strict=True)
        return float(math.prod([c @ g for c, g in factors]))  # (np.prod's order)

    def n_active(self, params: Params) -> int:
        return math.prod(np.count_nonzero(g) for g in self.gamma_factors(params))

    def support_log_prior(self, params: Params) -> float:
        # a Kronecker support is the product of one support per factor (of whole blocks
        # with block_sizes), each with its own Beta(1, 1)-binomial prior
        gammas = self.gamma_factors(params)
        return -sum(
            log_binomial(g.size // b, int(np.count_nonzero(g)) // b)
            for g, b in zip(gammas, self.block_sizes, strict=True)
        )

    def empty_params(self, sigma2: float) -> Params:
        params = {f"gamma_{i + 1}": np.zeros(n) for i, (_, n) in enumerate(self.shapes)}
        params["sigma"] = np.array(math.sqrt(sigma2))
        return params

    def fixed_point_phase(self, iteration: int) -> bool:
        return self.method == "am" or iteration >= SVD_ITERATIONS

    def statistic_names(self) -> tuple[str, ...]:
        if not self.remove_dead:
            return ()
        return self._slice_names

    def dead_test_phase(self, prune: float, iteration: int) -> bool:
        """From the second fixed-point iteration on, while pruning is in force (the first
        update starts from a flat γ, at which even true slices may look dead)."""
        first = 0 if self.method == "am" else SVD_ITERATIONS
        return (
            self.remove_dead
            and iteration > first
            and self.fixed_point_phase(iteration)
            and self.prune_threshold(prune, iteration) > 0
        )

    def active_factors(self, params: Params) -> list[np.ndarray]:
        return [g > 0 for g in self.gamma_factors(params)]

    def log_parameters(self, params: Params) -> list[np.ndarray]:
        with np.errstate(divide="ignore"):
            logs = [np.log(g) for g in self.gamma_factors(params)]
        return [*logs, np.array([2.0 * np.log(float(params["sigma"]))])]

    def gauge_coordinates(
        self, logs: Sequence[np.ndarray], active: Sequence[np.ndarray]
    ) -> np.ndarray:
        """Gauge-free log coordinates of (γ_1, …, γ_I, σ²) on the ``active`` entries.

        γ = ⊗ γ_i does not change when γ_1 is multiplied by c and γ_2 divided by c, so each
        factor enters as log γ_i minus its mean over the active entries, and the sum of those
        means (the overall scale) and log σ² follow: a vector of length Σ_i a_i + 2 in which
        equal γ and σ give equal vectors.

        Parameters
        ----------
        logs : sequence of ndarray
            :meth:`log_parameters`: log γ_i of shape (n_i,), then log σ² of shape (1,); or
            K such sets stacked, of shapes (K, n_i) and (K, 1).
        active : sequence of ndarray of bool, shape (n_i,)
            Entries to describe; they must be non-zero (finite logs).

        Returns
        -------
        ndarray of shape (Σ_i a_i + 2,), or (K, Σ_i a_i + 2) for stacked ``logs``
        """
        parts, scale = [], 0.0
        for log_gamma, a in zip(logs[:-1], active, strict=True):
            # C order, so that each row's mean sums in the order of a 1-D mean
            values = np.ascontiguousarray(log_gamma[..., a])
            if values.shape[-1]:  # (np.mean's arithmetic)
                mean = np.add.reduce(values, axis=-1, keepdims=True) / values.shape[-1]
            else:
                mean = np.zeros((*values.shape[:-1], 1))
            parts.append(values - mean)
            scale = scale + mean
        return np.concatenate([*parts, scale, logs[-1]], axis=-1)

    def from_log_coordinates(
        self, vector: np.ndarray, active: Sequence[np.ndarray], prune: float
    ) -> Params:
        """Parameters from :meth:`log_coordinates` (zero outside ``active``), pruned and
        balanced as after an update."""
        I = len(self.factors)
        scale, log_sigma2 = float(vector[-2]), float(vector[-1])
        out, start = [], 0
        for a in active:
            g = np.zeros(a.size)
            count = int(a.sum())
            # the clip only guards exp against overflow; such an entry is pruned or dominates
            g[a] = np.exp(
                np.minimum(np.maximum(vector[start : start + count] + scale / I, -700.0), 700.0)
            )
            start += count
            out.append(_prune(g, prune))
        params = {f"gamma_{i + 1}": g for i, g in enumerate(_balance(out))}
        params["sigma"] = np.array(np.sqrt(np.exp(log_sigma2)))
        return params

    def init_gamma(self, value: float) -> Params:
        per = value ** (1.0 / len(self.factors))
        return {f"gamma_{i + 1}": np.full(s[1], per) for i, s in enumerate(self.shapes)}

    def update_gamma(
        self, q: np.ndarray, ratios: tuple[np.ndarray, np.ndarray], params: Params, **kwargs: Any
    ) -> Params:
        """New factors: by ``method`` and ``iteration``, then pruned.

        "am": :func:`fixed_point_update`. "svd": in iterations below ``SVD_ITERATIONS``,
        :func:`rank_one_update` of q and no pruning (a rank-one least-squares fit is
        dominated by the largest entries and can shrink a true but weak row of the support
        below the pruning threshold, which removed it for good in earlier versions);
        afterwards as "am", pruning only after ``SVD_UNPRUNED_REFINEMENT`` more iterations
        (:meth:`prune_threshold`).
        """
        dims = [s[1] for s in self.shapes]
        gammas = self.gamma_factors(params)
        if self.method == "svd" and kwargs["iteration"] < SVD_ITERATIONS:
            new = rank_one_update(q.reshape(dims), gammas, self.block_sizes)
            return {f"gamma_{i + 1}": g for i, g in enumerate(new)}
        S, G = (r.reshape(dims) for r in ratios)
        new = fixed_point_update(S, G, gammas, self.block_sizes)
        prune = self.prune_threshold(kwargs["prune"], kwargs["iteration"])
        new = [_prune(g, prune) for g in new]
        stats, names = kwargs.get("stats", {}), self.statistic_names()
        if (
            prune > 0
            and names
            and all(name in stats for name in names)
            and not kwargs.get("sigma_falling", False)
        ):
            new = self._remove_dead(new, gammas, stats, kwargs["post"], kwargs["n_total"])
        return {f"gamma_{i + 1}": g for i, g in enumerate(new)}

    def _remove_dead(
        self,
        new: list[np.ndarray],
        gammas: list[np.ndarray],
        stats: dict[str, np.ndarray],
        post: _EigenPosterior,
        n_total: int,
    ) -> list[np.ndarray]:
        """Zero the factor entries (with blocks: whole blocks) that :func:`dead_slices`
        finds dead at the parameters of ``post``; at least one per factor stays."""
        active = [(g > 0).nonzero()[0] for g in gammas]
        dims = [a.size for a in active]
        out = []
        for i, (g, b) in enumerate(zip(new, self.block_sizes, strict=True)):
            if post.blocks[i] != b or dims[i] < 2 * b:
                out.append(g)
                continue
            # rows: the blocks of factor i; columns: the b·R coordinates of their slices
            T = post._mode_first(stats[f"slice_{i + 1}"][post.index], i)
            D = post.factor_variances(i)
            dead = dead_slices(T.reshape(dims[i] // b, -1), D.reshape(dims[i] // b, -1), n_total)
            if dead.all():
                dead[np.argmax(g[active[i]][::b])] = False
            if dead.any():
                g = g.copy()
                g[active[i][np.repeat(dead, b)]] = 0.0
            out.append(g)
        return _balance(out)

    def prune_threshold(self, prune: float, iteration: int) -> float:
        """The pruning threshold in force at ``iteration`` (0-based): ``prune``, but 0 for
        "svd" during its rank-one phase and the ``SVD_UNPRUNED_REFINEMENT`` fixed-point
        iterations after it."""
        if self.method == "svd" and iteration < SVD_ITERATIONS + SVD_UNPRUNED_REFINEMENT:
            return 0.0
        return prune
