"""Compiled elementwise helpers shared by the numba kernels (imported only by them).

exp(x) for x <= 0 as loops LLVM can vectorise (libm's scalar exp cannot be): x = t ln2 + r
with |r| <= ln2/2, exp(r) by its Taylor series to degree 13 (relative error < 1e-16 before
rounding, a few ulp after), 2^t written into the exponent bits of a float64 in a separate
pass. Below -700 (exp < 1e-304, far below the largest term 1 of every sum it enters) the
result is 0.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["FMA", "exp_rows", "exp_shifted"]

_LOG2E = 1.4426950408889634
_LN2_HI = 0.693147180369123816490  # upper bits of ln 2: t * _LN2_HI is exact for |t| < 2^11
_LN2_LO = 1.90821492927058770002e-10
_EXP_MIN = -700.0

#: fastmath flags that let LLVM fuse a * b + c into one FMA (one rounding instead of two):
#: halves the polynomial's instructions and is at least as accurate. Nothing else is
#: relaxed (no reassociation; NaN and inf stay IEEE), so results are deterministic.
FMA = {"contract"}


@njit(cache=True, inline="always", fastmath=FMA)
def _exp_parts(v):  # pragma: no cover - compiled
    """(p, bits) with exp(v) = p * (the float64 whose bits are ``bits``), v <= 0."""
    small = v <= _EXP_MIN
    v = _EXP_MIN if small else v
    t = np.floor(v * _LOG2E + 0.5)
    r = (v - t * _LN2_HI) - t * _LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    # the bits of 2^t, or of +0.0 below the cut-off
    return p * r + 1.0, 0 if small else (np.int64(t) + 1023) << 52


@njit(cache=True, inline="always", fastmath=FMA)
def exp_rows(x, shift, out, bits, n):  # pragma: no cover - compiled
    """out[:n] = exp(x[:n] - shift[:n]) for x <= shift; ``bits`` is int64 scratch (>= n).

    ``out`` may be ``x``, but a separate ``out`` lets LLVM vectorise (no aliasing).
    """
    for j in range(n):
        out[j], bits[j] = _exp_parts(x[j] - shift[j])
    scale = bits.view(np.float64)
    for j in range(n):
        out[j] *= scale[j]


@njit(cache=True, inline="always", fastmath=FMA)
def exp_shifted(x, shift, out, bits, n):  # pragma: no cover - compiled
    """out[:n] = exp(x[:n] - shift) for x <= shift (a scalar); as :func:`exp_rows`."""
    for j in range(n):
        out[j], bits[j] = _exp_parts(x[j] - shift)
    scale = bits.view(np.float64)
    for j in range(n):
        out[j] *= scale[j]
