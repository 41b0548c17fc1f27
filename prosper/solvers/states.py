"""Candidate state sets for truncated EM (Expectation Truncation).

A candidate set K_n holds the all-zero state, every singleton state over all H latents and
every state with 2..gamma non-zero entries among the H' preselected latents I_n of data
point n. Its size is the same for every data point, so the states of a batch are described
by a shared table of value patterns over H' slots plus the per-point index map I_n:

- ``I``        (B, H')   preselected latents of each data point, ascending;
- ``table``    (Kc, H')  values of the multi-latent states over the H' slots;

and the full ordering of the K states of a point is [zero, singletons (value-major: all
latents at the first non-zero value, then the next value), table rows]. :meth:`dense`
materialises (B, K, H) for models and tests that need explicit states.

Full enumeration (H' = gamma = H, no preselection) is the same object with I = arange(H)
for every point; then truncated EM is exact EM.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np

__all__ = ["CandidateBatch", "ExpectationTruncation", "count_states"]


def count_states(H: int, Hprime: int, gamma: int, n_values: int) -> int:
    """|K_n| = 1 + (V-1) H + sum_{k=2..gamma} C(H', k) (V-1)^k for V latent values."""
    nz = n_values - 1
    return 1 + nz * H + sum(comb(Hprime, k) * nz**k for k in range(2, gamma + 1))


@dataclass(frozen=True)
class CandidateBatch:
    """Candidate states of a batch of data points (see the module docstring).

    Attributes
    ----------
    I : ndarray of int64, shape (B, H')
    table : ndarray of shape (Kc, H')
    values : ndarray of shape (V,)
        Latent values, ``values[0] == 0``.
    H : int
    """

    I: np.ndarray
    table: np.ndarray
    values: np.ndarray
    H: int

    @property
    def n_states(self) -> int:
        return 1 + (len(self.values) - 1) * self.H + self.table.shape[0]

    def singleton_values(self) -> np.ndarray:
        """Non-zero values in singleton order, shape (V-1,)."""
        return self.values[1:]

    def indices(self) -> np.ndarray:
        """All states explicitly as indices into ``values``, shape (B, K, H), uint8 (the
        form of the generic E-step over explicit states)."""
        table = np.argmax(self.table[:, :, None] == self.values[None, None, :], axis=2)
        batch = CandidateBatch(self.I, table, np.arange(len(self.values)), self.H)
        return batch.dense().astype(np.uint8)

    def dense(self) -> np.ndarray:
        """All states explicitly, shape (B, K, H), dtype of ``values``."""
        B, H = self.I.shape[0], self.H
        nz = self.values[1:]
        single = (nz[:, None, None] * np.eye(H)[None]).reshape(-1, H)
        out = np.zeros((B, self.n_states, H), dtype=self.values.dtype)
        out[:, 1 : 1 + single.shape[0]] = single
        rows = np.arange(B)[:, None, None]
        kc = np.arange(self.table.shape[0])[None, :, None]
        out[rows, 1 + single.shape[0] + kc, self.I[:, None, :]] = self.table[None]
        return out


def _top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores per row; ties go to the lower latent index.

    A partial selection (O(H) per row) is exact unless a tie straddles the k-th place; only
    those rows are redone with a stable sort, so every rank picks the same latents for the
    same row whatever else is in its batch.
    """
    if k >= scores.shape[1]:
        return np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(scores, top, axis=1).min(axis=1)
    straddle = np.count_nonzero(scores >= kth[:, None], axis=1) > k
    if straddle.any():
        top[straddle] = np.argsort(-scores[straddle], axis=1, kind="stable")[:, :k]
    return top


def _extend_subsets(subsets: np.ndarray, n: int) -> np.ndarray:
    """All (k+1)-subsets of range(n) in lexicographic order from the k-subsets in that order:
    each subset is followed by every larger index (itertools.combinations order)."""
    last = subsets[:, -1]
    counts = n - 1 - last
    parent = np.repeat(np.arange(subsets.shape[0]), counts)
    # position of each child within its parent's group: 0, 1, ..., counts - 1
    starts = np.cumsum(counts) - counts
    offset = np.arange(parent.size) - np.repeat(starts, counts)
    return np.concatenate([subsets[parent], (last[parent] + 1 + offset)[:, None]], axis=1)


def _value_product(nz: np.ndarray, k: int) -> np.ndarray:
    """itertools.product(nz, repeat=k) as an array of shape (len(nz)**k, k)."""
    idx = np.indices((len(nz),) * k).reshape(k, -1).T
    return nz[idx]


class ExpectationTruncation:
    """Preselection-based candidate sets of the ET paper (Lücke & Eggert 2010).

    Parameters
    ----------
    H : int
        Number of latents.
    Hprime : int
        Number of preselected latents per data point (H' <= H).
    gamma : int
        Maximal number of non-zero entries of a multi-latent state (gamma <= H').
    values : array-like of shape (V,)
        Latent values, the first being 0 (e.g. (0, 1) binary, (0, -1, 1) ternary).
    """

    def __init__(self, H: int, Hprime: int, gamma: int, values) -> None:
        self.H, self.Hprime, self.gamma = int(H), int(Hprime), int(gamma)
        self.values = np.asarray(values, dtype=np.float64)
        self.full = self.Hprime == self.H
        # counted before it is built: the table and its outer products hold
        # rows * H' * (1 + H') floats
        rows = self.n_states - 1 - (len(self.values) - 1) * self.H
        if rows * self.Hprime * (1 + self.Hprime) > 2**34:  # 128 GiB of float64
            raise ValueError(
                f"the state table for Hprime={self.Hprime}, gamma={self.gamma} would hold {rows} "
                f"states per data point (about {rows * self.Hprime * (1 + self.Hprime) * 8:.3g} "
                "bytes with their products); lower Hprime or gamma."
            )
        self.table = self._build_table()
        # table products used by linear models: outer products of each row, flattened
        self.outer = (self.table[:, :, None] * self.table[:, None, :]).reshape(
            self.table.shape[0], self.Hprime**2
        )
        nz = self.values[1:]
        self.value_counts = (
            np.stack([(self.table == v).sum(axis=1) for v in nz], axis=1).astype(np.float64)
            if nz.size
            else np.zeros((self.table.shape[0], 0))
        )

    def _build_table(self) -> np.ndarray:
        """Rows ordered by size k, then subset (lexicographic), then values (first slot
        slowest), built with array operations only: no Python loop over the rows."""
        nz = self.values[1:]
        blocks = [np.zeros((0, self.Hprime))]
        subsets = np.arange(self.Hprime)[:, None]  # the 1-subsets, lexicographic
        for k in range(2, self.gamma + 1):
            subsets = _extend_subsets(subsets, self.Hprime)
            vals = _value_product(nz, k)  # (P, k)
            C, P = subsets.shape[0], vals.shape[0]
            block = np.zeros((C * P, self.Hprime))
            rows = np.arange(C * P)[:, None]
            block[rows, np.repeat(subsets, P, axis=0)] = np.tile(vals, (C, 1))
            blocks.append(block)
        return np.concatenate(blocks, axis=0)

    @property
    def n_states(self) -> int:
        return count_states(self.H, self.Hprime, self.gamma, len(self.values))

    def select(self, scores: np.ndarray | None, batch_size: int) -> CandidateBatch:
        """Candidate states for a batch given preselection scores (larger = more likely).

        Parameters
        ----------
        scores : ndarray of shape (B, H) or None
            None (or full enumeration) selects every latent.
        batch_size : int
            B, used when ``scores`` is None.
        """
        if self.full or scores is None:
            I = np.broadcast_to(np.arange(self.Hprime), (batch_size, self.Hprime))
        else:
            I = np.sort(_top_indices(scores, self.Hprime), axis=1)
        return CandidateBatch(
            I=np.ascontiguousarray(I), table=self.table, values=self.values, H=self.H
        )
