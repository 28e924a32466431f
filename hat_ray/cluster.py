"""Connect to (or start) Ray and discover which devices the cluster has.

:func:`connect` is the one way hat-ray commands reach Ray: an address (``--address`` or
``RAY_ADDRESS``, which Ray sets inside a ``ray job``) is checked in seconds and joined; without
one a local instance starts, declaring the resources and labels of the requested local device
profiles, with its dashboard bound to 127.0.0.1 only (reach it from elsewhere through an SSH
tunnel, never by binding it to every interface).

A device is a Ray custom resource named by a device profile (``device:rpi4``), optionally with
node labels. Asking Ray for a resource no node has waits forever, so every request goes
through :func:`require_devices` first: it fails at once with the devices that ARE present.
A simulated device (profile ``runtime: simulated``) has no resource and needs no node: its
simulations run as Ray tasks on any node with a CPU.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from hat_ray.errors import DeviceError, HatRayError
from hat_ray.latency.profile import DeviceProfile

log = logging.getLogger(__name__)
DEVICE_PREFIX = "device:"
DASHBOARD_HOST = "127.0.0.1"  # a local instance's dashboard (and Jobs API) listens on loopback only


@dataclass(frozen=True)
class DeviceNode:
    """One alive node that carries a device's resource."""

    node_id: str
    host: str
    address: str
    cpus: float
    amount: float  # how many units of the device resource the node declares


