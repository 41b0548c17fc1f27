"""The ``prosper`` command as a user runs it: a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import prosper

ROOT = Path(__file__).resolve().parents[2]

JOB = """
[model]
name = "bsc"
H = 10
Hprime = 6
gamma = 3
n_iter = {n_iter}
batch_size = 500
random_state = 1
noise = [[0, 0.02], [0.5, 0.0]]
temperature = [[0, 2.0], [0.5, 1.0]]

[data]
generator = "bars"
size = 5
n_samples = {n}
random_state = 0
"""


def prosper_cmd(*args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "prosper", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=kw.pop("timeout", 120),
        **kw,
    )


def test_help_is_useful():
    proc = prosper_cmd("--help")
    assert proc.returncode == 0
    for word in ("fit", "info", "plot", "models", "mpiexec", "--resume"):
        assert word in proc.stdout
    fit_help = prosper_cmd("fit", "--help").stdout
    assert "[model]" in fit_help and "--set" in fit_help and "--overwrite" in fit_help
    models = prosper_cmd("models").stdout
    assert "bsc" in models and "Hprime" in models


def test_fit_info_plot(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text(JOB.format(n_iter=5, n=400))
    out = tmp_path / "run.h5"
    proc = prosper_cmd("fit", str(job), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "done: 5 iterations" in proc.stderr
    info = prosper_cmd("info", str(out))
    assert info.returncode == 0
    assert "bsc (BSC)" in info.stdout and "5 done (finished)" in info.stdout
    assert "N=400, D=25" in info.stdout and 'name = "bsc"' in info.stdout
    png = tmp_path / "dict.png"
    plot = prosper_cmd("plot", str(out), "-o", str(png))
    assert plot.returncode == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with h5py.File(out, "r") as f:
        assert f["ground_truth/W"].shape == (25, 10)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "missing.toml", "--out", "x.h5"], "job file 'missing.toml' does not exist"),
        (["info", "missing.h5"], "does not exist"),
        (["fit", "JOB", "--out", "x.h5", "--set", "model.Hprim=3"], "Did you mean 'Hprime'"),
        (["fit", "JOB", "--out", "x.h5", "--set", "model.Hprime=12"], "Hprime must be <= H"),
        (["fit", "JOB"], "no output file"),
        (["fit", "JOB", "--out", "nodir/x.h5"], "output directory 'nodir' does not exist"),
        (["fit", "JOB", "--out", "r{rank}.h5"], "--out must not contain {rank}"),
        (
            ["fit", "JOB", "--out", "x.h5", "--set", "data.random_state=-1"],
            "random_state must be a non-negative int; got -1",
        ),
    ],
)
def test_errors_are_clear(tmp_path, args, message):
    job = tmp_path / "job.toml"
    job.write_text(JOB.format(n_iter=2, n=100))
    args = [str(job) if a == "JOB" else a for a in args]
    proc = prosper_cmd(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_generated_data_needs_a_seed(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text(JOB.format(n_iter=2, n=100).replace("random_state = 0\n", ""))
    proc = prosper_cmd("fit", str(job), "--out", str(tmp_path / "r.h5"))
    assert proc.returncode == 2
    assert "generator = 'bars' needs random_state = <int>" in proc.stderr


def test_data_file_errors(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text('[model]\nname = "bsc"\nH = 2\n[data]\nfile = "y.h5"\ndataset = "Z"\n')
    with h5py.File(tmp_path / "y.h5", "w") as f:
        f["Y"] = np.ones((4, 3))
    proc = prosper_cmd("fit", str(job), "--out", str(tmp_path / "r.h5"))
    assert proc.returncode == 2 and "has no dataset 'Z'; its datasets are ['Y']" in proc.stderr
    (tmp_path / "y.h5").unlink()
    proc = prosper_cmd("fit", str(job), "--out", str(tmp_path / "r.h5"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text(JOB.format(n_iter=40, n=3000))
    full = tmp_path / "full.h5"
    assert prosper_cmd("fit", str(job), "--out", str(full)).returncode == 0

    out = tmp_path / "killed.h5"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prosper",
            "fit",
            str(job),
            "--out",
            str(out),
            "--log-level",
            "DEBUG",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 120
    for line in proc.stderr:  # wait until some iterations are recorded, then kill -9
        if "iteration 12: {" in line or time.time() > deadline:  # after its checkpoint
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with h5py.File(out, "r") as f:
        done = int(f["checkpoint"].attrs["iteration"])
    assert 12 <= done < 40
    resumed = prosper_cmd("fit", str(job), "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out} at iteration {done}" in resumed.stderr
    a, b = prosper.load(full), prosper.load(out)
    np.testing.assert_allclose(b.W_, a.W_, rtol=0, atol=1e-10)
    assert b.n_iter_ == 40 and len(b.free_energy_) == 40
    with h5py.File(out, "r") as f:
        assert f["params/W"].shape[0] == 40


def test_shards_and_relative_paths(tmp_path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    for r in range(2):
        np.save(tmp_path / f"shard_{r}.npy", np.ones((10, 4)) * r)
    (jobs / "shard.toml").write_text(
        '[model]\nname = "bsc"\nH = 2\n[data]\nfile = "../shard_{rank}.npy"\n'
    )
    proc = prosper_cmd("fit", str(jobs / "shard.toml"), "--out", str(tmp_path / "r.h5"))
    assert proc.returncode == 2
    assert "shard_1.npy' exists but this job has only 1 rank(s)" in proc.stderr
    np.save(tmp_path / "Y.npy", np.ones((10, 4)))
    (jobs / "file.toml").write_text('[model]\nname = "bsc"\nH = 2\n[data]\nfile = "Y.npy"\n')
    proc = prosper_cmd("fit", "jobs/file.toml", "--out", "r.h5", cwd=tmp_path)
    assert proc.returncode == 2
    assert "relative to the job file's folder ('jobs')" in proc.stderr


def test_info_and_plot_on_other_files(tmp_path):
    (tmp_path / "job.toml").write_text("x = 1\n")
    proc = prosper_cmd("info", str(tmp_path / "job.toml"))
    assert proc.returncode == 2 and "is not a ProSper result file" in proc.stderr
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["Y"] = np.ones(3)
    with pytest.raises(ValueError, match="an HDF5 file but not a ProSper result file"):
        prosper.load(tmp_path / "other.h5")


def test_plot_adds_the_png_suffix(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text(JOB.format(n_iter=3, n=200))
    assert prosper_cmd("fit", str(job), "--out", str(tmp_path / "r.h5")).returncode == 0
    proc = prosper_cmd("plot", str(tmp_path / "r.h5"), "-o", str(tmp_path / "dict"))
    assert proc.returncode == 0 and proc.stdout.strip() == f"wrote {tmp_path / 'dict.png'}"
    assert (tmp_path / "dict.png").exists()
    proc = prosper_cmd("plot", str(tmp_path / "r.h5"), "-o", str(tmp_path / "no" / "x.png"))
    assert proc.returncode == 2 and "output directory" in proc.stderr
