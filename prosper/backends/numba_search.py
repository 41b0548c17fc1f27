"""The fused evolutionary search of linear models (BSC, TSC, DSC) over sparse states.

One compiled pass per data point does what
:meth:`prosper.solvers.evolutionary.EvolutionaryStates.evolve` does with the stand-alone
bookkeeping kernels (:mod:`prosper.backends.numba_states`) and the log-joints between them,
and makes the same choices: the same random numbers, parents, moves, latents and selection,
so the states are those of the NumPy reference and the log-joints are those of
:func:`prosper.backends.numba_states.linear_state_log_joint` bit for bit.

It is faster because it works on what changes:

- a state is held as the sorted list of its active latents and their value indices (a point
  of a sparse model has a few), read from the (S, H) value indices once per E-step (in
  64-bit words, visiting the non-zero bytes only) and written back once; its log-joint
  costs O(m²) for m active latents, its Zobrist hash O(m) (the hash is a wrapping sum, so
  adding the active latents' keys gives the full sum);
- a child is its parent's list with one or two entries changed;
- no hash set: a child that could enter the kept list (few do) is compared with the kept
  states' hashes and those of the generation's earlier candidates only (any other state the
  row has seen did not beat a worst kept state, and the worst only gets better);
- the S kept states stay sorted between generations, so a selection sorts the P C children
  only and merges them into the kept list (ties to the kept state: the order of a stable
  sort of kept states followed by children), and moves slot numbers, not states;
- an add move finds its latent from one running sum of the proposal per row, in
  O(active latents + log H) (the blocked latents' mass is subtracted run by run), not from
  a sum over all H latents per child.

Binary states (one non-zero value, as BSC's) of up to 64 latents are held as 64-bit masks
instead (:func:`_search_rows_bits`): a child is its parent's mask with a bit cleared and/or
set, a copy is found by comparing masks (no hash), the log-joint visits the set bits in
ascending order (the order of the sorted list, so the same sums), and a child that copies a
kept state or an earlier child of its generation is not scored at all (it cannot enter the
kept list), and a row's stored states are read and written eight bytes at a time through a
stream of S H bits (no loop over the active latents' bytes). The quadratic term of a
state's two lowest active latents comes from a table made once per call (it does not depend
on the data point), the add move's latent from fixed loops over the H latents, and the
states are scored many per call of an inlined helper: numba counts the references of every
array passed to an inlined function with an atomic increment and decrement per call, which
cost more than a state's score. The posterior's Σ⟨s sᵀ⟩ is summed in its upper triangle
and mirrored once per call (both triangles receive the same additions in the same order).
The stored states, choices, log-joints and statistics are those of the list form.

Binary states may also come as bits (``packed``: the solver's storage, a bit per latent in
np.packbits' order), read into masks or lists and written back as bits: S ⌈H / 8⌉ bytes per
row instead of S H (H = 300: 1216 bytes instead of 9600). Above H = 64 the statistics'
Σ y⟨s⟩ᵀ is summed in the kernel from each row's few non-zero posterior means
(``_SPARSE_SY_ABOVE``); up to H = 64 the rows' means go out for one GEMM.
"""

from __future__ import annotations

import sys

import numba
import numpy as np
from numba import njit, prange
from numba.cpython.unsafe.numbers import leading_zeros, trailing_zeros

from prosper.backends.evolution import GOLDEN, M1, M2

__all__ = ["linear_search", "linear_search_estep"]

_GOLDEN = np.uint64(GOLDEN)
_M1 = np.uint64(M1)
_M2 = np.uint64(M2)

# The per-state helpers are inlined (``inline="always"``: a call with array arguments costs
# more than their work). Each returns once and prefixes its locals with its name, so that no
# local shares a name with a variable of the function it is inlined into.


@njit(cache=True, inline="always")
def _uniform(base, j):  # pragma: no cover - compiled
    """Draw j of a row's stream (base: the mixed row key), as evolution.uniforms."""
    x = base + np.uint64(j + 1) * _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    x = x ^ (x >> np.uint64(31))
    return np.float64(x >> np.uint64(11)) * 2.0**-53


@njit(cache=True, inline="always")
def _row_base(row, key):  # pragma: no cover - compiled
    _rowb_x = np.uint64(row) * _GOLDEN ^ key
    _rowb_x = (_rowb_x ^ (_rowb_x >> np.uint64(30))) * _M1
    _rowb_x = (_rowb_x ^ (_rowb_x >> np.uint64(27))) * _M2
    return _rowb_x ^ (_rowb_x >> np.uint64(31))


@njit(cache=True, inline="always")
def _score(idx, val, m, WY, WtW, yy, values, value_logp, inv2s2, const, H):  # pragma: no cover
    """(ll, lp) of one sparse state: the arithmetic of numba_states._log_joint on the
    active latents (the inactive ones add exact zeros there)."""
    _scor_prior = H * value_logp[0]
    _scor_lin = 0.0
    _scor_quad = 0.0
    for _scor_i in range(m):
        _scor_hi = idx[_scor_i]
        _scor_v = val[_scor_i]
        _scor_prior += value_logp[_scor_v] - value_logp[0]
        _scor_vi = values[_scor_v]
        _scor_lin += _scor_vi * WY[_scor_hi]
        _scor_row = 0.0
        for _scor_j in range(_scor_i):
            _scor_row += WtW[_scor_hi, idx[_scor_j]] * values[val[_scor_j]]
        _scor_quad += _scor_vi * (2.0 * _scor_row + _scor_vi * WtW[_scor_hi, _scor_hi])
    return const - (yy - 2.0 * _scor_lin + _scor_quad) * inv2s2, _scor_prior


@njit(cache=True, inline="always")
def _hash(idx, val, m, keys):  # pragma: no cover - compiled
    _hash_acc = np.uint64(0)
    for _hash_i in range(m):
        _hash_acc += keys[idx[_hash_i], val[_hash_i]]
    return _hash_acc


@njit(cache=True, inline="always")
def _hash_before(h, phash, n):  # pragma: no cover - compiled
    """Whether hash h is that of one of the states in slots 0..n - 1."""
    _hbef_found = False
    for _hbef_i in range(n):
        _hbef_found |= phash[_hbef_i] == h
    return _hbef_found


@njit(cache=True, inline="always")
def _hash_in(h, phash, slots, n):  # pragma: no cover - compiled
    """Whether hash h is that of one of the states in slots[:n]."""
    _hin_found = False
    for _hin_i in range(n):
        _hin_found |= phash[slots[_hin_i]] == h
    return _hin_found


@njit(cache=True, inline="always")
def _insert(idx, val, m, h, v):  # pragma: no cover - compiled
    """Set latent h to value index v in a sorted list of m entries; returns the new m."""
    _inse_p = 0
    while _inse_p < m and idx[_inse_p] < h:
        _inse_p += 1
    _inse_m = m
    if _inse_p < m and idx[_inse_p] == h:
        val[_inse_p] = v
    else:
        for _inse_i in range(m, _inse_p, -1):
            idx[_inse_i] = idx[_inse_i - 1]
            val[_inse_i] = val[_inse_i - 1]
        idx[_inse_p] = h
        val[_inse_p] = v
        _inse_m = m + 1
    return _inse_m


