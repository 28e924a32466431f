"""Search engine invariants (pure Python, no Ray), with a fake predictor and objective."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hat_ray.arch import Arch
from hat_ray.errors import InfeasibleError
from hat_ray.model.accounting import count_flops
from hat_ray.search.constraints import Constraint, Constraints
from hat_ray.search.evolution import HatEvolution, ParetoEvolution, RandomSearch, SteadyStateEvolution, make_engine
from hat_ray.space import SearchSpace

SPACE = SearchSpace.load("wmt14_en_de")


class FlopsPredictor:
    """Latency ~ FLOPs (plus decoder depth), with a fake uncertainty."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self.calls = 0

    def predict_with_uncertainty(self, archs):
        self.calls += 1
        mean = np.array([self.scale * (count_flops(a, 512, 30) / 1e7 + 20 * a.decoder_layers) for a in archs])
        return mean, 0.05 * mean


_TARGET = SPACE.sample(np.random.default_rng(42))


def fake_loss(arch: Arch) -> float:
    """Capacity helps with diminishing returns; on top, every per-layer gene that differs from a
    hidden target costs 0.03 (a separable landscape that selection can climb, random cannot)."""
    f = count_flops(arch, 512, 30) / 1e9
    misses = 0
    for key in ("encoder_self_attention_heads", "decoder_self_attention_heads",
                "decoder_ende_attention_heads", "decoder_arbitrary_ende_attn", "encoder_ffn_embed_dim"):
        mine, want = getattr(arch, key), getattr(_TARGET, key)
        misses += sum(a != b for a, b in zip(mine, want))
    return 6.0 - 0.5 * math.log1p(f) + 0.03 * misses


def run(engine, batch: int = 7, loss=fake_loss, max_steps: int = 100000):
    """Drive an engine with `batch` evaluations in flight, told in a shuffled order."""
    asked = []
    rng = np.random.default_rng(0)
    in_flight = []
    for _ in range(max_steps):
        while len(in_flight) < batch:
            arch = engine.ask()
            if arch is None:
                break
            asked.append(arch)
            in_flight.append(arch)
        if not in_flight:
            assert engine.finished
            return asked
        k = int(rng.integers(len(in_flight)))
        arch = in_flight.pop(k)
        engine.tell(arch, loss(arch))
    raise AssertionError("engine did not finish")


def small_hat(constraints=None, seed=0, **kw):
    args = dict(population=20, parents=5, mutations=8, crossovers=7, iterations=6)
    args.update(kw)
    return HatEvolution(SPACE, constraints, seed=seed, **args)


def limit(ms: float, margin: float = 0.0) -> Constraints:
    return Constraints([Constraint("xeon", ms, FlopsPredictor(), margin)])


def test_hat_generations_sizes_and_no_rescoring():
    cons = limit(150)
    engine = small_hat(cons)
    sizes = []
    orig = engine._next_generation

    def spy():
        orig()
        sizes.append(len(engine.population))

    engine._next_generation = spy
    asked = run(engine)
    assert sizes == [20] + [20] * 5  # 5 parents + 8 mutations + 7 crossovers
    assert len(asked) == len(set(asked)) == len(engine.scores)  # every Arch scored exactly once
    # parents are carried over without re-scoring: fewer evaluations than 6 x 20
    assert len(asked) == 20 + 5 * 15
    assert all(cons.feasible(asked))
    assert all(SPACE.contains(a) for a in asked)
    # the last generation was scored before the best was chosen
    best, loss = engine.best()
    assert loss == min(engine.scores.values())
    assert all(a in engine.scores for a in engine.population)


def test_constraint_always_met_with_margin():
    cons = limit(170, margin=2.0)
    asked = run(small_hat(cons, seed=3))
    pred = cons.items[0].predictor
    mean, std = pred.predict_with_uncertainty(asked)
    assert np.all(mean + 2 * std <= 170)
    assert np.any(mean + 2 * std > 150)  # the margin bites: plain 170 ms would admit these anyway


def test_infeasible_limit_raises_bounded_error():
    engine = small_hat(limit(1.0), max_attempts=3000)
    with pytest.raises(InfeasibleError) as exc:
        engine.ask()
    msg = str(exc.value)
    assert "xeon: limit 1 ms, smallest predicted" in msg and "3000 samples" in msg
    smallest = float(msg.split("smallest predicted ")[1].split(" ms")[0])
    assert smallest > 1.0


def test_evolution_beats_random_at_equal_budget():
    wins = 0
    for seed in range(3):
        evo = small_hat(limit(150), seed=seed, iterations=10)
        run(evo)
        rnd = RandomSearch(SPACE, limit(150), seed=seed, budget=len(evo.scores))
        run(rnd)
        wins += evo.best()[1] < rnd.best()[1]
    assert wins >= 2


def test_budget_caps_evaluations_and_finishes():
    engine = small_hat(limit(150), budget=33)
    asked = run(engine, batch=4)
    assert len(asked) == 33 and engine.finished


