"""What reaches the top of the ``prosper`` command: one line, status 2 for bad input and 1
for internal errors, a traceback only with --debug / PROSPER_DEBUG=1 (issues #14 and #16)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prosper import cli

ROOT = Path(__file__).resolve().parents[2]

JOB = """
[model]
name = "bsc"
H = 6
n_iter = {n_iter}
backend = "numpy"
random_state = 1

[data]
generator = "bars"
size = 3
n_samples = {n}
random_state = 0
"""


def env(**extra):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "OMPI_"))}
    return {**base, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


@pytest.fixture
def job(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text(JOB.format(n_iter=3, n=60))
    return path


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.H=1000000000", "would need about"),
        ("data.n_samples=1000000000000", "bars(size=3, n_samples=1000000000000) would need"),
        ("model.max_memory='1kB'", "max_memory='1kB'"),
        ("model.Hprim=5", "Did you mean 'Hprime'"),
    ],
)
def test_input_errors_are_one_line_with_status_2(tmp_path, job, capsys, override, message):
    status = cli.main(["fit", str(job), "--out", str(tmp_path / "r.h5"), "--set", override])
    err = capsys.readouterr().err
    assert status == 2
    assert message in one_line(err)
    assert not (tmp_path / "r.h5").exists()


def test_internal_errors_are_one_line_with_status_1(tmp_path, monkeypatch, capsys):
    def broken(path):
        raise TypeError("an internal bug")

    monkeypatch.setattr(cli, "_info", broken)
    monkeypatch.delenv("PROSPER_DEBUG", raising=False)
    assert cli.main(["info", "x.h5"]) == 1
    line = one_line(capsys.readouterr().err)
    assert "internal error: TypeError: an internal bug" in line and "--debug" in line
    # the traceback only when asked for
    with pytest.raises(TypeError):
        cli.main(["info", "x.h5", "--debug"])
    monkeypatch.setenv("PROSPER_DEBUG", "1")
    with pytest.raises(TypeError):
        cli.main(["info", "x.h5"])


def test_a_diverged_fit_is_not_reported_as_a_bug(monkeypatch, capsys):
    def diverged(path):
        raise FloatingPointError("non-finite log marginals or preselection scores")

    monkeypatch.setattr(cli, "_info", diverged)
    monkeypatch.delenv("PROSPER_DEBUG", raising=False)
    assert cli.main(["info", "x.h5"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "the fit diverged (non-finite log marginals" in line and "internal" not in line


def test_missing_extra_names_the_pip_command(tmp_path, monkeypatch, capsys, job):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli.main(["plot", str(job), "-o", str(tmp_path / "p.png")]) == 2
    assert "pip install 'prosper[plot]'" in one_line(capsys.readouterr().err)

    def needs_sklearn(path):
        raise ModuleNotFoundError("No module named 'sklearn'", name="sklearn")

    monkeypatch.setattr(cli, "_info", needs_sklearn)
    assert cli.main(["info", "x.h5"]) == 2
    assert "pip install 'prosper[data]'" in one_line(capsys.readouterr().err)


def test_launcher_without_mpi4py_stops_before_any_work(tmp_path, job):
    fake = tmp_path / "fake"
    (fake / "mpi4py").mkdir(parents=True)
    (fake / "mpi4py" / "__init__.py").write_text("raise ImportError('libmpi.so: not found')\n")
    proc = subprocess.run(
        [sys.executable, "-m", "prosper", "fit", str(job), "--out", str(tmp_path / "r.h5")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env(PYTHONPATH=f"{fake}{os.pathsep}{ROOT}", PMI_SIZE="2", PMI_RANK="1"),
    )
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert "MPI launcher (PMI_SIZE=2)" in line and "mpi4py cannot load" in line
    assert not (tmp_path / "r.h5").exists()


def test_info_into_a_closed_pipe_is_silent(tmp_path, job):
    out = tmp_path / "r.h5"
    assert cli.main(["fit", str(job), "--out", str(out)]) == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "prosper", "info", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(),
    )
    proc.stdout.close()  # the reader is gone before the first line, as with '| head -0'
    _, err = proc.communicate(timeout=120)
    assert err.decode() == ""
    assert proc.returncode == 141


def test_ctrl_c_says_where_the_run_stopped(tmp_path):
    job = tmp_path / "job.toml"
    # more iterations than can run before the signal: the child writes its log lines ahead
    # of a reader slowed by load (a pipe's 64 kB, ~300 iterations here)
    job.write_text(JOB.format(n_iter=100_000, n=2000))
    out = tmp_path / "r.h5"
    fit = [sys.executable, "-m", "prosper", "fit", str(job), "--out", str(out)]
    proc = subprocess.Popen(
        [*fit, "--log-level", "DEBUG"],
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        # a shell ignores SIGINT in the jobs it starts in the background (a suite run with
        # `make test &`), and the child would inherit that: Ctrl-C as at a terminal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    for line in proc.stderr:
        if "iteration 3: {" in line or time.time() > deadline:  # after its checkpoint
            break
    proc.send_signal(signal.SIGINT)
    try:
        _, rest = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the run did not stop on SIGINT") from None
    assert proc.returncode == 130
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest
    message = [line for line in rest.splitlines() if "interrupted" in line]
    assert len(message) == 1 and "stopped at iteration" in message[0]
    assert f"--out {out} --resume" in message[0]
    done = int(message[0].split("stopped at iteration ")[1].split()[0])
    assert 4 <= done < 100_000
    # the file is valid and its checkpoint is where the message says
    from prosper.io import read_checkpoint

    assert read_checkpoint(out).iteration == done