@njit(cache=True, inline="always")
def _first_above(cum, shift, target, lo, hi):  # pragma: no cover - compiled
    """The first h in lo..hi whose cum[h] - shift exceeds target, given that cum[hi] - shift
    does (cum is ascending, so cum[h] - shift is too, rounding included): lo plus the number
    of those not above it, counted without branches in a short run, else by bisection."""
    _firs_lo = lo
    _firs_hi = hi
    if _firs_hi - _firs_lo <= 32:
        _firs_n = 0
        for _firs_h in range(_firs_lo, _firs_hi):
            _firs_n += cum[_firs_h] - shift <= target
        _firs_lo += _firs_n
    else:
        while _firs_lo < _firs_hi:
            _firs_mid = (_firs_lo + _firs_hi) // 2
            if cum[_firs_mid] - shift > target:
                _firs_hi = _firs_mid
            else:
                _firs_lo = _firs_mid + 1
    return _firs_lo


@njit(cache=True, inline="always")
def _draw_latent(pidx, pm, h_off, remove, proposal, cum, H, u):  # pragma: no cover
    """The latent an add move sets: drawn from the proposal over the latents inactive after
    the removal, as evolution.evo_children draws it. cum holds the running sums of the
    proposal over all latents; the blocked (active, not removed) latents split the others
    into runs, on each of which the eligible running sum is cum minus a constant (the
    blocked mass before the run)."""
    _draw_blocked = 0.0
    for _draw_i in range(pm):
        if not (remove and pidx[_draw_i] == h_off):
            _draw_blocked += proposal[pidx[_draw_i]]
    _draw_target = u * (cum[H - 1] - _draw_blocked)
    _draw_shift = 0.0
    _draw_lo = 0
    _draw_h = -1
    _draw_last = H - 1
    for _draw_i in range(pm + 1):
        _draw_hi = pidx[_draw_i] if _draw_i < pm else H
        if remove and _draw_i < pm and _draw_hi == h_off:
            continue  # the removed latent is eligible: its run goes on
        if _draw_lo < _draw_hi:  # the run _draw_lo .. _draw_hi - 1 of eligible latents
            if cum[_draw_hi - 1] - _draw_shift > _draw_target:
                _draw_h = _first_above(cum, _draw_shift, _draw_target, _draw_lo, _draw_hi - 1)
                break
            _draw_last = _draw_hi - 1
        if _draw_i < pm:
            _draw_shift += proposal[_draw_hi]
            _draw_lo = _draw_hi + 1
    return _draw_h if _draw_h >= 0 else _draw_last


@njit(cache=True, inline="always")
def _make_children(
    kept, pidx, pval, pm, pll, plp, fcdf, proposal, cum, base, children, P, C, nz, H
):  # pragma: no cover - compiled
    """The P C children of one generation into the pool slots ``children`` (the choices of
    numba_states._children_row)."""
    _make_S = kept.shape[0]
    _make_n_moves = 4 if nz > 1 else 3
    _make_low = np.inf
    for _make_i in range(_make_S):
        _make_lj = pll[kept[_make_i]] + plp[kept[_make_i]]
        if np.isfinite(_make_lj) and _make_lj < _make_low:
            _make_low = _make_lj
    _make_total = 0.0
    for _make_i in range(_make_S):
        _make_lj = pll[kept[_make_i]] + plp[kept[_make_i]]
        _make_total += (_make_lj - _make_low + 1.0) if np.isfinite(_make_lj) else 0.0
        fcdf[_make_i] = _make_total
    for _make_i in range(P):
        _make_target = _uniform(base, _make_i) * fcdf[_make_S - 1]
        _make_n = 0
        for _make_k in range(_make_S):
            _make_n += fcdf[_make_k] <= _make_target
        _make_parent = kept[min(_make_n, _make_S - 1)]
        _make_m = pm[_make_parent]
        for _make_j in range(C):
            _make_c = _make_i * C + _make_j
            _make_slot = children[_make_c]
            _make_ub = P + 4 * _make_c
            for _make_a in range(_make_m):
                pidx[_make_slot, _make_a] = pidx[_make_parent, _make_a]
                pval[_make_slot, _make_a] = pval[_make_parent, _make_a]
            _make_move = min(int(_uniform(base, _make_ub) * _make_n_moves), _make_n_moves - 1)
            if _make_m == 0 and _make_move != 0:
                _make_move = 0
            if _make_m == H and _make_move == 0:
                _make_move = 1
            _make_rank = min(int(_uniform(base, _make_ub + 2) * _make_m), max(_make_m - 1, 0))
            _make_h_off = pidx[_make_parent, _make_rank] if _make_m > 0 else 0
            _make_remove = _make_move == 1 or _make_move == 2
            _make_cm = _make_m
            if _make_remove:
                for _make_a in range(_make_rank, _make_m - 1):
                    pidx[_make_slot, _make_a] = pidx[_make_slot, _make_a + 1]
                    pval[_make_slot, _make_a] = pval[_make_slot, _make_a + 1]
                _make_cm = _make_m - 1
            elif _make_move == 3:
                _make_u3 = _uniform(base, _make_ub + 3)
                _make_step = min(1 + int(_make_u3 * (nz - 1)), max(nz - 1, 1))
                pval[_make_slot, _make_rank] = (
                    1 + (np.int64(pval[_make_slot, _make_rank]) - 1 + _make_step) % nz
                )
            if _make_move == 0 or _make_move == 2:
                _make_u1 = _uniform(base, _make_ub + 1)
                _make_h_on = _draw_latent(
                    pidx[_make_parent], _make_m, _make_h_off, _make_remove, proposal, cum, H,
                    _make_u1,
                )  # fmt: skip
                _make_value = min(1 + int(_uniform(base, _make_ub + 3) * nz), nz)
                _make_cm = _insert(
                    pidx[_make_slot], pval[_make_slot], _make_cm, _make_h_on, _make_value
                )
            pm[_make_slot] = _make_cm


@njit(cache=True, inline="always")
def _read_words(xw, pidx, pval, pm, S, H, inv_H, nonzero):  # pragma: no cover - compiled
    """The S states of a row from its value indices seen as 64-bit words (xw, S H / 8
    words): the non-zero bytes, in order, give each state's sorted list of active latents.
    Zero words are skipped, and in the others only the non-zero bytes are visited (the
    lowest set bit of a mask with bit 8 j set for a non-zero byte j); the byte order is the
    machine's (little-endian). inv_H = 1 / H gives a byte's state without a division:
    (o + 0.5) / H is at least 0.5 / H from an integer, far above the rounding error.
    Returns the number of non-zero words, whose indices go to ``nonzero``."""
    for _read_k in range(S):
        pm[_read_k] = 0
    _read_n = 0
    for _read_w in range(xw.shape[0]):
        _read_word = xw[_read_w]
        if _read_word == 0:
            continue
        nonzero[_read_n] = _read_w
        _read_n += 1
        _read_bits = _read_word | (_read_word >> np.uint64(4))
        _read_bits |= _read_bits >> np.uint64(2)
        _read_bits |= _read_bits >> np.uint64(1)
        _read_bits &= np.uint64(0x0101010101010101)
        while _read_bits != 0:
            _read_j = np.uint64(trailing_zeros(_read_bits))
            _read_bits &= _read_bits - np.uint64(1)
            _read_o = 8 * _read_w + np.int64(_read_j >> np.uint64(3))
            _read_k = np.int64((_read_o + 0.5) * inv_H)
            _read_m = pm[_read_k]
            pidx[_read_k, _read_m] = _read_o - _read_k * H
            pval[_read_k, _read_m] = (_read_word >> _read_j) & np.uint64(255)
            pm[_read_k] = _read_m + 1
    return _read_n


@njit(cache=True, inline="always")
def _sort_slots(slots, key, n):  # pragma: no cover - compiled
    """Stable insertion sort of slots[:n] by key[slot], ascending."""
    for _sort_k in range(1, n):
        _sort_s = slots[_sort_k]
        _sort_i = _sort_k
        while _sort_i > 0 and key[slots[_sort_i - 1]] > key[_sort_s]:
            slots[_sort_i] = slots[_sort_i - 1]
            _sort_i -= 1
        slots[_sort_i] = _sort_s


