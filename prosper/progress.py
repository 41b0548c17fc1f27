"""A dependency-free progress bar for long runs: rank 0 only, silent when not a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """One-line progress bar on ``stream`` (default stderr).

    Parameters
    ----------
    total : int
        Number of steps.
    enabled : bool or None, default=None
        None shows the bar only when ``stream`` is a terminal.
    stream : file-like, default=sys.stderr
    """

    def __init__(
        self,
        total: int,
        *,
        enabled: bool | None = None,
        stream: TextIO | None = None,
        start: int = 0,
    ) -> None:
        self.total, self.done, self.first = total, start, start
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.t0 = time.perf_counter()

    def update(self, text: str = "") -> None:
        self.done += 1
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        rate = elapsed / max(self.done - self.first, 1)
        eta = rate * (self.total - self.done)
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} {text} eta {eta:6.1f}s ")
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.done < self.total:
            self.stream.write("\n")
            self.stream.flush()
