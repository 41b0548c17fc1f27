"""Exceptions raised by ProSper for problems a user can fix."""

from __future__ import annotations

__all__ = ["ConfigError", "MPIUnavailableError", "NotFittedError"]


class ConfigError(ValueError):
    """A job configuration (TOML file or ``--set`` override) is invalid.

    Raised before any work starts, naming the section, the key and, for unknown keys, the
    valid ones (with a did-you-mean suggestion).
    """


class NotFittedError(ValueError, AttributeError):
    """An estimator method that needs learned parameters was called before ``fit``."""


class MPIUnavailableError(RuntimeError):
    """The environment shows an MPI launch (several ranks) but mpi4py cannot be loaded.

    Running on regardless would start independent one-rank jobs that race for the same
    output file, so ProSper stops before any work.
    """