@njit(cache=True)
def _pairwise_sum(a, n):  # pragma: no cover - compiled
    """Sum of a[:n] in NumPy's order (its pairwise summation of a contiguous row: eight
    running sums in blocks of up to 128 values, halves above), so that the weights equal
    those of numpy_backend.log_normalise bit for bit. NumPy recurses over the halves; here
    an explicit stack does (numba's cache does not link recursive functions reliably)."""
    if n <= 128:
        return _block_sum(a, 0, n)
    start = np.empty(64, dtype=np.int64)
    length = np.empty(64, dtype=np.int64)
    phase = np.zeros(64, dtype=np.int64)
    sums = np.empty(64)
    top = 0
    n_sums = 0
    start[0], length[0], phase[0] = 0, n, 0
    while top >= 0:
        s, m = start[top], length[top]
        if m <= 128:
            sums[n_sums] = _block_sum(a, s, m)
            n_sums += 1
            top -= 1
            continue
        half = m // 2
        half -= half % 8
        if phase[top] == 0:  # the first half
            phase[top] = 1
            top += 1
            start[top], length[top], phase[top] = s, half, 0
        elif phase[top] == 1:  # the second half
            phase[top] = 2
            top += 1
            start[top], length[top], phase[top] = s + half, m - half, 0
        else:  # both done: first + second
            n_sums -= 1
            sums[n_sums - 1] = sums[n_sums - 1] + sums[n_sums]
            top -= 1
    return sums[0]


