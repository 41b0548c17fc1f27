"""The mathematics of each model: parameters, log-joints, sufficient statistics, M-steps.

No MPI, no files and no iteration loops live here (DESIGN.md).
"""

from prosper.models.base import LinearTruncatedModel, TruncatedModel
from prosper.models.bsc import BSCModel

__all__ = ["BSCModel", "LinearTruncatedModel", "TruncatedModel"]
