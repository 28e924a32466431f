"""measure(arch, profile): HAT's latency protocol on a static random-weight model.

Protocol (spec section 4): batch ``batch``, source length ``src_len`` (the space's seq_len by
default), fp32. Encoder: ``warmup`` untimed forwards, then timed forwards. Decoder: each timed
run is ``tgt_len`` incremental steps (one token per step with cached keys/values) on
``batch * beam`` rows, INCLUDING the full-vocabulary output projection. Latency does not
depend on weight values, so the model is built directly with random weights.

What runs the model is the profile's ``runtime``: a latency backend (hat_ray.latency.backends:
PyTorch eager by default, PyTorch with int8 projections, ONNX Runtime) builds the Arch's two
workloads; this module times them. Statistics, disturbance handling and the reference protocol
below are the same for every backend.

Better statistics than HAT's trimmed mean alone: per part the median, trimmed mean (HAT's
10-90% band), std, IQR and coefficient of variation (std / mean). Disturbance handling:

* CPU drop-outs (``min_cpu_share > 0``): a timed run whose CPU share (CPU time of the timing
  thread / wall time; with several threads, process CPU time / (wall x threads)) falls below the
  threshold was preempted by another process; it is dropped and replaced, up to ``max_runs``.
* Spread: when a part's CV exceeds ``max_cv`` the whole part is re-measured, at most
  ``max_attempts`` times in all; the attempt with the smallest CV is kept and ``disturbed`` is
  set when even that one is above ``max_cv``.

Reference mode (``protocol.mode: reference``, :class:`ReferenceBench`): on a shared machine or
a Pi that throttles, the speed drifts over seconds to minutes, so absolute times of Archs
measured one after another are not comparable. Archs are measured in batches instead: in each
of ``rounds`` rounds, in a fresh random order, every Arch's run (encoder + decoder) is timed
right after one run of the space's reference Arch (:func:`reference_arch`, its model built once
per bench); the reference's next run (the next pair's, or one closing run) follows it, so each
Arch run sits between two reference runs. ``latency_ref`` = median over rounds of t_arch / the
mean of the two reference runs around it: the drift, common to all three, cancels (to first
order, also a drift within the pair). After ``rounds`` rounds, Archs whose median ratio is not
yet precise (relative standard error, from the robust spread, above ``precision``) get extra
rounds, up to ``max_rounds``: a noisy phase of the machine costs time, not accuracy. A pair with a preempted run (``min_cpu_share``) is timed again (at most one
extra pair per pair on average). Every record also keeps the absolute ms (the profile's
statistic over the rounds), the spread of the ratio (``latency_ref_iqr``), the reference's ms
in each of the Arch's rounds (``reference_ms_rounds``, JSON) and their median (``reference_ms``);
``disturbed`` means the ratio's CV exceeded ``max_cv``.

GPU parts (runtime torch, device cuda) are timed with CUDA events after synchronisation. No Ray
here: probes call this.

A simulated device (``runtime: simulated``) is not timed at all: :func:`measure` returns the
record of hat_ray.latency.accelerator.simulate (cycles of the same protocol's work on the
profile's hardware), and :class:`ReferenceBench` refuses it (its profile cannot be in
reference mode).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

import hat_ray
from hat_ray.arch import FEATURE_NAMES, Arch
from hat_ray.errors import DeviceError
from hat_ray.latency.backends import Backend, Timer, Work, backend_for
from hat_ray.latency.dataset import SIMULATION_COLUMNS
from hat_ray.latency.profile import DeviceProfile, Protocol
from hat_ray.space import SearchSpace

log = logging.getLogger(__name__)
PARTS = ("encoder", "decoder")


def measure(arch: Arch, profile: DeviceProfile, space: SearchSpace, *, vocab: int | None = None,
            seed: int = 0) -> dict[str, Any]:
    """Measure ``arch`` on this machine with ``profile``'s protocol.

    Returns one flat record (the LatencyDataset columns, see dataset.COLUMNS): ``latency_ms`` =
    encoder + decoder in ms by the profile's statistic, per-part statistics (ms), the machine
    state (CPU frequency MHz, 1-min load, temperature C where psutil can read them, and
    ``others_cpu_share``: the share of the machine's CPU capacity other processes used while it
    measured, 0..1, a contention indicator), the runtime (``runtime``, ``runtime_version``, and
    ``setup_s``: seconds to build / convert / export the Arch's model, not timed), versions,
    host and timestamps (epoch s). ``node_id``/``ray_version`` are left None (probes fill them).
    Raises ArchError when ``arch`` is outside ``space``'s latency space, DeviceError when the
    profile's device or runtime is not available here. With a reference-mode profile this is a
    batch of one (:class:`ReferenceBench`).
    """
    if profile.simulated:
        from hat_ray.latency.accelerator import simulate

        return simulate(arch, profile, space, vocab=vocab)
    if profile.protocol.mode == "reference":
        return ReferenceBench(profile, space, vocab=vocab, seed=seed).measure([arch])[0]
    space.latency_space().check(arch)
    backend = backend_for(profile)
    proto = profile.protocol
    vocab = vocab or proto.vocab
    started = time.time()
    contention = _Contention()
    with backend.running():
        work = backend.workloads(space, arch, vocab, seed)
        timer = backend.timer()
        stats = {"encoder": _time_part(work.encode, proto, timer), "decoder": _time_part(work.decode, proto, timer)}
    record = _record(arch, profile, space, stats, vocab, backend, work.setup_s)
    record.update(machine_state(), others_cpu_share=contention.others_share())
    record.update(started_at=started, finished_at=time.time())
    return record


def measure_many(archs: list[Arch], profile: DeviceProfile, space: SearchSpace, *, vocab: int | None = None,
                 seed: int = 0, progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Records of ``archs`` on this machine, in order: one by one (sequential protocol) or in
    batches of ``batch_archs`` against one reference model (reference protocol);
    ``progress(done)`` after each Arch or batch."""
    if profile.protocol.mode != "reference" or profile.simulated:
        records = []
        for arch in archs:
            records.append(measure(arch, profile, space, vocab=vocab, seed=seed))
            if progress:
                progress(len(records))
        return records
    bench, size, records = ReferenceBench(profile, space, vocab=vocab, seed=seed), profile.protocol.batch_archs, []
    for start in range(0, len(archs), size):
        records += bench.measure(archs[start:start + size])
        if progress:
            progress(len(records))
    return records


# ---- timing ----
def _time_part(fn: Callable[[], Any], proto: Protocol, timer: Timer) -> dict[str, float]:
    """Warm up, then time until ``runs`` undisturbed runs; re-measure (bounded) on high CV."""
    for _ in range(proto.warmup):
        fn()
    best: dict[str, float] | None = None
    for attempt in range(1, proto.max_attempts + 1):
        kept, dropped = [], 0
        for _ in range(proto.max_runs):
            ms, share = timer(fn)
            if proto.min_cpu_share and share < proto.min_cpu_share and dropped < proto.max_runs - proto.runs:
                dropped += 1
                continue
            kept.append(ms)
            if len(kept) == proto.runs:
                break
        stats = summarize(kept, proto.band)
        stats.update(attempts=attempt, dropped=dropped)
        if best is None or stats["cv"] < best["cv"]:
            best = stats
        if stats["cv"] <= proto.max_cv:
            break
        log.debug("spread %.3f above max_cv %.3f: re-measuring (attempt %d)", stats["cv"], proto.max_cv, attempt)
    assert best is not None
    best["attempts"] = attempt
    return best


def summarize(times_ms: list[float], band: tuple[float, float] = (0.1, 0.9)) -> dict[str, float]:
    """Statistics of timed runs (ms): median, HAT's trimmed mean (sorted, keep the
    ``[int(n*low), int(n*high))`` band), std, IQR, CV = std / mean, min and the run count."""
    t = np.sort(np.asarray(times_ms, dtype=float))
    n = len(t)
    lo = int(n * band[0])
    hi = max(int(n * band[1]), lo + 1)
    mean = float(t.mean())
    return {
        "median_ms": float(np.median(t)),
        "trimmed_mean_ms": float(t[lo:hi].mean()),
        "std_ms": float(t.std()),
        "iqr_ms": float(np.subtract(*np.percentile(t, [75, 25]))),
        "cv": float(t.std() / mean) if mean > 0 else 0.0,
        "min_ms": float(t[0]),
        "runs": n,
    }


def reference_arch(space: SearchSpace) -> Arch:
    """The reference Arch of ``space`` for reference-mode latency: the middle of its latency space."""
    return space.latency_space().middle()


class ReferenceBench:
    """Reference-mode measurement (see the module docstring) on this machine.

    The reference Arch's workloads (its model in the profile's runtime: built, quantized or
    exported) are made on first use and kept, so a probe that measures many batches makes them
    once. ``measure(archs)`` returns one record per Arch, in order."""

    def __init__(self, profile: DeviceProfile, space: SearchSpace, *, vocab: int | None = None,
                 seed: int = 0) -> None:
        if profile.simulated:
            raise DeviceError(f"device profile {profile.name} is simulated: its latency is computed, not timed "
                              "against a reference Arch")
        self.profile, self.space, self.seed = profile, space, seed
        self.vocab = vocab or profile.protocol.vocab
        self.backend: Backend = backend_for(profile)
        self.reference = reference_arch(space)
        self._reference_work: Work | None = None

    def _work(self, arch: Arch) -> Work:
        return self.backend.workloads(self.space, arch, self.vocab, self.seed)

    def measure(self, archs: list[Arch]) -> list[dict[str, Any]]:
        latency_space = self.space.latency_space()
        for arch in archs:
            latency_space.check(arch)
        proto = self.profile.protocol
        started = time.time()
        contention = _Contention()
        with self.backend.running():
            if self._reference_work is None:
                self._reference_work = self._work(self.reference)
            ref = self._reference_work
            works = [self._work(arch) for arch in archs]
            for encode, decode, _ in (ref, *works):
                for _ in range(proto.warmup):
                    encode()
                    decode()
            timer = self.backend.timer()
            # the order of each round is random but reproducible for the same batch
            rng = np.random.default_rng([self.seed, zlib.crc32(" ".join(a.key() for a in archs).encode())])
            times = self._rounds(ref, works, timer, rng)
        finished = time.time()
        state = {**machine_state(), "others_cpu_share": contention.others_share(), "started_at": started,
                 "finished_at": finished}
        for t, work in zip(times, works, strict=True):
            t["setup_s"] = work.setup_s
        return [self._record(arch, t, state) for arch, t in zip(archs, times, strict=True)]

    def _rounds(self, ref: Work | tuple[Any, ...], works: list[Work] | list[tuple[Any, ...]], timer: Timer,
                rng: np.random.Generator) -> list[dict[str, Any]]:
        """Per Arch: encoder/decoder ms of each round, the reference's runs right before and right
        after it (the next pair's, or one closing run at the end of the batch), and the pairs
        dropped as preempted."""
        proto = self.profile.protocol
        times: list[dict[str, Any]] = [{"enc": [], "dec": [], "ref": [], "ref_after": [], "dropped": 0}
                                       for _ in works]
        spare = proto.rounds * len(works)  # re-timed pairs allowed in this batch
        waiting: dict[str, Any] | None = None  # the last pair's Arch, until the next reference run

        def reference_run() -> tuple[float, float]:
            (r_enc, s1), (r_dec, s2) = timer(ref[0]), timer(ref[1])
            return r_enc + r_dec, min(s1, s2)

        active = list(range(len(works)))
        for done in range(max(proto.max_rounds, proto.rounds)):
            if done >= proto.rounds:  # extra rounds, only for the Archs whose ratio is not yet precise
                active = [i for i in active if _relative_se(_ratios(times[i])) > proto.precision]
                if not active:
                    break
            for i in rng.permutation(active):
                while True:
                    r_ms, r_share = reference_run()
                    (a_enc, s3), (a_dec, s4) = timer(works[i][0]), timer(works[i][1])
                    preempted = proto.min_cpu_share and min(r_share, s3, s4) < proto.min_cpu_share
                    if not (preempted and spare > 0):
                        break
                    spare -= 1
                    times[i]["dropped"] += 1
                if waiting is not None:
                    waiting["ref_after"].append(r_ms)
                waiting = t = times[i]
                t["enc"].append(a_enc)
                t["dec"].append(a_dec)
                t["ref"].append(r_ms)
        if waiting is not None:
            waiting["ref_after"].append(reference_run()[0])
        return times

    def _record(self, arch: Arch, t: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
        proto = self.profile.protocol
        stats = {}
        for part, key in (("encoder", "enc"), ("decoder", "dec")):
            stats[part] = summarize(t[key], proto.band)
            stats[part].update(attempts=1, dropped=t["dropped"])
        record = _record(arch, self.profile, self.space, stats, self.vocab, self.backend, t.get("setup_s"))
        ref_ms = np.asarray(t["ref"])
        ratios = _ratios(t)
        record.update(
            latency_ref=float(np.median(ratios)),
            latency_ref_iqr=float(np.subtract(*np.percentile(ratios, [75, 25]))),
            reference_key=self.reference.key(),
            reference_ms=float(np.median(ref_ms)),
            reference_ms_rounds=json.dumps([round(float(v), 4) for v in ref_ms]),
            disturbed=bool(ratios.std() / ratios.mean() > proto.max_cv),
        )
        record.update(state)
        return record


def _ratios(t: dict[str, Any]) -> np.ndarray:
    """Per round: the Arch's time over the reference's speed at that moment (the mean of the
    reference runs right before and right after it)."""
    after = np.asarray(t["ref_after"][:len(t["ref"])], dtype=float)
    if len(after) < len(t["ref"]):  # the last pair's closing run is not timed yet: use the one before
        after = np.append(after, t["ref"][len(after):])
    return np.add(t["enc"], t["dec"]) / ((np.asarray(t["ref"], dtype=float) + after) / 2)


def _relative_se(ratios: np.ndarray) -> float:
    """Standard error of the median ratio relative to it, from the robust spread (1.4826 MAD):
    1.2533 sigma / sqrt(n) (the median's efficiency under normal noise)."""
    if len(ratios) < 3:
        return float("inf")
    median = float(np.median(ratios))
    sigma = 1.4826 * float(np.median(np.abs(ratios - median)))
    return 1.2533 * sigma / np.sqrt(len(ratios)) / median


def _record(arch: Arch, profile: DeviceProfile, space: SearchSpace, stats: dict[str, dict[str, float]],
            vocab: int, backend: Backend, setup_s: float | None) -> dict[str, Any]:
    stat = f"{profile.protocol.statistic}_ms"
    rec: dict[str, Any] = {
        "space": space.name, "device": profile.name, "arch_key": arch.key(),
        "arch": json.dumps(arch.to_dict(), sort_keys=True), "source": "hat-ray",
    }
    rec.update(zip(FEATURE_NAMES, arch.features(), strict=True))
    rec["encoder_ms"], rec["decoder_ms"] = stats["encoder"][stat], stats["decoder"][stat]
    rec["latency_ms"] = rec["encoder_ms"] + rec["decoder_ms"]
    rec.update(dict.fromkeys(("latency_ref", "latency_ref_iqr", "reference_key", "reference_ms", "reference_ms_rounds")))
    rec.update(dict.fromkeys(SIMULATION_COLUMNS))  # simulated devices only
    for part in PARTS:
        for key, value in stats[part].items():
            rec[f"{part}_{key}"] = value
    rec["disturbed"] = any(stats[p]["cv"] > profile.protocol.max_cv for p in PARTS)
    rec.update(statistic=profile.protocol.statistic, protocol=json.dumps(asdict(profile.protocol)),
               vocab=vocab, threads=backend.threads_used(), dtype=profile.dtype, runtime=backend.name,
               runtime_version=backend.version(), setup_s=setup_s)
    return rec


class _Contention:
    """Share of the machine's CPU capacity used by OTHER processes since construction
    (system-wide busy time minus this process's, over wall time x CPUs); None if unreadable."""

    def __init__(self) -> None:
        try:
            import psutil

            self._proc = psutil.Process()
            self._start = (time.monotonic(), _busy(psutil.cpu_times()), _own(self._proc))
        except Exception:  # noqa: BLE001 - best effort
            self._proc = None

    def others_share(self) -> float | None:
        if self._proc is None:
            return None
        import psutil

        wall0, busy0, own0 = self._start
        wall = (time.monotonic() - wall0) * (psutil.cpu_count() or 1)
        others = (_busy(psutil.cpu_times()) - busy0) - (_own(self._proc) - own0)
        return float(min(max(others / wall, 0.0), 1.0)) if wall > 0 else None


def _busy(t: Any) -> float:
    return float(sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal")))


def _own(proc: Any) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def machine_state() -> dict[str, Any]:
    """Host, versions, CPU frequency (MHz), 1-minute load and the hottest sensor (C) where
    readable; missing values are None."""
    state: dict[str, Any] = {
        "host": socket.gethostname(), "pid": os.getpid(), "node_id": None, "platform": platform.machine(),
        "torch_version": torch.__version__, "hat_ray_version": hat_ray.__version__,
        "python_version": platform.python_version(), "ray_version": None,
        "cpu_freq_mhz": None, "load_1m": None, "temperature_c": None,
    }
    try:
        import psutil

        freq = psutil.cpu_freq()
        state["cpu_freq_mhz"] = float(freq.current) if freq else None
        state["load_1m"] = float(psutil.getloadavg()[0])
        temps = psutil.sensors_temperatures() if hasattr(psutil, "sensors_temperatures") else {}
        currents = [t.current for entries in temps.values() for t in entries if t.current]
        state["temperature_c"] = float(max(currents)) if currents else None
    except Exception as exc:  # noqa: BLE001 - sensors are best effort on every platform
        log.debug("machine state not fully readable: %s", exc)
    return state
