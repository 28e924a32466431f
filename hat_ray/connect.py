"""Connect to a Ray cluster (``--address``) or start the embedded local instance.

A local instance binds its dashboard to 127.0.0.1 (never to all interfaces unless the user asks
with ``dashboard_host``). An unreachable address fails in seconds with a clear error instead of
Ray's long retry loop.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any
from urllib.parse import urlparse

from hat_ray.errors import HatRayError

log = logging.getLogger(__name__)


def check_address(address: str, timeout: float = 3.0) -> None:
    """Fail in seconds (HatRayError) when nothing listens at a Ray address."""
    if address == "auto" or address.startswith("local"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    host, port = parsed.hostname, parsed.port or (10001 if parsed.scheme == "ray" else 6379)
    if not host:
        raise HatRayError(f"--address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise HatRayError(
            f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start one with "
            "`ray start --head` or fix --address"
        ) from None


def connect(address: str | None = None, num_cpus: int | None = None, dashboard_host: str = "127.0.0.1",
            include_dashboard: bool | None = None) -> Any:
    """ray.init for hat-ray commands; returns the Ray module. Reuses an existing connection."""
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        check_address(address)
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise HatRayError(f"cannot connect to the Ray cluster at {address}: {' '.join(str(exc).split())[:200]}") from None
        return ray
    if include_dashboard is None and os.environ.get("HAT_RAY_DASHBOARD", "1") == "0":
        include_dashboard = False  # e.g. tests: saves the dashboard's start-up time
    ray.init(num_cpus=num_cpus, include_dashboard=include_dashboard, dashboard_host=dashboard_host,
             log_to_driver=False)
    log.info("started a local Ray instance (dashboard on %s)", dashboard_host)
    return ray
