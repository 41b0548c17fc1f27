"""Public estimators, one module per model, found by name through :data:`ESTIMATORS`.

The registry maps the name used in TOML files and result files to ``module:Class``; classes
are imported on first use so that ``import prosper`` stays light.
"""

from __future__ import annotations

import importlib

__all__ = ["ESTIMATORS", "get_estimator_class"]

ESTIMATORS = {
    "bsc": "prosper.estimators.bsc:BSC",
    "tsc": "prosper.estimators.tsc:TSC",
    "dsc": "prosper.estimators.dsc:DSC",
    "mca": "prosper.estimators.mca:MCA",
    "mmca": "prosper.estimators.mca:MMCA",
    "gsc": "prosper.estimators.gsc:GSC",
    "sbl": "prosper.estimators.sbl:SBL",
    "krosbl": "prosper.estimators.sbl:KroneckerSBL",
    "sparse_coding": "prosper.estimators.sparse_coding:SparseCoding",
}


def get_estimator_class(name: str) -> type:
    """The estimator class registered under ``name`` (e.g. ``"bsc"``)."""
    key = name.lower()
    if key not in ESTIMATORS:
        raise ValueError(f"Unknown model {name!r}; choose one of {sorted(ESTIMATORS)}.")
    module, cls = ESTIMATORS[key].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        raise ValueError(f"Model {name!r} is not available in this version of ProSper.") from None
