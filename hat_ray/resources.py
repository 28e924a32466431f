"""Find bundled data directories (search_spaces/, device_profiles/).

In a checkout they sit at the repository root; in an installed wheel they are packaged inside
``hat_ray/`` (pyproject force-includes them). Both locations are searched, wheel first.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from hat_ray.errors import ConfigError

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Return the directory holding bundled ``name`` files (e.g. ``"search_spaces"``)."""
    for candidate in (_PKG / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"bundled directory {name!r} not found next to {_PKG}")


def resolve_named_yaml(kind: str, name_or_path: str) -> Path:
    """Resolve a bundled name (``wmt14_en_de``) or a path to a YAML file.

    Raises FileNotFoundError listing the bundled names when neither exists.
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if path.is_file():
            return path
        raise FileNotFoundError(f"{kind.rstrip('s').replace('_', ' ')} file {name_or_path} does not exist; "
                                "check the path")
    folder = data_dir(kind)
    for suffix in (".yaml", ".yml"):
        candidate = folder / f"{name_or_path}{suffix}"
        if candidate.is_file():
            return candidate
    names = ", ".join(bundled_names(kind))
    raise FileNotFoundError(
        f"unknown {kind.rstrip('s').replace('_', ' ')} {name_or_path!r}: use one of {names} "
        "or a path to a .yaml file"
    )


def bundled_names(kind: str) -> list[str]:
    """Names of the bundled YAML files of one kind, sorted."""
    return sorted(p.stem for p in data_dir(kind).glob("*.y*ml"))


def load_named_yaml(kind: str, name_or_path: str | Path, what: str) -> tuple[Any, str]:
    """safe_load a bundled ``kind`` file by name, or a YAML path: (data, source path).
    ConfigError (``what`` names the kind for the user) when missing or not valid YAML."""
    try:
        path = resolve_named_yaml(kind, str(name_or_path))
    except FileNotFoundError as exc:
        raise ConfigError(what, [str(exc)]) from None
    return read_yaml_file(path), str(path)


def read_yaml_file(path: Path) -> Any:
    """safe_load ``path``; ConfigError naming the file (and the line) when it is not UTF-8 or
    not valid YAML."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(str(path), ["not UTF-8 text; save it as UTF-8"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"not valid YAML ({yaml_problem(exc)}); fix the YAML syntax there"]) from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """``line L, column C: what`` of a YAML error (its first line when it has no position)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return " ".join(str(exc).split())[:200]


def section_values(raw: Any, defaults: dict[str, Any], name: str, problems: list[str],
                   what: str = "a mapping", fix: str = "") -> dict[str, Any] | None:
    """A config section (``raw``) merged over its ``defaults``: a problem for a non-mapping (then
    None) and one per unknown key, appended to ``problems``; values are checked by the caller."""
    if not isinstance(raw, Mapping):
        problems.append(f"{name} must be {what}, got {type(raw).__name__}" + (f"; {fix}" if fix else ""))
        return None
    problems += [f"{name}: unknown key {k!r} (allowed: {sorted(defaults)})" for k in raw if k not in defaults]
    return {**defaults, **{k: raw[k] for k in raw if k in defaults}}
