"""Online dictionary learning for ℓq sparse coding (Mairal, Bach, Ponce & Sapiro 2010).

One iteration of :func:`prosper.solvers.em.run_em` is one pass over the data in global
mini-batches of ``batch_size`` rows. For each mini-batch:

1. code its rows under the current dictionary (every rank codes the rows of it that it
   holds): exact coordinate descent (:func:`coordinate_descent`, compiled by the numba
   backend) or FISTA, from zero; for the non-convex penalties (ℓ1/2, ℓ0, CEL0) the coder
   first solves the ℓ1 problem with the same λ and starts the penalty's own descent from
   that solution (the ℓ1 → ℓq warm start of Rentzeperis et al. 2023);
2. one Allreduce of the increments Σ s sᵀ (H, H; its upper triangle), Σ y sᵀ (D, H) and a
   spare atom (D,);
3. the sufficient statistics with forgetting, A ← β_t A + Σ s sᵀ / η and
   B ← β_t B + Σ y sᵀ / η (β_t → 1, the schedule of scikit-learn's
   MiniBatchDictionaryLearning, which follows Mairal et al. section 3.4.2);
4. one sweep of block coordinate descent over the atoms on (A, B), identical on every rank
   (:meth:`prosper.models.sparse_coding.SparseCodingModel.update_dictionary_bcd`).

Mini-batches are global and stratified: with M mini-batches per pass, mini-batch k of pass
p takes one row from every run of M consecutive global rows, chosen by a permutation keyed
by (seed, p, run) (:class:`StratifiedBatches`, a counter-based shuffle evaluated a few
thousand rows at a time, so no rank holds an array of N indices). The mini-batches do not
depend on the number of ranks, so neither does the learned dictionary beyond round-off, and
every rank holds its proportional share of each mini-batch to within fewer than 2 rows, so
no rank waits at the Allreduce for one that drew more rows. The coding of a mini-batch is
shared by the ranks; the dictionary sweep and the Allreduce are repeated by every rank,
which is why the numba backend compiles the sweep too
(:func:`prosper.backends.numba_sparse.sparse_bcd`).

Codes are not kept between passes (each mini-batch is coded from zero), so the state of the
learner is global and small: W, A, B and the mini-batch counter, all in the checkpoint; a
resumed run repeats the uninterrupted one exactly.

Data access goes through :func:`take_rows` (the rows of given local indices, in increasing
order): the one place where a streamed data source plugs in.

The metric ``free_energy`` of a pass is minus the mean energy of the mini-batches' codes
under the dictionary each was coded with (the online estimate of the objective, as reported
by the online learners of SPAMS and scikit-learn); ``SparseCoding.score`` gives the exact
value.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

import numpy as np

from prosper.models.sparse_coding import SparseCodingModel
from prosper.parallel import Communicator
from prosper.solvers.fista import FISTAOptions, fista, lipschitz_constant
from prosper.solvers.prox import PROX, half_threshold

log = logging.getLogger(__name__)

__all__ = [
    "CodeProblem",
    "Coder",
    "OnlineSparseCoding",
    "StratifiedBatches",
    "coordinate_descent",
    "take_rows",
]

#: coders of :class:`Coder`
SOLVERS = ("cd", "fista", "ista")


def take_rows(Y: Any, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` (local indices, increasing) of this rank's data.

    The learner reads its data only through this function: an in-memory array, a numpy
    memmap or an h5py Dataset (increasing indices are what h5py needs) all work.
    """
    if idx.size and isinstance(Y, np.ndarray):
        return Y[idx]
    return np.asarray(Y[idx]) if idx.size else np.asarray(Y[0:0])


class CodeProblem:
    """The coding problem of a batch for FISTA: min_S ½||Y − S Wᵀ||² + Σ ψ(S).

    Parameters
    ----------
    C : ndarray of shape (n, H)
        Y W.
    G : ndarray of shape (H, H)
        WᵀW.
    penalty : str
        Key of :data:`prosper.solvers.prox.PROX`.
    lam : float
    a : ndarray of shape (H,)
        Atom norms (CEL0).
    """

    def __init__(self, C, G, penalty: str, lam: float, a) -> None:
        self.B, self.G = C, G
        self.prox = PROX[penalty]
        self.lam, self.a = lam, a

    def grad_f(self, X, rows):
        return X @ self.G - self.B[rows]

    def prox_g(self, V, step):
        return self.prox(V, step, self.lam, self.a)


