"""ScorerPool: K Ray actors hosting one SuperTransformer, weights shared zero-copy per node.

The weights are ``ray.put`` once; every scorer actor receives the object ref as a top-level
argument, so Ray maps the arrays from the node's shared-memory object store (one copy per
node, read-only) instead of copying them per actor. A dispatcher actor (asyncio, no CPU) hands
each candidate to a free scorer; if a scorer dies the candidate is retried on another one and a
replacement is started. Results already known (a resumed search) are answered from a cache.

Start barrier (``hold``): Tune starts one trial actor per trial in flight and reuses a finished
trial's actor for the next trial. But if a trial finishes while another trial's actor is still
starting (a new Ray worker process takes seconds on a small machine), Tune hands the free actor
to that older trial and kills the one that was starting; the next trial then asks for a new
actor, and so on: a new worker process per candidate (measured before this barrier: 100 trial
actors for 100 candidates, 0.5 candidates/s on a tiny supernet; after: 4 actors, 17/s). So the
searcher tells the pool which trials it suggested (``expect``) and which ended (``forget``),
each trial names itself when it asks for a score, and the pool holds results back while a
suggested trial has not arrived yet (at most ``hold_timeout_s``): a trial then never finishes
while another one's actor is starting.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from hat_ray.arch import Arch

log = logging.getLogger(__name__)
_LOST = (RayActorError, ActorDiedError, ActorUnavailableError)


@ray.remote
class ScorerActor:
    """One scorer process: read-only views of the shared weights plus the validation batches.
    With ``slots`` S > 1 it scores S candidates at once, one thread each (started with
    ``max_concurrency=S``): each slot has its own model object over the same weight arrays (an
    Arch is selected on the model object, so slots never share one), so a slot adds activations
    but no second process (a Ray worker with torch is ~300 MiB of private memory)."""

    def __init__(self, weights: dict[str, Any], batches: dict[float, list[dict[str, Any]]], threads: int = 1,
                 use_gpu: bool = False, slots: int = 1) -> None:
        import queue

        import torch

        from hat_ray.search.scorer import Scorer, unpack_batches, unpack_weights

        torch.set_num_threads(threads)
        self._weights = weights  # keeps the object-store mapping alive
        rungs = {fidelity: unpack_batches(packed) for fidelity, packed in batches.items()}  # {share: batches}
        if use_gpu and torch.cuda.is_available():
            rungs = {f: [b.to("cuda") for b in batch_list] for f, batch_list in rungs.items()}
        models = [unpack_weights(weights) for _ in range(slots)]
        if use_gpu and torch.cuda.is_available():
            models = [m.cuda() for m in models]  # a GPU scorer holds its own device copy (one slot: see SearchOptions)
        # per slot, one Scorer per fidelity over the slot's model object
        self.scorers = [{f: Scorer(m, batch_list) for f, batch_list in rungs.items()} for m in models]
        self.slots: queue.SimpleQueue = queue.SimpleQueue()
        for scorer in self.scorers:
            self.slots.put(scorer)

    def score(self, arch: dict[str, Any], fidelity: float = 1.0) -> dict[str, Any]:
        """Score ``arch`` on the share ``fidelity`` of the validation set (one of the pool's)."""
        slot = self.slots.get()
        try:
            if fidelity not in slot:
                raise ValueError(f"no validation slice of share {fidelity} on this scorer (it has "
                                 f"{sorted(slot)}): start the pool with it in start_pool(slices=...)")
            scorer = slot[fidelity]
            result = scorer.score(Arch.from_dict(arch))
        finally:
            self.slots.put(slot)
        return {"loss": result.loss, "seconds": result.seconds, "tokens": scorer.tokens, "pid": os.getpid(),
                "node": ray.get_runtime_context().get_node_id()}

    def info(self) -> dict[str, Any]:
        import psutil

        mem = psutil.Process().memory_full_info()
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "rss": mem.rss, "uss": getattr(mem, "uss", mem.rss), "pss": getattr(mem, "pss", None),
                **weight_placement(self.scorers[0][1.0].model)}


