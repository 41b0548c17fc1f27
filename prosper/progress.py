"""Progress of a fit on rank 0: a tqdm bar on a terminal, a log line at intervals otherwise.

A fit under a batch system has no terminal, so instead of a bar it logs, every ``interval``
seconds (default 30), one INFO line with the iteration, the free energy and the estimated
time left. ``progress=False`` (``prosper fit --quiet``) silences both; ``progress=True``
forces the bar even without a terminal.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

__all__ = ["Progress"]

log = logging.getLogger("prosper.progress")

#: seconds between two progress lines in the log when there is no terminal
LOG_INTERVAL = 30.0


def _eta(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Report the iterations of a run.

    Parameters
    ----------
    total : int
        Last iteration + 1 (the run's ``n_iter``).
    start : int, default=0
        First iteration (after a resume).
    enabled : bool or None, default=None
        True: a tqdm bar; False: nothing; None: a bar when ``stream`` is a terminal, else a
        log line every ``interval`` seconds.
    stream : file-like, default=sys.stderr
    interval : float, optional
        Seconds between log lines (when not on a terminal).
    """

    def __init__(
        self,
        total: int,
        *,
        start: int = 0,
        enabled: bool | None = None,
        stream: TextIO | None = None,
        interval: float | None = None,
    ) -> None:
        self.total, self.done, self.first = total, start, start
        self.interval = LOG_INTERVAL if interval is None else interval
        self.t0 = self.last = time.monotonic()
        stream = stream or sys.stderr
        terminal = bool(getattr(stream, "isatty", lambda: False)())
        self.bar = None
        self.log_lines = enabled is None and not terminal
        if enabled or (enabled is None and terminal):
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=start, file=stream, unit="it", dynamic_ncols=True, leave=True
            )

    def update(self, free_energy: float) -> None:
        """One more iteration done, with the free energy it measured."""
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(f"F={free_energy:.5g}", refresh=False)
            self.bar.update(1)
            return
        now = time.monotonic()
        if self.log_lines and now - self.last >= self.interval and self.done < self.total:
            self.last = now
            per_iteration = (now - self.t0) / max(self.done - self.first, 1)
            log.info(
                "iteration %d/%d, free energy %.6g, about %s left",
                self.done,
                self.total,
                free_energy,
                _eta(per_iteration * (self.total - self.done)),
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
