"""run_search: wire a search engine, the ScorerPool and Ray Tune together; write the results.

Outputs in ``out``::

    result.json          best Arch (or Pareto set) with loss, predicted latency, params, FLOPs
    trials.parquet       one row per evaluated Arch (order, loss, latency per device, ...)
    best_arch.yaml       the best Arch, hat-ray format;  best_arch_hat.yaml: HAT's format
    pareto.png           loss vs predicted latency, Pareto front highlighted
    evaluations.jsonl    durable evaluation log (what --resume replays)
    scored.jsonl         every score as the pool got it (a --resume answers these without
                         scoring them again, also those of a batch whose trial never reported)
    search_config.json   what the scores depend on (hashes of weights, batches, predictors; the
                         engine's settings): a --resume that changes any of it is refused
    tune/                Ray Tune experiment (TensorBoard logs per trial);  tb/: best-so-far curve

With ``measure_top`` K > 0 the final top-K (best K by loss; Pareto: up to K along the front)
are re-measured on the real constrained devices through the latency probes after the search;
result.json then reports measured vs predicted latency (``top``, ``measured``). The devices are
checked before the search starts: a device without a node fails at once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.execution.placement_groups import PlacementGroupFactory

from hat_ray.arch import Arch
from hat_ray.cluster import require_devices
from hat_ray.errors import ConfigError, HatRayError
from hat_ray.latency.profile import DeviceProfile
from hat_ray.search.constraints import Constraints
from hat_ray.search.evolution import make_engine
from hat_ray.search.pool import read_journal, start_pool
from hat_ray.search.report import top_candidates, write_outputs
from hat_ray.search.result import SearchFolder, SearchResult, search_fingerprint
from hat_ray.search.scorer import slice_batches
from hat_ray.search.searcher import EvolutionSearcher, log_cache
from hat_ray.search.trial import score_trial
from hat_ray.space import SearchSpace
from hat_ray.summary import arch_summary

log = logging.getLogger(__name__)
EXPERIMENT = "search"


@dataclass
class SearchOptions:
    algorithm: str = "hat"
    budget: int | None = None
    scorers: int = 2
    seed: int = 0
    threads_per_scorer: int = 1
    scorer_cpus: float | None = None  # CPUs reserved per scorer (default: one per thread)
    scorer_slots: int = 1  # candidates each scorer process scores at once (threads sharing its weights)
    use_gpu: bool = False
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    measure_top: int = 0  # re-measure the final top-K on the constrained devices (0: off)

    @property
    def cpus(self) -> float:
        """CPUs each scorer reserves: its torch threads unless set otherwise."""
        return float(self.threads_per_scorer if self.scorer_cpus is None else self.scorer_cpus)

    def fingerprint(self, weights: dict[str, Any], batches: list[dict[str, Any]], constraints: Constraints,
                    run_info: dict[str, Any] | None = None) -> dict[str, Any]:
        """What a resume must match (hat_ray.search.result.search_fingerprint)."""
        return search_fingerprint(weights, batches, constraints, self.algorithm, self.seed, self.budget,
                                  self.engine_kwargs, run_info,
                                  {"scorers": self.scorers, "threads_per_scorer": self.threads_per_scorer,
                                   "scorer_cpus": self.cpus, "use_gpu": self.use_gpu, "scorer_slots": self.scorer_slots})


def _make_config(space: SearchSpace, constraints: Constraints, pool: str, namespace: str | None):
    def make(asked: list[tuple[Arch, float]]) -> dict[str, Any]:
        return {"candidates": [{**arch_summary(a, space, constraints), "fidelity": f} for a, f in asked],
                "pool": pool, "namespace": namespace}

    return make


def trial_shape(generational: bool, slots: int) -> tuple[int, int]:
    """(trials in flight, candidates per trial) for ``slots`` candidates scored at once (scorers x
    their slots). A generational engine: one trial per generation (the whole generation queued
    on the pool at once; at the barrier Tune keeps the one trial actor for the next generation).
    Others: 2 trials of 4 candidates per slot, so one trial's candidates keep the scorers busy
    while Tune ends the other and starts the next."""
    return (1, 1) if generational else (2, 4 * slots)


class _BestSoFar:
    """TensorBoard scalars of the search itself: best loss so far (and hypervolume for 1 device)."""

    def __init__(self, logdir: Path, constraints: Constraints) -> None:
        self.logdir = logdir
        self.writer: Any = None  # opened lazily: Tune pickles the searcher (and this hook)
        self.constraints = constraints
        self.best = math.inf
        self.points: list[tuple[float, float]] = []

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "writer": None}

    def __call__(self, records: list[tuple[Arch, float, int]]) -> None:
        """A batch of (Arch, loss, evaluation number): best and loss per evaluation, the
        hypervolume once per batch (it is over every point so far), one flush."""
        if self.writer is None:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(str(self.logdir), flush_secs=10)  # a live view while the search runs
        for _, loss, n in records:
            if math.isfinite(loss):
                self.best = min(self.best, loss)
                self.writer.add_scalar("search/valid_loss", loss, n)
            if math.isfinite(self.best):
                self.writer.add_scalar("search/best_valid_loss", self.best, n)
        ok = [(arch, loss) for arch, loss, _ in records if math.isfinite(loss)]
        if ok and len(self.constraints.items) == 1 and math.isfinite(self.constraints.items[0].limit_ms):
            c = self.constraints.items[0]
            self.points += zip((loss for _, loss in ok), c.predict([arch for arch, _ in ok])[0])
            self.writer.add_scalar("search/hypervolume", hypervolume(self.points, ref=(None, c.limit_ms)),
                                   records[-1][2])
        self.writer.flush()

    def close(self) -> None:
        """Write out every queued event (the writer's thread batches them)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def hypervolume(points: list[tuple[float, float]], ref: tuple[float | None, float]) -> float:
    """2-D hypervolume (minimisation) of (loss, latency) points w.r.t. a reference point; the
    loss reference defaults to the worst loss seen (+1 %)."""
    if not points:
        return 0.0
    ref_loss = ref[0] if ref[0] is not None else max(p[0] for p in points) * 1.01
    pts = sorted(p for p in points if p[0] < ref_loss and p[1] < ref[1])
    volume, best_lat = 0.0, ref[1]
    for loss, lat in pts:
        if lat < best_lat:
            volume += (ref_loss - loss) * (best_lat - lat)
            best_lat = lat
    return volume


def run_search(space: SearchSpace, weights: dict[str, Any], batches: list[dict[str, Any]],
               constraints: Constraints, out: str | Path, options: SearchOptions,
               resume: bool = False, run_info: dict[str, Any] | None = None,
               profiles: Sequence[DeviceProfile] | None = None) -> SearchResult:
    """Run (or resume) a search; returns its result (also written to ``out/result.json``).
    Ray must already be initialised (see hat_ray.cluster / the CLI). ``profiles``: the device
    profile of each constrained device for ``options.measure_top`` (default: the bundled
    profile named like the device). ``run_info`` is recorded in the result; its ``data``,
    ``valid_sentences`` and ``max_tokens`` name how ``batches`` were made (a resume that
    changes them is refused by name)."""
    out = Path(out).resolve()
    folder = SearchFolder(out)
    folder.check(resume)
    _check_capacity(options)
    measure_profiles = measurement_profiles(constraints, options.measure_top, profiles)
    if measure_profiles:
        require_devices(list(measure_profiles.values()))  # a device without a node fails before the search
    folder.check_resume(options.fingerprint(weights, batches, constraints, run_info), resume)
    engine = make_engine(options.algorithm, space, constraints, options.seed, options.budget, **options.engine_kwargs)
    log_path = folder.log_path
    cache = log_cache(log_path) if resume else {}
    name = f"hat-ray-search-{uuid.uuid4().hex[:6]}"
    namespace = ray.get_runtime_context().namespace
    # A trial carries a batch of candidates (trial_shape); the pool's start barrier keeps Tune
    # reusing the trial actors (see hat_ray.search.pool). Scores the pool journaled before an
    # interruption are answered from its cache on --resume.
    journal = out / "scored.jsonl"
    low = getattr(engine, "low_fidelity", 1.0)  # successive halving: the slice new Archs are first scored on
    slices = {low: slice_batches(batches, low, options.seed)} if low < 1.0 else None
    pool = start_pool(weights, batches, options.scorers, name, options.cpus, options.threads_per_scorer,
                      options.use_gpu, cache=read_journal(journal) if resume else None, hold=True, journal=journal,
                      slots=options.scorer_slots, slices=slices)
    in_flight, per_trial = trial_shape(engine.generational, options.scorers * options.scorer_slots)
    started = time.time()
    try:
        board = _BestSoFar(out / "tb", constraints)
        searcher = EvolutionSearcher(engine, _make_config(space, constraints, f"{name}-pool", namespace),
                                     max_concurrent=in_flight, batch=per_trial, log_path=log_path,
                                     on_record=board, cache=cache,
                                     notify=lambda event, trial: getattr(pool, event).remote(trial))
        fit_started = time.time()
        with contextlib.redirect_stdout(sys.stderr), _quiet_tune():  # keep stdout for results (--json)
            try:
                _tuner(out, searcher, attempt=_next_attempt(out)).fit()
            finally:
                board.close()
        fit_seconds = time.time() - fit_started
        stats = ray.get(pool.stats.remote())
    finally:
        ray.kill(pool)  # its scorers go with it: their CPUs are free for the probes
    info = {**(run_info or {}), "algorithm": options.algorithm, "scorers": options.scorers,
            "scorer_slots": options.scorer_slots,
            "wall_seconds": time.time() - started, "tune_seconds": round(fit_seconds, 3),
            "scorer_retries": stats["retries"], "scored": stats["scored"], "tokens_scored": stats["tokens_scored"],
            "pool_cache_hits": stats["cache_hits"],
            "scorer_busy_seconds": round(stats["busy_seconds"], 3),
            "scoring_window_seconds": round(stats["window_seconds"], 3),
            # the window's gaps with nothing queued (generation barriers: Tune's turnaround and the
            # engine breeding the next generation, of which engine_ask_seconds)
            "between_batches_seconds": round(stats["between_batches_seconds"], 3),
            "engine_ask_seconds": round(searcher.ask_seconds, 3),
            "trial_actors": stats["trial_actors"]}
    if slices:
        full = engine.full_scores()
        info["multi_fidelity"] = {"fidelity": low, "slice_pairs": sum(len(b["target"]) for b in slices[low]),
                                  "valid_pairs": sum(len(b["target"]) for b in batches),
                                  "full_fidelity_evaluations": len(full),
                                  "slice_only_evaluations": len(engine.scores) - len(full)}
    top, measured = None, None
    if measure_profiles:
        t0 = time.time()
        top = top_candidates(engine, options.measure_top, pareto=engine.multi_objective)
        measured = measure_candidates([a for a, _ in top], measure_profiles, space,
                                      {c.device: c.predictor for c in constraints.items})
        info["measure_seconds"] = round(time.time() - t0, 2)
    return write_outputs(out, space, engine, constraints, info, top=top, measured=measured)


def measurement_profiles(constraints: Constraints, k: int, profiles: Sequence[DeviceProfile] | None = None
                         ) -> dict[str, DeviceProfile]:
    """{constrained device: its DeviceProfile} for re-measuring the top ``k`` ({} when k is 0).
    A device without a given profile is loaded as a bundled profile (or YAML path) of that name."""
    if k < 0:
        raise HatRayError(f"--measure-top must be 0 (off) or a positive number of candidates, got {k}")
    if k == 0:
        return {}
    if not constraints.items:
        raise HatRayError("--measure-top needs at least one --device PROFILE[:LIMIT_MS] to measure on")
    given = {p.name: p for p in profiles or ()}
    out: dict[str, DeviceProfile] = {}
    for device in constraints.devices:
        if device in given:
            out[device] = given[device]
            continue
        try:
            out[device] = DeviceProfile.load(device)
        except ConfigError as exc:
            raise HatRayError(f"--measure-top measures on the --device profiles, but {device!r} is not one "
                              f"({exc.problems[0]}); name the device by its profile or drop --measure-top") from None
    return out


def measure_candidates(archs: list[Arch], profiles: dict[str, DeviceProfile], space: SearchSpace,
                       predictors: dict[str, Any] | None = None) -> dict[str, dict[str, float]]:
    """{arch key: {device: measured ms}} through the latency probes (hat_ray.latency.probe). Where
    a device's predictor is in reference units, the ms are the measured ratio to the reference x
    the predictor's calibration (:meth:`LatencyPredictor.comparable_ms`): what its predictions
    and the limit mean on a machine whose speed drifts."""
    from hat_ray.latency.probe import measure_on_devices

    by_profile = {p.name: p for p in profiles.values()}
    records = measure_on_devices(archs, list(by_profile.values()), space)
    measured: dict[str, dict[str, float]] = {a.key(): {} for a in archs}
    for device, profile in profiles.items():
        predictor = (predictors or {}).get(device)
        for record in records[profile.name]:
            ms = predictor.comparable_ms(record) if hasattr(predictor, "comparable_ms") else record["latency_ms"]
            measured[record["arch_key"]][device] = float(ms)
    return measured


def _tuner(out: Path, searcher: EvolutionSearcher, attempt: int) -> tune.Tuner:
    """A fresh Tune experiment per attempt (search, search-2, ...): a resumed search does not
    depend on Tune's own snapshot; the evaluation log is the source of truth."""
    # Trials only route a candidate to the pool: they hold no CPU (the scorers do), and stay on the
    # driver's node (a zero-CPU actor could otherwise land on a device-only node such as a Pi).
    here = {"ray.io/node-id": ray.get_runtime_context().get_node_id()}
    bundle = PlacementGroupFactory([{"memory": 2**20}], bundle_label_selector=[here])  # Tune needs a non-empty bundle
    trainable = tune.with_resources(score_trial, bundle)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, reuse_actors=True,
                                    max_concurrent_trials=searcher.max_concurrent),
        run_config=tune.RunConfig(name=EXPERIMENT if attempt == 1 else f"{EXPERIMENT}-{attempt}",
                                  storage_path=str(out / "tune"), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=2)),
    )


