"""Multi-fidelity search (successive halving within a generation): the engine's rungs, the
validation slice, the searcher's (Arch, fidelity) bookkeeping and resume, and a whole search."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pandas as pd
import pytest
from search_helpers import FakePredictor, random_batches, tiny_space, tiny_super

from hat_ray.arch import Arch
from hat_ray.search.constraints import Constraint, Constraints
from hat_ray.search.evolution import HatEvolution, ParetoEvolution, make_engine
from hat_ray.search.pool import cache_key, read_journal
from hat_ray.search.run import SearchOptions, run_search
from hat_ray.search.scorer import Scorer, pack_batches, pack_weights, slice_batches, unpack_batches
from hat_ray.search.searcher import EvolutionSearcher, log_cache, read_log
from hat_ray.tokens import PAD
from hat_ray.train.loss import validation_loss

SMALL = dict(population=12, parents=4, mutations=5, crossovers=4, iterations=4)


def limit(ms: float = 38.0) -> Constraints:
    return Constraints([Constraint("fake", ms, FakePredictor())])


def _hash(arch: Arch, salt: str) -> int:
    return int(hashlib.sha256((salt + arch.key()).encode()).hexdigest(), 16)


def true_loss(arch: Arch) -> float:
    """Deterministic, distinct per Arch."""
    return 5.0 + _hash(arch, "full") % 10_000 / 10_000


def slice_loss(arch: Arch) -> float:
    """The slice's view: the true loss plus a per-Arch offset (another scale, noisy ranking)."""
    return true_loss(arch) + 0.3 + _hash(arch, "slice") % 100 / 1000


def drive(engine: HatEvolution, max_steps: int = 10_000) -> list[tuple[Arch, float]]:
    """Ask everything the engine hands out, tell it (slice or true loss by fidelity), until
    finished; returns every (Arch, fidelity) asked, checking the rung contract on the way."""
    asked: list[tuple[Arch, float]] = []
    for _ in range(max_steps):
        batch = []
        while (arch := engine.ask()) is not None:
            fidelity = engine.rung_fidelity
            assert engine.scored_at(arch) < fidelity  # never re-asked at a fidelity it already has
            if fidelity == 1.0 and engine.low_fidelity < 1.0:
                assert 0 < engine.scored_at(arch) < 1.0  # the full set only after the slice
            batch.append((arch, fidelity))
        if not batch:
            assert engine.finished
            return asked
        assert len({f for _, f in batch}) == 1  # one rung per batch (a barrier between rungs)
        asked += batch
        for arch, fidelity in batch:
            engine.tell(arch, slice_loss(arch) if fidelity < 1 else true_loss(arch), fidelity)
    raise AssertionError("the engine did not finish")


def test_successive_halving_promotes_the_best_of_each_generation_and_ranks_full_scores_only():
    engine = HatEvolution(tiny_space(), limit(), seed=3, fidelity=0.25, promote=0.25, **SMALL)
    asked = drive(engine)
    slice_asks = [a for a, f in asked if f == 0.25]
    full_asks = [a for a, f in asked if f == 1.0]
    assert len(slice_asks) == len(set(slice_asks)) == len(engine.scores) == 12 + 3 * 9
    # generation 0: max(ceil(0.25 x 12), 4 parents) = 4 promoted; then ceil(0.25 x 9) = 3 per generation
    assert len(full_asks) == len(set(full_asks)) == 4 + 3 * 3
    assert set(engine.full_scores()) == set(full_asks)
    assert all(engine.scores[a] == true_loss(a) for a in full_asks)
    # the best is the best full-fidelity score, although slice scores are on another scale
    best, loss = engine.best()
    assert best in full_asks and loss == min(true_loss(a) for a in full_asks)
    # the last generation's parents were all scored on the whole validation set
    assert all(engine.scored_at(p) == 1.0 for p in engine.select_parents(engine.population))


def test_promotions_are_the_generations_best_on_the_slice():
    engine = HatEvolution(tiny_space(), limit(), seed=0, fidelity=0.5, promote=0.5, **SMALL)
    first = []
    while (arch := engine.ask()) is not None:
        first.append(arch)
    assert engine.rung_fidelity == 0.5 and len(first) == 12
    for arch in first:
        engine.tell(arch, slice_loss(arch), 0.5)
    promoted = []
    while (arch := engine.ask()) is not None:
        promoted.append(arch)
    assert engine.rung_fidelity == 1.0
    assert promoted == sorted(first, key=slice_loss)[:6]  # ceil(0.5 x 12)


def test_off_by_default_and_identical_to_hat():
    plain = make_engine("hat", tiny_space(), limit(), 5, None, **SMALL)
    halving_off = make_engine("hat", tiny_space(), limit(), 5, None, fidelity=1.0, **SMALL)
    assert [a for a, _ in drive(plain)] == [a for a, _ in drive(halving_off)]
    assert not plain.fidelity and plain.full_scores() == plain.scores


