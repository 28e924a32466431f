"""Connect to (or start) Ray and discover which devices the cluster has.

A device is a Ray custom resource named by a device profile (``device:rpi4``), optionally with
node labels. Asking Ray for a resource no node has waits forever, so every request goes
through :func:`require_devices` first: it fails at once with the devices that ARE present.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hat_ray.errors import DeviceError
from hat_ray.latency.profile import DeviceProfile

log = logging.getLogger(__name__)
DEVICE_PREFIX = "device:"


@dataclass(frozen=True)
class DeviceNode:
    """One alive node that carries a device's resource."""

    node_id: str
    host: str
    address: str
    cpus: float
    amount: float  # how many units of the device resource the node declares


def connect(address: str | None = None, profiles: Sequence[DeviceProfile] = ()) -> bool:
    """Connect to the cluster at ``address``; without one, start a local Ray instance that
    declares the resources of ``profiles`` (all must be local: ``ray.local`` true and, for CUDA,
    a visible GPU; otherwise DeviceError before anything starts). Reuses an existing
    connection. Returns True when this call started or joined Ray (caller: ``ray.shutdown()``)."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    remote = [p for p in profiles if not _runs_locally(p)]
    if not address and remote:
        names = ", ".join(f"{p.name} (resource {p.ray.resource})" for p in remote)
        local = ", ".join(p.name for p in profiles if _runs_locally(p)) or "none of those requested"
        raise DeviceError(f"no node for device {names}: without --address only this machine's local devices run "
                          f"({local}); pass --address of a cluster whose nodes declare the resource")
    if address:
        from hat_ray.connect import connect as connect_address

        connect_address(address)  # fails in seconds when the address is unreachable
        return True
    local = [p for p in profiles if _runs_locally(p)]
    labels: dict[str, str] = {}
    for p in local:
        labels.update(p.ray.label)
    # hat_ray.connect.connect cannot declare resources or labels: start the local instance here
    # (no dashboard, so nothing listens beyond the Ray ports on localhost).
    ray.init(resources={p.ray.resource: 1.0 for p in local} or None, labels=labels or None,
             include_dashboard=False, log_to_driver=False, configure_logging=False)
    return True


def _runs_locally(profile: DeviceProfile) -> bool:
    if not profile.ray.local:
        return False
    if profile.device == "cuda":
        import torch

        return torch.cuda.is_available()
    return True


def device_nodes(profile: DeviceProfile, nodes: list[dict[str, Any]] | None = None) -> list[DeviceNode]:
    """Alive nodes carrying ``profile``'s resource (and its labels, when it names any)."""
    import ray

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
    """Nodes per profile name; DeviceError at once (no waiting) when any profile has none."""
    import ray

    nodes = ray.nodes()
    found = {p.name: device_nodes(p, nodes) for p in profiles}
    missing = [p for p in profiles if not found[p.name]]
    if missing:
        wanted = ", ".join(f"{p.name} (resource {p.ray.resource}"
                           + (f", labels {dict(p.ray.label)})" if p.ray.label else ")") for p in missing)
        raise DeviceError(f"no alive node for device {wanted}; the cluster has: "
                          f"{describe_devices(cluster_devices(nodes))}")
    return found
