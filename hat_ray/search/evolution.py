"""Search engines (pure Python, no Ray): HAT's generational evolution without its flaws, a
steady-state variant, random search, and a Pareto (multi-objective) evolution.

Every engine has the same ask/tell contract, which the Ray Tune searcher adapts:

- ``ask() -> Arch | None``: an unscored, feasible Arch to evaluate, or None when nothing can be
  handed out now (a generation barrier, or the budget is used up). Never returns an Arch that is
  in flight or already scored at ``rung_fidelity``: scores are cached by Arch, parents are never
  re-scored.
- ``tell(arch, loss, fidelity=1.0)``: the validation loss (bits) of an asked Arch, scored on the
  share ``fidelity`` of the validation pairs (``rung_fidelity`` when it was asked); None / NaN =
  failed (kept as +inf so it is never selected, and never retried).
- ``rung_fidelity``: the share of the validation set the Archs handed out now are to be scored on
  (1.0: all of it; below 1 only for an engine that scores in rungs, see :class:`HatEvolution`).
  An Arch scored at a low fidelity may be asked again at a higher one (a promotion); ``best()``,
  ``pareto_front()`` and ``full_scores()`` only ever rank full-fidelity scores.
- ``finished``: True once nothing is in flight and no more Archs will be asked.
- ``state_dict()`` / ``load_state_dict()``: plain, versioned data (JSON-serialisable).

An engine is a subclass of :class:`Engine` decorated with :func:`register` in this module; its
class attributes declare everything the CLI, the pipeline and :func:`make_engine` need (``name``,
``options``, ``multi_objective``, ``needs_limit``, ``default_budget``), so adding one touches this
module and its tests only. tests/test_engine_contract.py checks the contract above for every
registered engine.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np

from hat_ray.arch import Arch
from hat_ray.errors import InfeasibleError
from hat_ray.search.constraints import Constraints
from hat_ray.space import SearchSpace

log = logging.getLogger(__name__)
STATE_VERSION = 1
E = TypeVar("E", bound="Engine")


class Engine:
    """Shared bookkeeping: score cache, in-flight set, feasible sampling, RNG, budget."""

    name = "base"  # the algorithm's name: --algorithm, the pipeline's search.algorithm, make_engine
    options: tuple[str, ...] = ()  # the EngineOptions fields its constructor takes (keyword arguments)
    multi_objective = False  # True: latency is an objective too (report its Pareto front, not one best)
    needs_limit = True  # False: meaningful without any latency limit (the CLI then needs no --device)
    default_budget: int | None = None  # evaluations when no budget is given (None: the algorithm's own end)
    generational = False  # True: ask() hands out a whole generation, then None until all of it is told

    def __init__(self, space: SearchSpace, constraints: Constraints | None = None, seed: int = 0,
                 budget: int | None = None, max_attempts: int = 20000) -> None:
        self.space = space
        self.constraints = constraints or Constraints()
        self.rng = np.random.default_rng(seed)
        self.budget = self.default_budget if budget is None else budget
        self.max_attempts = max_attempts
        self.scores: dict[Arch, float] = {}  # insertion order = order results arrived
        self.fidelity: dict[Arch, float] = {}  # Archs whose score is on a share < 1 of the validation set
        self.rung_fidelity = 1.0  # the share the Archs handed out now are scored on
        self.pending: set[Arch] = set()
        self.queue: list[Arch] = []

    # ---- contract ----
    def ask(self) -> Arch | None:
        raise NotImplementedError

    def tell(self, arch: Arch, loss: float | None, fidelity: float = 1.0) -> None:
        """Record a result on the share ``fidelity`` of the validation set. Results for Archs
        already scored at that fidelity or a higher one (duplicates after a restore) are ignored."""
        if self.scored_at(arch) >= fidelity:
            return
        if arch in self.queue:  # an old (restored) trial answered for a re-queued Arch
            self.queue.remove(arch)
        self.pending.discard(arch)
        bad = loss is None or not math.isfinite(loss)
        self.scores[arch] = math.inf if bad else float(loss)
        if fidelity < 1.0:
            self.fidelity[arch] = fidelity
        else:
            self.fidelity.pop(arch, None)

    def scored_at(self, arch: Arch) -> float:
        """The fidelity of ``arch``'s score (0.0: not scored)."""
        return self.fidelity.get(arch, 1.0) if arch in self.scores else 0.0

    @property
    def finished(self) -> bool:
        """Nothing in flight and nothing more to ask (budget used, or the algorithm is done)."""
        if self.pending or self._promotion_due() or any(0 < self.scored_at(a) < self.rung_fidelity for a in self.queue):
            return False  # promotions owed: they re-score Archs already counted in the budget
        return self.budget_left() <= 0 or (not self.queue and self._done())

    def _done(self) -> bool:
        """Algorithm-specific end (besides the budget)."""
        return False

    def _promotion_due(self) -> bool:
        """True when Archs scored on a slice wait to be promoted (an engine scoring in rungs)."""
        return False

    def budget_left(self) -> int:
        """Evaluations left: distinct Archs (a promotion re-scores an Arch already counted)."""
        if self.budget is None:
            return 1 << 62
        return self.budget - len(self.scores) - sum(1 for a in self.pending if a not in self.scores)

    def _hand_out(self) -> Arch | None:
        while self.queue:
            arch = self.queue[0]
            if arch not in self.scores and self.budget_left() <= 0:
                return None
            self.queue.pop(0)
            if arch not in self.pending and self.scored_at(arch) < self.rung_fidelity:
                self.pending.add(arch)
                return arch
        return None

    def requeue_pending(self) -> None:
        """After a restore: in-flight Archs go back to the queue (no evaluation is lost)."""
        self.queue = sorted(self.pending, key=Arch.key) + self.queue
        self.pending.clear()

    # ---- results ----
    def full_scores(self) -> dict[Arch, float]:
        """Scores on the whole validation set (every score, unless the engine scores in rungs)."""
        if not self.fidelity:
            return self.scores
        return {a: s for a, s in self.scores.items() if a not in self.fidelity}

    def best(self) -> tuple[Arch, float]:
        scored = [(a, s) for a, s in self.full_scores().items() if math.isfinite(s)]
        if not scored:
            raise InfeasibleError("no candidate was scored successfully")
        return min(scored, key=lambda t: t[1])

    def pareto_front(self) -> list[tuple[Arch, float, dict[str, float]]]:
        """Non-dominated scored Archs over (loss, predicted latency per device), by loss."""
        scored = [(a, s) for a, s in self.full_scores().items() if math.isfinite(s)]
        objs = np.array([[s, *self.constraints.latencies(a).values()] for a, s in scored]).reshape(len(scored), -1)
        front = [i for i in range(len(scored)) if not _dominated(objs, i)]
        out = [(scored[i][0], scored[i][1], self.constraints.latencies(scored[i][0])) for i in front]
        return sorted(out, key=lambda t: t[1])

    # ---- feasible generation (bounded; never loops forever) ----
    def _feasible(self, n: int, make: Callable[[], Arch], strict: bool = False,
                  max_attempts: int | None = None) -> list[Arch]:
        """Up to ``n`` new (unscored, not in flight, distinct) feasible Archs from ``make``.
        Gives up after ``max_attempts`` candidates (default: the engine's); ``strict`` raises
        InfeasibleError when none was feasible at all (for an engine's first Archs only: once one
        is scored or in flight, finding none means the feasible Archs are used up, not an error)."""
        out: list[Arch] = []
        seen = set(self.scores) | self.pending | set(self.queue)
        attempts, limit = 0, max_attempts or self.max_attempts
        while len(out) < n and attempts < limit:
            chunk = [make() for _ in range(min(max(2 * (n - len(out)), 16), limit - attempts))]
            attempts += len(chunk)
            fresh = [a for a in dict.fromkeys(chunk) if a not in seen]
            for arch, ok in zip(fresh, self.constraints.feasible(fresh)):
                if ok and len(out) < n:
                    out.append(arch)
                    seen.add(arch)
        if strict and not out and self.constraints.items:
            raise InfeasibleError(
                f"no SubTransformer of space {self.space.name} meets the latency limits after {attempts} "
                f"samples ({self.constraints.describe_infeasible()}); raise the limit or use a smaller space"
            )
        return out

    def _random(self) -> Arch:
        return self.space.sample(self.rng)

    def _check_options(self, **values: Any) -> None:
        """ValueError listing every invalid value of the engine's declared options."""
        problems = EngineOptions(**values).problems_of(self.options)
        if problems:
            raise ValueError("; ".join(problems))

    # ---- state ----
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "algorithm": self.name,
            "rng": self.rng.bit_generator.state,
            "budget": self.budget,
            "scores": [[a.to_dict(), s if math.isfinite(s) else None] for a, s in self.scores.items()],
            "fidelity": [[a.to_dict(), f] for a, f in self.fidelity.items()],
            "rung_fidelity": self.rung_fidelity,
            "pending": [a.to_dict() for a in sorted(self.pending, key=Arch.key)],
            "queue": [a.to_dict() for a in self.queue],
            "extra": self._extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION or state.get("algorithm") != self.name:
            raise ValueError(f"search state is {state.get('algorithm')} v{state.get('version')}, "
                             f"expected {self.name} v{STATE_VERSION}")
        self.rng.bit_generator.state = state["rng"]
        self.budget = state["budget"]
        self.scores = {Arch.from_dict(a): (math.inf if s is None else s) for a, s in state["scores"]}
        self.fidelity = {Arch.from_dict(a): f for a, f in state.get("fidelity", [])}
        self.rung_fidelity = state.get("rung_fidelity", 1.0)
        self.pending = {Arch.from_dict(a) for a in state["pending"]}
        self.queue = [Arch.from_dict(a) for a in state["queue"]]
        self._load_extra(state["extra"])

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra(self, extra: dict[str, Any]) -> None:
        pass


