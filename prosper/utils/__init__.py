"""Validation helpers shared by every estimator (the boundary checks of STYLE.md)."""

from prosper.utils.validation import (
    Interval,
    Options,
    check_data,
    check_is_fitted,
    check_random_state,
    validate_params,
)

__all__ = [
    "Interval",
    "Options",
    "check_data",
    "check_is_fitted",
    "check_random_state",
    "validate_params",
]