def test_state_round_trip_between_rungs_continues_identically():
    a = HatEvolution(tiny_space(), limit(), seed=4, fidelity=0.25, **SMALL)
    b = HatEvolution(tiny_space(), limit(), seed=99, fidelity=0.25, **SMALL)
    batch = []
    while (arch := a.ask()) is not None:
        batch.append(arch)
    for arch in batch:
        a.tell(arch, slice_loss(arch), 0.25)
    b.load_state_dict(a.state_dict())  # after the slice rung, before its promotion
    assert [x for x, _ in drive(a)] == [x for x, _ in drive(b)]
    assert a.scores == b.scores and a.fidelity == b.fidelity


def test_a_budget_that_runs_out_mid_generation_still_promotes():
    engine = HatEvolution(tiny_space(), limit(), seed=1, budget=15, fidelity=0.25, **SMALL)
    drive(engine)
    assert len(engine.scores) == 15 and engine.full_scores()  # the budget counts distinct Archs
    engine.best()


def test_pareto_promotes_by_nondominated_rank():
    engine = ParetoEvolution(tiny_space(), limit(math.inf), seed=2, fidelity=0.25, **SMALL)
    asked = drive(engine)
    assert {a for a, f in asked if f == 1.0} == set(engine.full_scores())
    front = engine.pareto_front()
    assert front and all(engine.scored_at(a) == 1.0 for a, _, _ in front)


@pytest.mark.parametrize("fraction", [0.25, 0.5, 1.0])
def test_slice_is_a_fixed_random_share_of_the_pairs(fraction):
    batches = pack_batches(random_batches(n=6))  # 24 pairs
    cut = slice_batches(batches, fraction, seed=7)

    def pairs(packed):
        return [(tuple(s[s != PAD]), tuple(t[t != PAD])) for b in packed for s, t in zip(b["src"], b["target"])]

    every, chosen = pairs(batches), pairs(cut)
    assert pairs(slice_batches(batches, fraction, seed=7)) == chosen  # deterministic
    assert len(chosen) == round(fraction * 24) and len(set(chosen)) == len(chosen)
    assert set(chosen) <= set(every)
    for b in cut:  # same layout as the originals: previous tokens = EOS + target shifted
        assert np.array_equal(b["prev"][:, 1:][b["target"][:, 1:] != PAD], b["target"][:, :-1][b["target"][:, 1:] != PAD])
    if fraction < 1:
        assert pairs(slice_batches(batches, fraction, seed=8)) != chosen
    # a scorer on the slice counts the slice's target tokens as its work
    assert Scorer(tiny_super(), unpack_batches(cut)).tokens == sum(int((b["target"] != PAD).sum()) for b in cut)


def _config(asked):
    return {"candidates": [{"arch": a.to_dict(), "key": a.key(), "fidelity": f} for a, f in asked]}


def _complete(searcher, tid, config):
    losses = [slice_loss(Arch.from_dict(c["arch"])) if c["fidelity"] < 1 else true_loss(Arch.from_dict(c["arch"]))
              for c in config["candidates"]]
    searcher.on_trial_complete(tid, {"losses": losses, "config": config})


def test_searcher_logs_fidelities_and_a_resume_retraces_both_rungs(tmp_path):
    def engine():
        return HatEvolution(tiny_space(), limit(), seed=6, fidelity=0.25, **SMALL)

    log = tmp_path / "evaluations.jsonl"
    searcher = EvolutionSearcher(engine(), _config, max_concurrent=1, log_path=log)
    configs = []
    for i in range(4):  # generation 0 (slice, then promotions), generation 1's slice rung
        configs.append(searcher.suggest(f"t{i}"))
        _complete(searcher, f"t{i}", configs[-1])
    assert [{c["fidelity"] for c in cfg["candidates"]} for cfg in configs] == [{0.25}, {1.0}, {0.25}, {1.0}]
    entries = read_log(log)
    assert {e["fidelity"] for e in entries} == {0.25, 1.0} and len(entries) == 12 + 4 + 9 + 3
    # resumed: a fresh engine answered from the log asks for nothing already scored, at either fidelity
    cache = log_cache(log)
    assert len(cache) == len(entries)
    resumed = EvolutionSearcher(engine(), _config, max_concurrent=1, cache=cache)
    nxt = resumed.suggest("r0")
    original = searcher.suggest("t4")
    assert nxt == original and {c["fidelity"] for c in nxt["candidates"]} == {0.25}
    assert resumed.engine.scores == searcher.engine.scores and resumed.engine.fidelity == searcher.engine.fidelity


