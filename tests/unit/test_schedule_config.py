"""Annealing schedules and TOML job files."""

from __future__ import annotations

import numpy as np
import pytest

from prosper import ConfigError
from prosper.io.config import dump_toml, parse_config, read_config
from prosper.solvers.annealing import Schedule


def test_schedule_fractions_and_iterations():
    s = Schedule.parse([[0, 5.0], [0.8, 1.0]], "temperature", 1.0)
    assert s(0, 100) == 5.0 and s(40, 100) == pytest.approx(3.0) and s(80, 100) == 1.0
    assert s(99, 100) == 1.0 and s.end(100) == 80
    assert Schedule.parse(None, "x", 2.0)(7, 10) == 2.0
    assert Schedule.parse(0.5, "x", 0.0)(7, 10) == 0.5
    with pytest.raises(ValueError, match="list of \\[position, value\\] pairs"):
        Schedule.parse([1, 2], "noise", 0.0)
    with pytest.raises(ValueError, match="position True"):
        Schedule.parse([[True, 1.0]], "noise", 0.0)


JOB = """
[model]
name = "bsc"
H = 4
n_iter = 3

[data]
generator = "bars"
size = 2
n_samples = 20
"""


def test_parse_valid_job():
    config = parse_config(JOB)
    assert config.model == "bsc" and config.model_params == {"H": 4, "n_iter": 3}
    assert config.data["generator"] == "bars"
    assert "H = 4" in config.text


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            JOB.replace("H = 4", "Hprim = 4"),
            "Unknown key 'Hprim' in .*\\[model\\]. Did you mean 'Hprime'\\?",
        ),
        (JOB.replace('name = "bsc"', 'name = "bcs"'), "Unknown key 'bcs'.*Did you mean 'bsc'"),
        (JOB.replace("size = 2", "sise = 2"), "Unknown key 'sise'.*Did you mean 'size'"),
        (JOB + "\n[outptu]\nfile='x'\n", "Unknown key 'outptu'.*Did you mean 'output'"),
        (
            JOB.replace('generator = "bars"', 'generator = "bars"\nfile = "x.npy"'),
            "exactly one of 'generator'",
        ),
        (JOB.replace('name = "bsc"\n', ""), "needs a name"),
        ("[model\nname=1", "not valid TOML"),
        (
            JOB.replace('generator = "bars"\nsize = 2\nn_samples = 20', 'file = "x.npy"\nrows = 3'),
            "Unknown key 'rows' in <config> \\[data\\]",
        ),
        (JOB.replace("n_iter = 3", "comm = 3"), "Unknown key 'comm'"),
        ('model = "bsc"\n[data]\ngenerator = "bars"\n', "\\[model\\] must be a table"),
    ],
)
def test_bad_jobs(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(text)


def test_overrides_and_missing_file(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text(JOB)
    config = read_config(path, ["model.H=6", "model.temperature=[[0, 2.0], [0.5, 1.0]]"])
    assert config.model_params["H"] == 6
    assert config.model_params["temperature"] == [[0, 2.0], [0.5, 1.0]]
    with pytest.raises(ConfigError, match="section.key=value"):
        read_config(path, ["H=6"])
    with pytest.raises(ConfigError, match="does not exist"):
        read_config(tmp_path / "nope.toml")


def test_arrays_from_files(tmp_path):
    np.savez(tmp_path / "f.npz", A=np.eye(2), B=np.ones((2, 3)))
    text = JOB.replace("n_iter = 3", "n_iter = 3\nrandom_state = 1")
    config = parse_config(text, base_dir=tmp_path)
    assert config.model_params["random_state"] == 1
    from prosper.io.config import _resolve_arrays

    arrays = _resolve_arrays({"file": "f.npz", "dataset": ["A", "B"]}, tmp_path, "x")
    assert arrays[1].shape == (2, 3)
    with pytest.raises(ConfigError, match="has no array 'C'"):
        _resolve_arrays({"file": "f.npz", "dataset": "C"}, tmp_path, "x")


def test_dump_toml_round_trip():
    from prosper.io.config import tomllib

    doc = {
        "model": {
            "name": "bsc",
            "H": 3,
            "temperature": [[0, 2.0], [0.5, 1.0]],
            "anneal_prior": True,
            "x": None,
            "s": 'a"b',
        }
    }
    assert tomllib.loads(dump_toml(doc)) == {
        "model": {
            "name": "bsc",
            "H": 3,
            "temperature": [[0, 2.0], [0.5, 1.0]],
            "anneal_prior": True,
            "s": 'a"b',
        }
    }
