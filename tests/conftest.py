"""Shared fixtures. Tests needing ../shared/data find it through `shared_data` and skip (with the
reason) when it is absent, e.g. on a fresh clone without the shared folder; CI always has it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _shared_data() -> Path | None:
    env = os.environ.get("HAT_RAY_SHARED_DATA")
    for candidate in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data"]:
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = _shared_data()
    if path is None:
        pytest.skip("../shared/data not found (set HAT_RAY_SHARED_DATA to its path)")
    return path
