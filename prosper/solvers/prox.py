"""Proximal operators of the ℓ1, ℓ0, ℓ1/2 and CEL0 penalties, in closed form, vectorised.

prox_{tψ}(x) = argmin_u ½ (u − x)² + t ψ(u), applied elementwise to arrays of any shape
(``t`` and the CEL0 atom norms ``a`` broadcast against ``x``). The functions work on NumPy
and CuPy arrays alike (the array module is taken from ``x``).

:data:`PROX` gives one signature to all four, ``prox(x, step, lam, a)``: the proximal map of
``step`` times the penalty ψ of :mod:`prosper.models.sparse_coding` (ψ = λ φ, or the CEL0
function of λ and a), which is what a proximal-gradient step with step size ``step`` needs.

References
----------
Z. Xu, X. Chang, F. Xu and H. Zhang. L1/2 regularization: a thresholding representation
theory and a fast solver. IEEE Trans. Neural Netw. Learn. Syst. 23(7):1013-1027, 2012.

E. Soubies, L. Blanc-Féraud and G. Aubert. A continuous exact ℓ0 penalty (CEL0) for least
squares regularized problem. SIAM J. Imaging Sci. 8(3):1607-1639, 2015.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from prosper.backends import get_namespace

__all__ = ["PROX", "cel0_threshold", "half_threshold", "hard_threshold", "soft_threshold"]


def soft_threshold(x, t):
    """prox of t|u|: sign(x) max(|x| − t, 0), computed as x − clip(x, −t, t).

    Parameters
    ----------
    x : ndarray
    t : float or ndarray broadcastable to x, t >= 0

    Returns
    -------
    ndarray of x's shape
    """
    xp = get_namespace(x)
    return x - xp.clip(x, -t, t)


def hard_threshold(x, t):
    """prox of t·1{u ≠ 0}: x where |x| > sqrt(2t), else 0 (at |x| = sqrt(2t) both tie).

    Parameters
    ----------
    x : ndarray
    t : float or ndarray broadcastable to x, t >= 0

    Returns
    -------
    ndarray of x's shape
    """
    xp = get_namespace(x)
    return xp.where(xp.abs(x) > xp.sqrt(2.0 * xp.asarray(t, dtype=x.dtype)), x, 0.0)


def half_threshold(x, t):
    """prox of t·sqrt|u|: the half-thresholding operator of Xu et al. (2012).

    With λ' = 2t (Xu et al. minimise (u − x)² + λ'|u|^½) the minimiser is

        u = (2/3) x (1 + cos(2π/3 − (2/3) φ(x))),  φ(x) = arccos((t/4) (3/|x|)^{3/2}),

    for |x| > (3/2) t^{2/3}, and 0 below (at the threshold 0 and (2/3) x tie). The
    trigonometric formula runs only on the entries above the threshold (for sparse codes a
    small fraction), with (3/|x|)^{3/2} as r sqrt(r) rather than a power. Coordinate descent
    (:mod:`prosper.backends.numba_sparse`) evaluates it per entry at the cost of ℓ1's prox.

    Parameters
    ----------
    x : ndarray
    t : float or ndarray broadcastable to x, t >= 0

    Returns
    -------
    ndarray of x's shape
    """
    xp = get_namespace(x)
    t = xp.asarray(t, dtype=x.dtype)
    ax = xp.abs(x)
    keep = ax > 1.5 * t ** (2.0 / 3.0)
    xk = x[keep]
    tk = xp.broadcast_to(t, x.shape)[keep] if t.ndim else t
    r = 3.0 / xp.abs(xk)
    phi = xp.arccos(xp.minimum(0.25 * tk * r * xp.sqrt(r), 1.0))
    out = xp.zeros_like(x)
    out[keep] = (2.0 / 3.0) * xk * (1.0 + xp.cos(2.0 * math.pi / 3.0 - (2.0 / 3.0) * phi))
    return out


def cel0_threshold(x, t, lam, a):
    """prox of t·ψ_CEL0(u; λ, a), Soubies et al. (2015).

    For t a² < 1 (the case of a proximal-gradient step with step 1/L, L >= a²):

        u = sign(x) min(|x|, max(|x| − t a sqrt(2λ), 0) / (1 − t a²)),

    which is continuous and equals x beyond |x| = sqrt(2λ)/a. For t a² >= 1 the penalised
    objective is concave on the inner interval and the minimiser is 0 or
    sign(x) max(|x|, sqrt(2λ)/a), whichever has the lower objective. When every entry is
    in the first case (the usual one) only its formula is evaluated.

    Parameters
    ----------
    x : ndarray
    t : float or ndarray broadcastable to x, t >= 0
    lam : float
        λ > 0.
    a : float or ndarray broadcastable to x
        Atom norms ||W_h|| >= 0 (a = 0: ψ = 0 and the prox is the identity).

    Returns
    -------
    ndarray of x's shape
    """
    xp = get_namespace(x)
    a = xp.asarray(a, dtype=x.dtype)
    t = xp.asarray(t, dtype=x.dtype)
    ax = xp.abs(x)
    ta2 = t * a * a
    root = math.sqrt(2.0 * lam)
    convex = ta2 < 1.0
    if bool(xp.all(convex)):
        return xp.sign(x) * xp.minimum(ax, xp.maximum(ax - t * a * root, 0.0) / (1.0 - ta2))
    denom = xp.where(convex, 1.0 - ta2, 1.0)
    u_convex = xp.minimum(ax, xp.maximum(ax - t * a * root, 0.0) / denom)
    edge = root / xp.where(a > 0, a, 1.0)
    far = xp.maximum(ax, edge)
    keep = 0.5 * (far - ax) ** 2 + t * lam < 0.5 * ax * ax
    u_concave = xp.where(keep, far, 0.0)
    return xp.sign(x) * xp.where(convex, u_convex, u_concave)


def _prox_l1(x, step, lam, a=None):
    return soft_threshold(x, step * lam)


def _prox_l0(x, step, lam, a=None):
    return hard_threshold(x, step * lam)


def _prox_half(x, step, lam, a=None):
    return half_threshold(x, step * lam)


def _prox_cel0(x, step, lam, a=None):
    return cel0_threshold(x, step, lam, 1.0 if a is None else a)


#: penalty name -> prox(x, step, lam, a) = prox of step·ψ (a: atom norms, used by CEL0)
PROX: dict[str, Callable] = {
    "l1": _prox_l1,
    "l1/2": _prox_half,
    "l0": _prox_l0,
    "cel0": _prox_cel0,
}
