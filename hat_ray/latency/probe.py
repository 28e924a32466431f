"""LatencyProbe actors (one per device node) and fault-tolerant, resumable collection.

Placement: a probe asks for ONE unit of its profile's resource (``device:rpi4``; nodes declare
exactly 1), the profile's CPUs (capped at what the node has) and, for CUDA profiles, one GPU,
and is pinned to its node with a hard NodeAffinity (plus the profile's label selector). The
resource unit makes it exclusive: no second probe measures on that board at the same time.

:func:`collect` checks the cluster first (DeviceError listing the devices present when one is
missing: never a pending request that waits forever), skips (arch key, device) pairs the output
already holds, spreads the rest over every node of each device in parallel, and appends each
record to the dataset's journal as it arrives (fsync per row). A probe whose actor or node
dies has its arch re-queued for the remaining probes of that device (nodes that joined since
are used too); when a device has none left, the collection stops with a DeviceError after
writing everything measured so far. Re-running resumes.

:func:`measure_on_devices` runs the same machinery (fail-fast device check, pinned probes
spread over every node of each device, re-queue on a lost node) without a dataset: it returns
the records, e.g. to re-measure a search's final candidates on the real devices.

Simulated devices (profile ``runtime: simulated``) have no probe: their Archs are simulated by
Ray tasks (``ray.num_cpus`` CPUs each, no device resource, any node; Ray retries a task whose
worker or node dies) in batches of :data:`SIM_BATCH`, at most one task per CPU of the cluster at
a time (:class:`_Simulations`). They run before the timed devices' probes start, so that their
CPU load never disturbs a measurement on the same machine. Their records go to the same dataset.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from hat_ray.arch import Arch
from hat_ray.cluster import DeviceNode, describe_devices, device_nodes, require_devices
from hat_ray.errors import ConfigError, DeviceError, HatRayError
from hat_ray.latency.dataset import JournalWriter, LatencyDataset, journal_path
from hat_ray.latency.profile import DeviceProfile
from hat_ray.space import SearchSpace

log = logging.getLogger(__name__)
_LOST = (ray.exceptions.RayActorError, ray.exceptions.ActorUnschedulableError, ray.exceptions.WorkerCrashedError,
         ray.exceptions.ObjectLostError, ray.exceptions.NodeDiedError)


class LatencyProbe:
    """Measures Archs on the node it runs on (wrapped by ``ray.remote`` in :func:`start_probe`)."""

    def __init__(self, profile: dict[str, Any], space: dict[str, Any], vocab: int | None) -> None:
        self.profile = DeviceProfile.from_dict(profile, source="probe profile")
        self.space = SearchSpace.from_dict(space, source="probe space")
        self.vocab = vocab
        self._bench: Any = None

    def where(self) -> dict[str, Any]:
        import os
        import socket

        return {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid()}

    def measure(self, archs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Records of ``archs``: one by one (sequential protocol) or as one batch timed against
        the reference Arch, whose model this probe keeps between batches (reference protocol)."""
        from hat_ray.latency.measure import ReferenceBench, measure

        parsed = [Arch.from_dict(a) for a in archs]
        if self.profile.protocol.mode == "reference":
            if self._bench is None:
                self._bench = ReferenceBench(self.profile, self.space, vocab=self.vocab)
            records = self._bench.measure(parsed)
        else:
            records = [measure(a, self.profile, self.space, vocab=self.vocab) for a in parsed]
        for record in records:
            record.update(node_id=ray.get_runtime_context().get_node_id(), ray_version=ray.__version__)
        return records


_RemoteProbe = ray.remote(max_restarts=0, max_task_retries=0)(LatencyProbe)


