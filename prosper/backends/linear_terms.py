"""Backend-independent preparation for the E-step of linear models (NumPy).

What every backend derives from the model's parameters and the candidate-state table before
its kernels run: the preselection scores, the log-prior of every candidate state, and the
table of terms that turn per-point features into squared errors and posterior moments.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from prosper.backends import get_namespace

__all__ = [
    "TableTerms",
    "preselection_scores",
    "state_log_prior",
    "table_coefficients",
    "table_terms",
]


def preselection_scores(WY: np.ndarray, coef: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Preselection scores max_v (A_vh (Wᵀy)_h + C_vh) of every latent, shape (B, H).

    Every linear model ranks a latent by its best singleton state, which is an affine
    function of Wᵀy per non-zero value (see ``LinearTruncatedModel.preselection_coefficients``).
    The compiled backends evaluate the same expression, multiplication then addition, so
    that ties and near-ties are broken identically on every backend.

    Parameters
    ----------
    WY : ndarray of shape (B, H)
    coef : tuple of two ndarrays of shape (V', H)
        Slopes A and offsets C.

    Returns
    -------
    ndarray of shape (B, H)
    """
    xp = get_namespace(WY)  # also on the GPU (cupy_backend), with A and C there
    A, C = coef
    scores = WY * A[0] + C[0]
    for a, c in zip(A[1:], C[1:], strict=True):
        xp.maximum(scores, WY * a + c, out=scores)
    return scores


def state_log_prior(value_logp: np.ndarray, H: int, value_counts: np.ndarray) -> np.ndarray:
    """Log-prior of every candidate state in the order [zero, singletons, table].

    Parameters
    ----------
    value_logp : ndarray of shape (V,)
        log p(s_h = v) of one latent, value 0 first.
    H : int
        Number of latents.
    value_counts : ndarray of shape (Kc, V-1)
        How often each non-zero value occurs in each table row.

    Returns
    -------
    ndarray of shape (K,), K = 1 + (V-1) H + Kc
    """
    value_logp = np.asarray(value_logp, dtype=np.float64)
    base = H * value_logp[0]
    delta = value_logp[1:] - value_logp[0]
    return np.concatenate([[base], np.repeat(base + delta, H), base + value_counts @ delta])


