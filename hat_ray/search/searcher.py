"""EvolutionSearcher: a thin Ray Tune adapter over a pure search engine (evolution.py).

- One Tune trial scores a batch of candidates: a whole generation for a generational engine
  (``Engine.generational``), else up to ``batch`` Archs (what the engine hands out at once). The
  trial queues all of them on the ScorerPool at once and reports their losses in one result
  (``losses``, in the order of ``config["candidates"]``). Tune's cost is per trial (hundreds of
  ms on a small machine: trial bookkeeping, loggers, actor hand-over), so a trial per candidate
  made Tune the bottleneck of a HAT-sized search; and a generational search that ends all its
  trials at every barrier lost all but one reusable trial actor there (Tune keeps one cached
  actor when no trial is pending).
- Owns concurrency (``set_max_concurrency`` returns True); ``suggest`` returns None at a
  generation barrier and ``Searcher.FINISHED`` when the engine is done.
- Survives None / NaN / errored results (the engine records them as failed, never re-asks).
- ``save``/``restore`` write plain, versioned JSON (engine state, in-flight trials), atomically.
- A trial's candidates carry the share of the validation set they are scored on (``fidelity``:
  the engine's ``rung_fidelity`` when it handed them out; below 1 for the slice rung of a
  successive-halving search), and are recorded with it.
- Every recorded evaluation is appended (fsync) to an evaluation log. A resumed search builds
  a fresh engine with the same seed and passes the log as ``cache`` ({(Arch, fidelity): loss}):
  Archs the engine asks for that are in the cache (at that fidelity) are answered at once, in the engine's own order (so the generational
  engine retraces the interrupted run exactly), and nothing is evaluated twice.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from hat_ray.arch import Arch
from hat_ray.search.evolution import Engine

log = logging.getLogger(__name__)
SEARCHER_VERSION = 3  # 2: a trial carries a batch of Archs; 3: each with its fidelity
Asked = tuple[Arch, float]  # an Arch and the share of the validation set it is scored on


class EvolutionSearcher(Searcher):
    def __init__(self, engine: Engine, make_config: Callable[[list[Asked]], dict[str, Any]],
                 max_concurrent: int = 2, log_path: str | Path | None = None,
                 on_record: Callable[[list[tuple[Arch, float, int]]], None] | None = None,
                 cache: dict[Asked, float | None] | None = None,
                 notify: Callable[[str, str], None] | None = None, batch: int = 1,
                 metric: str = "valid_loss", mode: str = "min") -> None:
        super().__init__(metric=metric, mode=mode)
        self.engine = engine
        self.make_config = make_config  # [(Arch, fidelity), ...] -> a trial's config (score_trial's input)
        self.max_concurrent = max_concurrent
        self.batch = max(1, int(batch))
        self.ask_seconds = 0.0  # time in the engine handing out Archs (breeding, feasibility checks)
        self.live: dict[str, list[Asked]] = {}
        self.log_path = Path(log_path) if log_path else None
        self.on_record = on_record
        self.cache = dict(cache or {})
        # notify("expect" | "forget", trial_id): suggested / ended trials, for the ScorerPool's
        # start barrier (hat_ray.search.pool)
        self.notify = notify

    # ---- Tune protocol ----
    def set_max_concurrency(self, max_concurrent: int) -> bool:
        self.max_concurrent = max_concurrent
        return True

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # metric and mode are fixed by construction; the space is the engine's

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if len(self.live) >= self.max_concurrent:
            return None
        if self.engine.finished:
            return Searcher.FINISHED
        archs = self._ask_batch()
        if not archs and not self.live and self.engine.pending:
            # In flight according to a restored state, but no trial carries them: re-queue
            # (otherwise Tune would poll a searcher that waits forever).
            self.engine.requeue_pending()
            archs = self._ask_batch()
        if not archs:
            return Searcher.FINISHED if self.engine.finished else None
        self.live[trial_id] = archs
        if self.notify is not None:
            self.notify("expect", trial_id)
        return self.make_config(archs)

    def _ask_batch(self) -> list[Asked]:
        """The Archs of one trial: all the engine hands out now (a generation) for a generational
        engine, else up to ``batch``."""
        started = time.perf_counter()
        limit = None if self.engine.generational else self.batch
        archs: list[Asked] = []
        while limit is None or len(archs) < limit:
            asked = self._ask()
            if asked is None:
                break
            archs.append(asked)
        self.ask_seconds += time.perf_counter() - started
        return archs

    def _ask(self) -> Asked | None:
        """Next Arch to evaluate and its fidelity; Archs with a known result at that fidelity
        (resume cache) are answered here."""
        arch = self.engine.ask()
        while arch is not None and (arch, self.engine.rung_fidelity) in self.cache:
            fidelity = self.engine.rung_fidelity
            self.record(arch, self.cache.pop((arch, fidelity)), fidelity, log_it=False)
            arch = self.engine.ask()
        return None if arch is None else (arch, self.engine.rung_fidelity)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        archs = self.live.pop(trial_id, None)
        if self.notify is not None:
            self.notify("forget", trial_id)
        config = result.get("config") if result else None
        if archs is None and isinstance(config, dict) and "candidates" in config:
            archs = [(Arch.from_dict(c["arch"]), float(c.get("fidelity", 1.0)))  # a trial restored by Tune
                     for c in config["candidates"]]
        if archs is None:
            log.warning("result for unknown trial %s ignored", trial_id)
            return
        losses = result.get("losses") if not error and result is not None else None
        if not isinstance(losses, list) or len(losses) != len(archs):
            losses = [None] * len(archs)  # an errored trial: its candidates count as failed
        self.record_many([(arch, float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None, fidelity)
                          for (arch, fidelity), v in zip(archs, losses)])

    def record(self, arch: Arch, loss: float | None, fidelity: float = 1.0, log_it: bool = True) -> None:
        """Tell the engine and append to the evaluation log (first result per Arch and fidelity only)."""
        self.record_many([(arch, loss, fidelity)], log_it)

    def record_many(self, results: list[tuple[Arch, float | None, float]], log_it: bool = True) -> None:
        """:meth:`record` for a trial's batch: the engine hears each result, the evaluation log gets
        them in one append and one fsync (an fsync per candidate cost ~4 ms each on this VM: ~0.4 s
        of idle scorers at every generation barrier), ``on_record`` the full-fidelity ones in one
        call (a slice's loss is on another scale)."""
        lines: list[str] = []
        heard: list[tuple[Arch, float, int]] = []
        for arch, loss, fidelity in results:
            if self.engine.scored_at(arch) >= fidelity:
                continue
            self.engine.tell(arch, loss, fidelity)
            n = len(self.engine.scores)
            if log_it:
                lines.append(json.dumps({"n": n, "key": arch.key(), "arch": arch.to_dict(), "valid_loss": loss,
                                         "fidelity": fidelity, "time": time.time()}) + "\n")
            if fidelity >= 1.0:
                heard.append((arch, self.engine.scores[arch], n))
        if self.log_path is not None and lines:
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write("".join(lines))
                fh.flush()
                os.fsync(fh.fileno())
        if self.on_record is not None and heard:
            self.on_record(heard)

    # ---- state ----
    def get_state(self) -> dict[str, Any]:
        return {"version": SEARCHER_VERSION, "engine": self.engine.state_dict(),
                "live": {tid: [[a.to_dict(), f] for a, f in archs] for tid, archs in self.live.items()},
                "max_concurrent": self.max_concurrent, "batch": self.batch}

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("version") != SEARCHER_VERSION:
            raise ValueError(f"searcher state version {state.get('version')} != {SEARCHER_VERSION}")
        self.engine.load_state_dict(state["engine"])
        self.live = {tid: [(Arch.from_dict(a), f) for a, f in archs] for tid, archs in state["live"].items()}
        self.max_concurrent = state["max_concurrent"]
        self.batch = state["batch"]

    def save(self, checkpoint_path: str) -> None:
        # Tune already writes to a temporary path and renames it (and syncs the folder while
        # we write): a second temp file of ours in that folder would race with its copy.
        Path(checkpoint_path).write_text(json.dumps(self.get_state()), encoding="utf-8")

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(json.loads(Path(checkpoint_path).read_text(encoding="utf-8")))


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Entries of an evaluation log; a torn last line (killed mid-write) is skipped."""
    out: list[dict[str, Any]] = []
    if not Path(path).exists():
        return out
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("skipping a torn line in %s", path)
    return out


def log_cache(path: str | Path) -> dict[Asked, float | None]:
    """{(Arch, fidelity): loss} of an evaluation log (the resume cache; entries written before
    fidelities were recorded are full-fidelity)."""
    return {(Arch.from_dict(e["arch"]), float(e.get("fidelity", 1.0))): e["valid_loss"] for e in read_log(path)}