ENGINES: dict[str, type[Engine]] = {}  # name -> engine class, in registration order (see register)


def register(cls: type[E]) -> type[E]:
    """Class decorator: make an engine available by its ``name`` to the search CLI's --algorithm,
    the pipeline's ``search.algorithm`` and :func:`make_engine`. Checks the declaration: a new
    name, and options that are fields of :class:`EngineOptions` with a help text."""
    if not cls.name or cls.name == Engine.name or cls.name in ENGINES:
        raise ValueError(f"engine {cls.__name__}: name {cls.name!r} is empty, the base's or already registered")
    fields = {f.name for f in dataclasses.fields(EngineOptions)}
    unknown = [o for o in cls.options if o not in fields or o not in EngineOptions.HELP]
    if unknown:
        raise ValueError(f"engine {cls.name}: options {', '.join(unknown)} are not declared (with a help text) "
                         "by EngineOptions")
    ENGINES[cls.name] = cls
    return cls


class _Uses(Mapping[str, tuple[str, ...]]):
    """Read-only view {algorithm: its options} of the registered engines' declarations."""

    def __getitem__(self, algorithm: str) -> tuple[str, ...]:
        return ENGINES[algorithm].options

    def __iter__(self) -> Iterator[str]:
        return iter(ENGINES)

    def __len__(self) -> int:
        return len(ENGINES)


