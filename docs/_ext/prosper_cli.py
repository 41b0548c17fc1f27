"""Sphinx directive that runs the ``prosper`` command at build time and shows its output.

    .. prosper-command:: fit --help

runs ``python -m prosper fit --help`` with the ProSper being documented and inserts what it
prints as a literal block, so the documented help can never drift from the real one. A
command that fails stops the build.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parents[2]


def run_prosper(args: list[str]) -> str:
    """Output of ``python -m prosper *args`` run from the repository root."""
    env = dict(os.environ, COLUMNS="100", PYTHONPATH=str(ROOT), NO_COLOR="1")
    proc = subprocess.run(
        [sys.executable, "-m", "prosper", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise ExtensionError(
            f"`prosper {shlex.join(args)}` exited with status {proc.returncode}:\n{proc.stderr}"
        )
    return proc.stdout.rstrip()


class ProsperCommand(SphinxDirective):
    """Insert the output of one ``prosper`` command line."""

    required_arguments = 1
    final_argument_whitespace = True
    has_content = False

    def run(self) -> list[nodes.Node]:
        args = shlex.split(self.arguments[0])
        text = f"$ prosper {shlex.join(args)}\n" + run_prosper(args)
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def setup(app: Sphinx) -> dict:
    app.add_directive("prosper-command", ProsperCommand)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
