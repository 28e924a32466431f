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
from hat_ray.search.evolution import HatEvolution
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


def _config(arch):
    return {"arch": arch.to_dict(), "key": arch.key()}


def test_searcher_save_restore_round_trip_with_in_flight(tmp_path):
    engine = HatEvolution(tiny_space(), limit(30), seed=0, population=8, parents=3, mutations=3, crossovers=2,
                          iterations=3)
    searcher = EvolutionSearcher(engine, _config, max_concurrent=3, log_path=tmp_path / "log.jsonl")
    configs = {f"t{i}": searcher.suggest(f"t{i}") for i in range(3)}
    assert searcher.suggest("t3") is None  # concurrency owned by the searcher
    searcher.on_trial_complete("t0", {"valid_loss": 4.0})
    searcher.on_trial_complete("t1", None, error=True)  # errored trial survives
    path = tmp_path / "searcher.json"
    searcher.save(str(path))
    state = json.loads(path.read_text())
    assert state["version"] == 1 and list(state["live"]) == ["t2"]

    fresh = EvolutionSearcher(HatEvolution(tiny_space(), limit(30), seed=123, population=8, parents=3,
                                           mutations=3, crossovers=2, iterations=3), _config)
    fresh.restore(str(path))
    assert fresh.get_state() == searcher.get_state()
    assert fresh.engine.rng.bit_generator.state == searcher.engine.rng.bit_generator.state
    # the in-flight trial completes after the restore
    fresh.on_trial_complete("t2", {"valid_loss": float("nan")})
    assert Arch.from_dict(configs["t2"]["arch"]) in fresh.engine.scores
    nxt = fresh.suggest("t4")
    assert nxt is not None and nxt["key"] not in {c["key"] for c in configs.values()}
    assert len(read_log(tmp_path / "log.jsonl")) == 2


def test_hypervolume():
    assert hypervolume([(1.0, 5.0)], ref=(2.0, 10.0)) == pytest.approx(5.0)
    assert hypervolume([(1.0, 5.0), (1.5, 2.0)], ref=(2.0, 10.0)) == pytest.approx(5.0 + 0.5 * 3.0)


def test_run_search_two_scorers(ray_local, tmp_path):
    space, model = tiny_space(), tiny_super()
    options = SearchOptions(algorithm="hat", scorers=2, seed=1,
                            engine_kwargs=dict(population=10, parents=4, mutations=4, crossovers=2, iterations=3))
    result = run_search(space, pack_weights(model), pack_batches(random_batches()), limit(30), tmp_path, options)
    assert result["evaluations"] == len(read_log(tmp_path / "evaluations.jsonl")) == 10 + 2 * 6
    # Tune reused its trial actors: 4 in flight, so 4 for generation 0 plus at most 3 new ones per
    # later generation (Tune keeps one actor across a generation barrier), not one per candidate
    assert 4 <= result["trial_actors"] <= 4 + 2 * 3 < result["evaluations"]
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
    assert list((tmp_path / "tune").iterdir())
    assert list((tmp_path / "tb").iterdir())


def test_scorer_threads_reserve_cpus(ray_local):
    """A scorer with N torch threads reserves N CPUs: --threads is part of the capacity check."""
    from hat_ray.errors import HatRayError
    from hat_ray.search.run import _check_capacity

    assert SearchOptions(threads_per_scorer=3).cpus == 3 and SearchOptions(threads_per_scorer=3, scorer_cpus=1).cpus == 1
    _check_capacity(SearchOptions(scorers=2, threads_per_scorer=2))  # 4 CPUs: fits the 4-CPU instance
    with pytest.raises(HatRayError, match=r"2 scorers need 6 CPUs \(3 each: one per --threads\) but the cluster "
                                          r"has 4: use --scorers 1, fewer --threads"):
        _check_capacity(SearchOptions(scorers=2, threads_per_scorer=3))