def table_coefficients(
    table: np.ndarray, value_counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Dense linear maps between per-point features and the table states (GEMM form).

    With the features of a point f = [Wᵀy restricted to I (H'), the lower triangle of the
    H'×H' block of WᵀW (P = H'(H'+1)/2 entries)], the squared error of table state k is
    ||y||² + Σ_f ``forward[f, k]`` f_f, and the posterior moments of the table states are
    Σ_k q_k ``backward[k, :]`` = [Σ q s over the slots (H'), Σ q s_i s_j for i >= j (P),
    Σ q #{s = v} (V-1)].

    Parameters
    ----------
    table : ndarray of shape (Kc, H')
    value_counts : ndarray of shape (Kc, V-1)

    Returns
    -------
    forward : ndarray of shape (H' + P, Kc)
        ``-2 table`` then ``table_i table_j`` with off-diagonal pairs counted twice.
    backward : ndarray of shape (Kc, H' + P + V-1)
    tri_i, tri_j : ndarray of int64, shape (P,)
        Slot pairs (i >= j) of the triangle entries.
    """
    table = np.asarray(table, dtype=np.float64)
    tri_i, tri_j = np.tril_indices(table.shape[1])
    pairs = table[:, tri_i] * table[:, tri_j]
    forward = np.concatenate([-2.0 * table, pairs * np.where(tri_i == tri_j, 1.0, 2.0)], axis=1)
    backward = np.concatenate([table, pairs, np.asarray(value_counts, dtype=np.float64)], axis=1)
    return (
        np.ascontiguousarray(forward.T),
        np.ascontiguousarray(backward),
        tri_i.astype(np.int64),
        tri_j.astype(np.int64),
    )


@dataclass(frozen=True)
class TableTerms:
    """The candidate-state table as sparse recurrences over per-point features.

    Features of a point, in this order: ``[Wᵀy on the H' slots | the lower triangle of the
    slots' block of WᵀW, pair (a, b), a >= b, at index H' + a(a+1)/2 + b]``, F = H' + P.

    Squared errors minus ||y||² are computed for R = (V-1) H' + Kc rows: first every
    single-slot state (value v at slot i, row v H' + i), then the table rows. A row is its
    ``parent`` row (-1: none) plus Σ_e ``err_coef[r, e]`` feature[``err_index[r, e]``] over
    its ``err_terms[r]`` terms. The parent of a state with active slots a_1 < ... < a_m is the
    state without a_m, so each row costs m + 1 terms instead of the m(m + 3)/2 of the dense
    quadratic form: e(s + v e_j) = e(s) - 2v (Wᵀy)_j + v² M_jj + 2v Σ_l s_l M_lj.

    The moments ``[Σ q s per slot (H') | Σ q s_a s_b per pair (P) | Σ q #{s = v} (V-1)]`` run
    over the same tree backwards: with U_r the summed weight of row r's state and all its
    descendants (every state whose slots start with r's), each state containing slot j is
    counted once, at the row where j is the last slot. So row r adds Σ_e ``mom_coef[r, e]``
    U_r to target ``mom_index[r, e]``: v_j to the slot j, v_j² and v_i v_j to the pairs of j
    with itself and each earlier slot i, and 1 to the count of value v_j; m + 3 terms per
    row instead of the m(m + 5)/2 of summing each state's own moments.
    """

    n_slots: int
    pair_a: np.ndarray
    pair_b: np.ndarray
    parent: np.ndarray
    err_terms: np.ndarray
    err_index: np.ndarray
    err_coef: np.ndarray
    mom_terms: np.ndarray
    mom_index: np.ndarray
    mom_coef: np.ndarray


def table_terms(table: np.ndarray, values: np.ndarray) -> TableTerms:
    """:class:`TableTerms` of a candidate-state table (cached: the table is fixed in a fit).

    Parameters
    ----------
    table : ndarray of shape (Kc, H')
        Rows ordered as :class:`prosper.solvers.states.ExpectationTruncation` builds them
        (by number of active slots, then lexicographically), so that every parent precedes
        its children.
    values : ndarray of shape (V,)
        Latent values, ``values[0] == 0``.
    """
    table = np.ascontiguousarray(table, dtype=np.float64)
    values = np.ascontiguousarray(values, dtype=np.float64)
    return _table_terms(table.tobytes(), table.shape, values.tobytes())


@lru_cache(maxsize=16)
def _table_terms(table_bytes: bytes, shape: tuple[int, int], values_bytes: bytes) -> TableTerms:
    table = np.frombuffer(table_bytes, dtype=np.float64).reshape(shape)
    nz = np.frombuffer(values_bytes, dtype=np.float64)[1:]
    Kc, Hp = shape
    V1 = nz.size

    def pair(a: int, b: int) -> int:
        a, b = max(a, b), min(a, b)
        return Hp + a * (a + 1) // 2 + b

    n_moments = Hp * (Hp + 3) // 2  # slots and pairs; the value counts follow
    # rows by their active (slot, value) tuple; single-slot rows first
    row_of: dict[tuple[tuple[int, float], ...], int] = {}
    parent, err, mom = [], [], []

    def moment_terms(active: tuple[tuple[int, float], ...]) -> list[tuple[int, float]]:
        j, v = active[-1]
        return (
            [(j, v), (pair(j, j), v * v)]
            + [(pair(i, j), u * v) for i, u in active[:-1]]
            + [(n_moments + int(np.flatnonzero(nz == v)[0]), 1.0)]
        )

    for v_index, v in enumerate(nz):
        for i in range(Hp):
            active = ((i, float(v)),)
            row_of[active] = v_index * Hp + i
            parent.append(-1)
            err.append([(i, -2.0 * v), (pair(i, i), v * v)])
            mom.append(moment_terms(active))
    for k in range(Kc):
        active = tuple((int(i), float(table[k, i])) for i in np.flatnonzero(table[k]))
        row_of[active] = V1 * Hp + k
        parent.append(row_of[active[:-1]])
        j, v = active[-1]
        err.append(
            [(j, -2.0 * v), (pair(j, j), v * v)]
            + [(pair(i, j), 2.0 * u * v) for i, u in active[:-1]]
        )
        mom.append(moment_terms(active))
    pair_a, pair_b = np.tril_indices(Hp)

    def pack(rows: list[list[tuple[int, float]]]):
        width = max((len(r) for r in rows), default=0)
        index = np.zeros((len(rows), width), dtype=np.int64)
        coef = np.zeros((len(rows), width))
        for r, terms in enumerate(rows):
            for e, (f, c) in enumerate(terms):
                index[r, e], coef[r, e] = f, c
        return np.array([len(r) for r in rows], dtype=np.int64), index, coef

    err_terms, err_index, err_coef = pack(err)
    mom_terms, mom_index, mom_coef = pack(mom)
    return TableTerms(
        n_slots=Hp,
        pair_a=pair_a.astype(np.int64),
        pair_b=pair_b.astype(np.int64),
        parent=np.array(parent, dtype=np.int64),
        err_terms=err_terms,
        err_index=err_index,
        err_coef=err_coef,
        mom_terms=mom_terms,
        mom_index=mom_index,
        mom_coef=mom_coef,
    )
