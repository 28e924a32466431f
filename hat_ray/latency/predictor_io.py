"""Predictor files: one ``.npz`` of plain arrays plus a JSON metadata string; no pickle.

Written atomically (temp file + rename); read with ``allow_pickle=False``, so a file can hold
nothing but numeric arrays and text. A missing, truncated, foreign or newer file is a DataError
naming the file.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from hat_ray.errors import DataError
from hat_ray.io import atomic_write

_META = "__meta__"
_FIX = "fit one again with `hat-ray latency fit`"


def save_predictor(path: str | Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write ``meta`` (JSON-serialisable) and ``arrays`` (numeric) to ``path`` atomically."""
    text = json.dumps(meta, sort_keys=True)
    payload = {_META: np.array(text)}
    for name, value in arrays.items():
        arr = np.asarray(value)
        if arr.dtype == object:
            raise TypeError(f"predictor array {name!r} is not numeric")
        payload[name] = arr

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **payload)

    atomic_write(path, write)


def load_predictor(path: str | Path, fmt: str, version: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a predictor file; returns (meta, arrays)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"latency predictor {path} does not exist; check the path")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):  # a bare .npy array, not an archive
                raise ValueError("a single array, not an .npz archive")
            meta = json.loads(str(npz[_META]))
            arrays = {name: npz[name] for name in npz.files if name != _META}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        # numpy's text for a non-.npz file suggests loading it with pickle: never show that advice
        detail = "not an .npz archive" if "pickle" in str(exc) else " ".join(str(exc).split())[:160]
        raise DataError(f"{path} is not a hat-ray latency predictor or is corrupted ({detail}); {_FIX}") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise DataError(f"{path} is not a hat-ray latency predictor; {_FIX}")
    if int(meta.get("version", 0)) > version:
        raise DataError(f"{path} was written by a newer hat-ray (predictor version {meta['version']}); upgrade hat-ray")
    return meta, arrays