def weight_placement(model: Any) -> dict[str, int | None]:
    """Bytes of ``model``'s parameters and buffers that live in shared mappings (the object
    store, mapped zero-copy) vs private memory (a copy of this process's own), read from
    /proc/self/maps; None where that file does not exist (not Linux)."""
    try:
        with open("/proc/self/maps", encoding="ascii") as fh:
            maps = [(int(lo, 16), int(hi, 16), perms[3] == "s")
                    for lo, hi, perms in ((r.split()[0].split("-") + [r.split()[1]]) for r in fh)]
    except OSError:
        return {"weights_shared_bytes": None, "weights_private_bytes": None}
    maps.sort()
    starts = [lo for lo, _, _ in maps]
    shared = private = 0
    seen: set[int] = set()
    for tensor in model.state_dict().values():
        ptr, size = tensor.data_ptr(), tensor.numel() * tensor.element_size()
        if ptr in seen or not size:
            continue
        seen.add(ptr)
        i = bisect.bisect_right(starts, ptr) - 1
        if i >= 0 and maps[i][0] <= ptr < maps[i][1] and maps[i][2]:
            shared += size
        else:
            private += size
    return {"weights_shared_bytes": shared, "weights_private_bytes": private}


@ray.remote(num_cpus=0)
class ScorerPool:
    """Dispatcher over K ScorerActors (x their slots). ``score(arch_dict)`` -> {"loss", "seconds", ...}.
    Scores are cached (and journaled) per Arch and fidelity (:func:`cache_key`)."""

    def __init__(self, weights_ref: list[ray.ObjectRef], batches_ref: list[ray.ObjectRef], size: int,
                 name: str, cpus: float = 1.0, threads: int = 1, use_gpu: bool = False,
                 cache: dict[str, float] | None = None, max_retries: int = 3, hold: bool = False,
                 hold_timeout_s: float = 30.0, journal: str | None = None, slots: int = 1) -> None:
        self.weights_ref, self.batches_ref = weights_ref[0], batches_ref[0]
        self.name, self.cpus, self.threads, self.use_gpu = name, cpus, threads, use_gpu
        self.slots = slots  # candidates each scorer process scores at once (ScorerActor)
        self.cache = dict(cache or {})
        # every score appended as it arrives (flushed; fsync'd at most once a second): a killed
        # driver loses no scored candidate, even in a batch whose trial never reported
        self.journal = open(journal, "a", encoding="utf-8") if journal else None  # noqa: SIM115 - the pool's lifetime
        self.synced = time.monotonic()
        self.max_retries = max_retries
        self.spawned = 0
        self.retries = 0
        self.scored = 0  # candidates scored by a scorer (not answered from the cache)
        self.cache_hits = 0
        self.tokens_scored = 0  # validation target tokens scored, over all candidates (the scoring work)
        self.busy_seconds = 0.0  # sum over scorers of the time spent scoring (reported by the scorer)
        self.call_seconds = 0.0  # the same seen from here: dispatch + scoring + reply
        self.first_call: float | None = None  # epoch s of the first dispatch / last completion:
        self.last_done: float | None = None  # the scoring window (utilisation = busy / (window x K))
        self.batches_in_flight = 0
        self.between_batches_seconds = 0.0  # nothing to score: from a last result to the next batch
        self.hold, self.hold_timeout_s = hold, hold_timeout_s
        self.callers: set[str] = set()  # distinct trial actors that asked for a score
        self.expected: set[str] = set()  # suggested trials that have not asked yet
        self.early: set[str] = set()  # trials that asked before their `expect` arrived
        self.all_arrived = asyncio.Event()
        self.all_arrived.set()
        self.free: asyncio.Queue = asyncio.Queue()
        self.actors = [self._spawn() for _ in range(size)]
        for actor in self.actors:
            self._free(actor)

    def _free(self, actor: Any) -> None:
        """A new scorer's slots become free (the queue holds one entry per free slot)."""
        for _ in range(self.slots):
            self.free.put_nowait(actor)

    def _spawn(self) -> Any:
        self.spawned += 1
        # SPREAD: scorers go to different nodes while they have CPUs (one weights copy per node);
        # a replacement for a lost node's scorer lands wherever CPUs are left.
        opts: dict[str, Any] = {"num_cpus": self.cpus * self.slots, "name": f"{self.name}-scorer-{self.spawned}",
                                "max_restarts": 0, "scheduling_strategy": "SPREAD", "max_concurrency": self.slots}
        if self.use_gpu:
            opts["num_gpus"] = 1
        return ScorerActor.options(**opts).remote(self.weights_ref, self.batches_ref, self.threads, self.use_gpu,
                                                  self.slots)

    async def score(self, arch: dict[str, Any], trial: str | None = None, actor: str | None = None,
                    fidelity: float = 1.0) -> dict[str, Any]:
        """Score ``arch`` for ``trial`` (its Tune trial id) running in trial actor ``actor``."""
        self._arrived(trial, actor)
        result = await self._score(arch, fidelity)
        await self._hold()
        return result

    async def score_many(self, archs: list[dict[str, Any]], trial: str | None = None, actor: str | None = None,
                         fidelities: list[float] | None = None) -> list[dict[str, Any]]:
        """Score a trial's batch: every Arch queued at once (first come, first served with the
        other trials' batches), results in the order of ``archs``; a candidate that failed on
        every retry gets ``{"loss": None, "error": ...}`` instead of failing its whole batch.
        ``fidelities``: the share of the validation set each Arch is scored on (default all)."""
        self._arrived(trial, actor)
        if self.batches_in_flight == 0 and self.last_done is not None:
            self.between_batches_seconds += max(0.0, time.time() - self.last_done)
        self.batches_in_flight += 1
        try:
            shares = fidelities or [1.0] * len(archs)
            results = await asyncio.gather(*[self._score(a, f) for a, f in zip(archs, shares)],
                                           return_exceptions=True)
        finally:
            self.batches_in_flight -= 1
        await self._hold()
        return [r if isinstance(r, dict) else {"loss": None, "seconds": 0.0, "error": repr(r)} for r in results]

    def _arrived(self, trial: str | None, actor: str | None) -> None:
        if actor is not None:
            self.callers.add(actor)
        if trial is not None:
            if trial in self.expected:
                self.expected.discard(trial)
            else:
                self.early.add(trial)
            self._update()

    async def _hold(self) -> None:
        """The start barrier: hold a result while a suggested trial's actor has not arrived."""
        if self.hold and not self.all_arrived.is_set():
            try:
                await asyncio.wait_for(self.all_arrived.wait(), timeout=self.hold_timeout_s)
            except asyncio.TimeoutError:
                log.warning("trial(s) %s did not start within %.0f s: releasing results",
                            sorted(self.expected), self.hold_timeout_s)
                self.expected.clear()
                self._update()

    def expect(self, trial: str) -> None:
        """The searcher suggested ``trial``: hold results until its actor asks for a score."""
        if trial in self.early:
            self.early.discard(trial)
        else:
            self.expected.add(trial)
        self._update()

    def forget(self, trial: str) -> None:
        """``trial`` ended (also: failed before it could ask): stop waiting for it."""
        self.expected.discard(trial)
        self.early.discard(trial)
        self._update()

    def _update(self) -> None:
        if self.expected:
            self.all_arrived.clear()
        else:
            self.all_arrived.set()

    async def _score(self, arch: dict[str, Any], fidelity: float = 1.0) -> dict[str, Any]:
        arch_key = Arch.from_dict(arch).key()
        key = cache_key(arch_key, fidelity)
        if key in self.cache:
            self.cache_hits += 1
            return {"loss": self.cache[key], "seconds": 0.0, "cached": True}
        for attempt in range(self.max_retries + 1):
            actor = await self.free.get()
            while actor not in self.actors:  # a free slot of a scorer that died meanwhile
                actor = await self.free.get()
            start = time.perf_counter()
            if self.first_call is None:
                self.first_call = time.time()
            try:
                result = await actor.score.remote(arch, fidelity)
            except _LOST as exc:
                self.retries += 1
                log.warning("scorer died (%s); retrying %s on another scorer", type(exc).__name__, key)
                if actor in self.actors:  # its other slots' candidates fail too: one replacement
                    self.actors.remove(actor)
                    replacement = self._spawn()
                    self.actors.append(replacement)
                    self._free(replacement)
                continue
            except Exception:
                self.free.put_nowait(actor)
                raise
            self.free.put_nowait(actor)
            self.call_seconds += time.perf_counter() - start
            self.last_done = time.time()
            self.busy_seconds += float(result["seconds"])
            self.tokens_scored += int(result.get("tokens", 0))
            self.scored += 1
            self.cache[key] = result["loss"]
            self._journal(arch_key, fidelity, result["loss"])
            return {**result, "cached": False, "attempts": attempt + 1}
        raise RuntimeError(f"candidate {key} failed on {self.max_retries + 1} scorers")

    def _journal(self, key: str, fidelity: float, loss: float) -> None:
        if self.journal is None:
            return
        entry = {"key": key, "loss": loss, **({"fidelity": fidelity} if fidelity < 1.0 else {})}
        self.journal.write(json.dumps(entry) + "\n")
        self.journal.flush()
        if time.monotonic() - self.synced > 1.0:
            os.fsync(self.journal.fileno())
            self.synced = time.monotonic()

    async def ready(self) -> int:
        """Wait until every scorer finished loading; returns the pool size."""
        await asyncio.gather(*[a.info.remote() for a in self.actors])
        return len(self.actors)

    async def stats(self) -> dict[str, Any]:
        infos = await asyncio.gather(*[a.info.remote() for a in self.actors], return_exceptions=True)
        return {"size": len(self.actors), "slots": self.slots, "spawned": self.spawned, "retries": self.retries,
                "scored": self.scored, "cache_hits": self.cache_hits, "tokens_scored": self.tokens_scored,
                "busy_seconds": self.busy_seconds, "call_seconds": self.call_seconds,
                "window_seconds": (self.last_done - self.first_call) if self.last_done and self.first_call else 0.0,
                "between_batches_seconds": self.between_batches_seconds,
                "trial_actors": len(self.callers),
                "scorers": [i for i in infos if isinstance(i, dict)]}

    def actor_handles(self) -> list[Any]:
        return list(self.actors)


