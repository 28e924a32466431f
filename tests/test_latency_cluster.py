"""LatencyProbe placement and fault tolerance on a simulated cluster (ray.cluster_utils.Cluster).

Three worker nodes marked as two devices: two `device:alpha` nodes (labelled device=alpha) and
one `device:beta` node. Every node is this machine, so the profiles use a tiny local_cpu-style
protocol (1 run, 2 decoder steps, 64-token vocabulary) on small demo-space Archs: the test
checks placement and fault handling, not timing.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from hat_ray.errors import DeviceError
from hat_ray.latency import DeviceProfile, LatencyDataset
from hat_ray.space import SearchSpace

pytestmark = pytest.mark.timeout(300)


def tiny_profile(name: str, resource: str, label: dict[str, str] | None = None) -> DeviceProfile:
    data = DeviceProfile.load("local_cpu").to_dict()
    data.update(name=name, ray={"resource": resource, "label": label or {}, "num_cpus": 1})
    data["protocol"].update(warmup=0, runs=1, max_runs=1, tgt_len=2, vocab=64, min_cpu_share=0.0, max_attempts=1)
    return DeviceProfile.from_dict(data)


ALPHA = tiny_profile("alpha", "device:alpha", {"device": "alpha"})
BETA = tiny_profile("beta", "device:beta")
GAMMA = tiny_profile("gamma", "device:gamma")


@pytest.fixture(scope="module")
def cluster(ray_cluster_factory):
    c = ray_cluster_factory(head_cpus=1)
    nodes = {
        "a1": c.add_node(num_cpus=1, resources={"device:alpha": 1}, labels={"device": "alpha"}),
        "a2": c.add_node(num_cpus=1, resources={"device:alpha": 1}, labels={"device": "alpha"}),
        "b": c.add_node(num_cpus=1, resources={"device:beta": 1}),
    }
    c.wait_for_nodes()
    return c, nodes


def small_archs(n: int, seed: int) -> list:
    space = SearchSpace.load("demo")
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


def test_probes_are_pinned_and_rerun_skips(cluster, tmp_path):
    from hat_ray.latency.probe import collect

    _, nodes = cluster
    space = SearchSpace.load("demo")
    out = tmp_path / "lat.parquet"
    archs = small_archs(8, seed=1)
    summary = collect(archs, [ALPHA, BETA], space, out)
    data = LatencyDataset.load(out)
    assert summary.measured == {"alpha": 8, "beta": 8} and len(data) == 16
    by_device = data.frame.groupby("device")["node_id"].apply(set).to_dict()
    assert by_device["alpha"] <= {nodes["a1"].node_id, nodes["a2"].node_id}
    assert len(by_device["alpha"]) == 2  # spread over both alpha nodes
    assert by_device["beta"] == {nodes["b"].node_id}
    assert not data.frame.duplicated(subset=["arch_key", "device"]).any()
    assert (data.frame["latency_ms"] > 0).all() and data.frame["ray_version"].notna().all()
    # the reference protocol (local_cpu's): each probe timed its batches against the reference on its node
    assert ALPHA.protocol.mode == "reference" and data.for_device("alpha").unit() == "ref"
    assert (data.frame["latency_ref"] > 0).all() and data.frame["reference_key"].nunique() == 1
    again = collect(archs, [ALPHA, BETA], space, out)  # interrupted / repeated: nothing measured twice
    assert again.measured == {} and again.skipped == {"alpha": 8, "beta": 8}
    assert len(LatencyDataset.load(out)) == 16


def test_simulated_device_next_to_pinned_probes(cluster, tmp_path):
    """A simulated device (no node declares it) collected with a real one into one dataset: its Archs
    are Ray tasks on any node with a CPU, the real device's run on its probe's node."""
    from hat_ray.latency.probe import collect, measure_on_devices

    _, nodes = cluster
    space = SearchSpace.load("demo")
    gemmini = DeviceProfile.load("gemmini_16x16")
    archs = small_archs(3, seed=4)
    out = tmp_path / "mixed.parquet"
    summary = collect(archs, [BETA, gemmini], space, out)
    data = LatencyDataset.load(out)
    assert summary.measured == {"beta": 3, "gemmini_16x16": 3} and len(data) == 6
    assert set(data.for_device("beta").frame["node_id"]) == {nodes["b"].node_id}
    assert data.for_device("gemmini_16x16").runtimes() == ["simulated"]
    got = measure_on_devices(archs[:1], [gemmini, BETA], space)
    assert [r["arch_key"] for r in got["gemmini_16x16"]] == [r["arch_key"] for r in got["beta"]] == [archs[0].key()]


def test_interrupted_collection_keeps_rows_and_resumes(cluster, tmp_path):
    from hat_ray.latency.dataset import journal_path
    from hat_ray.latency.probe import collect

    out = tmp_path / "int.parquet"
    archs = small_archs(6, seed=5)

    def interrupt(device: str, done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of a collection

    with pytest.raises(KeyboardInterrupt):
        collect(archs, [BETA], SearchSpace.load("demo"), out, progress=interrupt)
    assert journal_path(out).is_file() and len(LatencyDataset.load(out)) == 3  # nothing measured is lost
    summary = collect(archs, [BETA], SearchSpace.load("demo"), out)
    data = LatencyDataset.load(out)
    assert summary.skipped == {"beta": 3} and summary.measured == {"beta": 3}
    assert len(data) == 6 and not data.frame.duplicated(subset=["arch_key", "device"]).any()
    assert not journal_path(out).exists()  # folded into the Parquet file


def test_missing_device_fails_fast(cluster, tmp_path):
    from hat_ray.latency.probe import collect

    t0 = time.time()
    with pytest.raises(DeviceError) as info:
        collect(small_archs(2, seed=2), [ALPHA, GAMMA], SearchSpace.load("demo"), tmp_path / "x.parquet")
    message = str(info.value)
    assert time.time() - t0 < 10
    assert "gamma" in message and "device:gamma" in message
    assert "device:alpha (2 nodes)" in message and "device:beta (1 node)" in message
    assert not (tmp_path / "x.parquet").exists()  # nothing requested, nothing written


def test_removed_node_work_finishes_elsewhere(cluster, tmp_path):
    from hat_ray.latency.probe import collect

    c, nodes = cluster
    out = tmp_path / "loss.parquet"
    archs = small_archs(12, seed=3)
    removed_at = []

    def progress(device: str, done: int, total: int) -> None:
        if done == 2 and not removed_at:  # mid-collection: the first alpha node goes away
            c.remove_node(nodes["a1"])
            removed_at.append(time.time())

    summary = collect(archs, [ALPHA], SearchSpace.load("demo"), out, progress=progress)
    data = LatencyDataset.load(out)
    assert removed_at and summary.measured == {"alpha": 12}
    assert len(data) == 12 and set(data.frame["arch_key"]) == {a.key() for a in archs}  # none lost
    assert not data.frame.duplicated(subset=["arch_key", "device"]).any()  # none duplicated
    a1, a2 = nodes["a1"].node_id, nodes["a2"].node_id
    assert set(data.frame["node_id"]) <= {a1, a2}
    # A batch the removed node finished before it went may still arrive afterwards (a small result
    # travels inline to the driver), so the order of rows proves nothing; when each batch started
    # does: none started on the removed node after the removal, and what was left (at least the
    # 3 Archs queued beyond the first two batches) was started on the surviving node.
    frame = data.frame
    assert (frame.loc[frame["node_id"] == a1, "started_at"] < removed_at[0]).all()
    late = frame[frame["started_at"] > removed_at[0]]
    assert len(late) >= 3 and set(late["node_id"]) == {a2}


def test_losing_every_node_of_a_device_stops_with_rows_kept(cluster, tmp_path):
    from hat_ray.latency.probe import collect

    c, nodes = cluster
    out = tmp_path / "beta.parquet"

    def progress(device: str, done: int, total: int) -> None:
        if done == 3:
            c.remove_node(nodes["b"])

    with pytest.raises(DeviceError, match="every node of device beta was lost"):
        collect(small_archs(10, seed=4), [BETA], SearchSpace.load("demo"), out, progress=progress)
    kept = LatencyDataset.load(out)
    assert 3 <= len(kept) < 10 and not kept.frame.duplicated(subset=["arch_key", "device"]).any()
