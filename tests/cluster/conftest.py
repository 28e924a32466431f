"""The cluster testbed (deploy/testbed/): one real three-node Ray cluster per test session.

Tests here are marked ``cluster`` and run by ``make test-cluster`` (not by ``make test``): the
first run on a machine builds the testbed into ~/.cache/hat-ray-testbed (about 8 minutes), later
runs reuse it. Where the machine cannot host it (not root, no binfmt_misc, no unshare) every test
is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy" / "testbed"))


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)


def _cannot_host() -> str | None:
    if sys.platform != "linux":
        return "the testbed needs Linux (mount namespaces, binfmt_misc)"
    if os.geteuid() != 0:
        return "the testbed needs root (debootstrap, binfmt_misc, unshare --mount)"
    if not shutil.which("unshare"):
        return "no `unshare` on this machine (util-linux)"
    return None


@pytest.fixture(scope="session")
def testbed():
    """The running testbed (deploy/testbed/testbed.py's Testbed), built or reused, started once
    per session in a fresh state folder, stopped at the end."""
    import testbed as tb_module

    reason = _cannot_host()
    if reason:
        pytest.skip(reason)
    try:
        seconds = tb_module.build()
    except tb_module.TestbedUnavailable as exc:
        pytest.skip(f"this machine cannot host the cluster testbed: {exc}")
    tb = tb_module.Testbed(state=Path(tempfile.mkdtemp(prefix="hrtb", dir="/tmp")))
    t0 = time.time()
    try:
        times = tb.up(say=lambda s: print(s, file=sys.stderr))
        print(f"testbed: build/check {seconds:.0f} s, start {time.time() - t0:.0f} s {times}", file=sys.stderr)
        yield tb
    finally:
        tb.down(quiet=True)
        shutil.rmtree(tb.state, ignore_errors=True)