def start_probe(profile: DeviceProfile, node: DeviceNode, space: SearchSpace, vocab: int | None) -> Any:
    """A probe actor pinned to ``node``, holding one unit of the device resource."""
    options: dict[str, Any] = {
        "resources": {profile.ray.resource: 1},
        "num_cpus": min(profile.ray.num_cpus, node.cpus),
        "num_gpus": 1 if profile.device == "cuda" else 0,
        "scheduling_strategy": NodeAffinitySchedulingStrategy(node.node_id, soft=False),
    }
    if profile.ray.label:
        options["label_selector"] = dict(profile.ray.label)
    name = f"latency-probe:{profile.name}:{node.node_id[:8]}"  # how the Ray dashboard lists it
    try:
        return _RemoteProbe.options(name=name, **options).remote(profile.to_dict(), space.to_dict(), vocab)
    except ray.exceptions.ActorAlreadyExistsError:  # this node's previous probe is still being torn down
        return _RemoteProbe.options(name=f"{name}:{time.monotonic_ns() % 10**6}", **options).remote(
            profile.to_dict(), space.to_dict(), vocab)


SIM_BATCH = 16  # Archs per simulation task (one simulation takes about a millisecond)


def simulate_batch(profile: dict[str, Any], space: dict[str, Any], archs: list[dict[str, Any]],
                   vocab: int | None) -> list[dict[str, Any]]:
    """Records of ``archs`` on a simulated device (runs as a Ray task; see the module docstring)."""
    from hat_ray.latency.accelerator import simulate

    prof = DeviceProfile.from_dict(profile, source="simulation profile")
    spc = SearchSpace.from_dict(space, source="simulation space")
    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    records = [simulate(Arch.from_dict(a), prof, spc, vocab=vocab) for a in archs]
    for record in records:
        record.update(node_id=node, ray_version=ray.__version__)
    return records


_remote_simulate = ray.remote(max_retries=3)(simulate_batch)


