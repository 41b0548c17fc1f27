"""Result files: no writes through links or over the job's input, atomic checkpoints,
clear errors for damaged files (docs/topics/reliability.rst)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import prosper
from prosper import BSC
from prosper.data import bars

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data():
    return bars(size=3, n_samples=200, pi=0.2, amplitude=5.0, sigma=0.5, random_state=0)


def small(**kw):
    return BSC(
        **{
            "H": 6,
            "Hprime": 4,
            "gamma": 2,
            "n_iter": 8,
            "batch_size": 64,
            "random_state": 3,
            "backend": "numpy",
            "noise": [[0, 0.05], [0.5, 0.0]],
            **kw,
        }
    )


def test_output_directory_is_refused_before_any_work(tmp_path, data):
    target = tmp_path / "run.h5"
    target.mkdir()
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="is a directory"):
            small().fit(data.Y, out=target, overwrite=overwrite)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]  # nothing left behind


def test_link_is_refused_unless_asked(tmp_path, data):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "run.h5"
    link.symlink_to(victim)
    with pytest.raises(ValueError, match="symbolic link"):
        small().fit(data.Y, out=link, overwrite=True)
    assert victim.read_text() == "precious" and link.is_symlink()
    # asked for: the target is written, the link stays a link
    target = tmp_path / "real.h5"
    link2 = tmp_path / "run2.h5"
    link2.symlink_to(target)
    model = small().fit(data.Y, out=link2, allow_symlink=True)
    assert link2.is_symlink() and target.is_file()
    np.testing.assert_array_equal(prosper.load(link2).W_, model.W_)


def test_planted_links_at_temporary_names_are_not_followed(tmp_path, data):
    """The old predictable <out>.tmp / <out>.probe names: links there change nothing."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for suffix in (".tmp", ".probe"):
        (tmp_path / f"run.h5{suffix}").symlink_to(victim)
    small().fit(data.Y, out=tmp_path / "run.h5")
    assert victim.read_text() == "precious"
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == ["run.h5", "run.h5.probe", "run.h5.tmp", "victim.txt"]


def test_output_that_is_the_input_is_refused_even_with_overwrite(tmp_path):
    np.save(tmp_path / "Y.npy", bars(size=3, n_samples=50, random_state=0).Y)
    before = (tmp_path / "Y.npy").read_bytes()
    (tmp_path / "job.toml").write_text(
        '[model]\nname = "bsc"\nH = 6\nn_iter = 2\nbackend = "numpy"\n\n[data]\nfile = "Y.npy"\n'
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for out in ("Y.npy", "job.toml"):
        proc = subprocess.run(
            [sys.executable, "-m", "prosper", "fit", "job.toml", "--out", out, "--overwrite"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert "is the job's own input" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "Y.npy").read_bytes() == before


KILL_SCRIPT = """
import os, signal, sys
import numpy as np
sys.path.insert(0, {root!r})
from prosper import BSC
from prosper.data import bars
from prosper.io.results import ResultWriter

stage, when = sys.argv[1], int(sys.argv[2])

def hook(name, iteration):
    if name == stage and iteration == when:
        os.kill(os.getpid(), signal.SIGKILL)

ResultWriter._fault_hook = staticmethod(hook)
data = bars(size=3, n_samples=200, pi=0.2, amplitude=5.0, sigma=0.5, random_state=0)
BSC(H=6, Hprime=4, gamma=2, n_iter=8, batch_size=64, random_state=3, backend="numpy",
    noise=[[0, 0.05], [0.5, 0.0]]).fit(data.Y, out=sys.argv[3])
"""


@pytest.fixture(scope="module")
def full(data):
    return small().fit(data.Y)


@pytest.mark.parametrize(
    ("stage", "kept"), [("slot-partial", 4), ("slot-written", 4), ("switched", 5)]
)
def test_kill_inside_the_checkpoint_write_still_resumes(tmp_path, data, full, stage, kept):
    out = tmp_path / "killed.h5"
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT.format(root=str(ROOT)))
    proc = subprocess.run(
        [sys.executable, str(script), stage, "5", str(out)],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr
    ckpt = prosper.io.read_checkpoint(out)
    assert ckpt.iteration == kept  # the old checkpoint until the switch, the new one after
    with h5py.File(out, "r") as f:
        # the slot in force holds the parameters recorded for that iteration, not newer ones
        np.testing.assert_array_equal(ckpt.params["W"], f["params/W"][kept - 1])
    resumed = small().fit(data.Y, out=out, resume=True)
    np.testing.assert_allclose(resumed.W_, full.W_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(resumed.free_energy_, full.free_energy_, rtol=1e-10)


def test_load_names_the_file_of_a_damaged_record(tmp_path, data):
    out = tmp_path / "run.h5"
    small(n_iter=2).fit(data.Y, out=out)
    with h5py.File(out, "a") as f:
        f.attrs["estimator_params"] = '{"H": 6, "n_iter": '
    with pytest.raises(ValueError, match=r"run\.h5.*damaged.*estimator_params"):
        prosper.load(out)