def test_pool_cache_keys_and_journal_keep_fidelities(tmp_path):
    assert cache_key("k") == "k" and cache_key("k", 1.0) == "k" and cache_key("k", 0.0625) == "k@0.0625"
    path = tmp_path / "scored.jsonl"
    path.write_text('{"key": "a", "loss": 5.0}\n{"key": "a", "loss": 5.5, "fidelity": 0.0625}\n{"key": "b", "lo')
    assert read_journal(path) == {"a": 5.0, "a@0.0625": 5.5}


def test_run_search_with_successive_halving(ray_local, tmp_path):
    space, model = tiny_space(), tiny_super()
    batches = random_batches(n=8)  # 32 pairs; the slice: 8
    engine_kwargs = dict(population=10, parents=3, mutations=4, crossovers=2, iterations=3)
    halving = run_search(space, pack_weights(model), pack_batches(batches), limit(30), tmp_path / "sh",
                         SearchOptions(algorithm="hat", scorers=2, seed=1,
                                       engine_kwargs={**engine_kwargs, "fidelity": 0.25, "promote": 0.25}))
    mf = halving["multi_fidelity"]
    assert mf["fidelity"] == 0.25 and mf["slice_pairs"] == 8 and mf["valid_pairs"] == 32
    assert halving["evaluations"] == 10 + 2 * 6 and mf["slice_only_evaluations"] + mf["full_fidelity_evaluations"] == 22
    assert mf["full_fidelity_evaluations"] == 3 + 2 + 2  # max(ceil(2.5), 3 parents), then ceil(0.25 x 6) twice
    # every scored candidate's tokens: all 22 on the slice, the promoted 7 on the whole set
    full_tokens = sum(b.ntokens for b in batches)
    slice_tokens = sum(int((b["target"] != PAD).sum()) for b in slice_batches(pack_batches(batches), 0.25, 1))
    assert halving["tokens_scored"] == 22 * slice_tokens + 7 * full_tokens < 22 * full_tokens
    # the best is a full-validation score, equal to a direct evaluation on the whole set
    best = Arch.from_dict(halving["best"]["arch"])
    assert math.isclose(halving["best"]["valid_loss"], validation_loss(model, best, batches), abs_tol=1e-5)
    trials = pd.read_parquet(tmp_path / "sh" / "trials.parquet")
    assert sorted(trials["fidelity"].unique()) == [0.25, 1.0] and (trials["fidelity"] == 1.0).sum() == 7
    assert halving["best"]["valid_loss"] == pytest.approx(trials[trials["fidelity"] == 1.0]["valid_loss"].min())
    # a slice score is the loss on the slice's pairs
    sliced = trials[trials["fidelity"] == 0.25].iloc[0]
    cut = unpack_batches(slice_batches(pack_batches(batches), 0.25, 1))
    assert math.isclose(sliced["valid_loss"], validation_loss(model, Arch.from_dict(json.loads(sliced["arch"])), cut),
                        abs_tol=1e-5)
    journal = read_journal(tmp_path / "sh" / "scored.jsonl")
    assert len(journal) == 22 + 7 and sum("@" in k for k in journal) == 22


def test_pipeline_takes_fidelity_for_hat_and_refuses_it_for_an_algorithm_without_it(tmp_path):
    from hat_ray.errors import ConfigError
    from hat_ray.pipeline.config import Experiment

    experiment = {"name": "t", "space": "demo", "out": str(tmp_path / "o"),
                  "devices": [{"profile": "local_cpu", "limits_ms": [30]}],
                  "supernet": {"max_updates": 1}, "train": {"max_updates": 1},
                  "search": {"algorithm": "hat", "fidelity": 0.0625, "promote": 0.5}}
    kwargs = Experiment.from_dict(experiment).search.engine().kwargs("hat")
    assert kwargs["fidelity"] == 0.0625 and kwargs["promote"] == 0.5
    with pytest.raises(ConfigError, match=r"search.fidelity is set but search.algorithm random does not use it"):
        Experiment.from_dict({**experiment, "search": {"algorithm": "random", "fidelity": 0.5}})


def test_a_pool_asked_for_a_slice_it_lacks_fails_that_candidate_clearly(ray_local):
    import ray

    from hat_ray.search.pool import start_pool

    pool = start_pool(pack_weights(tiny_super()), pack_batches(random_batches()), 1, "no-slice-test")
    try:
        arch = tiny_space().sample(np.random.default_rng(0)).to_dict()
        ok, missing = ray.get(pool.score_many.remote([arch, arch], fidelities=[1.0, 0.5]))
        assert ok["loss"] is not None and missing["loss"] is None
        assert "no validation slice of share 0.5" in missing["error"]
    finally:
        ray.kill(pool)
