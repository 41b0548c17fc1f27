"""E-step kernels behind one interface: ``backend="auto" | "numpy" | "numba" | "cupy"``.

Each backend module exposes the same kernel functions with the same signatures; the NumPy
backend is the reference the others are tested against. Kernels of the generic E-step over
explicit states are declared in each module's ``KERNELS`` registry (name -> function with the
NumPy reference's signature and results); models look them up there, so a backend without a
compiled version of a kernel lists the NumPy one. Only this package imports numba or
cupy, and only when the backend is asked for.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["BACKENDS", "available_backends", "get_backend", "get_namespace"]

#: backend name -> module holding its kernels
BACKENDS = {
    "numpy": "prosper.backends.numpy_backend",
    "numba": "prosper.backends.numba_backend",
    "cupy": "prosper.backends.cupy_backend",
}
_AUTO_ORDER = ("cupy", "numba", "numpy")


def _try_import(name: str) -> ModuleType | None:
    try:
        module = importlib.import_module(BACKENDS[name])
    except ImportError:
        return None
    return module if getattr(module, "AVAILABLE", True) else None


def available_backends() -> list[str]:
    """Names of the backends that can run on this machine."""
    return [name for name in BACKENDS if _try_import(name) is not None]


def get_backend(
    name: str = "auto", supports: Callable[[ModuleType], bool] | None = None
) -> ModuleType:
    """Return the kernel module of a backend.

    Parameters
    ----------
    name : {"auto", "numpy", "numba", "cupy"}
        ``"auto"`` picks CuPy when a GPU is usable, else numba, else NumPy, and logs the choice.
    supports : callable or None
        With ``"auto"``: only backends for which ``supports(module)`` is true are chosen
        (e.g. a model's ``runs_on``, so that GSC on a GPU machine gets numba's kernel rather
        than CuPy's fallback to NumPy); NumPy when none is.
    """
    if name == "auto":
        for candidate in _AUTO_ORDER:
            module = _try_import(candidate)
            if module is not None and (supports is None or supports(module)):
                log.debug("backend='auto' chose %r", candidate)
                return module
        return importlib.import_module(BACKENDS["numpy"])
    if name not in BACKENDS:
        raise ValueError(
            f"Unknown backend {name!r}; choose one of 'auto', " + ", ".join(map(repr, BACKENDS))
        )
    module = _try_import(name)
    if module is None:
        raise ValueError(
            f"backend={name!r} is not available on this machine (available: "
            f"{available_backends()}); install its extra or use backend='auto'."
        )
    return module


def get_namespace(x: Any) -> ModuleType:
    """The array module of ``x``: cupy for CuPy arrays, else numpy (also when cupy is absent)."""
    if type(x).__module__.startswith("cupy"):
        return importlib.import_module("cupy")
    return np