class _Simulations:
    """Simulated devices' Archs as Ray tasks (driver side): a bounded number in flight, each
    task's records to ``sink`` together as they arrive; a failed batch is retried Arch by Arch, an
    Arch that fails alone is reported in ``summary.failed``."""

    def __init__(self, profiles: Sequence[DeviceProfile], space: SearchSpace, vocab: int | None,
                 todo: dict[str, list[Arch]], summary: CollectSummary, progress: Progress | None) -> None:
        self.profiles = {p.name: p for p in profiles}
        self.summary, self.progress = summary, progress
        self.totals = {p.name: len(todo[p.name]) for p in profiles}
        self.queue: deque[tuple[str, list[Arch]]] = deque(
            (p.name, todo[p.name][i:i + SIM_BATCH]) for p in profiles for i in range(0, len(todo[p.name]), SIM_BATCH))
        self.space_ref = ray.put(space.to_dict())
        self.profile_refs = {p.name: ray.put(p.to_dict()) for p in profiles}
        self.vocab = vocab
        for p in profiles:
            summary.measured.setdefault(p.name, 0)

    def loop(self, sink: Callable[[list[dict[str, Any]]], None]) -> None:
        cpus = float(ray.cluster_resources().get("CPU", 1))
        inflight: dict[Any, tuple[str, list[Arch]]] = {}
        while self.queue or inflight:
            while self.queue and len(inflight) < max(1, int(cpus // max(self._cpus(self.queue[0][0]), 1e-6))):
                name, batch = self.queue.popleft()
                ref = _remote_simulate.options(num_cpus=self._cpus(name)).remote(
                    self.profile_refs[name], self.space_ref, [a.to_dict() for a in batch], self.vocab)
                inflight[ref] = (name, batch)
            ready, _ = ray.wait(list(inflight), num_returns=1)
            name, batch = inflight.pop(ready[0])
            try:
                records = ray.get(ready[0])
            except ray.exceptions.RayError as exc:  # a failing simulation, or a worker lost beyond Ray's retries
                cause = getattr(exc, "cause", None)
                if isinstance(cause, HatRayError):
                    raise cause from None
                if len(batch) > 1:
                    self.queue.extend((name, [arch]) for arch in batch)
                else:
                    log.warning("simulating %s on %s failed: %s", batch[0].key(), name, _first_line(exc))
                    self.summary.failed.setdefault(name, []).append(batch[0].key())
                continue
            sink(records)
            self.summary.measured[name] += len(records)
            if self.progress is not None:
                self.progress(name, self.summary.measured[name], self.totals[name])

    def _cpus(self, name: str) -> float:
        return self.profiles[name].ray.num_cpus


@dataclass
class CollectSummary:
    """What a collection did, per device name."""

    measured: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    failed: dict[str, list[str]] = field(default_factory=dict)  # arch keys that raised on the probe
    lost_nodes: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"measured": self.measured, "skipped": self.skipped, "failed": self.failed,
                "lost_nodes": self.lost_nodes, "seconds": round(self.seconds, 1)}


Progress = Callable[[str, int, int], None]  # (device, done, total)


def collect(archs: Sequence[Arch], profiles: Sequence[DeviceProfile], space: SearchSpace, out: str | Path, *,
            vocab: int | None = None, progress: Progress | None = None, startup_timeout_s: float = 120.0,
            task_timeout_s: float | None = None, max_failures: int = 2) -> CollectSummary:
    """Measure every (arch, profile) pair not yet in ``out`` on the connected cluster; see the
    module docstring. Returns the summary; DeviceError when a device has (or is left with) no
    node; rows measured before that are kept in ``out``."""
    t0 = time.time()
    out = Path(out)
    if out.suffix != ".parquet":
        raise ConfigError("latency collect", [f"--out must be a .parquet dataset, got {out.name!r}"])
    latency_space = space.latency_space()
    for arch in archs:
        latency_space.check(arch)
    done = existing_keys(out, space.name, profiles)
    unique = list({a.key(): a for a in archs}.values())
    todo = {p.name: [a for a in unique if (a.key(), p.name) not in done] for p in profiles}
    summary = CollectSummary(skipped={p.name: len(unique) - len(todo[p.name]) for p in profiles})
    active = [p for p in profiles if todo[p.name]]
    if not active:
        return summary
    nodes = require_devices(active)  # fails fast, before any actor is requested
    simulated, timed = [p for p in active if p.simulated], [p for p in active if not p.simulated]
    with JournalWriter(out) as writer:
        if simulated:  # first: their CPU load would disturb the timed devices' measurements
            _Simulations(simulated, space, vocab, todo, summary, progress).loop(writer.append_many)
        if timed:
            run = _Collection(timed, space, vocab, {p.name: nodes[p.name] for p in timed}, todo, summary, progress,
                              startup_timeout_s, task_timeout_s, max_failures)
            try:
                run.loop(writer.append)
            finally:
                run.stop()
    LatencyDataset.compact(out)
    summary.seconds = time.time() - t0
    return summary


def measure_on_devices(archs: Sequence[Arch], profiles: Sequence[DeviceProfile], space: SearchSpace,
                       vocab: int | None = None, *, progress: Progress | None = None,
                       startup_timeout_s: float = 120.0, task_timeout_s: float | None = None,
                       max_failures: int = 2) -> dict[str, list[dict[str, Any]]]:
    """Measure every Arch on every profile's device through pinned LatencyProbe actors (one per
    device node, work spread over the nodes) and return ``{profile name: [record, ...]}`` in the
    order of ``archs`` (duplicates measured once); nothing is written to disk. DeviceError at
    once when a device has no alive node (before any actor is requested), or when every node
    of a device is lost mid-way. An Arch whose measurement keeps failing (``max_failures``
    times) is missing from its device's list (logged). Ray must be initialised."""
    latency_space = space.latency_space()
    for arch in archs:
        latency_space.check(arch)
    unique = list({a.key(): a for a in archs}.values())
    names = [p.name for p in profiles]
    if len(set(names)) != len(names):
        raise DeviceError(f"measure_on_devices: profile names must be distinct, got {names}")
    if not unique or not profiles:
        return {name: [] for name in names}
    nodes = require_devices(profiles)  # fails fast, before any actor is requested
    summary = CollectSummary(skipped=dict.fromkeys(names, 0))
    todo = {name: list(unique) for name in names}
    got: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in names}

    def keep(record: dict[str, Any]) -> None:
        got[record["device"]].setdefault(record["arch_key"], record)

    simulated, timed = [p for p in profiles if p.simulated], [p for p in profiles if not p.simulated]
    if simulated:  # first: their CPU load would disturb the timed devices' measurements
        _Simulations(simulated, space, vocab, todo, summary, progress).loop(lambda records: [keep(r) for r in records])
    if timed:
        run = _Collection(timed, space, vocab, {p.name: nodes[p.name] for p in timed}, todo, summary, progress,
                          startup_timeout_s, task_timeout_s, max_failures)
        try:
            run.loop(keep)
        finally:
            run.stop()
    for name, keys in summary.failed.items():
        log.warning("%s: %d arch(s) could not be measured: %s", name, len(keys), ", ".join(keys[:5]))
    return {name: [got[name][a.key()] for a in unique if a.key() in got[name]] for name in names}


