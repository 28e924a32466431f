"""Helpers for tests that start their own Ray nodes with `ray start --block` (never `ray stop`,
which would stop other sessions' Ray processes too)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from typing import IO


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports that were free a moment ago."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def stop_ray_start(proc: subprocess.Popen, temp_dir: str, log: IO, grace: float) -> None:
    """SIGTERM a `ray start --block` (it drains its node and stops the Ray processes it started;
    only the launcher, not its group: the GCS must outlive the drain), SIGKILL its process group
    after ``grace`` seconds, then any process of that node that left the group (found by its
    private ``temp_dir``); close ``log`` and remove ``temp_dir``."""
    import psutil

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    for p in psutil.process_iter(["pid", "cmdline"]):
        if any(temp_dir in arg for arg in p.info["cmdline"] or ()):
            try:
                p.kill()
            except psutil.Error:
                pass
    log.close()
    shutil.rmtree(temp_dir, ignore_errors=True)
