"""NumPy reference kernels of the evolutionary search's bookkeeping (plain array code).

The search itself (what it does and why) is described in :mod:`prosper.solvers.evolutionary`;
these are its two array steps, which a backend may replace by a compiled version that gives
the same states (:mod:`prosper.backends.numba_states`):

- :func:`evo_select`: the S best distinct states of each row;
- :func:`evo_children`: mutated copies of fitness-drawn parents.

States are value indices (uint8) of shape (B, K, H). All randomness comes in as uniform
numbers drawn by the caller, so every implementation makes the same choices.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "REFERENCE",
    "evo_children",
    "evo_select",
    "inverse_cdf",
    "proposal",
    "state_hashes",
    "stream_key",
    "uniforms",
    "zobrist_keys",
]

GOLDEN = 0x9E3779B97F4A7C15
M1 = 0xBF58476D1CE4E5B9
M2 = 0x94D049BB133111EB
_MASK = (1 << 64) - 1


def _mix_int(x: int) -> int:
    """The splitmix64 finaliser on a Python int (64-bit wrapping)."""
    x &= _MASK
    x = ((x ^ (x >> 30)) * M1) & _MASK
    x = ((x ^ (x >> 27)) * M2) & _MASK
    return x ^ (x >> 31)


def _mix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(M1)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(M2)
    return x ^ (x >> np.uint64(31))


def stream_key(seed: int, iteration: int, stream: int) -> int:
    """The 64-bit key of one stream of random numbers of one iteration (iteration −1: the
    initial states)."""
    key = _mix_int(int(seed) * GOLDEN + int(iteration) + 1)
    return _mix_int(key ^ (int(stream) * M2 + 1))


def uniforms(key: int, rows: np.ndarray, n: int) -> np.ndarray:
    """Uniform numbers in [0, 1), shape (len(rows), n), a pure function of its arguments.

    A counter-based generator (splitmix64): draw j of row r under ``key`` is the same
    whichever rank holds r and whatever else is in its batch. The compiled kernels compute
    the same numbers one at a time.
    """
    with np.errstate(over="ignore"):
        base = _mix(
            np.asarray(rows, dtype=np.int64).astype(np.uint64) * np.uint64(GOLDEN) ^ np.uint64(key)
        )
        counters = base[:, None] + np.arange(1, n + 1, dtype=np.uint64)[None, :] * np.uint64(GOLDEN)
        bits = _mix(counters) >> np.uint64(11)
    return bits.astype(np.float64) * 2.0**-53


def zobrist_keys(H: int, n_values: int) -> np.ndarray:
    """Random odd 64-bit keys (H, V) with key[h, 0] = 0: a state's hash is the wrapping sum
    of key[h, s_h], so equal states hash equally (fixed keys, independent of any seed)."""
    keys = np.random.default_rng(20181120).integers(0, 2**63, size=(H, n_values), dtype=np.int64)
    keys = keys.astype(np.uint64) * np.uint64(2) + np.uint64(1)
    keys[:, 0] = 0
    return keys


def state_hashes(X: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Hash of each index state in X (..., H), shape X.shape[:-1]."""
    with np.errstate(over="ignore"):
        return keys[np.arange(X.shape[-1]), X].sum(axis=-1, dtype=np.uint64)


def proposal(scores: np.ndarray | None, H: int, B: int) -> np.ndarray:
    """Weights (B, H) of the latents an add move draws from: half uniform, half the softmax
    of the model's preselection scores (uniform without scores)."""
    if scores is None:
        return np.full((B, H), 1.0 / H)
    # 0.5 / H + 0.5 softmax (the softmax in the scores' precision), with fewer temporaries
    z = scores - scores.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    out = z.astype(np.float64, copy=False)
    out *= 0.5
    out += 0.5 * (1.0 / H)
    return out


