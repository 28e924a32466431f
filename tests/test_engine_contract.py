"""The ask/tell contract of hat_ray/search/evolution.py, checked for every registered search engine
(as Optuna checks every sampler): an engine joins these tests by being registered in ENGINES.

Each engine is driven as the Ray Tune searcher drives it (up to ``concurrency`` Archs in flight,
results told out of order) on the tiny space of tests/tiny_space.py, under a FLOPs-proportional
fake latency predictor, with a deterministic fake loss; :class:`Driver` checks the contract on
every call: never an Arch already scored or in flight, only feasible Archs of the space,
``finished`` exactly when nothing is in flight and ``ask()`` has nothing more, and a bounded run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable

import numpy as np
import pytest
from search_helpers import FakePredictor
from tiny_space import tiny_space_dict

from hat_ray.arch import Arch
from hat_ray.errors import InfeasibleError
from hat_ray.model.accounting import count_flops
from hat_ray.search.constraints import Constraint, Constraints
from hat_ray.search.evolution import ENGINES, Engine, EngineOptions, make_engine, register
from hat_ray.space import SearchSpace

SPACE = SearchSpace.from_dict(tiny_space_dict())  # 17,408 Archs, predicted 19.5 to 50 ms
NAMES = list(ENGINES)  # collected at import: a newly registered engine is tested automatically
SMALL = EngineOptions(population=12, parents=4, mutations=5, crossovers=4, iterations=5)  # hat: 48 evaluations
BUDGET = 80  # caps the engines without an own end of a few dozen evaluations
CONCURRENCY = [1, 5, 10_000]  # one at a time; a few in flight (the Tune searcher); everything it hands out
_TARGET = SPACE.sample(np.random.default_rng(7))


def limit(ms: float = 38.0) -> Constraints:
    """A latency limit on the fake device: 38 ms admits about half the space, 20.5 ms only 16 Archs."""
    return Constraints([Constraint("fake", ms, FakePredictor())])


def fake_loss(arch: Arch) -> float:
    """Deterministic: capacity helps, every gene away from a hidden target costs 0.05."""
    misses = sum(a != b for key in ("encoder_ffn_embed_dim", "encoder_self_attention_heads",
                                    "decoder_self_attention_heads", "decoder_arbitrary_ende_attn")
                 for a, b in zip(getattr(arch, key), getattr(_TARGET, key)))
    return 6.0 - 0.2 * math.log1p(count_flops(arch, 32, 10) / 1e4) + 0.05 * misses


def failing(arch: Arch) -> str | None:
    """'none' / 'nan' for about 2 in 5 Archs (fixed per Arch), None for the others."""
    return {0: "none", 1: "nan"}.get(int(hashlib.sha256(arch.key().encode()).hexdigest(), 16) % 5)


def flaky_loss(arch: Arch) -> float | None:
    return {"none": None, "nan": math.nan}.get(failing(arch), fake_loss(arch))  # type: ignore[arg-type]


def build(name: str, constraints: Constraints | None = None, seed: int = 0, budget: int | None = BUDGET,
          max_attempts: int = 20000) -> Engine:
    """The engine ``name`` with the small options it declares (its own defaults for the others)."""
    return make_engine(name, SPACE, constraints, seed, budget, max_attempts=max_attempts, **SMALL.kwargs(name))


class Driver:
    """Drives an engine like the Tune searcher: fill up to ``concurrency`` Archs in flight, then
    tell one (a seeded random one, or with ``by_key`` the smallest key: a function of the
    in-flight set only, so a restored run can replay an uninterrupted one), checking the
    contract on every call. ``told``: every Arch told so far (carried over by a restored run)."""

    def __init__(self, engine: Engine, concurrency: int = 5, loss: Callable[[Arch], float | None] = fake_loss,
                 by_key: bool = False, told: dict[Arch, float | None] | None = None, max_steps: int = 5000) -> None:
        self.engine, self.concurrency, self.loss, self.by_key = engine, concurrency, loss, by_key
        self.told: dict[Arch, float | None] = dict(told or {})
        self.in_flight: list[Arch] = []
        self.asked: list[Arch] = []
        self.ask_calls = 0
        self.max_steps = max_steps
        self.steps = 0
        self.rng = np.random.default_rng(0)

    def ask(self) -> Arch | None:
        self.ask_calls += 1
        arch = self.engine.ask()
        if arch is not None:
            assert arch not in self.told, f"{self.engine.name} re-asked a scored Arch"
            assert arch not in self.in_flight, f"{self.engine.name} re-asked an Arch in flight"
            assert SPACE.contains(arch)
            assert bool(self.engine.constraints.feasible([arch])[0]), f"{self.engine.name} asked an infeasible Arch"
            self.asked.append(arch)
            self.in_flight.append(arch)
        return arch

    def step(self) -> bool:
        """Fill, then tell one result; False once the engine is finished."""
        assert self.steps < self.max_steps, f"{self.engine.name} did not finish within {self.max_steps} results"
        self.steps += 1
        while len(self.in_flight) < self.concurrency and self.ask() is not None:
            pass
        if not self.in_flight:
            assert self.engine.finished, f"{self.engine.name}: nothing in flight, nothing to ask, yet not finished"
            return False
        assert not self.engine.finished, f"{self.engine.name} is finished with Archs in flight"
        k = (min(range(len(self.in_flight)), key=lambda i: self.in_flight[i].key()) if self.by_key
             else int(self.rng.integers(len(self.in_flight))))
        arch = self.in_flight.pop(k)
        self.told[arch] = value = self.loss(arch)
        self.engine.tell(arch, value)
        return True

    def run(self, steps: int | None = None) -> Driver:
        """To the end (or ``steps`` results); then ``ask()`` keeps answering None."""
        for _ in range(steps if steps is not None else self.max_steps + 1):
            if not self.step():
                assert self.engine.ask() is None and self.engine.finished
                break
        return self


def assert_scored_as_told(engine: Engine, driver: Driver) -> None:
    """The engine's scores are exactly the told results (failures as +inf), its best the lowest
    finite one, never a failed Arch."""
    assert set(engine.scores) == set(driver.told)
    for arch, value in driver.told.items():
        bad = value is None or not math.isfinite(value)
        assert engine.scores[arch] == (math.inf if bad else value)
    finite = {a: v for a, v in driver.told.items() if v is not None and math.isfinite(v)}
    best, loss = engine.best()
    assert loss == min(finite.values()) and finite[best] == loss


# ---- (a) + (f): a full run never re-asks an Arch scored or in flight, and finishes ----
@pytest.mark.parametrize("concurrency", CONCURRENCY)
@pytest.mark.parametrize("name", NAMES)
def test_full_run_never_reasks_and_finishes(name, concurrency):
    engine = build(name, limit())
    driver = Driver(engine, concurrency).run()
    assert engine.finished and not engine.pending and not driver.in_flight
    assert len(driver.asked) == len(set(driver.asked)) == len(engine.scores)
    assert 1 <= len(driver.asked) <= BUDGET
    assert_scored_as_told(engine, driver)


def test_contract_runs_reach_each_engines_own_end():
    """hat / pareto end by themselves before the tests' budget, random / steady use all of it."""
    used = {name: len(Driver(build(name, limit()), 5).run().asked) for name in ("hat", "pareto", "random", "steady")}
    assert used == {"hat": 48, "pareto": 48, "random": BUDGET, "steady": BUDGET}


