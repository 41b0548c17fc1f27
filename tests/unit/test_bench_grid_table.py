"""The grid's whole table (``benchmarks/bench_states.py table``): which records it counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "bench_states.py"


def _table(manifest: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "table", "--manifest", str(manifest), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def _run(model: str, seed: int, recovered: bool, config: str = "default", **kw) -> dict:
    return {
        "mode": "grid", "model": model, "config": config, "size": 10, "k_pi": 1, "n": 2000,
        "seed": seed, "n_iter": 100, "recovered": recovered, "ll_gap": 0.1 * (seed + 1), **kw,
    }  # fmt: skip


def _write(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def _row(out: str, model: str) -> list[str]:
    line = next(x for x in out.splitlines() if x.startswith(f"| {model} | 10x10 | 2000 |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_table_counts_each_seed_once_from_the_latest_file_and_marks_cells_below_target(
    tmp_path: Path,
):
    _write(
        tmp_path / "old.jsonl",
        [
            _run("mca", 0, False),
            _run("mca", 1, True),
            _run("mca", 2, False, config="other"),  # another configuration: not counted
            _run("mca", 3, False, n_iter=50),  # another length: not counted
            _run("bsc", 0, False, config="et-T3l-r3m"),
        ],
    )
    _write(tmp_path / "new.jsonl", [_run("mca", 0, True), _run("bsc", 1, True, config="x")])
    (tmp_path / "grid.toml").write_text(
        '[models.mca]\nrecords = [{ file = "old.jsonl" }, { file = "new.jsonl" }]\n'
        '[models.bsc]\nrecords = [{ file = "old.jsonl", config = "et-T3l-r3m" }]\n',
        encoding="utf-8",
    )
    done = _table(tmp_path / "grid.toml")
    assert done.returncode == 0, done.stderr
    # seed 0 of the newer file replaces the failed run of the older one
    assert _row(done.stdout, "MCA")[3:5] == ["2/2", "0.150 (0.200)"]
    assert _row(done.stdout, "BSC")[3:5] == ["**0/1**", "–"]
    assert _row(done.stdout, "MCA")[5:7] == ["·", "·"]
    assert "0 of 24 grid points have 20 or more seeds" in done.stdout
    assert "below it (bold): 1" in done.stdout

    rst = _table(tmp_path / "grid.toml", "--rst")
    assert rst.returncode == 0, rst.stderr
    assert "   * - MCA\n     - 2000\n     - ·, ·\n     - 2/2, ·\n     - ·, ·" in rst.stdout


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (
            '[models.bsc]\nrecords = [{ file = "gone.jsonl" }]\n',
            "names gone.jsonl, which is missing",
        ),
        ("[models.lasso]\nrecords = []\n", "unknown models ['lasso']"),
    ],
)
def test_table_refuses_a_manifest_naming_a_missing_file_or_an_unknown_model(
    tmp_path: Path, manifest: str, message: str
):
    (tmp_path / "grid.toml").write_text(manifest, encoding="utf-8")
    done = _table(tmp_path / "grid.toml")
    assert done.returncode != 0
    assert message in done.stderr


def test_the_repository_manifest_names_existing_records():
    done = _table(SCRIPT.parent / "results" / "grid_current.toml")
    assert done.returncode == 0, done.stderr
    assert "of 72 grid points have 20 or more seeds" in done.stdout
