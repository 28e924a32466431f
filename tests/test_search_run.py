"""Scorers, the Ray pool, the Tune searcher and a whole search on a tiny SuperTransformer."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from search_helpers import FakePredictor, random_batches, tiny_space, tiny_super

from hat_ray.arch import Arch
from hat_ray.search.constraints import Constraint, Constraints
from hat_ray.search.evolution import HatEvolution, RandomSearch
from hat_ray.search.run import SearchOptions, hypervolume, run_search
from hat_ray.search.scorer import Scorer, pack_batches, pack_weights, unpack_batches, unpack_weights
from hat_ray.search.searcher import EvolutionSearcher, read_log
from hat_ray.train.loss import validation_loss


def test_shared_weights_scorer_matches_model_and_is_zero_copy():
    model = tiny_super()
    packed = pack_weights(model)
    assert "decoder_embed" in packed["aliases"]  # tied matrix stored once
    shared = unpack_weights(packed)
    assert shared.encoder_embed.data_ptr() == packed["arrays"]["encoder_embed"].ctypes.data
    assert shared.decoder_embed is shared.encoder_embed
    batches = random_batches()
    arch = tiny_space().sample(np.random.default_rng(0))
    s = Scorer(shared, unpack_batches(pack_batches(batches))).score(arch)
    assert s.loss == pytest.approx(validation_loss(model, arch, batches), abs=1e-6)


def limit(ms: float) -> Constraints:
    return Constraints([Constraint("fake", ms, FakePredictor())])


def _config(asked):
    return {"candidates": [{"arch": a.to_dict(), "key": a.key(), "fidelity": f} for a, f in asked]}


def _losses(config, values):
    return {"losses": values, "config": config}


def test_searcher_save_restore_round_trip_with_in_flight(tmp_path):
    engine = RandomSearch(tiny_space(), limit(30), seed=0, budget=20)
    searcher = EvolutionSearcher(engine, _config, max_concurrent=3, batch=2, log_path=tmp_path / "log.jsonl")
    configs = {f"t{i}": searcher.suggest(f"t{i}") for i in range(3)}
    assert all(len(c["candidates"]) == 2 for c in configs.values())  # a trial carries a batch
    assert searcher.suggest("t3") is None  # concurrency owned by the searcher
    searcher.on_trial_complete("t0", _losses(configs["t0"], [4.0, 5.0]))
    searcher.on_trial_complete("t1", None, error=True)  # errored trial survives: its batch counts as failed
    path = tmp_path / "searcher.json"
    searcher.save(str(path))
    state = json.loads(path.read_text())
    assert state["version"] == 3 and list(state["live"]) == ["t2"] and len(state["live"]["t2"]) == 2

    fresh = EvolutionSearcher(RandomSearch(tiny_space(), limit(30), seed=123, budget=20), _config)
    fresh.restore(str(path))
    assert fresh.get_state() == searcher.get_state()
    assert fresh.engine.rng.bit_generator.state == searcher.engine.rng.bit_generator.state
    # the in-flight trial completes after the restore, one candidate failed
    fresh.on_trial_complete("t2", _losses(configs["t2"], [float("nan"), 3.0]))
    t2 = [Arch.from_dict(c["arch"]) for c in configs["t2"]["candidates"]]
    assert fresh.engine.scores[t2[0]] == math.inf and fresh.engine.scores[t2[1]] == 3.0
    nxt = fresh.suggest("t4")
    seen = {c["key"] for config in configs.values() for c in config["candidates"]}
    assert nxt is not None and not {c["key"] for c in nxt["candidates"]} & seen
    assert len(read_log(tmp_path / "log.jsonl")) == 4  # t0's two and t1's two (failed)


def test_generational_engine_gets_one_trial_per_generation(tmp_path):
    engine = HatEvolution(tiny_space(), limit(30), seed=0, population=8, parents=3, mutations=3, crossovers=2,
                          iterations=3)
    searcher = EvolutionSearcher(engine, _config, max_concurrent=2, batch=1)  # batch: only for other engines
    first = searcher.suggest("g0")
    assert len(first["candidates"]) == 8 and searcher.suggest("x") is None  # the barrier
    searcher.on_trial_complete("g0", _losses(first, [float(i) for i in range(8)]))
    second = searcher.suggest("g1")
    assert len(second["candidates"]) == 5  # 3 mutations + 2 crossovers; the 3 parents are not re-scored
    # a trial Tune restored (not in `live`): its batch is read from its config
    fresh = EvolutionSearcher(engine, _config, max_concurrent=2)
    fresh.on_trial_complete("g1", _losses(second, [1.0] * 5))
    assert engine.generation == 1 and len(engine.scores) == 13


def test_hypervolume():
    assert hypervolume([(1.0, 5.0)], ref=(2.0, 10.0)) == pytest.approx(5.0)
    assert hypervolume([(1.0, 5.0), (1.5, 2.0)], ref=(2.0, 10.0)) == pytest.approx(5.0 + 0.5 * 3.0)


def test_run_search_two_scorers(ray_local, tmp_path):
    space, model = tiny_space(), tiny_super()
    options = SearchOptions(algorithm="hat", scorers=2, seed=1,
                            engine_kwargs=dict(population=10, parents=4, mutations=4, crossovers=2, iterations=3))
    result = run_search(space, pack_weights(model), pack_batches(random_batches()), limit(30), tmp_path, options)
    assert result["evaluations"] == len(read_log(tmp_path / "evaluations.jsonl")) == 10 + 2 * 6
    # one trial per generation, and Tune reuses its actor across the barriers: one trial actor
    assert result["trial_actors"] == 1
    # the scoring work: every scored candidate's validation target tokens
    assert result["tokens_scored"] == result["scored"] * sum(b.ntokens for b in random_batches())
    # where the scorers idled: 2 generation barriers, the engine breeding the next generation
    assert result["engine_ask_seconds"] > 0 and 0 < result["between_batches_seconds"] < result["tune_seconds"]
    trials = pd.read_parquet(tmp_path / "trials.parquet")
    assert len(trials) == result["evaluations"] and trials["key"].is_unique
    assert (trials["latency_fake"] <= 30).all()
    best = result["best"]
    assert best["valid_loss"] == pytest.approx(trials["valid_loss"].min())
    arch = Arch.from_dict(yaml.safe_load((tmp_path / "best_arch.yaml").read_text()))
    assert arch.key() == best["key"]
    assert (tmp_path / "best_arch_hat.yaml").exists() and (tmp_path / "pareto.png").stat().st_size > 1000
    # every score equals a direct evaluation on the same weights
    direct = validation_loss(model, arch, random_batches())
    assert math.isclose(best["valid_loss"], direct, abs_tol=1e-5)
    # and each candidate's own (a batch is dispatched in another order than it was suggested)
    for entry in read_log(tmp_path / "evaluations.jsonl")[::5]:
        assert math.isclose(entry["valid_loss"], validation_loss(model, Arch.from_dict(entry["arch"]),
                                                                 random_batches()), abs_tol=1e-5)
    assert list((tmp_path / "tune").iterdir())
    # the search's own TensorBoard scalars are all written when run_search returns
    board = _scalars(tmp_path / "tb")
    assert len(board["search/valid_loss"]) == result["evaluations"] - result["failed"]
    assert min(v for _, v in board["search/best_valid_loss"]) == pytest.approx(best["valid_loss"])


def test_scorer_threads_reserve_cpus(ray_local):
    """A scorer with N torch threads reserves N CPUs: --threads is part of the capacity check."""
    from hat_ray.errors import HatRayError
    from hat_ray.search.run import _check_capacity

    assert SearchOptions(threads_per_scorer=3).cpus == 3 and SearchOptions(threads_per_scorer=3, scorer_cpus=1).cpus == 1
    _check_capacity(SearchOptions(scorers=2, threads_per_scorer=2))  # 4 CPUs: fits the 4-CPU instance
    with pytest.raises(HatRayError, match=r"2 scorers need 6 CPUs \(3 each: one per --threads and slot\) but the "
                                          r"cluster has 4: use --scorers 1, fewer --threads or --scorer-slots"):
        _check_capacity(SearchOptions(scorers=2, threads_per_scorer=3))
    with pytest.raises(HatRayError, match=r"2 scorers need 6 CPUs \(3 each"):  # slots reserve a CPU each
        _check_capacity(SearchOptions(scorers=2, scorer_slots=3))
    with pytest.raises(HatRayError, match=r"--scorer-slots above 1 is for CPU scorers"):
        _check_capacity(SearchOptions(scorers=1, scorer_slots=2, use_gpu=True))


def test_scorer_slots_score_in_one_process_without_mixing_archs(ray_local):
    """--scorer-slots 2: one scorer process scores two candidates at once, each slot on its own
    model object over the same shared weights, so concurrent Archs never mix."""
    import ray

    from hat_ray.search.pool import start_pool

    space, model = tiny_space(), tiny_super()
    batches = random_batches()
    rng = np.random.default_rng(5)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(8)))
    pool = start_pool(pack_weights(model), pack_batches(batches), 1, "slots-test", slots=2)
    try:
        results = ray.get(pool.score_many.remote([a.to_dict() for a in archs]))
        stats = ray.get(pool.stats.remote())
    finally:
        ray.kill(pool)
    assert len({r["pid"] for r in results}) == 1 and stats["size"] == 1 and stats["slots"] == 2
    for arch, r in zip(archs, results):
        assert math.isclose(r["loss"], validation_loss(model, arch, batches), abs_tol=1e-5)
    [info] = stats["scorers"]
    assert info["weights_private_bytes"] == 0 and info["weights_shared_bytes"] > 0


def test_a_batch_is_dispatched_most_flops_first():
    from hat_ray.search.trial import dispatch_order

    assert dispatch_order([{"flops": 5}, {"flops": 9}, {"flops": 1}, {"flops": 7}]) == [1, 3, 0, 2]


def _scalars(folder):
    """{tag: [(step, value)]} of the TensorBoard event files in ``folder`` (TFRecord framing)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list] = {}
    for path in sorted(folder.iterdir()):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_a_batch_is_recorded_at_once_log_and_tensorboard(tmp_path):
    from hat_ray.search.run import _BestSoFar

    heard = []
    engine = RandomSearch(tiny_space(), limit(30), seed=0, budget=20)
    board = _BestSoFar(tmp_path / "tb", limit(30))
    searcher = EvolutionSearcher(engine, _config, max_concurrent=1, batch=4, log_path=tmp_path / "log.jsonl",
                                 on_record=lambda records: (heard.append(list(records)), board(records)))
    config = searcher.suggest("t0")
    searcher.on_trial_complete("t0", _losses(config, [5.0, float("nan"), 4.0, 6.0]))
    assert len(heard) == 1 and [n for _, _, n in heard[0]] == [1, 2, 3, 4]  # one call for the trial's batch
    assert [e["valid_loss"] for e in read_log(tmp_path / "log.jsonl")] == [5.0, None, 4.0, 6.0]
    board.close()
    tags = _scalars(tmp_path / "tb")
    assert tags["search/valid_loss"] == [(1, 5.0), (3, 4.0), (4, 6.0)]
    assert tags["search/best_valid_loss"] == [(1, 5.0), (2, 5.0), (3, 4.0), (4, 4.0)]
    assert [step for step, _ in tags["search/hypervolume"]] == [4] and tags["search/hypervolume"][0][1] > 0