def finishes_without_a_budget(name: str, most: int | None = None) -> None:
    """Without a budget an engine ends by itself: after its declared ``default_budget``, or (None)
    at the algorithm's own end. Driven to the end unless that is over ``most`` evaluations."""
    cls = ENGINES[name]
    engine = build(name, limit(), budget=None)
    if cls.default_budget is not None:
        assert engine.budget == cls.default_budget
    if most is not None and engine.budget is not None and engine.budget > most:
        return  # steady: HAT's 3,025 unique evaluations (tens of seconds here): the slow test's
    driver = Driver(engine, 16, max_steps=5000).run()
    assert engine.finished and len(driver.asked) == len(engine.scores)
    assert engine.budget is None or len(driver.asked) <= engine.budget


@pytest.mark.parametrize("name", NAMES)
def test_default_budget_is_declared_and_finishes(name):
    finishes_without_a_budget(name, most=1000)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_every_engine_finishes_without_a_budget(name):
    finishes_without_a_budget(name)


# ---- (b) + (f): failed results (None / NaN) are kept, never re-asked, never the best ----
@pytest.mark.parametrize("concurrency", CONCURRENCY)
@pytest.mark.parametrize("name", NAMES)
def test_survives_failed_results(name, concurrency):
    engine = build(name, limit())
    driver = Driver(engine, concurrency, loss=flaky_loss).run()
    failed = {a for a in driver.told if failing(a)}
    assert {failing(a) for a in failed} == {"none", "nan"}  # both kinds happened
    assert engine.finished
    assert_scored_as_told(engine, driver)
    assert all(math.isinf(engine.scores[a]) for a in failed)
    assert engine.best()[0] not in failed
    assert not {a for a, _, _ in engine.pareto_front()} & failed


