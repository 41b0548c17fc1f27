"""Evolutionary candidate states for truncated EM (TV-EM).

Each data point keeps a set K_n of S states across iterations (Guiraud, Drefs & Lücke 2018;
the tvo library). Every E-step first re-scores K_n with the current parameters, then runs a
few generations of a genetic search on the log-joint and keeps the S best *distinct* states
of old and new, so the free energy Σ_n log Σ_{s∈K_n} p(s, y_n) never decreases from one
E-step to the next at fixed parameters. The cost per point is that of the log-joints of the
S + n_parents · n_children states scored per generation, independent of C(H', γ): this is
what makes H in the hundreds feasible.

One generation, per data point (all points of a batch at once, as array operations):

1. parents: ``n_parents`` draws from K_n, fitness-proportional with fitness
   log p(s, y) − min_{K_n} log p(s, y) + 1 (the tvo "fitparents" rule);
2. children: ``n_children`` mutations of each parent, each one move drawn uniformly: *add*
   (an inactive latent takes a random non-zero value), *remove* (a random active latent
   becomes 0), *swap* (both), and for more than one non-zero value *change* (an active
   latent takes another non-zero value). The latent to add is drawn half of the time
   uniformly and half of the time from the softmax of the model's preselection scores for
   the point, among the inactive latents, so that the search proposes the latents that
   explain the point, as ET's preselection does, without restricting the states to them;
3. selection: the S states with the largest log-joint among K_n and the children, duplicates
   removed (by a 64-bit Zobrist hash of the state).

States are stored per data point on the rank that holds the rows: binary latents as bits in
the order of ``np.packbits`` (an array of shape (N_local, S, ⌈H / 8⌉): N_local · S · ⌈H / 8⌉
bytes), latents of more values as value indices (``uint8``, 0 = the zero value, shape
(N_local, S, H): N_local · S · H bytes). The fused numba search reads and writes the bits in
place; the other paths unpack a batch at a time.
The search draws its randomness from a counter-based generator keyed by (seed, iteration,
global row index, generation), so the states of a row do not depend on how many ranks share
the data nor on the batch it falls in, and a resumed run continues exactly.

When fewer than S distinct states exist (at the start, or for small H), the free slots hold
duplicates whose log-likelihood is marked −inf: they carry no posterior weight.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from prosper.backends.evolution import (
    REFERENCE,
    inverse_cdf,
    proposal,
    stream_key,
    uniforms,
    zobrist_keys,
)

__all__ = ["EvolutionaryStates", "SearchSettings"]

#: (ll, lp) of index states (B, K, H): log-likelihood and log-prior, each (B, K)
LogJoint = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class SearchSettings:
    """Settings of the evolutionary search.

    Attributes
    ----------
    n_states : int
        S, states kept per data point.
    n_parents : int
        Parents drawn per data point and generation.
    n_children : int
        Children (mutations) per parent.
    n_generations : int
        Generations per E-step.
    """

    n_states: int
    n_parents: int
    n_children: int
    n_generations: int

    @property
    def n_scored(self) -> int:
        """States whose log-joint an E-step computes per data point."""
        return self.n_states + self.n_generations * self.n_parents * self.n_children


class EvolutionaryStates:
    """Per-row candidate sets improved by evolutionary search (see the module docstring).

    Parameters
    ----------
    H : int
        Number of latents.
    values : array-like of shape (V,)
        Latent values, the first being 0.
    settings : SearchSettings
    seed : int
        Seed of the search (with the iteration and the global row index).
    """

    def __init__(self, H: int, values, settings: SearchSettings, seed: int) -> None:
        self.H = int(H)
        self.values = np.asarray(values, dtype=np.float64)
        self.settings = settings
        self.seed = int(seed)
        self.keys = zobrist_keys(self.H, len(self.values))
        #: whether the states are stored as bits (binary latents)
        self.bits = len(self.values) == 2
        #: the local states in storage form (:meth:`packed`), shape (N_local, S, width)
        self.data = np.zeros((0, settings.n_states, self._width), dtype=np.uint8)
        self.offset = 0
        self.fresh = np.zeros(0, dtype=bool)
        if len(self.values) > 255:
            raise ValueError(f"at most 255 latent values; got {len(self.values)}.")

    # -- what every state set answers -----------------------------------------------------
    kind = "evo"
    full = False

    @property
    def gamma(self) -> int:
        """No cap on the active latents: the M-step's truncation corrections vanish."""
        return self.H

    @property
    def n_states(self) -> int:
        return self.settings.n_states

    # -- storage --------------------------------------------------------------------------
    @property
    def _width(self) -> int:
        """Bytes per stored state."""
        return (self.H + 7) // 8 if self.bits else self.H

    def attach(self, n_local: int, offset: int) -> None:
        """Hold the states of ``n_local`` rows whose global indices start at ``offset``."""
        self.data = np.zeros((int(n_local), self.settings.n_states, self._width), dtype=np.uint8)
        self.fresh = np.ones(int(n_local), dtype=bool)
        self.offset = int(offset)

    def rows(self, rows: slice) -> np.ndarray:
        """The states of a block of local rows as value indices (B, S, H), for reading: a
        view of the storage where it holds value indices (the searches return new arrays
        and never write into their input)."""
        return self.unpack(self.data[rows])

    def store(self, rows: slice, X: np.ndarray) -> None:
        """Set the states of a block of local rows from value indices (B, S, H)."""
        self.data[rows] = self.pack(X)

    def pack(self, X: np.ndarray) -> np.ndarray:
        """Value indices (..., H) in storage form: bits for binary latents."""
        return np.packbits(X, axis=-1) if self.bits else np.asarray(X, dtype=np.uint8)

    def unpack(self, data: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`pack` for a block of rows."""
        if self.bits:
            return np.unpackbits(np.asarray(data, dtype=np.uint8), axis=-1, count=self.H)
        return np.asarray(data, dtype=np.uint8)

    def packed(self) -> np.ndarray:
        """The local states for a checkpoint: the storage itself (bits for binary latents,
        else value indices)."""
        return self.data

    def restore(self, data: np.ndarray) -> None:
        """Set the local states from a checkpoint block (:meth:`packed` form)."""
        data = np.asarray(data, dtype=np.uint8)
        if data.shape != self.data.shape:
            unit = "bytes of H bits" if self.bits else "H"
            raise ValueError(
                f"the stored evolutionary states have shape {data.shape}; this run needs "
                f"{self.data.shape} (rows, n_states, {unit})."
            )
        # a latent index of H or more would be read past the end of the model's arrays
        if self.bits:
            padding = (1 << (8 * data.shape[-1] - self.H)) - 1  # the last byte's low bits
            bad = data.shape[-1] > 0 and np.any(data[..., -1] & padding)
        else:
            bad = np.any(data >= len(self.values))
        if bad:
            raise ValueError(
                "the stored evolutionary states hold latents or values beyond this model's "
                f"(H={self.H}, {len(self.values)} values): the checkpoint is damaged."
            )
        self.data[...] = data
        self.fresh[...] = False

    # -- the search -----------------------------------------------------------------------
    def initial(self, rows: np.ndarray, scores: np.ndarray | None) -> np.ndarray:
        """First states of a batch (B, S, H): the zero state, then one or two active latents
        drawn from the proposal (duplicates are removed by the first selection)."""
        B, S, H = len(rows), self.settings.n_states, self.H
        X = np.zeros((B, S, H), dtype=np.uint8)
        if S == 1:
            return X
        u = uniforms(stream_key(self.seed, -1, 0), rows, 4 * (S - 1)).reshape(B, S - 1, 4)
        cdf = np.cumsum(proposal(scores, H, B), axis=1)
        first = np.minimum(inverse_cdf(cdf, u[..., 0] * cdf[:, -1:]), H - 1)
        second = np.minimum((u[..., 1] * H).astype(np.int64), H - 1)
        nz = len(self.values) - 1
        b = np.arange(B)[:, None]
        k = np.arange(1, S)[None, :]
        X[b, k, first] = 1 + (u[..., 2] * nz).astype(np.int64)
        two = u[..., 3] < 0.5
        second_value = np.minimum(1 + (u[..., 3] * 2 * nz).astype(np.int64), nz)
        X[b, k, second] = np.where(two, second_value, X[b, k, second])
        return X

    def _prepare(self, X, scores, rows, iteration, fresh, packed=False):
        """The search's inputs: the states (in storage form if ``packed``) with fresh rows
        initialised, the proposal (B, H) and the keys of the generations' random numbers."""
        if fresh is not None and fresh.any():
            X = X.copy()
            new = self.initial(rows[fresh], None if scores is None else scores[fresh])
            X[fresh] = self.pack(new) if packed else new
        weights = proposal(scores, self.H, X.shape[0])
        gen_keys = [
            stream_key(self.seed, iteration, 1 + g) for g in range(self.settings.n_generations)
        ]
        return X, weights, gen_keys

    def evolve_estep(
        self,
        X: np.ndarray,
        scores: np.ndarray | None,
        rows: np.ndarray,
        iteration: int,
        fresh: np.ndarray | None,
        estep: Callable,
        beta: float,
        prior_beta: float,
        weight: np.ndarray,
        accumulate: bool,
        in_place: bool = False,
        packed: bool = False,
    ):
        """:meth:`evolve` with a model's fused search and E-step
        (:meth:`prosper.models.base.TruncatedModel.state_estep`): the same states, then the
        posterior over them.

        With ``in_place`` the new states overwrite X (the solver's view of its stored states:
        no copy of the states per E-step); rows initialised here go to a copy. With
        ``packed`` X and the new states are in storage form (:meth:`pack`: bits for binary
        latents), which the fused kernel reads and writes as they are.

        Returns
        -------
        X, log_marginal, stats
            The new states (B, S, H), or in storage form with ``packed``, log marginals (B,)
            at T=1 and the model's statistics of the tempered posterior weighted by
            ``weight`` (None unless ``accumulate``).
        """
        st = self.settings
        X, weights, gen_keys = self._prepare(X, scores, rows, iteration, fresh, packed)
        rows = np.asarray(rows, dtype=np.int64)
        return estep(
            X, weights, self.keys, gen_keys, rows, st.n_parents, st.n_children, beta,
            prior_beta, weight, accumulate, X if in_place else None, packed and self.bits,
        )  # fmt: skip

    def evolve(
        self,
        X: np.ndarray,
        log_joint: LogJoint,
        scores: np.ndarray | None,
        rows: np.ndarray,
        iteration: int,
        fresh: np.ndarray | None = None,
        kernels: dict | None = None,
        search: Callable | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One E-step's search for a batch.

        Parameters
        ----------
        X : ndarray of uint8, shape (B, S, H)
            Current states (value indices); rows marked ``fresh`` are initialised first.
        log_joint : callable
            (ll, lp) of index states (B, K, H) under the current parameters.
        scores : ndarray of shape (B, H) or None
            The model's preselection scores (guide the flips), or None for uniform flips.
        rows : ndarray of int, shape (B,)
            Global row indices (key the randomness).
        iteration : int
        fresh : ndarray of bool, shape (B,) or None
        kernels : dict or None
            A backend's ``KERNELS``: its ``evo_select`` and ``evo_children`` do the
            bookkeeping (None: the NumPy reference).
        search : callable or None
            A model's fused search (:meth:`prosper.models.base.TruncatedModel.state_search`)
            that makes the same choices in one compiled pass; ``log_joint`` is then unused.

        Returns
        -------
        X, ll, lp
            The new states (B, S, H) and their log-likelihoods and log-priors (B, S), best
            first; duplicates have ll = −inf.
        """
        st = self.settings
        kernels = REFERENCE if kernels is None else kernels
        select, children_of = kernels["evo_select"], kernels["evo_children"]
        nz = len(self.values) - 1
        X, weights, gen_keys = self._prepare(X, scores, rows, iteration, fresh)
        rows = np.asarray(rows, dtype=np.int64)
        if search is not None:
            return search(X, weights, self.keys, gen_keys, rows, st.n_parents, st.n_children)
        ll, lp = log_joint(X)
        X, ll, lp = select(X, ll, lp, self.keys, st.n_states)
        for key in gen_keys:
            children = children_of(X, ll + lp, weights, key, rows, st.n_parents, st.n_children, nz)
            cll, clp = log_joint(children)
            X, ll, lp = select(
                np.concatenate([X, children], axis=1),
                np.concatenate([ll, cll], axis=1),
                np.concatenate([lp, clp], axis=1),
                self.keys,
                st.n_states,
            )
        return X, ll, lp
