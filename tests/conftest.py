"""Shared fixtures. Tests needing ../shared/data find it through `shared_data` and skip (with the
reason) when it is absent, e.g. on a fresh clone without the shared folder; CI always has it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    # One intra-op thread: on a shared 2-core machine torch's default thread pool makes tiny
    # matmuls orders of magnitude slower (spinning threads fight each other). Tests that measure
    # latency set their own thread count from the device profile.
    import torch

    torch.set_num_threads(1)
    # Ray instances started by commands under test skip the dashboard (its start-up costs
    # seconds); tests/test_security.py checks the dashboard's binding with it enabled.
    os.environ.setdefault("HAT_RAY_DASHBOARD", "0")


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


# ---- Ray: one local instance reused across the session; multi-node clusters per module ----
_RAY_KIND: dict[str, str | None] = {"kind": None}


def _ray_shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    _RAY_KIND["kind"] = None


@pytest.fixture
def ray_local():
    """A local Ray instance (4 logical CPUs on this 2-core machine, no dashboard), started once
    and reused by every test that asks for it; shut down at session end."""
    import ray

    if _RAY_KIND["kind"] != "local":
        _ray_shutdown()
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, object_store_memory=300 * 1024**2)
        _RAY_KIND["kind"] = "local"
    yield ray


@pytest.fixture(scope="module")
def no_ray_in_process():
    """For a module whose tests run the CLI in-process as a fresh ``hat-ray`` process would run:
    no Ray connection left by an earlier module (``connect`` reuses one, skipping its own checks),
    and none left behind for the next module."""
    _ray_shutdown()
    yield
    _ray_shutdown()


@pytest.fixture(scope="module")
def ray_cluster_factory():
    """Build a simulated multi-node cluster (ray.cluster_utils.Cluster) for one module:
    ``cluster = ray_cluster_factory(head_cpus=1)`` then ``cluster.add_node(...)``; the driver is
    connected to it. Torn down (and any other Ray connection closed) at module end."""
    import ray
    from ray.cluster_utils import Cluster

    made = []

    def make(head_cpus: int = 1, **head_args):
        _ray_shutdown()
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, "include_dashboard": False,
                                                                 "object_store_memory": 200 * 1024**2, **head_args})
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        _RAY_KIND["kind"] = "cluster"
        made.append(cluster)
        return cluster

    yield make
    _ray_shutdown()
    for cluster in made:
        cluster.shutdown()


def pytest_sessionfinish(session, exitstatus):
    try:
        _ray_shutdown()
    except Exception:  # noqa: BLE001 - best effort at exit
        pass