def _coordinate_prox(z: np.ndarray, t: np.ndarray, penalty: str) -> np.ndarray:
    """Exact minimiser over u of ½(u − z)² + t φ(u) (φ of the coordinate update)."""
    if penalty == "l1":
        return np.sign(z) * np.maximum(np.abs(z) - t, 0.0)
    if penalty == "l1/2":
        return half_threshold(z, t)
    # ℓ0, and CEL0: with step 1/a_h² its coordinate minimiser is ℓ0's hard threshold
    return np.where(np.abs(z) > np.sqrt(2.0 * t), z, 0.0)


def coordinate_descent(
    C0: np.ndarray,
    G: np.ndarray,
    S0: np.ndarray,
    penalty: str,
    lam: float,
    max_iter: int,
    tol: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cyclic coordinate descent on ½||y − W s||² + Σ ψ(s), vectorised over rows.

    The NumPy reference of the numba kernel :func:`prosper.backends.numba_sparse.sparse_cd`
    (see there for the update). Rows stop independently (largest change of a sweep at most
    ``tol`` times the largest entry) and leave the active set, so a row's code does not
    depend on the other rows of its batch.

    Parameters
    ----------
    C0 : ndarray of shape (n, H)
        Y W.
    G : ndarray of shape (H, H)
        WᵀW.
    S0 : ndarray of shape (n, H)
        Start (not modified).
    penalty : {"l1", "l1/2", "l0", "cel0"}
    lam : float
    max_iter : int
        Sweeps at most.
    tol : float

    Returns
    -------
    S : ndarray of shape (n, H), float64
    n_iter : ndarray of int64, shape (n,)
    """
    S = np.array(S0, dtype=np.float64)
    G = np.asarray(G, dtype=np.float64)
    n, H = S.shape
    n_iter = np.full(n, max_iter, dtype=np.int64)
    active = np.arange(n)
    s = S.copy()
    c = np.asarray(C0, dtype=np.float64) - s @ G
    g = np.diagonal(G).copy()
    ok = g > 0
    t = lam / np.where(ok, g, 1.0)
    for it in range(max_iter):
        if active.size == 0:
            break
        dmax = np.zeros(active.size)
        for h in range(H):
            old = s[:, h]
            new = _coordinate_prox(old + c[:, h] / g[h], t[h], penalty) if ok[h] else 0.0 * old
            d = new - old
            moved = np.flatnonzero(d)
            if moved.size:
                c[moved] -= d[moved, None] * G[h]
                s[moved, h] = new[moved]
                np.maximum(dmax, np.abs(d), out=dmax)
        done = dmax <= tol * np.abs(s).max(axis=1)
        if done.any():
            S[active[done]] = s[done]
            n_iter[active[done]] = it + 1
            active, s, c = active[~done], s[~done], c[~done]
    if active.size:
        S[active] = s
    return S, n_iter


class Coder:
    """MAP codes of batches of rows under one dictionary.

    Parameters
    ----------
    model : SparseCodingModel
    solver : {"cd", "fista", "ista"}
        Exact coordinate descent, or proximal gradient with or without momentum.
    max_iter : int
        Sweeps (cd) or iterations (FISTA) at most per row.
    tol : float
        Relative change of a row's code at which it stops.
    backend : module or None
        A backend with a ``sparse_cd`` kernel (numba) runs coordinate descent compiled;
        otherwise the NumPy reference runs.
    """

    def __init__(
        self,
        model: SparseCodingModel,
        *,
        solver: str = "cd",
        max_iter: int = 200,
        tol: float = 1e-4,
        backend: ModuleType | None = None,
    ) -> None:
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}; got {solver!r}.")
        self.model, self.solver = model, solver
        self.max_iter, self.tol = int(max_iter), float(tol)
        kernels = {} if backend is None else backend.KERNELS
        self.kernel = kernels.get("sparse_cd")
        # the backend that compiles the coder compiles the dictionary sweep too
        self.update_kernel = kernels.get("sparse_bcd")
        # and a whole mini-batch of the online learner in two calls (coordinate descent only)
        fused = (kernels.get("sparse_code_stats"), kernels.get("sparse_update"))
        self.fused = fused if solver == "cd" and None not in fused else None
        self.W: np.ndarray | None = None

    def set_dictionary(self, W: np.ndarray, dtype=np.float64) -> None:
        """Precompute what every batch under W shares (WᵀW, the step, the atom norms)."""
        self.W = np.asarray(W).astype(dtype, copy=False)
        self.G = self.W.T @ self.W
        self.a = np.sqrt(np.maximum(np.diagonal(self.G), 0.0)).copy()
        self.L = lipschitz_constant(self.W) if self.solver != "cd" else 0.0

    def _run(self, C, S0, penalty):
        lam = self.model.lam
        if self.solver == "cd":
            if self.kernel is not None:
                return self.kernel(C, self.G, S0, penalty, lam, self.max_iter, self.tol)
            return coordinate_descent(C, self.G, S0, penalty, lam, self.max_iter, self.tol)
        options = FISTAOptions(
            max_iter=self.max_iter, tol=self.tol, accelerate=self.solver == "fista"
        )
        res = fista(CodeProblem(C, self.G, penalty, lam, self.a), S0, L=self.L, options=options)
        return res.X, res.n_iter

    def code(self, Yb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Codes (n, H) of rows Yb (n, D), at Yb's precision, and the iterations per row."""
        C = Yb @ self.W.astype(Yb.dtype, copy=False)
        S = np.zeros((Yb.shape[0], self.model.H), dtype=C.dtype)
        n_iter = np.zeros(Yb.shape[0], dtype=np.int64)
        penalty = self.model.penalty
        if penalty != "l1":
            S, n_iter = self._run(C, S, "l1")
        S, more = self._run(C, S, penalty)
        return S.astype(Yb.dtype, copy=False), n_iter + more


#: mini-batch × stratum entries of a pass evaluated at once (bounds the memory of the order)
_ORDER_CHUNK = 16384

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective hash of uint64 values (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class StratifiedBatches:
    """The global mini-batches of one pass: stratified, seeded, evaluated batch by batch.

    With M = ⌈n / batch_size⌉ mini-batches per pass, the rows are cut into strata of M
    consecutive rows (stratum s holds rows s·M .. s·M + M − 1; the last one may be
    shorter), and mini-batch k takes from every stratum s the row s·M + π_s(k), where π_s
    is a random permutation of 0 .. M − 1 keyed by (seed, iteration, s); a row beyond n
    (in the short last stratum) is left out. So every row is in exactly one mini-batch of
    the pass, mini-batches have S − 1 or S rows (S = ⌈n / M⌉ strata), and each one draws
    its rows evenly from the whole range: a file sorted by class gives mini-batches
    with every part of it. Any contiguous block of rows, such as an MPI rank's, holds
    one row of every mini-batch per stratum it contains, so its share of each mini-batch
    is its mean share to within one row per stratum it cuts (fewer than 2 rows), for
    any number of ranks: no rank waits for one that drew more rows of a mini-batch.

    π_s is a Feistel network of six rounds on ``0 .. 2^b − 1`` (2^b ≥ M; the halves have
    ⌊b/2⌋ and ⌈b/2⌉ bits and swap roles each round; a round xors into one half a
    multiplicative hash of the other, with a random odd multiplier per round and a key per
    round and stratum), with cycle walking down to ``0 .. M − 1``. It is evaluated for the
    (mini-batch, stratum) pairs asked for only, so a pass needs no array of n indices.

    Parameters
    ----------
    n : int
        The global number of rows.
    batch_size : int
        Rows of a mini-batch at most.
    seed, iteration : int
        The mini-batches are a function of (n, batch_size, seed, iteration) alone.

    Attributes
    ----------
    n_batches : int
        M, mini-batches per pass.
    n_strata : int
        S, strata (the size of a full mini-batch).

    Examples
    --------
    >>> plan = StratifiedBatches(10, 4, seed=0, iteration=0)
    >>> plan.n_batches, plan.n_strata
    (3, 4)
    >>> rows = plan.rows(np.arange(3)[:, None], np.arange(4))
    >>> sorted(rows[rows < 10].tolist()) == list(range(10))
    True
    """

    n_rounds = 6

    def __init__(self, n: int, batch_size: int, seed: int, iteration: int) -> None:
        if n < 1 or batch_size < 1:
            raise ValueError(
                f"StratifiedBatches needs n >= 1 and batch_size >= 1; got n={n}, "
                f"batch_size={batch_size}."
            )
        self.n = int(n)
        self.n_batches = -(-self.n // int(batch_size))
        self.n_strata = -(-self.n // self.n_batches)
        bits = max(2, int(self.n_batches - 1).bit_length())
        self._widths = (bits // 2, bits - bits // 2)
        rng = np.random.default_rng([int(seed), int(iteration)])
        self._keys = rng.integers(0, 2**63, size=self.n_rounds, dtype=np.uint64)
        mults = rng.integers(0, 2**63, size=self.n_rounds, dtype=np.uint64)
        self._mults = mults * np.uint64(2) + np.uint64(1)  # odd multipliers
        self._shift_key, self._spare_key = rng.integers(0, 2**63, size=2, dtype=np.uint64)

    def _feistel(self, x: np.ndarray) -> np.ndarray:
        wl, wr = self._widths
        left, right = x >> np.uint64(wr), x & np.uint64((1 << wr) - 1)
        for key, mult in zip(self._keys, self._mults, strict=True):
            # the top wl bits of (right ^ key) · mult: a hash of all of right's bits
            left ^= ((right ^ key) * mult) >> np.uint64(64 - wl)
            left, right, wl, wr = right, left, wr, wl
        return (left << np.uint64(wr)) | right

    def _permute(self, x: np.ndarray) -> np.ndarray:
        """σ(x) for x in ``0 .. M − 1`` (uint64 array, in place): Feistel and cycle walking."""
        y = self._feistel(x)
        flat = y.reshape(-1)
        out = np.flatnonzero(flat >= self.n_batches)
        while out.size:
            flat[out] = self._feistel(flat[out])
            out = out[flat[out] >= self.n_batches]
        return y

    def rows(self, batches: np.ndarray, strata: np.ndarray) -> np.ndarray:
        """Global row of mini-batch ``batches`` in stratum ``strata`` (broadcast together),
        int64; values ≥ n mark a mini-batch that the short last stratum leaves out.

        π_s(k) = σ((k + c_s) mod M): one permutation σ of the pass, shifted per stratum by
        an offset c_s hashed from (seed, iteration, s), so that the strata's rows of a
        mini-batch are independent draws.
        """
        M = np.uint64(self.n_batches)
        # (arrays, not numpy scalars: their wrapping multiplications would warn)
        s = np.atleast_1d(np.asarray(strata, dtype=np.uint64))
        shift = (_mix64(s * _GOLDEN ^ self._shift_key) >> np.uint64(11)) % M
        y = self._permute((np.atleast_1d(np.asarray(batches, dtype=np.uint64)) + shift) % M)
        return s.astype(np.int64) * self.n_batches + y.astype(np.int64)

    def sizes(self, batches: np.ndarray) -> np.ndarray:
        """Rows of each of ``batches`` (S, or S − 1 where the short last stratum has none)."""
        last = self.rows(batches, self.n_strata - 1)
        return self.n_strata - 1 + (last < self.n).astype(np.int64)

    def spare_rows(self, batches: np.ndarray) -> np.ndarray:
        """Per mini-batch the row whose residual may replace an unused atom: its row in a
        full stratum chosen by a hash of (seed, iteration, mini-batch)."""
        k = np.atleast_1d(np.asarray(batches, dtype=np.uint64))
        full = self.n // self.n_batches  # strata of M rows (at least one)
        stratum = (_mix64(k ^ self._spare_key) >> np.uint64(11)) % np.uint64(full)
        return self.rows(k, stratum)


class OnlineSparseCoding:
    """The online learner of ℓq sparse coding for :func:`prosper.solvers.em.run_em`.

    Parameters
    ----------
    model : SparseCodingModel
    coder : Coder
    batch_size : int
        Rows of a global mini-batch (each rank codes at most this many at once).
    seed : int
        Seed of the per-pass row permutations.
    """

    def __init__(
        self, model: SparseCodingModel, coder: Coder, *, batch_size: int, seed: int
    ) -> None:
        self.model, self.coder = model, coder
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.params: dict[str, np.ndarray] = {}
        self.n_total = 0
        # flat indices of the upper triangle of an (H, H) array, and of its mirror image
        upper = np.triu_indices(model.H)
        self._triu_flat = np.ravel_multi_index(upper, (model.H, model.H))
        self._tril_flat = np.ravel_multi_index(upper[::-1], (model.H, model.H))
        # positions 0 .. batch_size − 1 of a block of rows (the fused kernels' row indices)
        self._positions = np.arange(self.batch_size, dtype=np.int64)
        self.reset_state()

    # -- state ----------------------------------------------------------------------------
    def reset_state(self) -> None:
        """Empty sufficient statistics and counter (a fresh start)."""
        H, D = self.model.H, self.model.D
        self.A = np.zeros((H, H))
        self.B = np.zeros((D, H))
        self.n_steps = 0
        self.n_seen = 0

    def checkpoint_state(self) -> dict[str, np.ndarray]:
        """What a resumed run needs besides W: A (H, H), B (D, H), the mini-batch and point
        counters."""
        return {
            "A": self.A.copy(),
            "B": self.B.copy(),
            "n_steps": np.array(self.n_steps),
            "n_seen": np.array(self.n_seen),
        }

    def set_state(self, state: dict[str, np.ndarray] | None) -> None:
        """Restore :meth:`checkpoint_state` (None or empty: a fresh start)."""
        if not state:
            self.reset_state()
            return
        H, D = self.model.H, self.model.D
        A, B = np.asarray(state["A"], dtype=np.float64), np.asarray(state["B"], dtype=np.float64)
        if A.shape != (H, H) or B.shape != (D, H):
            raise ValueError(
                f"the stored online statistics have shapes A {A.shape}, B {B.shape}; this "
                f"model needs A {(H, H)}, B {(D, H)}."
            )
        self.A, self.B = A.copy(), B.copy()
        self.n_steps, self.n_seen = int(state["n_steps"]), int(state["n_seen"])

    # -- set-up ---------------------------------------------------------------------------
    def initialize(
        self, Y: Any, comm: Communicator, rng: np.random.Generator, init: str = "data"
    ) -> None:
        """Initial unit-norm dictionary, identical on every rank; empty statistics.

        ``init="data"``: H data points drawn at random from all ranks' rows (by global
        index, so the choice does not depend on the rank count); ``"random"``: Gaussian
        columns; ``"svd"``: the data's leading principal directions, then Gaussian columns
        (:meth:`_principal_atoms`). All are scaled to unit norm.
        """
        n_local = int(Y.shape[0])
        self.n_total = int(comm.allreduce(n_local))
        H, D = self.model.H, self.model.D
        if init == "data":
            chosen = rng.choice(self.n_total, H, replace=self.n_total < H)
            offset = comm.exscan(n_local)
            mine = (chosen >= offset) & (chosen < offset + n_local)
            part = np.zeros((D, H))
            local = chosen[mine] - offset
            uniq = np.unique(local)
            part[:, np.flatnonzero(mine)] = take_rows(Y, uniq)[np.searchsorted(uniq, local)].T
            W = comm.allreduce_arrays({"W": part})["W"]
            if self.n_total < H:  # repeated rows: break the ties
                W = W + 1e-3 * np.sqrt(np.mean(W**2)) * rng.standard_normal(W.shape)
        elif init == "random":
            W = rng.standard_normal((D, H))
        elif init == "svd":
            W = self._principal_atoms(Y, comm, rng)
        else:
            raise ValueError(f"init must be 'data', 'random' or 'svd'; got {init!r}.")
        self.params = {"W": self.model.normalize(W, rng)}
        self.reset_state()

    def _principal_atoms(self, Y: Any, comm: Communicator, rng: np.random.Generator):
        """The leading eigenvectors of YᵀY (all ranks' rows, streamed), then random atoms.

        The start of scikit-learn's MiniBatchDictionaryLearning (an SVD of the data): on
        whitened patches one pass from it reaches an objective that random or data-point
        atoms do not reach in four (benchmarks/RESULTS.md). Atoms beyond min(H, D) are
        Gaussian. The second moment is a sum over rows, so the start does not depend on the
        rank count beyond round-off; each eigenvector's sign is fixed by its largest entry,
        so that round-off cannot flip it either.
        """
        D, H = self.model.D, self.model.H
        C = np.zeros((D, D))
        for idx in self._batches(int(Y.shape[0])):
            Yb = take_rows(Y, idx).astype(np.float64, copy=False)
            C += Yb.T @ Yb
        C = comm.allreduce_arrays({"C": C})["C"]
        k = min(H, D)
        V = np.linalg.eigh(C)[1][:, ::-1][:, :k]
        V = V * np.sign(V[np.argmax(np.abs(V), axis=0), np.arange(k)])
        W = rng.standard_normal((D, H))
        W[:, :k] = V
        return W

    def set_params(self, params: dict[str, np.ndarray], n_total: int) -> None:
        """Start from a given dictionary (statistics unchanged: see :meth:`set_state`)."""
        self.params = {"W": np.array(params["W"], dtype=np.float64)}
        self.n_total = int(n_total)

    # -- coding ---------------------------------------------------------------------------
    def _batches(self, n: int):
        for start in range(0, n, self.batch_size):
            yield np.arange(start, min(start + self.batch_size, n))

    def encode(self, Y: Any) -> np.ndarray:
        """MAP codes of local rows under the current dictionary.

        Parameters
        ----------
        Y : ndarray of shape (N, D)

        Returns
        -------
        ndarray of shape (N, H)
        """
        self.coder.set_dictionary(self.params["W"], Y.dtype)
        S = np.empty((Y.shape[0], self.model.H), dtype=Y.dtype)
        for idx in self._batches(Y.shape[0]):
            S[idx] = self.coder.code(take_rows(Y, idx))[0]
        return S

    def energies(self, Y: Any) -> np.ndarray:
        """Energy of the MAP code of each local row, shape (N,)."""
        self.coder.set_dictionary(self.params["W"], Y.dtype)
        out = np.empty(Y.shape[0])
        W = self.params["W"]
        for idx in self._batches(Y.shape[0]):
            Yb = take_rows(Y, idx)
            out[idx] = self.model.energy(Yb, self.coder.code(Yb)[0], W)
        return out

    # -- one mini-batch -------------------------------------------------------------------
    def _code_local(self, Y: Any, idx: np.ndarray, spare_row: int, local: dict) -> dict:
        """Code rows ``idx``; their increments of A and B, a spare atom, metric sums."""
        H, D = self.model.H, self.model.D
        inc = {"A": np.zeros((H, H)), "B": np.zeros((D, H)), "spare": np.zeros(D)}
        for start in range(0, idx.size, self.batch_size):
            part = idx[start : start + self.batch_size]
            Yb = take_rows(Y, part)
            S, n_iter = self.coder.code(Yb)
            S64, Y64 = S.astype(np.float64, copy=False), Yb.astype(np.float64, copy=False)
            R = Y64 - S64 @ self.params["W"].T
            sq_error = np.einsum("nd,nd->n", R, R)
            inc["A"] += S64.T @ S64
            inc["B"] += Y64.T @ S64
            at = int(np.searchsorted(part, spare_row)) if part.size else 0
            if at < part.size and part[at] == spare_row:
                # the spare atom: the residual of the mini-batch's first row (its data row
                # when the row is reconstructed exactly)
                r = R[at]
                inc["spare"] += r if np.linalg.norm(r) > 1e-12 else Y64[at]
            local["energy"] += 0.5 * float(sq_error.sum()) + self.model.penalty_sum(
                S64, self.coder.a
            )
            local["sq_error"] += float(sq_error.sum())
            local["sq_norm"] += float(np.einsum("nd,nd->", Y64, Y64))
            local["n_nonzero"] += float(np.count_nonzero(S))
            local["coder_iter"] += float(n_iter.sum())
            local["n"] += float(part.size)
        # Σ s sᵀ is symmetric: its upper triangle is all the Allreduce needs to carry
        inc["A"] = inc["A"].ravel()[self._triu_flat]
        return inc

    def _forgetting(self, n_rows: int, window: int | None) -> float:
        """The forgetting factor β of the next update; counts the mini-batch and its rows.

        With ``window`` (passes over a data set of that many points) A and B average the
        codes of about the last ``window`` points: β = 1 − η / min(seen, window), a plain
        average until one pass is done, so that codes from the first, poor dictionaries are
        forgotten within a pass. Without (a stream, ``partial_fit``) the schedule of
        Mairal et al. section 3.4.2: θ = tη for t < η, else η² + t − η; β = (θ + 1 − η)/(θ + 1).
        """
        t = self.n_steps
        if window is not None:
            seen = self.n_seen + n_rows
            beta = 1.0 - n_rows / min(seen, max(window, n_rows))
        else:
            eta = self.batch_size
            theta = (t + 1) * eta if t < eta - 1 else eta * eta + t + 1 - eta
            beta = max(theta + 1 - n_rows, 0) / (theta + 1)
        self.n_steps += 1
        self.n_seen += n_rows
        return beta

    def _update(self, inc: dict[str, np.ndarray], n_rows: int, window: int | None) -> int:
        """Statistics with forgetting (:meth:`_forgetting`) and one BCD sweep; returns the
        atoms replaced."""
        beta = self._forgetting(n_rows, window)
        inc_A = np.empty(self.model.H * self.model.H)
        inc_A[self._triu_flat] = inc["A"]
        inc_A[self._tril_flat] = inc["A"]
        self.A *= beta
        self.A += inc_A.reshape(self.A.shape) / n_rows
        self.B *= beta
        self.B += inc["B"] / n_rows
        update = self.coder.update_kernel or self.model.update_dictionary_bcd
        W, n_replaced = update(self.A, self.B, self.params["W"], inc["spare"])
        self.params = {"W": W}
        return n_replaced

    # -- one mini-batch, compiled (Coder.fused) -------------------------------------------
    def _fused_start(self, Y: Any) -> _Fused:
        """What the fused kernels read during a run of mini-batches (see :class:`_Fused`)."""
        W = np.ascontiguousarray(self.params["W"], dtype=np.float64)
        self.params = {"W": W}
        Wt = np.ascontiguousarray(W.T)
        # rows of an in-memory array are read by the kernel where they lie (no copy); other
        # sources (memory maps, HDF5) hand over a copy of the rows through take_rows
        held = Y if type(Y) is np.ndarray else getattr(Y, "array", None)
        direct = (
            type(held) is np.ndarray
            and held.dtype == Y.dtype
            and held.dtype.type in (np.float32, np.float64)
            and held.flags.c_contiguous
        )
        H, D = self.model.H, self.model.D
        return _Fused(
            Wt,
            Wt @ Wt.T,
            held if direct else None,
            np.zeros(H * (H + 1) // 2 + D * H + D),
            np.zeros(len(_METRIC_SUMS)),
        )

    def _code_fused(self, Y: Any, idx: np.ndarray, spare_row: int, run: _Fused) -> None:
        """:meth:`_code_local` in compiled calls: the increments are added to ``run.inc``
        (the upper triangle of Σ s sᵀ, Σ y sᵀ and the spare atom, packed for the
        Allreduce), the metric sums to ``run.sums`` (in the order of ``_METRIC_SUMS``)."""
        code_stats, W, model, coder = self.coder.fused[0], self.params["W"], self.model, self.coder
        for start in range(0, idx.size, self.batch_size):
            part = idx[start : start + self.batch_size]
            spare_at = -1
            if part[0] <= spare_row <= part[-1]:
                at = int(np.searchsorted(part, spare_row))
                spare_at = at if part[at] == spare_row else -1
            if run.held is not None:
                Yb, rows = run.held, part
            else:
                Yb = np.ascontiguousarray(take_rows(Y, part))
                rows = self._positions[: part.size]
            code_stats(
                Yb, rows, W, run.Wt, run.G, model.penalty, model.lam,
                coder.max_iter, coder.tol, spare_at, run.inc, run.sums,
            )  # fmt: skip

    def _update_fused(self, inc: np.ndarray, n_rows: int, window: int | None, run: _Fused) -> int:
        """:meth:`_update` and the next :meth:`Coder.set_dictionary` in one compiled call
        on the reduced increments ``inc`` (``run.Wt`` and ``run.G`` are updated in place);
        returns the atoms replaced."""
        beta = self._forgetting(n_rows, window)
        W, n_replaced = self.coder.fused[1](self.A, self.B, inc, n_rows, beta, run.Wt, run.G)
        self.params = {"W": W}
        return n_replaced

    def partial_step(self, Y: Any, comm: Communicator) -> dict[str, float]:
        """One online update with all ranks' rows Y as one mini-batch (``partial_fit``).

        Returns the metrics of the step (as :meth:`mstep`).
        """
        n_rows = int(comm.allreduce(int(Y.shape[0])))
        idx = np.arange(Y.shape[0])
        spare_row = 0 if comm.rank == 0 else -1
        if self.coder.fused is not None:
            run = self._fused_start(Y)
            self._code_fused(Y, idx.astype(np.int64), spare_row, run)
            inc = comm.allreduce_arrays({"inc": run.inc})["inc"]
            replaced = self._update_fused(inc, n_rows, None, run)
            local = dict(zip(_METRIC_SUMS, run.sums.tolist(), strict=True))
        else:
            self.coder.set_dictionary(self.params["W"], Y.dtype)
            local = dict.fromkeys(_METRIC_SUMS, 0.0)
            inc = comm.allreduce_arrays(self._code_local(Y, idx, spare_row, local))
            replaced = self._update(inc, n_rows, None)
        stats = comm.allreduce_arrays({k: np.array(v) for k, v in local.items()})
        stats["n_replaced"] = np.array(float(replaced))
        return self._metrics(stats)

    # -- one pass (one run_em iteration) --------------------------------------------------
    def _pass_batches(self, n_local: int, offset: int, iteration: int):
        """The global mini-batches of pass ``iteration``: per mini-batch, this rank's local
        rows of it (increasing), its spare row (local index; outside ``[0, n_local)`` when
        another rank holds it) and its size.

        The mini-batches are :class:`StratifiedBatches`, evaluated for the strata that this
        rank's block ``[offset, offset + n_local)`` meets, a few thousand (mini-batch,
        stratum) pairs at a time: the order costs O(batch_size) memory whatever N is, every
        rank derives the same global mini-batches, and each rank's share of a mini-batch is
        its mean share to within fewer than 2 rows.
        """
        plan = StratifiedBatches(self.n_total, self.batch_size, self.seed, iteration)
        M = plan.n_batches
        if n_local > 0:
            strata = np.arange(offset // M, (offset + n_local - 1) // M + 1)
        else:
            strata = np.zeros(0, dtype=np.int64)
        per_chunk = max(1, _ORDER_CHUNK // max(strata.size, 1))
        for lo in range(0, M, per_chunk):
            batches = np.arange(lo, min(lo + per_chunk, M))
            rows = plan.rows(batches[:, None], strata[None, :]) - offset
            # row-major: by mini-batch, then by stratum, so each mini-batch's rows increase
            mine = (rows >= 0) & (rows < n_local)
            bounds = np.concatenate(([0], np.cumsum(mine.sum(axis=1)))).tolist()
            rows = rows[mine]
            spares = (plan.spare_rows(batches) - offset).tolist()
            sizes = plan.sizes(batches).tolist()
            for j in range(batches.size):
                yield rows[bounds[j] : bounds[j + 1]], spares[j], sizes[j]

    def estep(self, Y: Any, comm: Communicator, iteration: int) -> dict[str, np.ndarray]:
        """One pass of online learning over all ranks' rows; returns local metric sums.

        Updates the dictionary once per global mini-batch (one Allreduce each); the sums
        returned (``energy``, ``sq_error``, ``sq_norm``, ``n_nonzero``, ``coder_iter``,
        ``n``, ``n_replaced``) are this rank's, for the driver's reduction.
        """
        n_local = int(Y.shape[0])
        offset = comm.exscan(n_local)
        replaced = 0
        if self.coder.fused is not None:
            # two compiled calls and one Allreduce per mini-batch: the fixed cost that every
            # rank pays, whatever its share of the rows, stays small
            run = self._fused_start(Y)
            for idx, spare_row, n_rows in self._pass_batches(n_local, offset, iteration):
                run.inc[:] = 0.0
                self._code_fused(Y, idx, spare_row, run)
                comm.sum_in_place(run.inc)  # the packed increments: no copy in or out
                replaced += self._update_fused(run.inc, n_rows, self.n_total, run)
            local = dict(zip(_METRIC_SUMS, run.sums.tolist(), strict=True))
        else:
            local = dict.fromkeys(_METRIC_SUMS, 0.0)
            for idx, spare_row, n_rows in self._pass_batches(n_local, offset, iteration):
                self.coder.set_dictionary(self.params["W"], Y.dtype)
                inc = comm.allreduce_arrays(self._code_local(Y, idx, spare_row, local))
                replaced += self._update(inc, n_rows, self.n_total)
        out = {k: np.array(v) for k, v in local.items()}
        # counted once (the same on every rank): rank 0 reports it
        out["n_replaced"] = np.array(float(replaced) if comm.rank == 0 else 0.0)
        return out

    def _metrics(self, stats: dict[str, np.ndarray]) -> dict[str, float]:
        n = max(float(stats["n"]), 1.0)
        return {
            "free_energy": -float(stats["energy"]) / n,
            "sparsity": float(stats["n_nonzero"]) / (n * self.model.H),
            "rel_error": float(np.sqrt(stats["sq_error"] / max(float(stats["sq_norm"]), 1e-300))),
            "coder_iter": float(stats["coder_iter"]) / n,
            "n_replaced": float(stats["n_replaced"]),
        }

    def mstep(self, stats: dict[str, np.ndarray], iteration: int) -> dict[str, float]:
        """The pass's metrics from the reduced sums (the dictionary is already updated).

        ``free_energy`` (minus the mean energy per data point of the mini-batch codes, each
        under the dictionary it was coded with), ``sparsity`` (fraction of non-zero
        coefficients), ``rel_error`` (||Y − S Wᵀ||_F / ||Y||_F of those codes),
        ``coder_iter`` (mean sweeps or FISTA iterations per row) and ``n_replaced`` (atoms
        replaced because no recent data point used them).
        """
        return self._metrics(stats)


_METRIC_SUMS = ("energy", "sq_error", "sq_norm", "n_nonzero", "coder_iter", "n")


class _Fused:
    """The state of a run of compiled mini-batches (:meth:`OnlineSparseCoding._fused_start`).

    Attributes
    ----------
    Wt : ndarray of shape (H, D)
        The atoms as rows.
    G : ndarray of shape (H, H)
        WᵀW.
    held : ndarray of shape (N, D) or None
        The rank's rows when they lie in memory in the working dtype (read in place).
    inc : ndarray of shape (H(H+1)/2 + D·H + D,)
        This rank's increments of the current mini-batch, packed for the Allreduce.
    sums : ndarray of shape (6,)
        The metric sums of ``_METRIC_SUMS``.
    """

    __slots__ = ("G", "Wt", "held", "inc", "sums")

    def __init__(self, Wt, G, held, inc, sums) -> None:
        self.Wt, self.G, self.held, self.inc, self.sums = Wt, G, held, inc, sums