@pytest.mark.parametrize("name", NAMES)
def test_all_failed_results_finish_without_a_best(name):
    engine = build(name, limit(), budget=30)
    Driver(engine, 4, loss=lambda arch: None).run()
    assert engine.finished and all(math.isinf(s) for s in engine.scores.values())
    with pytest.raises(InfeasibleError):
        engine.best()


# ---- (c) + (f): the budget caps the Archs asked ----
@pytest.mark.parametrize("budget,concurrency", [(1, 1), (3, 8), (17, 5), (17, 10_000)])
@pytest.mark.parametrize("name", NAMES)
def test_respects_the_budget(name, budget, concurrency):
    engine = build(name, limit(), budget=budget)
    driver = Driver(engine, concurrency).run()
    assert engine.finished
    assert len(driver.asked) == budget  # every engine here can use a budget below its own end
    assert engine.budget_left() <= 0


# ---- (d): state_dict -> JSON -> a fresh engine mid-run continues exactly the same run ----
@pytest.mark.parametrize("loss", [fake_loss, flaky_loss], ids=["ok", "flaky"])
@pytest.mark.parametrize("stop", [3, 13, 30])
@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip_mid_run_continues_the_same_run(name, stop, loss):
    """The strongest property that holds for every engine: saved with Archs in flight and restored
    into an engine built with another seed, with the in-flight Archs re-queued, the run goes on
    with the same Archs and results as an uninterrupted one (tells in a canonical order, so that
    the steady engine's breeding sees the same results), and never re-asks a scored Arch."""
    concurrency = 4
    ref = Driver(build(name, limit(), seed=5), concurrency, loss, by_key=True).run()

    first = Driver(build(name, limit(), seed=5), concurrency, loss, by_key=True).run(stop)
    while not first.in_flight:  # at a generation barrier: save once the next one is handed out
        first.run(1)
    state = json.loads(json.dumps(first.engine.state_dict()))
    assert {Arch.from_dict(a) for a in state["pending"]} == set(first.in_flight)
    restored = build(name, limit(), seed=99)
    restored.load_state_dict(state)
    restored.requeue_pending()
    assert not restored.pending and not restored.finished
    second = Driver(restored, concurrency, loss, by_key=True, told=first.told).run()
    assert set(second.asked[: len(first.in_flight)]) == set(first.in_flight)  # re-queued first
    assert not set(second.asked) & set(first.told)
    assert first.asked + second.asked[len(first.in_flight):] == ref.asked  # the same run
    assert set(restored.scores) == set(ref.engine.scores) and restored.best() == ref.engine.best()
    assert restored.finished


