"""`hat-ray cluster status`: the nodes of a Ray cluster and which device profiles can run there."""

from __future__ import annotations

import argparse
import os
from typing import Any

from hat_ray.cli.common import print_json, stdout_to_stderr


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="inspect the Ray cluster hat-ray runs on")
    csub = p.add_subparsers(dest="cluster_command", metavar="ACTION", parser_class=type(p))
    csub.required = True
    status = csub.add_parser(
        "status", help="nodes (CPUs, GPUs, memory, device resources, labels) and the devices each profile can use",
        description="Without --address (or RAY_ADDRESS) a local Ray instance is started for the duration, "
                    "declaring this machine's local device profiles (e.g. local_cpu), as `latency collect` does.")
    status.add_argument("--address", help="Ray cluster address (HOST:PORT, ray://HOST:PORT or auto)")
    status.add_argument("--json", action="store_true", help="print {address, nodes, devices} as JSON")
    status.add_argument("--probe-timeout", type=float, default=60.0, metavar="S",
                        help="seconds to wait for a node without arch/python labels to report them (default 60)")
    status.set_defaults(func=_status)


def node_info(node: dict[str, Any], platform: dict[str, str | None] | None = None) -> dict[str, Any]:
    """One entry of ``ray.nodes()`` as plain JSON-able data (memory in bytes); ``platform``:
    the node's ``arch`` and ``python`` (None: unknown)."""
    from hat_ray.cluster import DEVICE_PREFIX

    res = node.get("Resources", {}) or {}
    platform = platform or {}
    return {
        "node_id": node["NodeID"],
        "host": node.get("NodeManagerHostname", "?"),
        "address": node.get("NodeManagerAddress", "?"),
        "alive": bool(node.get("Alive")),
        "head": any(k.startswith("node:__internal_head__") for k in res),
        "arch": platform.get("arch"),
        "python": platform.get("python"),
        "cpus": float(res.get("CPU", 0)),
        "gpus": float(res.get("GPU", 0)),
        "memory_bytes": int(res.get("memory", 0)),
        "object_store_bytes": int(res.get("object_store_memory", 0)),
        "devices": {k: float(v) for k, v in sorted(res.items()) if k.startswith(DEVICE_PREFIX)},
        "labels": dict(sorted((node.get("Labels") or {}).items())),
    }


def cluster_status(probe_timeout: float = 60.0) -> dict[str, Any]:
    """``{"address", "nodes", "devices"}`` for the connected cluster: every node (dead ones too,
    flagged; each with its ``arch`` and ``python``) and, for every bundled device profile, the
    alive nodes that can run it. Nodes without arch/python labels are asked by a task, waited
    for at most ``probe_timeout`` seconds."""
    import ray

    from hat_ray.cluster import device_nodes, node_platforms
    from hat_ray.latency.profile import DeviceProfile
    from hat_ray.resources import bundled_names

    nodes = ray.nodes()
    devices = {}
    for name in bundled_names("device_profiles"):
        profile = DeviceProfile.load(name)
        devices[name] = {"resource": profile.ray.resource or None, "labels": dict(profile.ray.label),
                         "nodes": [n.node_id for n in device_nodes(profile, nodes)]}
        if profile.simulated:  # no resource, no node: its simulations run as Ray tasks anywhere
            devices[name]["simulated"] = True
    platforms = node_platforms(nodes, timeout=probe_timeout)
    return {"address": ray.get_runtime_context().gcs_address,
            "nodes": [node_info(n, platforms.get(n["NodeID"])) for n in nodes],
            "devices": devices}


def _status(args: argparse.Namespace) -> int:
    import ray

    from hat_ray.cluster import connect, runs_locally
    from hat_ray.latency.profile import DeviceProfile
    from hat_ray.resources import bundled_names

    local = [p for p in map(DeviceProfile.load, bundled_names("device_profiles")) if runs_locally(p)]
    with stdout_to_stderr():  # Ray prints while starting; stdout carries only the status
        started = connect(args.address, [] if args.address else local, dashboard=False)
        try:
            status = cluster_status(args.probe_timeout)
        finally:
            if started:
                ray.shutdown()
    if args.json:
        print_json(status)
    else:
        _print(status, started_local=started and not (args.address or os.environ.get("RAY_ADDRESS")))
    return 0


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f}G"


def _print(status: dict[str, Any], started_local: bool) -> None:
    nodes = status["nodes"]
    alive = sum(n["alive"] for n in nodes)
    where = "a local Ray instance started for this command" if started_local else "the Ray cluster"
    print(f"{where} at {status['address']}: {alive} alive node{'s' if alive != 1 else ''}"
          + (f", {len(nodes) - alive} dead" if len(nodes) > alive else ""))
    print(f"  {'node':9} {'host':20} {'arch':8} {'python':7} {'cpus':>5} {'gpus':>4} {'memory':>7} {'store':>6}"
          "  devices / labels")
    for n in sorted(nodes, key=lambda n: (not n["alive"], not n["head"], n["host"])):
        devs = " ".join(f"{k}={v:g}" for k, v in n["devices"].items()) or "-"
        labels = " ".join(f"{k}={v}" for k, v in n["labels"].items()
                          if not k.startswith("ray.io/") and k not in ("arch", "python"))
        flags = ("" if n["alive"] else "  DEAD") + ("  (head)" if n["head"] else "")
        print(f"  {n['node_id'][:8]:9} {n['host'][:20]:20} {n['arch'] or '?':8} {n['python'] or '?':7} "
              f"{n['cpus']:5g} {n['gpus']:4g} "
              f"{_gib(n['memory_bytes']):>7} {_gib(n['object_store_bytes']):>6}  {devs}"
              + (f"  [{labels}]" if labels else "") + flags)
    print("device profiles:")
    for name, dev in status["devices"].items():
        ids = dev["nodes"]
        if dev.get("simulated"):
            print(f"  {name:14} {'-':16} simulated: needs no node (Ray tasks on any node with a CPU)")
            continue
        if ids:
            where_ = f"{len(ids)} node{'s' if len(ids) != 1 else ''}: " + ", ".join(i[:8] for i in ids)
        else:
            labels = ",".join(f"{k}={v}" for k, v in dev["labels"].items())
            where_ = (f"no node (join one with `ray start --address=HEAD:6379 --resources='{{\"{dev['resource']}\": 1}}'"
                      + (f" --labels={labels}" if labels else "") + "`)")
        print(f"  {name:14} {dev['resource']:16} {where_}")
