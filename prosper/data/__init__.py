"""Data generators (bars and friends, ground-truth problems) and real data helpers.

:data:`GENERATORS` maps the names usable as ``[data] generator = ...`` in a job file to
``module:function``; each function takes keyword arguments (checked against its signature)
and returns an object with ``Y`` (N, D) and, where known, ``ground_truth()``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from prosper.data.bars import BarsData, bars, bars_dictionary

__all__ = ["GENERATORS", "BarsData", "bars", "bars_dictionary", "get_generator"]

GENERATORS = {
    "bars": "prosper.data.bars:bars",
    "natural_patches": "prosper.data.patches:natural_patches",
    "kronecker_problem": "prosper.data.kronecker:kronecker_problem",
    "sparse_dictionary": "prosper.data.synthetic:sparse_dictionary",
    "gsc_data": "prosper.data.spike_slab:gsc_data",
}


def __getattr__(name: str) -> Callable:
    # every registered generator is importable as prosper.data.<name>, loaded on first use
    if name in GENERATORS:
        return get_generator(name)
    raise AttributeError(f"module 'prosper.data' has no attribute {name!r}")


def get_generator(name: str) -> Callable:
    """The data generator registered under ``name``."""
    if name not in GENERATORS:
        raise ValueError(f"Unknown data generator {name!r}; choose one of {sorted(GENERATORS)}.")
    module, func = GENERATORS[name].split(":")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError):
        raise ValueError(f"Data generator {name!r} is not available in this version.") from None