@pytest.mark.parametrize("name", NAMES)
def test_restored_engine_takes_a_late_result_of_a_requeued_arch(name):
    """An old trial answering for a re-queued Arch is recorded, and the Arch is not asked again."""
    first = Driver(build(name, limit(), seed=1), 4).run(10)
    state = json.loads(json.dumps(first.engine.state_dict()))
    restored = build(name, limit(), seed=1)
    restored.load_state_dict(state)
    restored.requeue_pending()
    late = first.in_flight[0]
    restored.tell(late, fake_loss(late))
    restored.tell(late, 99.0)  # a duplicate answer is ignored
    assert restored.scores[late] == fake_loss(late)
    second = Driver(restored, 4, told={**first.told, late: fake_loss(late)}).run()
    assert late not in second.asked and set(first.in_flight[1:]) <= set(second.asked)
    assert restored.finished


@pytest.mark.parametrize("name", NAMES)
def test_state_of_another_engine_is_refused(name):
    other = next(n for n in ENGINES if n != name)
    with pytest.raises(ValueError, match=f"expected {name}"):
        build(name).load_state_dict(build(other).state_dict())


# ---- (e) + (f): a bounded run under a tight limit; an impossible limit fails fast ----
@pytest.mark.timeout(120)
@pytest.mark.parametrize("concurrency", CONCURRENCY)
@pytest.mark.parametrize("name", NAMES)
def test_tight_limit_finishes(name, concurrency):
    cons = limit(20.5)  # 16 feasible Archs in the whole space: fewer than a population
    engine = build(name, cons, budget=None, max_attempts=4000)
    driver = Driver(engine, concurrency, max_steps=200).run()
    assert engine.finished
    assert 1 <= len(driver.asked) <= 16
    assert driver.ask_calls <= (concurrency + 1) * (len(driver.asked) + 1)  # no busy waiting on None
    assert_scored_as_told(engine, driver)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", NAMES)
def test_impossible_limit_raises_after_bounded_sampling(name):
    engine = build(name, limit(19.0), max_attempts=3000)  # the smallest Arch is predicted at 19.46 ms
    with pytest.raises(InfeasibleError, match="3000 samples"):
        engine.ask()


@pytest.mark.parametrize("name", NAMES)
def test_no_limit_runs(name):
    engine = build(name, None, budget=20)
    Driver(engine, 5).run()
    assert engine.finished and 1 <= len(engine.scores) <= 20


# ---- (g): declarations ----
@pytest.mark.parametrize("name", NAMES)
def test_declaration(name):
    cls = ENGINES[name]
    assert cls.name == name and issubclass(cls, Engine)
    fields = {f.name for f in dataclasses.fields(EngineOptions)}
    assert set(cls.options) <= fields and all(o in EngineOptions.HELP for o in cls.options)
    assert EngineOptions().problems(name) == []
    assert set(EngineOptions().kwargs(name)) == set(cls.options)
    assert isinstance(cls.multi_objective, bool) and isinstance(cls.needs_limit, bool)
    assert cls.default_budget is None or cls.default_budget >= 1
    assert EngineOptions.USES[name] == cls.options
    engine = make_engine(name, SPACE, limit(), 0, None, **EngineOptions().kwargs(name))  # HAT's defaults
    assert type(engine) is cls
    if cls.options:  # a bad value of a declared option is refused by the engine itself
        bad = {"population": 0, "parents": 0, "iterations": 0, "mutations": -1, "crossovers": -1, "mutation_prob": 2.0}
        option = cls.options[0]
        assert EngineOptions(**{option: bad[option]}).problems(name)
        with pytest.raises(ValueError, match=option):
            make_engine(name, SPACE, None, 0, None, **{**EngineOptions().kwargs(name), option: bad[option]})