def test_steady_state_no_barrier_and_unique():
    engine = SteadyStateEvolution(SPACE, limit(150), seed=1, budget=120, population=20, parents=5)
    # with no results at all it still hands out Archs (no generation barrier)
    first = [engine.ask() for _ in range(30)]
    assert all(a is not None for a in first)
    for a in first:
        engine.tell(a, fake_loss(a))
    asked = first + run(engine, batch=5)
    assert len(asked) == len(set(asked)) == 120
    rnd = RandomSearch(SPACE, limit(150), seed=1, budget=120)
    run(rnd)
    assert engine.best()[1] <= rnd.best()[1] + 0.05


def test_failed_results_are_survived():
    engine = small_hat(limit(150), iterations=3)
    calls = {"n": 0}

    def flaky(arch):
        calls["n"] += 1
        return [None, float("nan"), fake_loss(arch)][calls["n"] % 3]

    run(engine, loss=flaky)
    assert engine.finished
    assert math.isfinite(engine.best()[1])
    assert sum(math.isinf(s) for s in engine.scores.values()) > 0


def test_pareto_front_is_nondominated_and_feasible():
    cons = Constraints([Constraint("xeon", 200, FlopsPredictor()), Constraint("rpi", 3000, FlopsPredictor(12.0))])
    engine = ParetoEvolution(SPACE, cons, seed=0, population=20, parents=6, mutations=8, crossovers=6, iterations=5)
    run(engine)
    front = engine.pareto_front()
    assert len(front) >= 3
    for arch, loss, lat in front:
        assert lat["xeon"] <= 200 and lat["rpi"] <= 3000
        for other, oloss, olat in front:
            dominates = oloss <= loss and olat["xeon"] <= lat["xeon"] and (oloss < loss or olat["xeon"] < lat["xeon"])
            assert not dominates or other == arch
    losses = [f[1] for f in front]
    assert losses == sorted(losses)


def test_state_round_trip_mid_generation_with_in_flight():
    """Save with Archs in flight, restore into a fresh engine (JSON round trip), re-queue the
    in-flight ones: the run finishes with the same result and no Arch scored twice."""
    ref = small_hat(limit(150), seed=5)
    run(ref)

    engine = small_hat(limit(150), seed=5)
    in_flight = []
    for _ in range(33):  # gen 0 (20) told, 13 of gen 1 asked, 4 of them still in flight
        a = engine.ask()
        while a is None:
            b = in_flight.pop(0)
            engine.tell(b, fake_loss(b))
            a = engine.ask()
        in_flight.append(a)
        if len(in_flight) > 4:
            b = in_flight.pop(0)
            engine.tell(b, fake_loss(b))
    state = json.loads(json.dumps(engine.state_dict()))
    assert len(state["pending"]) == 4
    restored = small_hat(limit(150), seed=99)
    restored.load_state_dict(state)
    restored.requeue_pending()
    asked = run(restored)
    assert not set(asked) & {a for a, _ in list(restored.scores.items())[: len(state["scores"])]}
    assert set(restored.scores) == set(ref.scores)
    assert restored.best() == ref.best()


def test_make_engine_and_bad_state():
    assert isinstance(make_engine("pareto", SPACE, limit(150)), ParetoEvolution)
    with pytest.raises(ValueError, match="unknown algorithm"):
        make_engine("nsga3", SPACE)
    engine = make_engine("random", SPACE, budget=5)
    with pytest.raises(ValueError, match="expected hat"):
        small_hat().load_state_dict(engine.state_dict())


def test_engine_options_are_declared_once_for_the_cli_the_pipeline_and_the_engines():
    import dataclasses

    from hat_ray.cli.main import build_parser
    from hat_ray.pipeline.config import SearchSection
    from hat_ray.search.evolution import ENGINES, EngineOptions

    declared = {f.name: f.default for f in dataclasses.fields(EngineOptions)}
    section = {f.name: f.default for f in dataclasses.fields(SearchSection)}
    assert {k: section[k] for k in declared} == declared  # the pipeline's defaults are the declared ones
    args = build_parser().parse_args(["search", "--supernet", "x", "--data", "y", "--out", "z"])
    assert {k: getattr(args, k) for k in declared} == declared  # so are the CLI's
    assert set(EngineOptions.USES) == set(ENGINES)
    for algorithm in ENGINES:  # every engine takes exactly the options it is declared to use
        assert EngineOptions().problems(algorithm) == []
        make_engine(algorithm, SearchSpace.load("demo"), None, 0, 10, **EngineOptions().kwargs(algorithm))
    bad = EngineOptions(population=4, parents=9, mutation_prob=1.5, iterations=0)
    assert len(bad.problems("hat")) == 3
    # steady: its two bad values, and iterations (a hat option) set but not used
    assert [p for p in bad.problems("steady") if "does not use" not in p] == [
        "parents (9) must be <= population (4)", "mutation_prob must be in [0, 1], got 1.5"]
    assert [p.split()[0] for p in bad.problems("steady") if "does not use" in p] == ["iterations"]
    assert [p.split()[0] for p in bad.problems("random")] == ["population", "parents", "mutation_prob", "iterations"]
    with pytest.raises(ValueError, match="parents"):
        HatEvolution(SearchSpace.load("demo"), parents=9, population=4)