@dataclass(frozen=True)
class EngineOptions:
    """The engines' settings, declared once with HAT's defaults: the search CLI's flags and the
    pipeline's ``search:`` section are checked against this (:meth:`problems`) and build the
    engine's arguments from it (:meth:`kwargs`). Which settings an engine takes is declared by
    the engine (its ``options``); ``USES`` is a view of those declarations."""

    population: int = 125
    parents: int = 25
    mutations: int = 50
    crossovers: int = 50
    mutation_prob: float = 0.3
    iterations: int = 30
    fidelity: float = 1.0
    promote: float = 0.25

    USES = _Uses()
    # options added after searches were first fingerprinted, with the value that means "as before"
    # (a saved fingerprint without them compares as this value: hat_ray.search.result)
    ADDED = {"fidelity": 1.0, "promote": 0.25}
    HELP = {"population": "Archs per generation (steady: random Archs before breeding)",
            "parents": "best Archs kept as parents", "mutations": "children by mutation per generation",
            "crossovers": "children by crossover per generation", "mutation_prob": "chance to resample each gene",
            "iterations": "generations scored, the first included (HAT's evo_iter)",
            "fidelity": "share of the validation pairs a generation's new Archs are first scored on "
                        "(successive halving; 1: every Arch on all of them, as HAT)",
            "promote": "share of those promoted from the --fidelity slice to the whole validation set"}

    def problems(self, algorithm: str, prefix: str = "") -> list[str]:
        """Every invalid value for ``algorithm`` (``prefix`` names where the values came from)."""
        if algorithm not in ENGINES:
            return [f"{prefix}algorithm must be one of {', '.join(ENGINES)}, got {algorithm!r}"]
        used = ENGINES[algorithm].options
        unused = [f.name for f in dataclasses.fields(self) if f.name not in used and getattr(self, f.name) != f.default]
        out = [f"{prefix}{name} is set but {prefix}algorithm {algorithm} does not use it (it takes "
               f"{', '.join(prefix + o for o in used) or 'none of these options'})" for name in unused]
        return out + self.problems_of(used, prefix)

    def problems_of(self, used: tuple[str, ...], prefix: str = "") -> list[str]:
        """Every invalid value among the options ``used``."""
        out = []
        for name in ("population", "parents", "iterations"):
            if name in used and getattr(self, name) < 1:
                out.append(f"{prefix}{name} must be >= 1, got {getattr(self, name)}")
        for name in ("mutations", "crossovers"):
            if name in used and getattr(self, name) < 0:
                out.append(f"{prefix}{name} must be >= 0, got {getattr(self, name)}")
        if "parents" in used and self.parents > self.population >= 1:
            out.append(f"{prefix}parents ({self.parents}) must be <= population ({self.population})")
        if "mutation_prob" in used and not 0 <= self.mutation_prob <= 1:
            out.append(f"{prefix}mutation_prob must be in [0, 1], got {self.mutation_prob}")
        if "fidelity" in used and not 0 < self.fidelity <= 1:
            out.append(f"{prefix}fidelity must be in (0, 1] (1: no slice), got {self.fidelity}")
        if "promote" in used and not 0 < self.promote <= 1:
            out.append(f"{prefix}promote must be in (0, 1], got {self.promote}")
        return out

    def kwargs(self, algorithm: str) -> dict[str, Any]:
        """The engine's keyword arguments for ``algorithm``."""
        values = asdict(self)
        return {name: values[name] for name in ENGINES[algorithm].options}


