"""Compiled elementwise helpers shared by the numba kernels (imported only by them), and
:func:`run_kernel`, which reports how long a kernel took to compile or load.

exp(x) for x <= 0 as loops LLVM can vectorise (libm's scalar exp cannot be): x = t ln2 + r
with |r| <= ln2/2, exp(r) by its Taylor series to degree 13 (relative error < 1e-16 before
rounding, a few ulp after), 2^t written into the exponent bits of a float64 in a separate
pass. Below -700 (exp < 1e-304, far below the largest term 1 of every sum it enters) the
result is 0.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from numba import njit

__all__ = ["FMA", "exp_rows", "exp_shifted", "log_rows", "run_kernel", "softmax_columns"]

log = logging.getLogger(__name__)

#: kernels whose first call in this process has been reported
_REPORTED: set[str] = set()


def run_kernel(kernel: Any, *args: Any) -> Any:
    """Call a numba kernel; its first call in a process logs what it cost.

    The first call compiles the kernel (10-30 s, then cached on disk) or loads it from the
    cache (well under a second): a fit that seems to hang at its start is usually compiling,
    and the log says so instead of hiding it.

    Parameters
    ----------
    kernel : numba dispatcher
        A ``@njit`` function.
    *args
        Its arguments.

    Returns
    -------
    What the kernel returns.
    """
    name = kernel.py_func.__name__
    if name in _REPORTED:
        return kernel(*args)
    start = time.perf_counter()
    out = kernel(*args)
    _REPORTED.add(name)
    compiled = sum(kernel.stats.cache_misses.values()) > 0
    log.info(
        "numba kernel %s %s in %.1f s",
        name.strip("_"),
        "compiled (cached on disk for later runs)" if compiled else "loaded from the disk cache",
        time.perf_counter() - start,
    )
    return out


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


@njit(cache=True, inline="always", fastmath=FMA)
def softmax_columns(x, n_rows, nb, out, peak, total, bits):  # pragma: no cover - compiled
    """Per column j < nb of the first ``n_rows`` rows of ``x``: ``peak[j]`` = the max,
    ``out[:, j]`` = exp(x[:, j] - peak[j]) and ``total[j]`` = their sum.

    ``out`` must not be ``x``: with aliased input and output LLVM keeps the loop scalar.
    """
    first = x[0]
    for j in range(nb):
        peak[j] = first[j]
        total[j] = 0.0
    for k in range(1, n_rows):
        row = x[k]
        for j in range(nb):
            peak[j] = row[j] if row[j] > peak[j] else peak[j]
    for k in range(n_rows):
        row = out[k]
        exp_rows(x[k], peak, row, bits, nb)
        for j in range(nb):
            total[j] += row[j]


# log(x) as loops LLVM can vectorise: x = 2^k m with m in [sqrt(2)/2, sqrt(2)) split through
# the int64 bits of x, then log(m) = log(1 + f) by the minimax polynomial of fdlibm's
# __ieee754_log (error below 1 ulp before the final rounding).
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01
_MANT = 0x000FFFFFFFFFFFFF
_DBL_MAX = 1.7976931348623157e308
#: mantissa bits of sqrt(2): mantissas at or above move to [sqrt(2)/2, 1) with k + 1
_SQRT2_MANT = 0x6A09E667F3BCD


@njit(cache=True, inline="always", fastmath=FMA)
def _log_poly(m, k):  # pragma: no cover - compiled
    """log(2^k m) for m in [sqrt(2)/2, sqrt(2)) (fdlibm's reduction and polynomial)."""
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    r = t2 + t1
    hfsq = 0.5 * f * f
    return k * _LN2_HI - ((hfsq - (s * (hfsq + r) + k * _LN2_LO)) - f)


@njit(cache=True, inline="always", fastmath=FMA)
def log_rows(x, out, bits, expo, n):  # pragma: no cover - compiled
    """out[:n] = log(x[:n]) for positive normal float64 x (x >= 2.2e-308); +inf stays +inf.

    ``x`` must be a contiguous 1-D float64 array; ``bits`` (int64) and ``expo`` (float64)
    are scratch of length >= n. ``out`` must differ from ``x``, ``bits`` and ``expo`` (no
    aliasing: LLVM vectorises). Subnormals, zero, negative values and NaN are not handled
    (the callers guard their arguments to >= tiny; GSC's pivots are >= 1). Inlined into the
    caller, whose flags apply: the caller needs ``error_model="numpy"`` (numba's default
    "python" model checks the division for zero, which keeps the loop scalar).
    """
    xb = x.view(np.int64)
    for j in range(n):
        h = xb[j]
        m = h & _MANT
        up = m >= _SQRT2_MANT
        expo[j] = ((h >> 52) - 1023 + (1 if up else 0)) * 1.0
        bits[j] = m | ((1022 if up else 1023) << 52)
    mant = bits.view(np.float64)
    for j in range(n):
        out[j] = _log_poly(mant[j], expo[j]) if x[j] <= _DBL_MAX else x[j]