def existing_keys(out: Path, space_name: str, profiles: Sequence[DeviceProfile] = ()) -> set[tuple[str, str]]:
    """(arch key, device) pairs ``out`` already holds; DataError / ConfigError when it is
    unreadable, holds another space's rows, or rows of one of ``profiles``' devices measured
    with another protocol mode (a dataset mixing ms-only and reference-unit rows could not be
    fit in reference units) or with another runtime (torch vs onnxruntime rows under one device
    name). The CLI calls this before it starts Ray."""
    if not out.is_file() and not journal_path(out).is_file():
        return set()
    existing = LatencyDataset.load(out)
    other = sorted(set(existing.frame["space"].dropna()) - {space_name})
    if other:
        raise ConfigError(str(out), [f"holds rows of search space {', '.join(other)}, not {space_name}: "
                                     "use another --out"])
    frame = existing.frame
    for profile in profiles:
        rows = frame[frame["device"] == profile.name]
        modes = set(np.where(rows["latency_ref"].notna(), "reference", "sequential"))
        if modes - {profile.protocol.mode}:
            raise ConfigError(str(out), [f"holds {profile.name} rows measured with the {'/'.join(sorted(modes))} "
                                         f"protocol, and this collection uses {profile.protocol.mode}: use another "
                                         f"--out, or --protocol {sorted(modes)[0]} to extend it"])
        runtimes = set(LatencyDataset(rows).runtimes()) if len(rows) else set()
        if runtimes - {profile.runtime}:
            raise ConfigError(str(out), [f"holds {profile.name} rows measured with runtime {'/'.join(sorted(runtimes))}, "
                                         f"and this profile uses runtime {profile.runtime}: use another --out, or give "
                                         "the profile another name"])
        if profile.simulated and len(rows):
            hardware = set(rows["simulator"].dropna()) - {profile.simulator.fingerprint()}
            if hardware:
                raise ConfigError(str(out), [f"holds {profile.name} rows simulated with other hardware parameters "
                                             "(its simulator section changed since): use another --out, or give the "
                                             "changed profile another name"])
    return existing.keys()


@dataclass(eq=False)
class _Probe:
    device: str
    node: DeviceNode
    handle: Any
    busy: bool = False