def make_engine(algorithm: str, space: SearchSpace, constraints: Constraints | None = None,
                seed: int = 0, budget: int | None = None, **kwargs: Any) -> Engine:
    """Build a registered engine by name (see ``ENGINES``); ``budget`` None: its default budget."""
    if algorithm not in ENGINES:
        raise ValueError(f"unknown algorithm {algorithm!r}: use one of {', '.join(ENGINES)}")
    return ENGINES[algorithm](space, constraints, seed, budget, **kwargs)


@register
class HatEvolution(Engine):
    """HAT's generational evolution (population 125 = 25 parents + 50 mutations + 50
    crossovers, mutation probability 0.3, 30 generations), fixed: cached scores, bounded
    feasible sampling, and the last generation scored before the best is chosen.

    Beyond HAT, successive halving within a generation (``fidelity`` < 1): a generation's new
    Archs are scored on a fixed random share ``fidelity`` of the validation pairs first (rung 0);
    the best ``promote`` share of them (at least enough to fill the parents with full-fidelity
    scores) are then scored on the whole set (rung 1). Parents and the best are chosen on
    full-fidelity scores only; an Arch left at rung 0 ranks after every full-fidelity one."""

    name = "hat"
    generational = True
    options = ("population", "parents", "mutations", "crossovers", "mutation_prob", "iterations", "fidelity",
               "promote")

    def __init__(self, space: SearchSpace, constraints: Constraints | None = None, seed: int = 0,
                 budget: int | None = None, population: int = 125, parents: int = 25, mutations: int = 50,
                 crossovers: int = 50, mutation_prob: float = 0.3, iterations: int = 30, fidelity: float = 1.0,
                 promote: float = 0.25, **kwargs: Any) -> None:
        super().__init__(space, constraints, seed, budget, **kwargs)
        self._check_options(population=population, parents=parents, mutations=mutations, crossovers=crossovers,
                            mutation_prob=mutation_prob, iterations=iterations, fidelity=fidelity, promote=promote)
        self.population_size, self.parents, self.mutations = population, parents, mutations
        self.crossovers, self.mutation_prob, self.iterations = crossovers, mutation_prob, iterations
        self.low_fidelity, self.promote = fidelity, promote
        self.generation = -1
        self.population: list[Arch] = []

    def ask(self) -> Arch | None:
        for _ in range(2 * self.iterations + 4):  # skip rungs and generations made only of cached Archs
            arch = self._hand_out()
            if arch is not None or self.pending:
                return arch  # None while results of this rung are outstanding (barrier)
            if self._promotion_due():
                self._promote()
                continue
            if self.budget_left() <= 0 or self._done():
                return None
            self._next_generation()
        return None

    def _done(self) -> bool:
        return self.generation + 1 >= self.iterations and not self._promotion_due()

    def _promotion_due(self) -> bool:
        return (self.rung_fidelity < 1.0 and not self.pending and self.generation >= 0
                and (not self.queue or self.budget_left() <= 0))  # out of budget: promote what was scored

    def _promote(self) -> None:
        """Rung 1: the best of the generation's slice-scored Archs, queued for the whole set."""
        sliced = [a for a in self.population if 0 < self.scored_at(a) < 1.0 and math.isfinite(self.scores[a])]
        full = sum(1 for a in self.population if self.scored_at(a) == 1.0 and math.isfinite(self.scores[a]))
        k = max(math.ceil(self.promote * len(sliced)), self.parents - full)
        self.rung_fidelity = 1.0
        self.queue = self._order(sliced)[:k]

    def _next_generation(self) -> None:
        self.generation += 1
        if self.generation == 0:
            self.population = self._feasible(self.population_size, self._random, strict=True)
            if len(self.population) < self.population_size:
                log.warning("only %d feasible SubTransformers found for the initial population of %d",
                            len(self.population), self.population_size)
        else:
            parents = self.select_parents(self.population)
            self.population = parents + self._children(parents)
        self.rung_fidelity = self.low_fidelity
        self.queue = [a for a in self.population if a not in self.scores]

    def select_parents(self, population: list[Arch]) -> list[Arch]:
        """The ``parents`` best by validation loss (full-fidelity scores first)."""
        full = [a for a in population if a not in self.fidelity]
        return (self._order(full) + self._order([a for a in population if a in self.fidelity]))[: self.parents]

    def _order(self, archs: list[Arch]) -> list[Arch]:
        """``archs`` best first (by validation loss)."""
        return sorted(archs, key=lambda a: self.scores[a])

    def _children(self, parents: list[Arch]) -> list[Arch]:
        def mutant() -> Arch:
            return self.space.mutate(parents[self.rng.integers(len(parents))], self.rng, self.mutation_prob)

        def cross() -> Arch:
            if len(parents) < 2:
                return mutant()
            i, j = self.rng.choice(len(parents), size=2, replace=False)
            return self.space.crossover(parents[i], parents[j], self.rng)

        # Children are bounded to ~50 candidates each: a converged population breeds mostly
        # duplicates of scored Archs, and crossovers of near-identical parents run dry first;
        # the shortfall is filled with mutations so the population keeps its size.
        kids: list[Arch] = []
        for n, make in ((self.mutations, mutant), (self.crossovers, cross)):
            self.queue = list(kids)  # so later draws avoid earlier children; reset by the caller
            kids += self._feasible(n, make, max_attempts=50 * n + 200)
        missing = self.mutations + self.crossovers - len(kids)
        if missing > 0:
            self.queue = list(kids)
            kids += self._feasible(missing, mutant, max_attempts=200 * missing + 1000)
        return kids

    def _extra_state(self) -> dict[str, Any]:
        return {"generation": self.generation, "population": [a.to_dict() for a in self.population]}

    def _load_extra(self, extra: dict[str, Any]) -> None:
        self.generation = extra["generation"]
        self.population = [Arch.from_dict(a) for a in extra["population"]]