def start_pool(weights: dict[str, Any], batches: list[dict[str, Any]], size: int, name: str,
               cpus: float = 1.0, threads: int = 1, use_gpu: bool = False,
               cache: dict[str, float] | None = None, hold: bool = False, journal: str | Path | None = None,
               slots: int = 1, slices: dict[float, list[dict[str, Any]]] | None = None) -> Any:
    """Put weights and batches in the object store once and start a named ScorerPool
    (``hold``: the start barrier for Tune trials, see the module docstring; ``journal``: a file
    on the driver's node every score is appended to, see :func:`read_journal`; ``slices``:
    {share: batches} of the validation slices candidates may also be scored on)."""
    weights_ref = ray.put(weights)
    batches_ref = ray.put({**(slices or {}), 1.0: batches})
    # The dispatcher holds no CPU: pinned to the driver's node, so it never lands on a device-only
    # node (a Pi) and survives losing any other node.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    pool = ScorerPool.options(name=f"{name}-pool", lifetime=None, scheduling_strategy=here).remote(
        [weights_ref], [batches_ref], size, name, cpus, threads, use_gpu, cache, hold=hold,
        journal=None if journal is None else str(journal), slots=slots)
    ray.get(pool.ready.remote())
    return pool


def cache_key(key: str, fidelity: float = 1.0) -> str:
    """The pool's cache key of an Arch's score on the share ``fidelity`` of the validation set:
    its key, with ``@share`` below 1."""
    return key if fidelity >= 1.0 else f"{key}@{fidelity!r}"


def read_journal(path: str | Path) -> dict[str, float]:
    """{cache key: loss} of a pool's journal (empty when missing); a torn last line is skipped."""
    from hat_ray.search.searcher import read_log  # the same JSON-lines reading as the evaluation log

    return {cache_key(e["key"], float(e.get("fidelity", 1.0))): float(e["loss"]) for e in read_log(path)}