def check_address(address: str, timeout: float = 3.0) -> None:
    """Fail in seconds (HatRayError) when nothing listens at a Ray address, instead of Ray's
    long retry loop. ``auto`` and ``local`` are left to Ray."""
    if address == "auto" or address.startswith("local"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parsed.hostname, parsed.port or (10001 if parsed.scheme == "ray" else 6379)
    except ValueError:  # a port that is not a number or out of range
        host, port = None, None
    if not host:
        raise HatRayError(f"--address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise HatRayError(
            f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start one with "
            "`ray start --head` or fix --address"
        ) from None


def connect(address: str | None = None, profiles: Sequence[DeviceProfile] = (), num_cpus: int | None = None,
            dashboard: bool | None = None) -> bool:
    """Connect hat-ray to Ray. Reuses an existing connection (returns False).

    With ``address`` (or ``RAY_ADDRESS``): check it answers, then join it (HatRayError, one
    line, when it cannot; ``auto`` joins the Ray already running on this machine). Without: start
    a new local instance (even when another runs here) with ``num_cpus`` (None: all) that
    declares one unit of each of ``profiles``' resources and their labels; every profile must
    run here (``ray.local`` true and, for CUDA, a visible GPU), otherwise DeviceError before
    anything starts. Its dashboard binds to 127.0.0.1; it is off when ``dashboard`` is False or
    ``HAT_RAY_DASHBOARD=0`` (None: on when Ray's dashboard packages are installed).

    Returns True when this call started or joined Ray: the caller then calls ``ray.shutdown()``.
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        _join(ray, address)
        return True
    profiles = [p for p in profiles if not p.simulated]  # no resource to declare: they run anywhere
    remote = [p for p in profiles if not runs_locally(p)]
    if remote:
        names = ", ".join(f"{p.name} (resource {p.ray.resource})" for p in remote)
        local = ", ".join(p.name for p in profiles if runs_locally(p)) or "none of those requested"
        raise DeviceError(f"no node for device {names}: without --address only this machine's local devices run "
                          f"({local}); pass --address of a cluster whose nodes declare the resource")
    labels = platform_labels()
    for p in profiles:
        labels.update(p.ray.label)
    if dashboard is None and os.environ.get("HAT_RAY_DASHBOARD", "1") == "0":
        dashboard = False  # e.g. tests: saves the dashboard's start-up time and memory
    # address="local": always a new instance; ray.init() without an address would join any Ray
    # already running on this machine (someone's `ray start`), which cannot take our resources.
    try:
        ray.init(address="local", num_cpus=num_cpus, resources={p.ray.resource: 1.0 for p in profiles} or None,
                 labels=labels, include_dashboard=dashboard, dashboard_host=DASHBOARD_HOST,
                 log_to_driver=False, configure_logging=False)
    except Exception as exc:  # noqa: BLE001 - Ray raises bare Exception when its daemons time out
        if ray.is_initialized():
            ray.shutdown()
        reason = " ".join(str(exc).split())[:200]
        raise HatRayError(f"could not start a local Ray instance: {reason} (the machine may be overloaded or short "
                          "of memory / shared memory in /dev/shm; retry, or pass --address of a running cluster)"
                          ) from None
    log.info("started a local Ray instance%s", "" if dashboard is False else f" (dashboard on {DASHBOARD_HOST})")
    return True


def _join(ray: Any, address: str) -> None:
    check_address(address)
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise HatRayError(f"cannot connect to the Ray cluster at {address}: {reason} (check the address, and that "
                          "this machine runs the same Ray and Python versions and auth token as the cluster)") from None


def platform_labels() -> dict[str, str]:
    """The node labels hat-ray gives every node it starts (deploy/start-node.sh sets the same):
    ``arch`` (``platform.machine()``) and ``python`` (the interpreter's version)."""
    return {"arch": platform.machine(), "python": platform.python_version()}


def node_platforms(nodes: list[dict[str, Any]], timeout: float = 60.0) -> dict[str, dict[str, str | None]]:
    """``{node_id: {"arch", "python"}}`` for every alive node in ``nodes`` (entries of
    ``ray.nodes()``): from the node's ``arch`` / ``python`` labels, else asked of the node by a
    zero-CPU task pinned to it (a node started by hand without them). A node that does not answer
    within ``timeout`` seconds (all asked in parallel) gets None for both."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    found: dict[str, dict[str, str | None]] = {}
    pending = {}
    for node in nodes:
        if not node.get("Alive"):
            continue
        labels = node.get("Labels") or {}
        if labels.get("arch") and labels.get("python"):
            found[node["NodeID"]] = {"arch": labels["arch"], "python": labels["python"]}
            continue
        strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ref = ray.remote(platform_labels).options(num_cpus=0, scheduling_strategy=strategy, max_retries=0).remote()
        pending[ref] = node["NodeID"]
    if pending:
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
        for ref in pending:
            try:
                found[pending[ref]] = ray.get(ref) if ref in ready else {"arch": None, "python": None}
            except ray.exceptions.RayError:
                found[pending[ref]] = {"arch": None, "python": None}
            if ref not in ready:
                ray.cancel(ref, force=True)
    return found


def runs_locally(profile: DeviceProfile) -> bool:
    """Whether ``profile``'s device can be declared by a local instance on this machine (a
    simulated device runs anywhere: always)."""
    if profile.simulated:
        return True
    if not profile.ray.local:
        return False
    if profile.device == "cuda":
        import torch

        return torch.cuda.is_available()
    return True


def device_nodes(profile: DeviceProfile, nodes: list[dict[str, Any]] | None = None) -> list[DeviceNode]:
    """Alive nodes carrying ``profile``'s resource (and its labels, when it names any); none for a
    simulated device (it has no resource)."""
    import ray

    if profile.simulated:
        return []
    found = []
    for node in ray.nodes() if nodes is None else nodes:
        resources = node.get("Resources", {})
        labels = node.get("Labels", {}) or {}
        if not node.get("Alive") or resources.get(profile.ray.resource, 0) < 1:
            continue
        if any(labels.get(k) != v for k, v in profile.ray.label.items()):
            log.warning("node %s has %s but not the labels %s: skipped", node["NodeID"][:8],
                        profile.ray.resource, dict(profile.ray.label))
            continue
        found.append(DeviceNode(node["NodeID"], node.get("NodeManagerHostname", "?"),
                                node.get("NodeManagerAddress", "?"), float(resources.get("CPU", 0)),
                                float(resources[profile.ray.resource])))
    return found


def cluster_devices(nodes: list[dict[str, Any]] | None = None) -> dict[str, int]:
    """Every ``device:*`` resource on alive nodes -> number of nodes carrying it."""
    import ray

    counts: dict[str, int] = {}
    for node in ray.nodes() if nodes is None else nodes:
        if not node.get("Alive"):
            continue
        for name, amount in node.get("Resources", {}).items():
            if name.startswith(DEVICE_PREFIX) and amount >= 1:
                counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def describe_devices(counts: dict[str, int]) -> str:
    """``"device:rpi4 (2 nodes), device:xeon (1 node)"`` or a hint when there is none."""
    if not counts:
        return "no device resources at all (start nodes with --resources='{\"device:NAME\": 1}')"
    return ", ".join(f"{name} ({n} node{'s' if n != 1 else ''})" for name, n in counts.items())


def require_devices(profiles: Sequence[DeviceProfile]) -> dict[str, list[DeviceNode]]:
    """Nodes per profile name; DeviceError at once (no waiting) when any profile has none. A
    simulated device gets an empty list: it needs only a node with ``ray.num_cpus`` CPUs, which
    is checked here too."""
    import ray

    nodes = ray.nodes()
    found = {p.name: device_nodes(p, nodes) for p in profiles}
    for p in profiles:
        if p.simulated and not any(n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= p.ray.num_cpus
                                   for n in nodes):
            raise DeviceError(f"simulated device {p.name}: no alive node has the {p.ray.num_cpus:g} CPU(s) a "
                              "simulation task asks for (ray.num_cpus)")
    missing = [p for p in profiles if not found[p.name] and not p.simulated]
    if missing:
        wanted = ", ".join(f"{p.name} (resource {p.ray.resource}"
                           + (f", labels {dict(p.ray.label)})" if p.ray.label else ")") for p in missing)
        raise DeviceError(f"no alive node for device {wanted}; the cluster has: "
                          f"{describe_devices(cluster_devices(nodes))}")
    return found
