"""TOML job files: ``[model]`` (name + estimator hyper-parameters), ``[data]``, ``[output]``.

Example::

    [model]
    name = "bsc"
    H = 10
    Hprime = 6
    gamma = 3
    n_iter = 100

    [data]                     # a generator from prosper.data ...
    generator = "bars"
    size = 5
    n_samples = 2000
    # file = "patches.h5"      # ... or a file: .npy, .npz or HDF5 (dataset = "Y")

    [output]
    file = "run.h5"

Every key is checked before work starts; an unknown key raises :class:`prosper.ConfigError`
naming it, the valid keys and the closest match. A model parameter written as an inline
table ``{file = "factors.npz", dataset = "Phi1"}`` is read from that file as an array (a
list of dataset names gives a list of arrays).
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from prosper.exceptions import ConfigError

__all__ = ["JobConfig", "check_keys", "dump_toml", "parse_config", "read_config"]

SECTIONS = ("model", "data", "output")
FILE_DATA_KEYS = ("file", "dataset")
OUTPUT_KEYS = ("file",)
#: estimator arguments that cannot come from a file
NOT_CONFIGURABLE = ("comm", "callback")


def check_keys(where: str, given: Any, valid: list[str] | tuple[str, ...]) -> None:
    """Raise ConfigError for keys of ``given`` not in ``valid``, with a did-you-mean."""
    for key in given:
        if key not in valid:
            close = difflib.get_close_matches(key, list(valid), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"Unknown key {key!r} in {where}.{hint} Valid keys: {', '.join(sorted(valid))}."
            )


@dataclass
class JobConfig:
    """A parsed and checked job file."""

    model: str
    model_params: dict[str, Any]
    data: dict[str, Any]
    output: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    base_dir: Path = Path(".")

    def data_path(self) -> Path | None:
        return None if "file" not in self.data else self.base_dir / self.data["file"]


def _parse_value(value: str) -> Any:
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value  # a bare word is a string


def apply_overrides(doc: dict[str, Any], overrides: list[str]) -> dict[tuple[str, str], str]:
    """Apply ``section.key=value`` overrides (values in TOML syntax; bare words are strings).

    Returns each overridden (section, key) with its ``--set`` text, so that an unknown key
    is reported against the option that gave it, not against the job file.
    """
    given = {}
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"--set expects section.key=value, e.g. model.H=12; got {item!r}.")
        dotted, value = item.split("=", 1)
        section, key = dotted.strip().split(".", 1)
        check_keys(f"--set {item}", [section], SECTIONS)
        doc.setdefault(section, {})[key.strip()] = _parse_value(value.strip())
        given[(section, key.strip())] = item
    return given


def _check_section(
    where: str, section: str, keys: Any, valid: list[str], given: dict[tuple[str, str], str]
) -> None:
    """check_keys, naming ``--set ...`` for keys that came from the command line."""
    for key in keys:
        if (section, key) in given:
            check_keys(f"--set {given[(section, key)]}", [key], valid)
    check_keys(where, keys, valid)


def read_config(path: str | os.PathLike, overrides: list[str] | None = None) -> JobConfig:
    """Read and check a TOML job file; ``overrides`` are ``section.key=value`` strings."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"job file {str(path)!r} does not exist.")
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"job file {str(path)!r} could not be read: {exc}") from None
    return parse_config(text, overrides=overrides, base_dir=path.parent, name=str(path))


def parse_config(
    text: str,
    *,
    overrides: list[str] | None = None,
    base_dir: Path = Path("."),
    name: str = "<config>",
) -> JobConfig:
    """Parse and check the text of a job file (see the module docstring)."""
    from prosper.data import GENERATORS, get_generator
    from prosper.estimators import ESTIMATORS, get_estimator_class

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name} is not valid TOML: {exc}") from None
    check_keys(f"{name} (top level)", doc, SECTIONS)
    for section in SECTIONS:
        if not isinstance(doc.get(section, {}), dict):
            raise ConfigError(
                f"{name}: [{section}] must be a table of keys, e.g.\n[{section}]\nkey = value; "
                f"got {section} = {doc[section]!r}."
            )
    given = apply_overrides(doc, overrides or [])
    model = dict(doc.get("model", {}))
    if "name" not in model:
        raise ConfigError(f"{name}: [model] needs a name, one of {sorted(ESTIMATORS)}.")
    model_name = str(model.pop("name")).lower()
    check_keys(f"{name} [model] name", [model_name], list(ESTIMATORS))
    cls = get_estimator_class(model_name)
    valid = [p for p in cls._get_param_names() if p not in NOT_CONFIGURABLE]
    _check_section(f"{name} [model]", "model", model, valid, given)
    files = [v for v in model.values() if isinstance(v, dict)] + [dict(doc.get("data", {}))]
    for value in files:
        if "file" in value and "{rank}" not in str(value["file"]):
            _check_exists(base_dir / str(value["file"]), text)
    model = {k: _resolve_arrays(v, base_dir, f"[model] {k}") for k, v in model.items()}

    data = dict(doc.get("data", {}))
    if ("generator" in data) == ("file" in data):
        raise ConfigError(
            f"{name}: [data] needs exactly one of 'generator' (one of {sorted(GENERATORS)}) "
            "or 'file' (a .npy, .npz or HDF5 file)."
        )
    if "generator" in data:
        gen = str(data["generator"])
        check_keys(f"{name} [data] generator", [gen], list(GENERATORS))
        params = list(inspect.signature(get_generator(gen)).parameters)
        where = f"{name} [data] (generator {gen!r})"
        _check_section(where, "data", data, ["generator", *params], given)
    else:
        _check_section(f"{name} [data]", "data", data, list(FILE_DATA_KEYS), given)
    output = dict(doc.get("output", {}))
    _check_section(f"{name} [output]", "output", output, list(OUTPUT_KEYS), given)
    canonical = dump_toml(
        {
            "model": {"name": model_name, **dict(doc.get("model", {}))},
            "data": doc.get("data", {}),
            "output": output,
        }
    )
    return JobConfig(model_name, model, data, output, canonical, base_dir)


def _check_exists(path: Path, text: str) -> None:
    """A missing input file whose maker a comment of the job file names
    (``#   python make_data.py   # writes data.npz``): the error quotes that command. Other
    missing files are reported where they are read."""
    if path.exists():
        return
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("#"):
            continue
        command, _, note = line.lstrip("#").partition("#")
        if path.name in note and command.strip():
            raise ConfigError(
                f"data file {str(path)!r} does not exist; the job file says it is made by: "
                f"{command.strip()}"
            )


def _resolve_arrays(value: Any, base_dir: Path, where: str) -> Any:
    if not (isinstance(value, dict) and "file" in value):
        return value
    from prosper.io.sources import load_array

    check_keys(where, value, FILE_DATA_KEYS)
    path = base_dir / value["file"]
    dataset = value.get("dataset")
    if isinstance(dataset, list):
        return [load_array(path, d) for d in dataset]
    return load_array(path, dataset)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if hasattr(value, "tolist"):
        return _toml_value(value.tolist())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return _toml_value(str(value))


def dump_toml(sections: dict[str, dict[str, Any]]) -> str:
    """Write a dict of sections of simple values (numbers, strings, bools, lists) as TOML.

    ``None`` values are left out (TOML has no null; absent means the default).
    """
    lines = []
    for section, values in sections.items():
        if not values:
            continue
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
        lines.append("")
    return "\n".join(lines)