def test_registry_checks_declarations():
    class Twin(Engine):
        name = "hat"

    class Unknown(Engine):
        name = "unknown-options-test"
        options = ("temperature",)

    with pytest.raises(ValueError, match="already registered"):
        register(Twin)
    with pytest.raises(ValueError, match="temperature"):
        register(Unknown)
    assert "unknown-options-test" not in ENGINES and ENGINES["hat"].__name__ == "HatEvolution"


# ---- a new engine needs nothing outside its module: CLI, pipeline and these tests pick it up ----
class FirstN(Engine):
    """A throwaway engine: ``population`` random feasible Archs, no latency limit needed."""

    name = "first-n-test"
    options = ("population",)
    needs_limit = False

    def __init__(self, space: SearchSpace, constraints: Constraints | None = None, seed: int = 0,
                 budget: int | None = None, population: int = 125, **kwargs) -> None:
        super().__init__(space, constraints, seed, population if budget is None else budget, **kwargs)
        self._check_options(population=population)

    def ask(self) -> Arch | None:
        if not self.queue and self.budget_left() > 0:
            self.queue = self._feasible(1, self._random, strict=not self.scores and not self.pending)
            if not self.queue:
                self.budget = len(self.scores) + len(self.pending)
        return self._hand_out()


@pytest.fixture
def first_n():
    register(FirstN)
    try:
        yield FirstN
    finally:
        ENGINES.pop(FirstN.name)


def test_a_registered_engine_is_offered_everywhere(first_n, capsys, tmp_path):
    from hat_ray.cli.main import build_parser
    from hat_ray.cli.search_cmd import _check
    from hat_ray.errors import ConfigError
    from hat_ray.pipeline.config import Experiment

    args = build_parser().parse_args(["search", "--supernet", "x", "--data", "y", "--out", "z",
                                      "--algorithm", first_n.name, "--population", "7"])
    _check(args)  # no --device needed: the engine declares needs_limit = False
    with pytest.raises(SystemExit):
        build_parser().parse_args(["search", "--help"])
    assert "first-n-test: population" in " ".join(capsys.readouterr().out.split())  # its options, in the help
    (tmp_path / "tiny.yaml").write_text(json.dumps(tiny_space_dict()))  # JSON is YAML
    experiment = {"name": "t", "space": str(tmp_path / "tiny.yaml"), "out": str(tmp_path / "o"),
                  "devices": [{"profile": "local_cpu", "limits_ms": [30]}],
                  "supernet": {"max_updates": 1}, "train": {"max_updates": 1},
                  "search": {"algorithm": first_n.name, "population": 7}}
    assert Experiment.from_dict(experiment).search.engine().kwargs(first_n.name) == {"population": 7}
    with pytest.raises(ConfigError, match="population must be >= 1"):
        Experiment.from_dict({**experiment, "search": {"algorithm": first_n.name, "population": 0}})
    engine = make_engine(first_n.name, SPACE, limit(), 0, None, population=7)
    driver = Driver(engine, 3).run()  # and the contract holds for it
    assert len(driver.asked) == 7 and engine.finished

    ENGINES.pop(first_n.name)  # unregistered: gone from the CLI and the pipeline again
    try:
        with pytest.raises(SystemExit):
            build_parser().parse_args(["search", "--supernet", "x", "--data", "y", "--out", "z",
                                       "--algorithm", first_n.name])
        with pytest.raises(ConfigError, match="search.algorithm must be one of hat"):
            Experiment.from_dict(experiment)
    finally:
        register(first_n)  # for the fixture's clean-up


def test_pareto_alone_needs_no_limit_in_the_cli():
    from hat_ray.cli.main import build_parser
    from hat_ray.cli.search_cmd import _check
    from hat_ray.errors import HatRayError

    base = ["search", "--supernet", "x", "--data", "y", "--out", "z"]
    _check(build_parser().parse_args([*base, "--algorithm", "pareto"]))
    with pytest.raises(HatRayError, match="or use --algorithm pareto"):
        _check(build_parser().parse_args([*base, "--algorithm", "hat"]))
