"""Sphinx configuration of the ProSper documentation (``make docs``)."""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import prosper  # noqa: E402

project = "ProSper"
author = "The ProSper developers"
copyright = "The ProSper developers"
release = prosper.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "prosper_cli",
]

exclude_patterns = ["_build", "_gallery_src", "**.ipynb_checkpoints"]
templates_path = ["_templates"]
html_static_path = ["_static"]
html_theme = "pydata_sphinx_theme"
html_title = f"ProSper {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"index": []}
html_show_sourcelink = False
smartquotes = False  # keep "--resume" and quotes as typed

# API reference: autosummary writes one page per object into api/generated/ (git-ignored)
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "none"  # the numpydoc "Parameters" sections carry the types
numpydoc_show_class_members = True
numpydoc_show_inherited_class_members = True
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# -- gallery --------------------------------------------------------------------------------
# The examples/ scripts take minutes each on a 2-core machine, so the build does not run them
# (except those in EXECUTE, which finish in seconds): it copies each one into _gallery_src/,
# turns the first line of its docstring into the page title and adds the figure the example
# itself writes, stored in _static/gallery/ by gallery_figures.sh. The examples stay untouched.
EXECUTE: tuple[str, ...] = ("krosbl_example",)
GALLERY_SRC = DOCS / "_gallery_src"
# how a stored figure was made, where it is not the script's default run
FIGURE_NOTES = {
    "gsc_patches": "the quick look ``--n-samples 4000 --H 32 --n-iter 10``: ten iterations "
    "leave the fields noisy; the default run (20 000 patches, H = 64) learns cleaner ones",
}
FIGURES = DOCS / "_static" / "gallery"

GALLERY_HEADER = """\
Gallery
=======

The scripts in ``examples/``, one per model family. Each runs with
``python examples/<name>.py`` (add ``--plot file.png`` where the script offers it); the job
files beside them run with ``prosper fit examples/<name>.toml --out run.h5`` and are listed in
:doc:`/guide/job_files`. The figures shown were made by the scripts themselves (with
``docs/gallery_figures.sh``); the documentation build does not rerun them because each takes
minutes on a small machine.
"""


def _commands_as_code(text: str) -> str:
    """Mark the indented command lines of an example's docstring as a bash code block."""
    out: list[str] = []
    previous = ""
    for line in text.splitlines():
        if line.startswith("    ") and not previous.startswith("    "):
            if out and out[-1].strip():
                out.append("")
            out.extend([".. code-block:: bash", ""])
        out.append(line)
        previous = line
    return "\n".join(out)


def _stage_example(src: Path, dest: Path) -> None:
    """Copy one example with an RST title and its stored figure (code unchanged)."""
    text = src.read_text(encoding="utf-8")
    module = ast.parse(text)
    first = module.body[0]
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)):
        raise RuntimeError(f"{src} has no module docstring to title its gallery page")
    doc = ast.get_docstring(module) or ""
    title, _, rest = doc.partition("\n")
    title = title.strip()
    rest = _commands_as_code(rest)
    lines = text.splitlines()
    code = "\n".join(lines[first.end_lineno :])
    figure = FIGURES / f"{src.stem}.png"
    body = [f'"""\n{title}\n{"=" * len(title)}\n{rest}\n"""\n']
    if figure.exists():
        body.append(f'# sphinx_gallery_thumbnail_path = "_static/gallery/{figure.name}"\n')
        body.append(
            "# %%\n"
            "# What the script draws (a stored figure, made by running the script as in\n"
            "# ``docs/gallery_figures.sh``):\n"
            + (f"# {FIGURE_NOTES[src.stem]}.\n" if src.stem in FIGURE_NOTES else "")
            + "#\n"
            f"# .. image:: /_static/gallery/{figure.name}\n"
            f"#    :alt: figure written by examples/{src.name}\n"
        )
    body.append("\n# %%\n# The script\n# ----------\n")
    dest.write_text("".join(body) + code + "\n", encoding="utf-8")


def _stage_gallery() -> None:
    GALLERY_SRC.mkdir(exist_ok=True)
    for old in GALLERY_SRC.iterdir():
        old.unlink()
    (GALLERY_SRC / "GALLERY_HEADER.rst").write_text(GALLERY_HEADER, encoding="utf-8")
    for src in sorted((ROOT / "examples").glob("*.py")):
        _stage_example(src, GALLERY_SRC / src.name)


def _write_job_files_page() -> None:
    """docs/guide/job_files.rst: every TOML job file in examples/, included verbatim."""
    parts = [
        ".. This page is generated by conf.py at build time; edit conf.py, not this file.\n\n",
        "Job files\n=========\n\n",
        "Every TOML job file in ``examples/``, as shipped. Run one with\n"
        "``prosper fit examples/<name>.toml --out run.h5`` (under ``mpiexec -n 4`` for four "
        "ranks); see :doc:`/guide/cli` for the options and :doc:`/topics/results` for the "
        "file it writes.\n\n",
    ]
    for toml in sorted((ROOT / "examples").glob("*.toml")):
        name = toml.name
        parts.append(f"{name}\n{'-' * len(name)}\n\n")
        parts.append(f".. literalinclude:: ../../examples/{name}\n   :language: toml\n\n")
    target = DOCS / "guide" / "job_files.rst"
    text = "".join(parts)
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")


_stage_gallery()
_write_job_files_page()

sphinx_gallery_conf = {
    "examples_dirs": str(GALLERY_SRC),
    "gallery_dirs": "auto_examples",
    "filename_pattern": "|".join(f"/{name}\\.py" for name in EXECUTE) or r"^$",
    "plot_gallery": "True",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "capture_repr": (),
}