def inverse_cdf(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draws per row: cdf (B, M) ascending, u (B, C) -> indices (B, C), the
    number of CDF entries <= u."""
    return np.count_nonzero(cdf[:, None, :] <= u[:, :, None], axis=2)


def evo_select(
    X: np.ndarray, ll: np.ndarray, lp: np.ndarray, keys: np.ndarray, n_keep: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``n_keep`` best distinct states of each row.

    Parameters
    ----------
    X : ndarray of uint8, shape (B, K, H)
    ll, lp : ndarray of shape (B, K)
        Log-likelihood and log-prior of each state.
    keys : ndarray of uint64, shape (H, V)
        Zobrist keys (:func:`zobrist_keys`).
    n_keep : int

    Returns
    -------
    X, ll, lp
        Shapes (B, n_keep, H) and (B, n_keep), ordered by log-joint, best first, ties to
        the lower index (so old states win over equal children). A duplicate of an earlier
        state gets ll = −inf: it only fills a slot when fewer distinct states exist.
    """
    hashes = state_hashes(X, keys)
    order = np.argsort(hashes, axis=1, kind="stable")
    sorted_h = np.take_along_axis(hashes, order, axis=1)
    dup_sorted = np.zeros(sorted_h.shape, dtype=bool)
    dup_sorted[:, 1:] = sorted_h[:, 1:] == sorted_h[:, :-1]
    dup = np.empty_like(dup_sorted)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    ll = np.where(dup, -np.inf, ll)
    keep = np.argsort(-(ll + lp), axis=1, kind="stable")[:, :n_keep]
    return (
        np.take_along_axis(X, keep[:, :, None], axis=1),
        np.take_along_axis(ll, keep, axis=1),
        np.take_along_axis(lp, keep, axis=1),
    )


def evo_children(
    X: np.ndarray,
    lj: np.ndarray,
    proposal: np.ndarray,
    key: int,
    rows: np.ndarray,
    n_parents: int,
    n_children: int,
    n_nonzero: int,
) -> np.ndarray:
    """Mutated copies of fitness-drawn parents.

    Each child makes one move, drawn uniformly: *add* (an inactive latent, drawn from
    ``proposal`` restricted to the inactive latents, takes a random non-zero value),
    *remove* (a uniformly drawn active latent becomes 0), *swap* (remove, then add), and,
    with more than one non-zero value, *change* (an active latent takes another non-zero
    value). A move that is impossible (remove with no active latent, add with all active)
    becomes the other one.

    Parameters
    ----------
    X : ndarray of uint8, shape (B, S, H)
        Current states.
    lj : ndarray of shape (B, S)
        Their log-joints (−inf for the duplicates that fill free slots).
    proposal : ndarray of shape (B, H)
        Positive weights of the latents an add move draws from.
    key : int
        Key of this generation's random numbers (:func:`stream_key`).
    rows : ndarray of int64, shape (B,)
        Global row indices: row r uses :func:`uniforms` (key, r), P numbers for the
        parents, then 4 per child (move, added latent, removed latent, new value).
    n_parents, n_children : int
        P and C.
    n_nonzero : int
        Number of non-zero latent values (V − 1).

    Returns
    -------
    ndarray of uint8, shape (B, P C, H)
        Children of parent i at positions i C .. i C + C − 1.
    """
    B, S, H = X.shape
    P, C, nz = n_parents, n_children, n_nonzero
    u = uniforms(key, rows, P + 4 * P * C)
    u_parent = u[:, :P]
    u_move = u[:, P:].reshape(B, P * C, 4)
    # fitness-proportional parents among the valid (finite) states
    finite = np.isfinite(lj)
    low = np.where(finite, lj, np.inf).min(axis=1, keepdims=True)
    fitness = np.where(finite, lj - low + 1.0, 0.0)
    fcdf = np.cumsum(fitness, axis=1)
    parents = np.minimum(inverse_cdf(fcdf, u_parent * fcdf[:, -1:]), S - 1)
    child = np.take_along_axis(X, np.repeat(parents, C, axis=1)[:, :, None], axis=1)
    b = np.arange(B)[:, None]
    k = np.arange(P * C)[None, :]
    n_moves = 4 if nz > 1 else 3
    move = np.minimum((u_move[..., 0] * n_moves).astype(np.int64), n_moves - 1)
    active = child != 0
    n_active = active.sum(axis=2)
    # 0 add, 1 remove, 2 swap, 3 change; impossible moves turn into the possible one
    move = np.where((n_active == 0) & (move != 0), 0, move)
    move = np.where((n_active == H) & (move == 0), 1, move)
    # the latent to remove (or change): uniform among the active ones
    rank = np.minimum((u_move[..., 2] * n_active).astype(np.int64), np.maximum(n_active - 1, 0))
    h_off = np.argmax(np.cumsum(active, axis=2) > rank[:, :, None], axis=2)
    remove = (move == 1) | (move == 2)
    # the latent to add: drawn from the proposal over the latents inactive after the removal
    # (eligible). Its running sum up to an eligible latent h is the running sum of all
    # latents minus that of the active ones up to h, so that a compiled search finds h in
    # O(active latents + log H) from one running sum per row; h is the first eligible latent
    # whose running sum exceeds u times the eligible mass (the last eligible one if rounding
    # leaves none).
    blocked = active.copy()
    blocked[b, k, h_off] &= ~remove
    cum = np.cumsum(proposal, axis=1)[:, None, :] - np.cumsum(
        proposal[:, None, :] * blocked, axis=2
    )
    target = u_move[..., 1] * cum[..., -1]
    above = ~blocked & (cum > target[:, :, None])
    last = H - 1 - np.argmax(~blocked[..., ::-1], axis=2)
    h_on = np.where(above.any(axis=2), np.argmax(above, axis=2), last)
    value = np.minimum(1 + (u_move[..., 3] * nz).astype(np.int64), nz)
    current = child[b, k, h_off].astype(np.int64)
    # change: another non-zero value, uniformly (1 + (v - 1 + j) mod nz for j in 1..nz-1)
    other = (
        1
        + (
            current
            - 1
            + np.minimum(1 + (u_move[..., 3] * (nz - 1)).astype(np.int64), max(nz - 1, 1))
        )
        % nz
    )
    child[b, k, h_off] = np.where(remove, 0, np.where(move == 3, other, current))
    add = (move == 0) | (move == 2)
    child[b, k, h_on] = np.where(add, value, child[b, k, h_on])
    return child


#: the reference bookkeeping kernels, by name (every backend's ``KERNELS`` has these names)
REFERENCE = {"evo_select": evo_select, "evo_children": evo_children}