@register
class ParetoEvolution(HatEvolution):
    """Multi-objective evolution over (validation loss, predicted latency on each constrained
    device): parents (and promotions, with ``fidelity`` < 1) by non-dominated rank, ties broken
    by crowding distance (NSGA-II)."""

    name = "pareto"
    multi_objective = True
    needs_limit = False  # latency on each --device is an objective, a limit is optional

    def _order(self, archs: list[Arch]) -> list[Arch]:
        if not archs:
            return []
        objs = np.array([[self.scores[a], *self.constraints.latencies(a).values()] for a in archs])
        objs = np.where(np.isfinite(objs), objs, 1e30)
        ranks = _nondominated_ranks(objs)
        crowd = np.zeros(len(archs))
        for r in np.unique(ranks):
            idx = np.flatnonzero(ranks == r)
            crowd[idx] = _crowding(objs[idx])
        return [archs[i] for i in sorted(range(len(archs)), key=lambda i: (ranks[i], -crowd[i]))]


@register
class SteadyStateEvolution(Engine):
    """Asynchronous evolution without a generation barrier: every ask breeds one child from
    the current best ``parents`` scored Archs, so slow or heterogeneous scorers never idle the
    others. The first ``population`` asks are random feasible samples."""

    name = "steady"
    options = ("population", "parents", "mutation_prob")

    def __init__(self, space: SearchSpace, constraints: Constraints | None = None, seed: int = 0,
                 budget: int | None = None, population: int = 125, parents: int = 25,
                 mutation_prob: float = 0.3, crossover_share: float = 0.5, **kwargs: Any) -> None:
        budget = population + 29 * 100 if budget is None else budget  # its own end: HAT's unique evaluations
        super().__init__(space, constraints, seed, budget, **kwargs)
        self._check_options(population=population, parents=parents, mutation_prob=mutation_prob)
        self.population_size, self.parents = population, parents
        self.mutation_prob, self.crossover_share = mutation_prob, crossover_share

    def ask(self) -> Arch | None:
        if self.budget_left() <= 0:
            return None
        if not self.queue:
            started = len(self.scores) + len(self.pending)
            scored = [(a, s) for a, s in self.scores.items() if math.isfinite(s)]
            make = self._random if started < self.population_size or len(scored) < 2 else self._breeder(scored)
            first = not (self.scores or self.pending)  # later: the limit is reachable, the space may be used up
            self.queue = self._feasible(1, make, strict=first)
            if not self.queue and make is not self._random:
                self.queue = self._feasible(1, self._random)
            if not self.queue:
                self.budget = len(self.scores) + len(self.pending)  # nothing new left to try
        return self._hand_out()

    def _breeder(self, scored: list[tuple[Arch, float]]) -> Callable[[], Arch]:
        # the best ``parents`` (ties: first scored first); on (Arch, loss) pairs: no Arch hashing per ask
        parents = [a for a, _ in heapq.nsmallest(self.parents, scored, key=lambda t: t[1])]

        def make() -> Arch:
            if len(parents) >= 2 and self.rng.random() < self.crossover_share:
                i, j = self.rng.choice(len(parents), size=2, replace=False)
                return self.space.crossover(parents[i], parents[j], self.rng)
            return self.space.mutate(parents[self.rng.integers(len(parents))], self.rng, self.mutation_prob)

        return make


