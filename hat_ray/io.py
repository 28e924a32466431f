"""Atomic file writes (temp file + rename) and content hashes, free of torch and Ray so any layer
can use them."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hat_ray.errors import OutputError


def atomic_write(path: str | Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``: readers never see a partial file and
    an interrupted write leaves the previous file intact. OutputError naming ``path`` when it
    cannot be written (a file where a folder should be, permissions, disk full); the temp file
    is always removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _output_error(path, exc) from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600: give the file the usual permissions
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise _output_error(path, exc) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _output_error(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {path}: {exc.strerror or exc}; the previous file (if any) is intact: "
                       "choose a writable location or free some space")


def content_hash(header: str, arrays: Iterable[tuple[str, Any]]) -> str:
    """sha256 of a text header and named arrays (numpy; name, dtype, shape and bytes of each), in
    the order given: equal contents hash equal wherever they were loaded from."""
    import numpy as np

    h = hashlib.sha256(header.encode())
    for name, array in arrays:
        a = np.ascontiguousarray(array)
        h.update(f"|{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_output(path: str | Path, flag: str, folder: bool = False) -> Path:
    """Refuse, before any work, an output (``folder``: an output folder) that cannot be written
    where it is: an existing folder where a file goes (or the reverse), or a file on its way."""
    p = Path(path)
    if folder and p.exists() and not p.is_dir():
        raise OutputError(f"{flag} {p} is a file, not a folder; choose another {flag}")
    if not folder and p.is_dir():
        raise OutputError(f"{flag} {p} is a folder; give the path of a file (inside it or elsewhere)")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{flag} {p}: {parent} is a file, not a folder; choose another {flag}")
            break
    return p
