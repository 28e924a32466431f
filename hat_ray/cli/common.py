"""Helpers shared by subcommands: reading YAML inputs with one-line errors, JSON output."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from hat_ray.arch import Arch, parse_arch
from hat_ray.errors import ArchError, ConfigError, HatRayError
from hat_ray.io import check_output  # noqa: F401 - the CLI's name for it
from hat_ray.resources import yaml_problem
from hat_ray.space import SearchSpace


def read_yaml(path: str | Path, what: str) -> Any:
    """safe_load a YAML file; ConfigError naming the file on any read or syntax problem."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(str(p), [f"{what} file does not exist; check the path"])
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(str(p), [f"{what} file is not UTF-8 text; save it as UTF-8"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(p), [f"not valid YAML ({yaml_problem(exc)}); fix the YAML syntax there"]) from None


def load_arch(path: str | Path, space: SearchSpace | None = None) -> Arch:
    """Read an Arch YAML (HAT's keys or hat-ray's) and check it against ``space``."""
    data = read_yaml(path, "arch")
    arch = parse_arch(data, source=str(path))
    if space is not None:
        space.check(arch, source=str(path))
    return arch


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to file descriptor 1 (Python prints, Ray's and Tune's C++ and
    child-process output) to stderr for the duration, so stdout carries only our result."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


__all__ = ["ArchError", "ConfigError", "HatRayError", "check_output", "load_arch", "print_json", "read_yaml", "stdout_to_stderr"]