@njit(cache=True)
def _block_sum(a, start, n):  # pragma: no cover - compiled
    """NumPy's sum of a[start:start + n] for n <= 128."""
    if n < 8:
        res = 0.0
        for i in range(start, start + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[start], a[start + 1], a[start + 2], a[start + 3]
    r4, r5, r6, r7 = a[start + 4], a[start + 5], a[start + 6], a[start + 7]
    i = 8
    while i < n - (n % 8):
        j = start + i
        r0 += a[j]
        r1 += a[j + 1]
        r2 += a[j + 2]
        r3 += a[j + 3]
        r4 += a[j + 4]
        r5 += a[j + 5]
        r6 += a[j + 6]
        r7 += a[j + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[start + i]
        i += 1
    return res


@njit(cache=True, inline="always")
def _softmax(x, w, S):  # pragma: no cover - compiled
    """w = softmax(x[:S]) and log Σ exp(x), as numpy_backend.log_normalise computes them."""
    _soft_peak = x[0]
    for _soft_k in range(1, S):
        if x[_soft_k] > _soft_peak:
            _soft_peak = x[_soft_k]
    for _soft_k in range(S):
        w[_soft_k] = np.exp(x[_soft_k] - _soft_peak)
    _soft_total = _pairwise_sum(w, S)
    for _soft_k in range(S):
        w[_soft_k] /= _soft_total
    return np.log(_soft_total) + _soft_peak


@njit(cache=True, inline="always")
def _posterior(
    kept,
    pidx,
    pval,
    pm,
    pll,
    plp,
    lj,
    q,
    values,
    mode,
    beta,
    prior_beta,
    weight,
    b,
    out_lm,
    mean_b,
    y,
    sy,
    ss,
    counts,
):  # pragma: no cover - compiled
    """Log marginal at T=1 and (mode 2) the statistics of the tempered posterior of row b
    over its kept states, in the order of numba_states._stats. The row's <s> is summed in
    mean_b: the row of the batch's means, or where y is given (the sparse Σ <s> yᵀ, see
    _SPARSE_SY_ABOVE) a buffer that is zero on entry and on return, its non-zero entries
    going to sy[h] += <s_h> y."""
    _post_S = kept.shape[0]
    for _post_i in range(_post_S):
        lj[_post_i] = pll[kept[_post_i]] + plp[kept[_post_i]]
    out_lm[b] = _softmax(lj, q, _post_S)
    if mode == 2:
        if beta != 1.0 or prior_beta != 1.0:
            for _post_i in range(_post_S):
                lj[_post_i] = beta * pll[kept[_post_i]] + prior_beta * plp[kept[_post_i]]
            _softmax(lj, q, _post_S)
        for _post_i in range(_post_S):
            _post_w = q[_post_i] * weight
            if _post_w != 0.0:
                _post_s = kept[_post_i]
                _post_m = pm[_post_s]
                for _post_a in range(_post_m):
                    counts[pval[_post_s, _post_a]] += _post_w
                for _post_a in range(_post_m):
                    _post_ha = pidx[_post_s, _post_a]
                    _post_wa = _post_w * values[pval[_post_s, _post_a]]
                    mean_b[_post_ha] += _post_wa
                    for _post_c in range(_post_m):
                        ss[_post_ha, pidx[_post_s, _post_c]] += (
                            _post_wa * values[pval[_post_s, _post_c]]
                        )
        # sparse: the active latents of the weighted states hold the row's non-zero
        # <s_h>; each is added once (a later visit finds it cleared)
        for _post_i in range(_post_S if y.shape[0] > 0 else 0):
            if q[_post_i] * weight != 0.0:
                _post_s = kept[_post_i]
                for _post_a in range(pm[_post_s]):
                    _post_ha = pidx[_post_s, _post_a]
                    _post_mh = mean_b[_post_ha]
                    if _post_mh != 0.0:
                        mean_b[_post_ha] = 0.0
                        for _post_d in range(y.shape[0]):
                            sy[_post_ha, _post_d] += _post_mh * y[_post_d]


# Binary states (one non-zero value, as BSC's) of up to 64 latents: a state is a bit mask,
# bit h set where latent h is active. The same choices and arithmetic as the list form
# above, with no per-state arrays to copy: a child is its parent's mask with a bit cleared
# and/or set, a copy is found by integer equality (no hash), and the log-joint visits the set
# bits in ascending order as _score visits the sorted list.

_ONE = np.uint64(1)
_LOW_BYTES = np.uint64(0x0101010101010101)
# (x * _GATHER) >> 56 moves the lowest bit of byte i of x to bit i when every byte of x is 0
# or 1: the products' bits are distinct powers of two, so nothing carries into the top byte
_GATHER = np.uint64(0x0102040810204080)
# the eight bytes (0 or 1) of 64-bit word whose non-zero bytes are the set bits of f < 256
_SPREAD = np.array(
    [sum(((f >> i) & 1) << (8 * i) for i in range(8)) for f in range(256)], dtype=np.uint64
)
# a byte with its bits in reverse order: np.packbits puts latent 8 j + i at bit 7 - i of
# byte j, a mask has it at bit i
_REVERSED = np.array([int(f"{f:08b}"[::-1], 2) for f in range(256)], dtype=np.uint8)


@njit(cache=True, inline="always")
def _lowest(bits):  # pragma: no cover - compiled
    """The index of the lowest set bit of a non-zero uint64."""
    return np.int64(trailing_zeros(bits))


@njit(cache=True, inline="always")
def _low_bits(n):  # pragma: no cover - compiled
    """The mask of bits 0 .. n - 1 (0 <= n <= 64)."""
    return ~np.uint64(0) if n >= 64 else (_ONE << np.uint64(n)) - _ONE


@njit(cache=True, inline="always")
def _byte_flags(word):  # pragma: no cover - compiled
    """Bit i set where byte i of a 64-bit word is non-zero (8 bits)."""
    _bfl_bits = word | (word >> np.uint64(4))
    _bfl_bits |= _bfl_bits >> np.uint64(2)
    _bfl_bits |= _bfl_bits >> np.uint64(1)
    return ((_bfl_bits & _LOW_BYTES) * _GATHER) >> np.uint64(56)


@njit(cache=True, inline="always")
def _popcount(x):  # pragma: no cover - compiled
    """The number of set bits of a uint64 (numba has no intrinsic for it)."""
    _popc_x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    _popc_x = (_popc_x & np.uint64(0x3333333333333333)) + (
        (_popc_x >> np.uint64(2)) & np.uint64(0x3333333333333333)
    )
    _popc_x = (_popc_x + (_popc_x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((_popc_x * _LOW_BYTES) >> np.uint64(56))


@njit(cache=True, inline="always")
def _score_masks(
    masks, counts, todo, n, WY, WtW, quad2, prior_m, yy, v1, inv2s2, const, out_ll, out_lp
):  # pragma: no cover - compiled
    """(ll, lp) of the binary states masks[k] (counts[k] active latents) for k in todo[:n],
    into out_ll[k], out_lp[k], as _score computes them (v1 = values[1]; quad2 and prior_m
    from _pair_terms).

    The quadratic term of the two lowest active latents does not depend on the data point,
    so it comes from the table quad2 (most states of a sparse model have at most two), and
    only the later latents, if any, are summed here, in _score's order. One call scores
    many states: each array passed to an inlined function costs an atomic reference count
    increment and decrement per call, which per state cost more than the score."""
    for _smas_i in range(n):
        _smas_k = todo[_smas_i]
        _smas_mask = masks[_smas_k]
        _smas_lin = 0.0
        _smas_quad = 0.0
        if _smas_mask != 0:
            _smas_h = _lowest(_smas_mask)
            _smas_lin += v1 * WY[_smas_h]
            _smas_rest = _smas_mask & (_smas_mask - _ONE)
            if _smas_rest == 0:
                _smas_quad = quad2[_smas_h, _smas_h]
            else:
                _smas_h2 = _lowest(_smas_rest)
                _smas_rest &= _smas_rest - _ONE
                _smas_lin += v1 * WY[_smas_h2]
                _smas_quad = quad2[_smas_h, _smas_h2]
                while _smas_rest != 0:
                    _smas_h = _lowest(_smas_rest)
                    _smas_rest &= _smas_rest - _ONE
                    _smas_lin += v1 * WY[_smas_h]
                    _smas_row = 0.0
                    _smas_below = _smas_mask & ((_ONE << np.uint64(_smas_h)) - _ONE)
                    while _smas_below != 0:
                        _smas_row += WtW[_smas_h, _lowest(_smas_below)] * v1
                        _smas_below &= _smas_below - _ONE
                    _smas_quad += v1 * (2.0 * _smas_row + v1 * WtW[_smas_h, _smas_h])
        out_ll[_smas_k] = const - (yy - 2.0 * _smas_lin + _smas_quad) * inv2s2
        out_lp[_smas_k] = prior_m[counts[_smas_k]]


@njit(cache=True, inline="always")
def _pair_terms(WtW, v1, value_logp, H, quad2, prior_m):  # pragma: no cover - compiled
    """The parts of a binary state's log-joint that depend on its two lowest active
    latents or its active count only, summed as _score sums them: quad2[h, h] the quadratic
    term of latent h alone, quad2[h, g] (h < g) that of h and g (the first two terms of
    _score's sum), prior_m[m] the log-prior of m active latents."""
    for _pair_h in range(H):
        _pair_first = 0.0
        _pair_first += v1 * (2.0 * 0.0 + v1 * WtW[_pair_h, _pair_h])
        quad2[_pair_h, _pair_h] = _pair_first
        for _pair_g in range(_pair_h + 1, H):
            _pair_row = 0.0
            _pair_row += WtW[_pair_g, _pair_h] * v1
            quad2[_pair_h, _pair_g] = _pair_first + v1 * (
                2.0 * _pair_row + v1 * WtW[_pair_g, _pair_g]
            )
    _pair_prior = H * value_logp[0]
    prior_m[0] = _pair_prior
    for _pair_m in range(1, H + 1):
        _pair_prior += value_logp[1] - value_logp[0]
        prior_m[_pair_m] = _pair_prior


@njit(cache=True, inline="always")
def _children_bits(
    kmask, kcount, kll, klp, fcdf, proposal, cum, full, base, cmask, ccount, P, C, H
):  # pragma: no cover - compiled
    """The P C children of one generation (the choices of _make_children with one non-zero
    value: three moves, the value always 1) into cmask and ccount.

    An add move's latent is drawn as _draw_latent draws it, from the proposal over the
    latents inactive after the removal (blocked: the parent's active latents less the
    removed one), with the same sums in the same order. On a run of eligible latents the
    eligible running sum is cum minus the blocked mass before the run (shift); cum[h] -
    shift is ascending in h, so the latents above the target form a final segment, found
    by counting those not above it in a fixed, vectorisable loop over all H latents; the
    lowest latent above the target in any run is the one drawn (none, by rounding: the last
    eligible latent). Fixed loops cost less than searching the run that holds the target,
    whose lengths and exits vary from child to child (mispredicted branches). The draw is a
    closure rather than an inlined function of its own, which would count references to
    its arrays at every child.
    """

    def _draw_bit(blocked, u):
        _dbit_mass = 0.0
        _dbit_rest = blocked
        while _dbit_rest != 0:
            _dbit_mass += proposal[_lowest(_dbit_rest)]
            _dbit_rest &= _dbit_rest - _ONE
        _dbit_target = u * (cum[H - 1] - _dbit_mass)
        _dbit_above = np.uint64(0)
        _dbit_shift = 0.0  # the blocked mass before the run, summed as the mass was
        _dbit_lo = 0
        _dbit_rest = blocked
        while True:  # the runs _dbit_lo .. _dbit_hi - 1 of eligible latents
            _dbit_hi = _lowest(_dbit_rest) if _dbit_rest != 0 else H
            _dbit_tau = 0  # the latents with cum[h] - shift <= target: an initial segment
            for _dbit_h in range(H):
                _dbit_tau += cum[_dbit_h] - _dbit_shift <= _dbit_target
            _dbit_above |= _low_bits(_dbit_hi) & ~_low_bits(max(_dbit_lo, _dbit_tau))
            if _dbit_rest == 0:
                break
            _dbit_shift += proposal[_dbit_hi]
            _dbit_rest &= _dbit_rest - _ONE
            _dbit_lo = _dbit_hi + 1
        # none above the target (rounding): the last eligible latent
        _dbit_last = 63 - np.int64(leading_zeros(~blocked & full))
        return _lowest(_dbit_above) if _dbit_above != 0 else _dbit_last

    _cbit_S = kmask.shape[0]
    _cbit_low = np.inf
    for _cbit_i in range(_cbit_S):
        _cbit_lj = kll[_cbit_i] + klp[_cbit_i]
        if np.isfinite(_cbit_lj) and _cbit_lj < _cbit_low:
            _cbit_low = _cbit_lj
    _cbit_total = 0.0
    for _cbit_i in range(_cbit_S):
        _cbit_lj = kll[_cbit_i] + klp[_cbit_i]
        _cbit_total += (_cbit_lj - _cbit_low + 1.0) if np.isfinite(_cbit_lj) else 0.0
        fcdf[_cbit_i] = _cbit_total
    for _cbit_i in range(P):
        _cbit_target = _uniform(base, _cbit_i) * fcdf[_cbit_S - 1]
        _cbit_n = 0
        for _cbit_k in range(_cbit_S):
            _cbit_n += fcdf[_cbit_k] <= _cbit_target
        _cbit_parent = kmask[min(_cbit_n, _cbit_S - 1)]
        _cbit_m = kcount[min(_cbit_n, _cbit_S - 1)]
        for _cbit_j in range(C):
            _cbit_c = _cbit_i * C + _cbit_j
            _cbit_ub = P + 4 * _cbit_c
            _cbit_move = min(int(_uniform(base, _cbit_ub) * 3), 2)
            if _cbit_m == 0 and _cbit_move != 0:
                _cbit_move = 0
            if _cbit_m == H and _cbit_move == 0:
                _cbit_move = 1
            _cbit_child = _cbit_parent
            _cbit_cm = _cbit_m
            if _cbit_move != 0:  # remove or swap: the rank-th active latent goes
                _cbit_rank = min(int(_uniform(base, _cbit_ub + 2) * _cbit_m), _cbit_m - 1)
                _cbit_rest = _cbit_parent
                for _cbit_a in range(_cbit_rank):
                    _cbit_rest &= _cbit_rest - _ONE
                _cbit_child &= ~(_cbit_rest & (~_cbit_rest + _ONE))
                _cbit_cm -= 1
            if _cbit_move != 1:  # add or swap
                _cbit_child |= _ONE << np.uint64(
                    _draw_bit(_cbit_child, _uniform(base, _cbit_ub + 1))
                )
                _cbit_cm += 1
            cmask[_cbit_c] = _cbit_child
            ccount[_cbit_c] = _cbit_cm


@njit(cache=True)
def _search_rows_bits(
    X,
    Xw,
    words,
    packed,
    WY,
    WtW,
    yy,
    values,
    value_logp,
    inv2s2,
    const,
    proposal,
    gen_keys,
    rows,
    P,
    C,
    start,
    stop,
    out_X,
    out_Xw,
    out_ll,
    out_lp,
    mode,
    beta,
    prior_beta,
    weight,
    out_lm,
    mean,
    ss,
    counts,
):  # pragma: no cover - compiled
    """_search_rows for binary states of H <= 64 latents held as bit masks: the same states,
    log-joints and statistics (ss zero on entry: its upper triangle is summed and mirrored)."""
    S, H = X.shape[1], WY.shape[1]
    PC = P * C
    v1 = values[1]
    quad2 = np.empty((H, H))
    prior_m = np.empty(H + 1)
    _pair_terms(WtW, v1, value_logp, H, quad2, prior_m)
    # the kept states, best first: mask, active count, ll (-inf: duplicate), lp, -(ll + lp)
    kmask = np.empty(S, dtype=np.uint64)
    kcount = np.empty(S, dtype=np.int64)
    kll = np.empty(S)
    klp = np.empty(S)
    kkey = np.empty(S)
    # the states as read (in slot order) and a generation's children
    rmask = np.empty(S, dtype=np.uint64)
    rcount = np.empty(S, dtype=np.int64)
    rll = np.empty(S)
    rlp = np.empty(S)
    rkey = np.empty(S)
    order = np.empty(S, dtype=np.int64)
    cmask = np.empty(PC, dtype=np.uint64)
    ccount = np.empty(PC, dtype=np.int64)
    cll = np.empty(PC)
    clp = np.empty(PC)
    ckey = np.empty(PC)
    fresh = np.empty(PC, dtype=np.int64)  # children that copy no state seen before
    cand = np.empty(PC, dtype=np.int64)  # children that can enter the kept list
    fcdf = np.empty(S)
    cum = np.empty(H)
    lj = np.empty(S)
    q = np.empty(S)
    # With words, a row's S H value indices pass through a stream of S H bits (bit o set
    # where byte o is non-zero; one spare word), state k's mask being bits k H .. k H + H - 1:
    # read and written eight bytes at a time, without a branch per active latent
    n_stream = (S * H + 63) // 64
    stream = np.zeros(n_stream + 1, dtype=np.uint64)
    full = ~np.uint64(0) if H == 64 else (_ONE << np.uint64(H)) - _ONE
    for b in range(start, stop):
        # the row's views, made once (a view made per call costs a reference count each)
        wy = WY[b]
        yb = yy[b]
        prop = proposal[b]
        for k in range(S):
            rmask[k] = 0
            rcount[k] = 0
        if packed:  # bit h of a state at byte h // 8, bit 7 - h % 8 (np.packbits' order)
            for k in range(S):
                mask = np.uint64(0)
                for j in range(X.shape[2]):
                    mask |= np.uint64(_REVERSED[X[b, k, j]]) << np.uint64(8 * j)
                rmask[k] = mask
                rcount[k] = _popcount(mask)
        elif words:
            for i in range(n_stream + 1):
                stream[i] = 0
            for w in range(Xw.shape[1]):
                stream[w >> 3] |= _byte_flags(Xw[b, w]) << np.uint64(8 * (w & 7))
            for k in range(S):
                o = k * H
                mask = stream[o >> 6] >> np.uint64(o & 63)
                if (o & 63) + H > 64:
                    mask |= stream[(o >> 6) + 1] << np.uint64(64 - (o & 63))
                rmask[k] = mask & full
                rcount[k] = _popcount(rmask[k])
        else:
            for k in range(S):
                for h in range(H):
                    if X[b, k, h] != 0:
                        rmask[k] |= _ONE << np.uint64(h)
                        rcount[k] += 1
        for k in range(S):
            order[k] = k
        _score_masks(
            rmask, rcount, order, S, wy, WtW, quad2, prior_m, yb, v1, inv2s2, const, rll, rlp
        )
        for k in range(S):
            # a copy of an earlier state of the row (the slots it leaves free) has no weight;
            # copies are counted without branches (a vectorisable sum)
            n_copies = False
            for i in range(k):
                n_copies |= rmask[i] == rmask[k]
            if n_copies:
                rll[k] = -np.inf
            rkey[k] = -(rll[k] + rlp[k])
        _sort_slots(order, rkey, S)
        for i in range(S):
            k = order[i]
            kmask[i] = rmask[k]
            kcount[i] = rcount[k]
            kll[i] = rll[k]
            klp[i] = rlp[k]
            kkey[i] = rkey[k]
        acc = 0.0
        for h in range(H):
            acc += prop[h]
            cum[h] = acc
        for g in range(gen_keys.shape[0]):
            base = _row_base(rows[b], gen_keys[g])
            _children_bits(
                kmask, kcount, kll, klp, fcdf, prop, cum, full, base, cmask, ccount,
                P, C, H,
            )  # fmt: skip
            # The candidates as in _search_rows: a child that beats the worst kept state and
            # is no copy of a kept state or of an earlier candidate. A copy of a kept state
            # or of any earlier child of the generation is not scored: it cannot be one (a
            # copy of an earlier child scores as that child did and fails as it did, or as
            # its copy), and only a candidate's score is used.
            n_new = 0
            for c in range(PC):
                mask = cmask[c]
                n_copies = False
                for i in range(S):
                    n_copies |= kmask[i] == mask
                for i in range(c):
                    n_copies |= cmask[i] == mask
                if not n_copies:
                    fresh[n_new] = c
                    n_new += 1
            _score_masks(
                cmask, ccount, fresh, n_new, wy, WtW, quad2, prior_m, yb, v1, inv2s2, const,
                cll, clp,
            )  # fmt: skip
            worst = kkey[S - 1]
            n_cand = 0
            for i in range(n_new):
                c = fresh[i]
                ckey[c] = -(cll[c] + clp[c])
                if ckey[c] < worst:
                    cand[n_cand] = c
                    n_cand += 1
            if n_cand == 0:
                continue
            _sort_slots(cand, ckey, n_cand)
            # How many candidates enter: candidate j goes to place j + #(kept states not
            # after it) of the forward merge (ties: the kept state first), so it enters
            # while j < #(kept states whose key it beats), counted by a fixed loop over the
            # kept states (a walk over them until the candidates are placed exits at a
            # different place each time)
            n_taken = 0
            while n_taken < n_cand:
                key_j = ckey[cand[n_taken]]
                beaten = 0
                for i in range(S):
                    beaten += key_j < kkey[i]
                if n_taken >= beaten:
                    break
                n_taken += 1
            # merge from the back, in place: the kept states that stay move down, the
            # candidates taken fill the gaps, and the kept states before the first
            # candidate taken stay where they are
            i = S - n_taken - 1  # the last kept state that stays
            j = n_taken - 1
            n = S - 1
            while j >= 0:
                # the later of the two tails' last states in the forward merge's order
                if i < 0 or not ckey[cand[j]] < kkey[i]:
                    c = cand[j]
                    kmask[n] = cmask[c]
                    kcount[n] = ccount[c]
                    kll[n] = cll[c]
                    klp[n] = clp[c]
                    kkey[n] = ckey[c]
                    j -= 1
                else:
                    kmask[n] = kmask[i]
                    kcount[n] = kcount[i]
                    kll[n] = kll[i]
                    klp[n] = klp[i]
                    kkey[n] = kkey[i]
                    i -= 1
                n -= 1
        if packed:
            for i in range(S):
                mask = kmask[i]
                for j in range(out_X.shape[2]):
                    out_X[b, i, j] = _REVERSED[(mask >> np.uint64(8 * j)) & np.uint64(255)]
        elif words:  # every word of the row, from the stream of the kept masks
            for i in range(n_stream + 1):
                stream[i] = 0
            for i in range(S):
                o = i * H
                stream[o >> 6] |= kmask[i] << np.uint64(o & 63)
                if (o & 63) + H > 64:
                    stream[(o >> 6) + 1] |= kmask[i] >> np.uint64(64 - (o & 63))
            for w in range(out_Xw.shape[1]):
                out_Xw[b, w] = _SPREAD[(stream[w >> 3] >> np.uint64(8 * (w & 7))) & np.uint64(255)]
        else:
            for i in range(S):
                for h in range(H):
                    out_X[b, i, h] = 0
                rest = kmask[i]
                while rest != 0:
                    out_X[b, i, _lowest(rest)] = 1
                    rest &= rest - _ONE
        for i in range(S):
            out_ll[b, i] = kll[i]
            out_lp[b, i] = klp[i]
        if mode > 0:  # _posterior's arithmetic, in its order
            for i in range(S):
                lj[i] = kll[i] + klp[i]
            out_lm[b] = _softmax(lj, q, S)
            if mode == 2:
                if beta != 1.0 or prior_beta != 1.0:
                    for i in range(S):
                        lj[i] = beta * kll[i] + prior_beta * klp[i]
                    _softmax(lj, q, S)
                # counts[1] in a local (the same additions in the same order, without a
                # store and load per addition through an array that may alias ss)
                count1 = counts[1]
                for i in range(S):
                    w8 = q[i] * weight[b]
                    if w8 == 0.0:
                        continue
                    mask = kmask[i]
                    for _a in range(kcount[i]):
                        count1 += w8
                    wa = w8 * v1
                    rest = mask
                    while rest != 0:
                        ha = _lowest(rest)
                        rest &= rest - _ONE
                        mean[b, ha] += wa
                        # ss[ha, hb] and ss[hb, ha] receive the same additions in the same
                        # order: the upper triangle is summed, the lower one copied from it
                        rest2 = mask & ~_low_bits(ha)
                        while rest2 != 0:
                            ss[ha, _lowest(rest2)] += wa * v1
                            rest2 &= rest2 - _ONE
                counts[1] = count1
    if mode == 2:  # the lower triangle of ss (zero on entry, as the upper one)
        for ha in range(H):
            for hb in range(ha + 1, H):
                ss[hb, ha] = ss[ha, hb]


@njit(cache=True)
def _search_rows(
    X,
    Xw,
    words,
    packed,
    in_place,
    WY,
    WtW,
    yy,
    values,
    value_logp,
    inv2s2,
    const,
    proposal,
    keys,
    gen_keys,
    rows,
    P,
    C,
    nz,
    start,
    stop,
    out_X,
    out_Xw,
    out_ll,
    out_lp,
    mode,
    beta,
    prior_beta,
    weight,
    out_lm,
    mean,
    Y,
    sy,
    ss,
    counts,
):  # pragma: no cover - compiled
    """The E-step search (all generations) of rows start..stop - 1 into out_*; with mode 1
    also the log marginals, with mode 2 also the statistics of the tempered posterior
    (mean (B, H) per row, or with Y (B, D) sy (H, D) = Σ <s> yᵀ transposed, summed over
    the rows; ss (H, H) and counts (V,) summed over the rows).

    With ``words``, Xw and out_Xw are X and out_X seen as 64-bit words per row (B, S H / 8):
    a row is read and cleared eight latents at a time (a sparse state is mostly zero
    words). ``in_place``: out_X is X, so that clearing a row's non-zero words clears it.
    With ``packed`` (binary states), X and out_X hold the states as bits (B, S, ⌈H / 8⌉),
    latent h at byte h // 8, bit 7 - h % 8 (np.packbits' order)."""
    S, H = X.shape[1], WY.shape[1]
    PC = P * C
    K = S + PC
    # the thread's workspace: a pool of K states as sorted lists of active latents
    pidx = np.empty((K, H + 1), dtype=np.int64)  # active latents per pool slot
    pval = np.empty((K, H + 1), dtype=np.uint8)  # their value indices
    pm = np.empty(K, dtype=np.int64)  # active count
    phash = np.empty(K, dtype=np.uint64)  # Zobrist hash
    pll = np.empty(K)  # log-likelihood (-inf: duplicate)
    plp = np.empty(K)  # log-prior
    key = np.empty(K)  # sort key -(ll + lp)
    kept = np.empty(S, dtype=np.int64)  # kept slots, best first
    rest = np.empty(PC, dtype=np.int64)  # the other slots (children)
    merged = np.empty(PC, dtype=np.int64)  # the next free slots
    fcdf = np.empty(S)  # fitness CDF
    cum = np.empty(H)  # running sums of the row's proposal
    cand = np.empty(PC, dtype=np.int64)  # children that can enter the kept list
    newkept = np.empty(S, dtype=np.int64)
    lj = np.empty(S)  # log-joints of the kept states, then their posterior weights
    q = np.empty(S)
    rmean = np.zeros(H)  # the row's <s> for the sparse Σ <s> yᵀ, zero between rows
    nonzero = np.empty(Xw.shape[1], dtype=np.int64)  # the row's non-zero words
    n_nonzero = 0
    for b in range(start, stop):
        # read the kept states as sorted lists, re-score them, keep them sorted
        if packed:
            for k in range(S):
                m = 0
                for j in range(X.shape[2]):
                    byte = np.uint64(_REVERSED[X[b, k, j]])  # bit i: latent 8 j + i
                    while byte != 0:
                        pidx[k, m] = 8 * j + _lowest(byte)
                        pval[k, m] = 1
                        m += 1
                        byte &= byte - _ONE
                pm[k] = m
        elif words:
            n_nonzero = _read_words(Xw[b], pidx, pval, pm, S, H, 1.0 / H, nonzero)
        else:
            for k in range(S):
                m = 0
                for h in range(H):
                    v = X[b, k, h]
                    pidx[k, m] = h
                    pval[k, m] = v
                    m += v != 0
                pm[k] = m
        for k in range(S):
            m = pm[k]
            phash[k] = _hash(pidx[k], pval[k], m, keys)
            ll, lp = _score(
                pidx[k], pval[k], m, WY[b], WtW, yy[b], values, value_logp, inv2s2, const, H
            )
            kept[k] = k
            # a copy of an earlier state of the row (the slots it leaves free) has no weight
            if _hash_before(phash[k], phash, k):
                ll = -np.inf
            pll[k] = ll
            plp[k] = lp
            key[k] = -(ll + lp)
        _sort_slots(kept, key, S)
        for c in range(PC):
            rest[c] = S + c
        acc = 0.0
        for h in range(H):
            acc += proposal[b, h]
            cum[h] = acc
        for g in range(gen_keys.shape[0]):
            base = _row_base(rows[b], gen_keys[g])
            _make_children(
                kept, pidx, pval, pm, pll, plp, fcdf, proposal[b], cum, base, rest, P, C, nz, H
            )  # fmt: skip
            # A child enters the kept list only if it beats the worst kept state (a tie goes
            # to the kept state), and not as a copy of a kept state or of an earlier
            # candidate of this generation. The others are not hashed: a copy of one of
            # them scores the same and fails the same test. Nor can any state seen earlier
            # in the row and not kept: it did not beat a worst kept state, and the worst
            # kept state only gets better.
            worst = key[kept[S - 1]]
            n_cand = 0
            n_rest = 0
            for c in range(PC):
                s = rest[c]
                m = pm[s]
                ll, lp = _score(
                    pidx[s], pval[s], m, WY[b], WtW, yy[b], values, value_logp, inv2s2, const, H
                )
                pll[s] = ll
                plp[s] = lp
                key[s] = -(ll + lp)
                if key[s] < worst:
                    phash[s] = _hash(pidx[s], pval[s], m, keys)
                    if not (
                        _hash_in(phash[s], phash, kept, S)
                        or _hash_in(phash[s], phash, cand, n_cand)
                    ):
                        cand[n_cand] = s
                        n_cand += 1
                        continue
                merged[n_rest] = s  # a free slot for the next generation
                n_rest += 1
            if n_cand == 0:
                continue
            _sort_slots(cand, key, n_cand)
            # merge the sorted kept states and candidates (ties: the kept state first)
            i = 0
            j = 0
            for n in range(S):
                if j < n_cand and key[cand[j]] < key[kept[i]]:
                    newkept[n] = cand[j]
                    j += 1
                else:
                    newkept[n] = kept[i]
                    i += 1
            # the free slots: rejected children, kept states pushed out, candidates not taken
            for n in range(i, S):
                merged[n_rest] = kept[n]
                n_rest += 1
            for n in range(j, n_cand):
                merged[n_rest] = cand[n]
                n_rest += 1
            for n in range(S):
                kept[n] = newkept[n]
            for n in range(PC):
                rest[n] = merged[n]
        # the row of out_X may be the row of X just read (the solver's in-place update): then
        # only its non-zero words are cleared, so that the others are not written (H = 300:
        # a few of S H / 8 = 1200)
        if packed:
            for i in range(S):
                for j in range(out_X.shape[2]):
                    out_X[b, i, j] = 0
                s = kept[i]
                for a in range(pm[s]):
                    h = pidx[s, a]
                    out_X[b, i, h >> 3] |= np.uint8(128 >> (h & 7))
        else:
            if words and in_place:
                for w in range(n_nonzero):
                    out_Xw[b, nonzero[w]] = 0
            elif words:
                for w in range(out_Xw.shape[1]):
                    out_Xw[b, w] = 0
            else:
                for i in range(S):
                    for h in range(H):
                        out_X[b, i, h] = 0
            for i in range(S):
                s = kept[i]
                for a in range(pm[s]):
                    out_X[b, i, pidx[s, a]] = pval[s, a]
        for i in range(S):
            s = kept[i]
            out_ll[b, i] = pll[s]
            out_lp[b, i] = plp[s]
        if mode > 0:
            _posterior(
                kept, pidx, pval, pm, pll, plp, lj, q, values, mode, beta, prior_beta,
                weight[b], b, out_lm, rmean if Y.shape[1] > 0 else mean[b], Y[b], sy, ss,
                counts,
            )  # fmt: skip


@njit(cache=True, parallel=True)
def _linear_search(
    X,
    Xw,
    out_X,
    out_Xw,
    words,
    packed,
    in_place,
    WY,
    WtW,
    yy,
    values,
    value_logp,
    inv2s2,
    const,
    proposal,
    keys,
    gen_keys,
    rows,
    P,
    C,
    nz,
    n_chunks,
    mode,
    beta,
    prior_beta,
    weight,
    Y,
):  # pragma: no cover - compiled
    B, S, H = X.shape[0], X.shape[1], WY.shape[1]
    out_ll = np.empty((B, S))
    out_lp = np.empty((B, S))
    out_lm = np.empty(B)
    # the statistics of a chunk of rows go to its own slot (summed afterwards); without
    # statistics the arrays are placeholders of one row
    many = 1 if mode == 2 else 0
    # the rows' <s> (B, H) for Yᵀ <s> by a GEMM, or with Y (sparse) Σ <s> yᵀ per chunk
    sparse = Y.shape[1] > 0
    mean = np.zeros((B if many and not sparse else 1, H))
    sy_slots = 1 if many == 1 and sparse else 0
    sy = np.zeros((max(n_chunks * sy_slots, 1), H, Y.shape[1]))
    ss = np.zeros((max(n_chunks * many, 1), H, H))
    counts = np.zeros((max(n_chunks * many, 1), values.shape[0]))
    step = (B + n_chunks - 1) // n_chunks
    # binary states of up to 64 latents are searched as bit masks (the same states)
    bits = nz == 1 and H <= 64
    for c in prange(n_chunks):
        if bits:
            _search_rows_bits(
                X, Xw, words, packed, WY, WtW, yy, values, value_logp, inv2s2, const,
                proposal, gen_keys, rows, P, C, c * step, min(B, (c + 1) * step), out_X, out_Xw,
                out_ll, out_lp, mode, beta, prior_beta, weight, out_lm, mean, ss[c * many],
                counts[c * many],
            )  # fmt: skip
        else:
            _search_rows(
                X, Xw, words, packed, in_place, WY, WtW, yy, values, value_logp, inv2s2, const,
                proposal, keys, gen_keys, rows, P, C, nz, c * step, min(B, (c + 1) * step),
                out_X, out_Xw, out_ll, out_lp, mode, beta, prior_beta, weight, out_lm, mean,
                Y, sy[c * sy_slots], ss[c * many], counts[c * many],
            )  # fmt: skip
    return out_ll, out_lp, out_lm, mean, sy, ss, counts


# Σ_n <s_n> y_nᵀ (D, H) of the fused E-step: above this H from each row's non-zero <s_h>
# (the latents of its weighted states, a handful), D multiply-adds each, in the kernel; up to
# it as Yᵀ <s> by a GEMM over the batch. Measured on 2-core AMD EPYC, one thread
# (bench_evo_cost.py): at H = 20, D = 100 the GEMM is cheaper (about ten of the 20 latents
# are touched per row); at H = 300, D = 256 the sparse sum saves ~3 µs per point. At least
# 64: the bit-mask kernel (binary states of H <= 64) only writes the rows' means.
_SPARSE_SY_ABOVE = 64


def _words(X: np.ndarray) -> np.ndarray:
    """X (B, S, H) of uint8 seen as 64-bit words per row, (B, S H / 8)."""
    return X.reshape(X.shape[0], X.shape[1] * X.shape[2]).view(np.uint64)


def _run(X, WY, WtW, yy, values, value_logp, sigma2, D, proposal, keys, gen_keys, rows, P, C,
         mode=0, beta=1.0, prior_beta=1.0, weight=None, out=None, packed=False,
         Y=None):  # fmt: skip
    B = X.shape[0]
    X = np.ascontiguousarray(X, dtype=np.uint8)
    # the kernels take H from WY: a state of another width would be read out of bounds
    width = (WY.shape[1] + 7) // 8 if packed else WY.shape[1]
    if X.shape[2] != width or (packed and len(values) != 2):
        raise ValueError(
            f"states of {X.shape[2]} bytes with packed={packed} and {len(values)} values; "
            f"H = {WY.shape[1]} needs {width} (packed: binary latents only)."
        )
    sparse = mode == 2 and WY.shape[1] > _SPARSE_SY_ABOVE
    usable = (
        out is not None
        and out.shape == X.shape
        and out.dtype == np.uint8
        and out.flags.c_contiguous
        and out.flags.writeable
    )
    out_X = out if usable else np.empty(X.shape, dtype=np.uint8)
    # a row is read and cleared in 64-bit words where it is a whole number of aligned words
    # of a little-endian machine (else byte by byte: the same states)
    words = (
        not packed
        and sys.byteorder == "little"
        and X.shape[1] * X.shape[2] % 8 == 0
        and X.ctypes.data % 8 == 0
        and out_X.ctypes.data % 8 == 0
    )
    empty = np.zeros((B, 0), dtype=np.uint64)
    out = _linear_search(
        X,
        _words(X) if words else empty,
        out_X,
        _words(out_X) if words else empty,
        words,
        bool(packed),
        out_X is X,
        np.ascontiguousarray(WY, dtype=np.float64),
        np.ascontiguousarray(WtW, dtype=np.float64),
        np.ascontiguousarray(yy, dtype=np.float64),
        np.asarray(values, dtype=np.float64),
        np.asarray(value_logp, dtype=np.float64),
        1.0 / (2.0 * float(sigma2)),
        -0.5 * int(D) * np.log(2.0 * np.pi * float(sigma2)),
        np.ascontiguousarray(proposal, dtype=np.float64),
        keys,
        np.asarray(gen_keys, dtype=np.uint64),
        np.ascontiguousarray(rows, dtype=np.int64),
        int(P),
        int(C),
        len(values) - 1,
        max(1, min(numba.get_num_threads(), B)),
        int(mode),
        float(beta),
        float(prior_beta),
        np.ones(B) if weight is None else np.ascontiguousarray(weight, dtype=np.float64),
        # the batch where Σ <s> yᵀ is summed sparsely; float32 data is widened, a batch at a time
        np.ascontiguousarray(Y, dtype=np.float64) if sparse else np.zeros((B, 0)),
    )
    return (out_X, *out)


def linear_search(
    X, WY, WtW, yy, values, value_logp, sigma2, D, proposal, keys, gen_keys, rows,
    n_parents, n_children, packed=False,
):  # fmt: skip
    """One E-step's evolutionary search of a linear model, all generations fused per row.

    The same states as :meth:`prosper.solvers.evolutionary.EvolutionaryStates.evolve` with
    :func:`prosper.backends.numba_states.linear_state_log_joint` and the bookkeeping
    kernels, without forming the (B, K, H) arrays of a generation.

    Parameters
    ----------
    X : ndarray of uint8, shape (B, S, H), or (B, S, ⌈H / 8⌉) if ``packed``
        Current states: value indices, or for binary latents with ``packed`` their bits in
        the order of ``np.packbits`` (latent h at byte h // 8, bit 7 - h % 8).
    WY : ndarray of shape (B, H)
        Wᵀy of the batch.
    WtW : ndarray of shape (H, H)
    yy : ndarray of shape (B,)
        ||y||².
    values, value_logp : ndarray of shape (V,)
        Latent values and log p(s_h = v).
    sigma2 : float
    D : int
    proposal : ndarray of shape (B, H)
        Weights of the latents an add move draws from.
    keys : ndarray of uint64, shape (H, V)
        Zobrist keys.
    gen_keys : sequence of int
        The key of each generation's random numbers.
    rows : ndarray of int, shape (B,)
        Global row indices.
    n_parents, n_children : int
    packed : bool
        Whether X holds bits (binary latents only); the new states are then bits too.

    Returns
    -------
    X, ll, lp
        States (B, S, H) (bits if ``packed``), best first, their log-likelihoods (−inf for
        duplicates) and log-priors (B, S).
    """
    out = _run(X, WY, WtW, yy, values, value_logp, sigma2, D, proposal, keys, gen_keys, rows,
               n_parents, n_children, packed=packed)  # fmt: skip
    return out[0], out[1], out[2]


def linear_search_estep(
    X, Y, WY, WtW, yy, values, value_logp, sigma2, D, proposal, keys, gen_keys, rows,
    n_parents, n_children, beta, prior_beta, weight, accumulate, out=None, packed=False,
):  # fmt: skip
    """:func:`linear_search`, then each row's posterior over its new states, in one pass.

    Parameters
    ----------
    X, WY, WtW, yy, values, value_logp, sigma2, D, proposal, keys, gen_keys, rows, \
    n_parents, n_children, packed
        As for :func:`linear_search`.
    Y : ndarray of shape (B, D)
        The batch (for Σ <s> yᵀ; float32 is widened to float64).
    beta, prior_beta : float
        Inverse temperatures of the likelihood and the prior for the statistics.
    weight : ndarray of shape (B,)
        Weight of each row in the statistics.
    accumulate : bool
        Whether to compute the statistics.
    out : ndarray of uint8, the shape of X, optional
        Where the new states go; may be ``X`` itself (each row is read before it is
        written), which spares a copy of the states. A new array if None or unsuitable
        (not C-contiguous, not writable, another shape or dtype).

    Returns
    -------
    X : ndarray of uint8, the shape of X
        The new states (``out`` where it was used).
    log_marginal : ndarray of shape (B,)
        log Σ_k p(s_k, y) over them at T=1.
    moments : tuple or None
        (sy (D, H), ss (H, H), counts (V-1,)): Σ_b y_b Σ_k q_bk s_kᵀ, Σ_b Σ_k q_bk s sᵀ and
        Σ q #{h: s_h = v} per non-zero value, for the weights q of the tempered posterior
        times ``weight``: Yᵀ times the per-row means that
        :func:`prosper.backends.numba_states.linear_state_stats` returns for them, and its
        other two. Above H = 64 sy is summed from each row's few non-zero means (H = 300: a
        handful of the 300), not by a (D, B) x (B, H) product: equal to round-off.
    """
    out = _run(X, WY, WtW, yy, values, value_logp, sigma2, D, proposal, keys, gen_keys, rows,
               n_parents, n_children, 2 if accumulate else 1, beta, prior_beta, weight,
               out, packed, Y)  # fmt: skip
    if not accumulate:
        return out[0], out[3], None
    _, _, _, log_marginal, mean, sy, ss, counts = out
    # Σ y<s>ᵀ summed in the kernel (_run's choice), else Yᵀ <s> with Yᵀ a view where Y is
    # float64 (no copy of the batch)
    in_kernel = sy.shape[2] > 0
    sy = sy.sum(axis=0).T if in_kernel else np.asarray(Y).T.astype(np.float64, copy=False) @ mean
    return out[0], log_marginal, (sy, ss.sum(axis=0), counts.sum(axis=0)[1:])
