"""ProSper: probabilistic sparse coding with one shared, MPI-parallel EM engine.

Estimators (``BSC``, ``TSC``, ``DSC``, ``MCA``, ``MMCA``, ``GSC``, ``SBL``,
``KroneckerSBL``, ``SparseCoding``) are imported on first access, so ``import prosper``
needs neither MPI nor a GPU.
"""

from __future__ import annotations

import logging
from typing import Any

from prosper._version import __version__
from prosper.exceptions import ConfigError, NotFittedError
from prosper.io.results import load

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "BSC",
    "DSC",
    "GSC",
    "MCA",
    "MMCA",
    "SBL",
    "TSC",
    "ConfigError",
    "KroneckerSBL",
    "NotFittedError",
    "SparseCoding",
    "__version__",
    "load",
]

_ESTIMATOR_NAMES = {
    "BSC": "bsc",
    "TSC": "tsc",
    "DSC": "dsc",
    "MCA": "mca",
    "MMCA": "mmca",
    "GSC": "gsc",
    "SBL": "sbl",
    "KroneckerSBL": "krosbl",
    "SparseCoding": "sparse_coding",
}


def __getattr__(name: str) -> Any:
    if name in _ESTIMATOR_NAMES:
        from prosper.estimators import get_estimator_class

        try:
            return get_estimator_class(_ESTIMATOR_NAMES[name])
        except ValueError as exc:
            raise AttributeError(str(exc)) from None
    raise AttributeError(f"module 'prosper' has no attribute {name!r}")