@register
class RandomSearch(Engine):
    """Uniform feasible samples until the budget is used (the baseline)."""

    name = "random"
    default_budget = 1000

    def ask(self) -> Arch | None:
        if not self.queue and self.budget_left() > 0:
            first = not (self.scores or self.pending)  # later: the limit is reachable, the space may be used up
            self.queue = self._feasible(min(self.budget_left(), 64), self._random, strict=first)
            if not self.queue:
                self.budget = len(self.scores) + len(self.pending)  # space exhausted
        return self._hand_out()


def _dominated(objs: np.ndarray, i: int) -> bool:
    others = np.delete(objs, i, axis=0)
    return bool(np.any(np.all(others <= objs[i], axis=1) & np.any(others < objs[i], axis=1)))


def _nondominated_ranks(objs: np.ndarray) -> np.ndarray:
    n = len(objs)
    ranks = np.full(n, -1)
    remaining = set(range(n))
    r = 0
    while remaining:
        idx = sorted(remaining)
        sub = objs[idx]
        front = [idx[k] for k in range(len(idx)) if not _dominated(sub, k)]
        for i in front:
            ranks[i] = r
        remaining -= set(front)
        r += 1
    return ranks


def _crowding(objs: np.ndarray) -> np.ndarray:
    n, m = objs.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(objs[:, j])
        span = objs[order[-1], j] - objs[order[0], j] or 1.0
        dist[order[0]] = dist[order[-1]] = np.inf
        dist[order[1:-1]] += (objs[order[2:], j] - objs[order[:-2], j]) / span
    return dist