class _Collection:
    """The dispatch loop of :func:`collect` (driver side, single-threaded)."""

    def __init__(self, profiles: Sequence[DeviceProfile], space: SearchSpace, vocab: int | None,
                 nodes: dict[str, list[DeviceNode]], todo: dict[str, list[Arch]], summary: CollectSummary,
                 progress: Progress | None, startup_timeout_s: float, task_timeout_s: float | None,
                 max_failures: int) -> None:
        self.profiles = {p.name: p for p in profiles}
        self.space, self.vocab, self.nodes = space, vocab, nodes
        self.queues = {name: deque(todo[name]) for name in self.profiles}
        self.totals = {name: len(todo[name]) for name in self.profiles}
        self.summary, self.progress = summary, progress
        self.startup_timeout_s, self.task_timeout_s, self.max_failures = startup_timeout_s, task_timeout_s, max_failures
        self.probes: dict[str, list[_Probe]] = {name: [] for name in self.profiles}
        self.tried_nodes: dict[str, set[str]] = {name: set() for name in self.profiles}
        self.inflight: dict[Any, tuple[_Probe, list[Arch], float]] = {}
        self.failures: dict[tuple[str, str], int] = {}
        self.written: set[tuple[str, str]] = set()
        for name in self.profiles:
            summary.measured.setdefault(name, 0)

    def loop(self, sink: Callable[[dict[str, Any]], None]) -> None:
        """Measure everything queued; each record goes to ``sink`` as it arrives."""
        started = self._start(self.nodes)
        for name, count in started.items():
            if not count:
                raise DeviceError(f"device {name}: no probe started on its nodes within {self.startup_timeout_s:.0f} s "
                                  "(are they busy with another collection?)")
        self._dispatch_idle()
        while self.inflight:
            ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=1.0)
            if not ready:
                self._check_timeouts()
                continue
            probe, batch, _ = self.inflight.pop(ready[0])
            probe.busy = False
            try:
                records = ray.get(ready[0])
            except _LOST as exc:
                self._lost(probe, batch, exc)
                continue
            except ray.exceptions.RayTaskError as exc:
                self._failed(probe, batch, exc)
            else:
                for arch, record in zip(batch, records, strict=True):
                    self._write(sink, probe, arch, record)
            self._dispatch(probe)
        lost = [name for name, queue in self.queues.items() if queue]
        if lost:
            left = ", ".join(f"{name}: {len(self.queues[name])} archs" for name in lost)
            raise DeviceError(f"every node of device {', '.join(lost)} was lost ({left} not measured; rows "
                              f"measured so far are saved: rerun to resume); the cluster now has: "
                              f"{describe_devices(_devices_now())}")

    def _start(self, nodes: dict[str, list[DeviceNode]]) -> dict[str, int]:
        """Start probes on the given nodes (per device) not tried yet, all at once, and wait
        until they answer. Returns how many started per device."""
        starting = {}
        for name, device_nodes_ in nodes.items():
            for node in device_nodes_:
                if node.node_id in self.tried_nodes[name]:
                    continue
                self.tried_nodes[name].add(node.node_id)
                probe = _Probe(name, node, start_probe(self.profiles[name], node, self.space, self.vocab))
                starting[probe.handle.where.remote()] = probe
        started = dict.fromkeys(nodes, 0)
        if not starting:
            return started
        ready, pending = ray.wait(list(starting), num_returns=len(starting), timeout=self.startup_timeout_s)
        for ref in pending:
            probe = starting[ref]
            log.warning("probe for %s on node %s did not start in time: skipped", probe.device, probe.node.node_id[:8])
            ray.kill(probe.handle, no_restart=True)
        for ref in ready:
            probe = starting[ref]
            try:
                where = ray.get(ref)
            except (*_LOST, ray.exceptions.RayTaskError) as exc:
                log.warning("probe for %s on node %s failed to start: %s", probe.device, probe.node.node_id[:8],
                            _first_line(exc))
                continue
            log.info("probe for %s on node %s (%s, pid %s)", probe.device, where["node_id"][:8], where["host"],
                     where["pid"])
            self.probes[probe.device].append(probe)
            started[probe.device] += 1
        return started

    def _dispatch(self, probe: _Probe) -> None:
        """Give an idle probe its next batch: in reference mode up to ``batch_archs`` Archs (at most
        the probe's share of the queue), else one; an Arch whose measurement failed before goes
        alone (a bad Arch cannot sink a batch twice)."""
        queue = self.queues[probe.device]
        if probe.busy or not queue or probe not in self.probes[probe.device]:
            return
        protocol = self.profiles[probe.device].protocol
        # no bigger than a fair share of what is left, so that every node of the device gets work
        size = min(protocol.batch_archs, -(-len(queue) // len(self.probes[probe.device]))) \
            if protocol.mode == "reference" else 1
        batch = [queue.popleft()]
        while queue and len(batch) < size and not self._failed_before(probe.device, batch[0]) \
                and not self._failed_before(probe.device, queue[0]):
            batch.append(queue.popleft())
        probe.busy = True
        ref = probe.handle.measure.remote([arch.to_dict() for arch in batch])
        self.inflight[ref] = (probe, batch, time.time())

    def _failed_before(self, device: str, arch: Arch) -> bool:
        return (device, arch.key()) in self.failures

    def _dispatch_idle(self, device: str | None = None) -> None:
        for name, probes in self.probes.items():
            if device is None or name == device:
                for probe in list(probes):
                    self._dispatch(probe)

    def _write(self, sink: Callable[[dict[str, Any]], None], probe: _Probe, arch: Arch,
               record: dict[str, Any]) -> None:
        key = (arch.key(), probe.device)
        if key in self.written:  # a retried arch that had in fact finished: keep the first row
            return
        sink(record)
        self.written.add(key)
        self.summary.measured[probe.device] += 1
        if self.progress is not None:
            self.progress(probe.device, self.summary.measured[probe.device], self.totals[probe.device])

    def _lost(self, probe: _Probe, batch: list[Arch], exc: Exception) -> None:
        name = probe.device
        log.warning("lost the %s probe on node %s (%s): re-queueing %s", name, probe.node.node_id[:8],
                    type(exc).__name__, ", ".join(a.key() for a in batch))
        self.probes[name].remove(probe)
        self.summary.lost_nodes.setdefault(name, []).append(probe.node.node_id)
        ray.kill(probe.handle, no_restart=True)
        self.queues[name].extendleft(reversed(batch))
        if not self.probes[name]:  # nodes that joined since the start can take over
            self._start({name: device_nodes(self.profiles[name])})
        self._dispatch_idle(name)

    def _failed(self, probe: _Probe, batch: list[Arch], exc: ray.exceptions.RayTaskError) -> None:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, DeviceError):  # the node cannot run this profile at all: stop now
            raise DeviceError(f"{probe.device} probe on node {probe.node.node_id[:8]}: {cause}") from None
        if isinstance(cause, HatRayError):
            raise cause
        for arch in batch:  # each is retried alone (see _dispatch) until it fails max_failures times
            key = (probe.device, arch.key())
            self.failures[key] = self.failures.get(key, 0) + 1
            log.warning("measuring %s on %s failed (%d/%d): %s", arch.key(), probe.device, self.failures[key],
                        self.max_failures, _first_line(exc))
            if self.failures[key] < self.max_failures:
                self.queues[probe.device].append(arch)
            else:
                self.summary.failed.setdefault(probe.device, []).append(arch.key())

    def _check_timeouts(self) -> None:
        if self.task_timeout_s is None:
            return
        now = time.time()
        for probe, batch, started in list(self.inflight.values()):
            if now - started > self.task_timeout_s * len(batch) and probe.busy:
                log.warning("%s on %s ran over %.0f s per arch: killing its probe", ", ".join(a.key() for a in batch),
                            probe.device, self.task_timeout_s)
                ray.kill(probe.handle, no_restart=True)  # its task then fails as lost and is re-queued

    def stop(self) -> None:
        for probes in self.probes.values():
            for probe in probes:
                ray.kill(probe.handle, no_restart=True)


def _devices_now() -> dict[str, int]:
    from hat_ray.cluster import cluster_devices

    return cluster_devices()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