@contextlib.contextmanager
def _quiet_tune():
    """Tune's newer output engine prints its experiment banner even at ``verbose=0``; its
    older one (``RAY_AIR_NEW_OUTPUT=0``) honours it. hat-ray has its own progress output."""
    before = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = before


def _next_attempt(out: Path) -> int:
    tune_dir = out / "tune"
    if not tune_dir.exists():
        return 1
    return 1 + sum(1 for p in tune_dir.iterdir() if p.is_dir() and p.name.startswith(EXPERIMENT))


def _check_capacity(options: SearchOptions) -> None:
    """Fail fast instead of leaving scorer actors pending forever."""
    if options.scorer_slots < 1:
        raise HatRayError(f"--scorer-slots must be at least 1, got {options.scorer_slots}")
    if options.use_gpu and options.scorer_slots > 1:
        raise HatRayError("--scorer-slots above 1 is for CPU scorers (a GPU slot would copy the weights to the "
                          "device again): drop --gpu or --scorer-slots")
    total = ray.cluster_resources()
    per_scorer = options.cpus * options.scorer_slots
    need, have = options.scorers * per_scorer, total.get("CPU", 0.0)
    if need > have:
        per = f" ({per_scorer:g} each: one per --threads and slot)" if per_scorer != 1 else ""
        raise HatRayError(f"{options.scorers} scorers need {need:g} CPUs{per} but the cluster has {have:g}: "
                          f"use --scorers {max(1, int(have // per_scorer))}, fewer --threads or --scorer-slots, "
                          f"or add nodes")
    if options.use_gpu and options.scorers > total.get("GPU", 0.0):
        raise HatRayError(f"{options.scorers} GPU scorers need {options.scorers} GPUs but the cluster has "
                          f"{total.get('GPU', 0):g}: drop --gpu or use fewer --scorers")
