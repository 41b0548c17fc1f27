"""Progress by default: a tqdm bar on a terminal, a log line at intervals otherwise."""

from __future__ import annotations

import io
import logging

import numpy as np

from prosper import BSC
from prosper.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_lines_without_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="prosper.progress")
    stream = io.StringIO()
    progress = Progress(10, stream=stream, interval=0.0)
    for it in range(4):
        progress.update(-float(it))
    progress.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "prosper.progress"]
    assert len(lines) == 4
    assert lines[-1].startswith("iteration 4/10, free energy -3, about ")
    assert lines[-1].endswith(" left")
    assert stream.getvalue() == ""  # no bar


def test_log_lines_keep_their_interval(caplog):
    caplog.set_level(logging.INFO, logger="prosper.progress")
    progress = Progress(10, stream=io.StringIO(), interval=3600.0)
    for it in range(5):
        progress.update(float(it))
    assert not [r for r in caplog.records if r.name == "prosper.progress"]


def test_bar_on_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="prosper.progress")
    stream = _Terminal()
    progress = Progress(3, stream=stream, interval=0.0)
    for it in range(3):
        progress.update(1.5 * it)
    progress.close()
    assert "3/3" in stream.getvalue() and "F=3" in stream.getvalue()
    assert not [r for r in caplog.records if r.name == "prosper.progress"]


def test_disabled_is_silent(caplog):
    caplog.set_level(logging.INFO, logger="prosper.progress")
    stream = _Terminal()
    progress = Progress(3, stream=stream, enabled=False, interval=0.0)
    for it in range(3):
        progress.update(float(it))
    progress.close()
    assert stream.getvalue() == ""
    assert not [r for r in caplog.records if r.name == "prosper.progress"]


def test_fit_reports_progress_by_default(caplog, monkeypatch):
    monkeypatch.setattr("prosper.progress.LOG_INTERVAL", 0.0)
    caplog.set_level(logging.INFO, logger="prosper")
    Y = np.random.default_rng(0).normal(size=(40, 4))
    BSC(H=2, n_iter=3, backend="numpy", random_state=0).fit(Y)
    lines = [r.getMessage() for r in caplog.records if r.name == "prosper.progress"]
    assert [line.split(",")[0] for line in lines] == ["iteration 1/3", "iteration 2/3"]
