"""Annealing schedules: values interpolated linearly between (position, value) points.

A position is an iteration number when given as an int and a fraction of the run when
given as a float in [0, 1] (so a TOML ``[[0, 5.0], [0.8, 1.0]]`` means "from iteration 0,
reach 1.0 at 80 % of the run"). Before the first point the first value holds, after the
last point the last value holds.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Schedule"]


@dataclass(frozen=True)
class Schedule:
    """A piecewise-linear schedule.

    Parameters
    ----------
    points : tuple of (position, value)
        Positions as ints (iterations) or floats in [0, 1] (fractions of the run).
    """

    points: tuple[tuple[float, float], ...]

    @classmethod
    def parse(cls, spec: float | Sequence | None, name: str, default: float) -> Schedule:
        """Build a schedule from a number (constant), None (``default``) or a list of pairs.

        Raises ``ValueError`` naming ``name`` for malformed specifications.
        """
        if spec is None:
            return cls(((0, float(default)),))
        if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
            return cls(((0, float(spec)),))
        try:
            points = tuple((p, float(v)) for p, v in spec)
        except (TypeError, ValueError):
            raise ValueError(
                f"{name} must be a number or a list of [position, value] pairs, e.g. "
                f"[[0, 5.0], [0.8, 1.0]]; got {spec!r}."
            ) from None
        if not points:
            raise ValueError(f"{name} must have at least one [position, value] pair.")
        for p, v in points:
            if isinstance(p, bool) or not isinstance(p, numbers.Real):
                raise ValueError(f"{name}: position {p!r} must be an int or a float in [0, 1].")
            if isinstance(p, float) and not 0.0 <= p <= 1.0:
                raise ValueError(
                    f"{name}: float position {p} must be a fraction of the run in [0, 1] "
                    "(write iteration numbers as ints)."
                )
            if isinstance(p, numbers.Integral) and p < 0:
                raise ValueError(f"{name}: iteration position {p} must be >= 0.")
            if not np.isfinite(v):
                raise ValueError(f"{name}: value {v} must be finite.")
        return cls(points)

    def positions(self, n_iter: int) -> np.ndarray:
        return np.array(
            [p * n_iter if isinstance(p, float) else p for p, _ in self.points], dtype=np.float64
        )

    def check(self, name: str, n_iter: int, low: float, high: float = np.inf) -> None:
        """Raise ``ValueError`` if positions decrease or a value leaves [low, high]."""
        pos = self.positions(n_iter)
        if np.any(np.diff(pos) < 0):
            raise ValueError(f"{name}: positions must not decrease; got {list(self.points)}.")
        for _, v in self.points:
            if not low <= v <= high:
                raise ValueError(f"{name}: values must lie in [{low}, {high}]; got {v}.")

    def __call__(self, iteration: int, n_iter: int) -> float:
        pos = self.positions(n_iter)
        values = np.array([v for _, v in self.points])
        return float(np.interp(iteration, pos, values))

    def end(self, n_iter: int) -> int:
        """First iteration from which the schedule is constant."""
        return int(np.ceil(self.positions(n_iter)[-1]))

    def to_list(self) -> list[list[float]]:
        return [[p, v] for p, v in self.points]
