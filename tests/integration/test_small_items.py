"""Rough edges of issue #16: --set typos, the KroSBL example's data, the KroSBL plot, --quiet."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from prosper import KroneckerSBL
from prosper.data.kronecker import kronecker_problem
from prosper.exceptions import ConfigError
from prosper.io.config import parse_config, read_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def test_a_typo_in_set_is_reported_against_set():
    text = (EXAMPLES / "bsc_bars.toml").read_text()
    with pytest.raises(ConfigError) as info:
        parse_config(text, overrides=["model.Hprim=5"], name="bsc_bars.toml")
    message = str(info.value)
    assert message.startswith("Unknown key 'Hprim' in --set model.Hprim=5. Did you mean 'Hprime'?")
    assert "bsc_bars.toml" not in message


def test_missing_krosbl_data_names_the_command_that_makes_it(tmp_path):
    job = tmp_path / "krosbl.toml"
    job.write_text((EXAMPLES / "krosbl.toml").read_text())
    with pytest.raises(ConfigError, match="made by: python examples/make_krosbl_data.py$"):
        read_config(job)


def test_krosbl_plot_shows_gamma_and_its_grid(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from prosper.plot import plot_result

    problem = kronecker_problem(((6, 8), (5, 7)), sparsity=2, n_snapshots=3, random_state=0)
    out = tmp_path / "k.h5"
    KroneckerSBL(problem.factors, method="svd", n_iter=5).fit(problem.Y, out=out)
    titles = []
    save = Figure.savefig

    def spy(self, *args, **kw):
        titles.extend(ax.get_title() for ax in self.axes)
        return save(self, *args, **kw)

    monkeypatch.setattr(Figure, "savefig", spy)
    plot_result(out, tmp_path / "k.png")
    assert titles[0].startswith("estimated γ (") and titles[0].endswith(" of 56 kept)")
    assert titles[1] == "estimated γ as a 8 x 7 grid"
    assert "learning curve" in titles  # (the colour bar is an axes too)


def test_quiet_fit_prints_nothing(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "prosper", "fit", str(EXAMPLES / "bsc_bars.toml")),
            *("--out", str(tmp_path / "q.h5"), "--quiet"),
            *("--set", "model.n_iter=2", "--set", "model.backend=numpy"),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""
