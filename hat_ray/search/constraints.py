"""Latency constraints: one or more (device, limit_ms) pairs, each checked with its predictor.

A predictor is anything with ``predict_with_uncertainty(archs) -> (mean_ms, std_ms)`` (the
latency issue's LatencyPredictor) or ``predict(archs) -> mean_ms``. With ``margin`` k > 0 an
Arch is feasible only when ``mean + k * std <= limit`` (a safety margin from the predictor's
uncertainty). Predictions are cached per Arch: the search asks about the same Arch many times.

A constraint whose predictor knows its search space (``predictor.space``, as LatencyPredictor
does) checks at construction that its limit is reachable at all: when even the fastest of the
space's smallest Arch and a fixed sample of others is predicted over the limit, InfeasibleError
is raised right away, before any cluster starts or any candidate is scored (the engines still
detect limits that turn out infeasible later, e.g. only jointly over several devices).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from hat_ray.arch import Arch
from hat_ray.errors import InfeasibleError
from hat_ray.space import SearchSpace

REACHABLE_SAMPLE = 512  # Archs predicted by the up-front reachability check (plus the smallest)


class Predictor(Protocol):
    def predict(self, archs: list[Arch]) -> np.ndarray: ...


@dataclass
class Constraint:
    device: str
    limit_ms: float
    predictor: Any
    margin: float = 0.0  # in predictor standard deviations
    _cache: dict[Arch, tuple[float, float]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        space = getattr(self.predictor, "space", None)
        if isinstance(space, SearchSpace) and np.isfinite(self.limit_ms):
            self.check_reachable(space)

    def check_reachable(self, space: SearchSpace) -> None:
        """InfeasibleError when no Arch of ``space`` we try (its smallest plus a fixed random
        sample) is predicted within the limit: a limit no search could meet."""
        rng = np.random.default_rng(0)  # its own generator: the search's randomness is untouched
        archs = list(dict.fromkeys([space.smallest(), *(space.sample(rng) for _ in range(REACHABLE_SAMPLE))]))
        fastest = float(self.bound(archs).min())
        self._cache.clear()  # a probe, not candidates: keep the cache for Archs the search uses
        if fastest > self.limit_ms:
            margin = f" (mean + {self.margin:g} sigma)" if self.margin else ""
            raise InfeasibleError(
                f"no SubTransformer of space {space.name} meets the {self.device} limit of {self.limit_ms:g} ms: "
                f"the fastest of {len(archs)} tried, incl. the smallest, is predicted at {fastest:.3g} ms{margin}; "
                f"raise the limit to at least {fastest:.3g} ms or use a smaller space"
            )

    def predict(self, archs: Sequence[Arch]) -> tuple[np.ndarray, np.ndarray]:
        """(mean_ms, std_ms) per Arch (std 0 for predictors without uncertainty)."""
        todo = [a for a in dict.fromkeys(archs) if a not in self._cache]
        if todo:
            if hasattr(self.predictor, "predict_with_uncertainty"):
                mean, std = self.predictor.predict_with_uncertainty(todo)
            else:
                mean = self.predictor.predict(todo)
                std = np.zeros(len(todo))
            for a, m, s in zip(todo, np.asarray(mean, float), np.asarray(std, float)):
                self._cache[a] = (float(m), float(s))
        got = [self._cache[a] for a in archs]
        return np.array([g[0] for g in got]), np.array([g[1] for g in got])

    def bound(self, archs: Sequence[Arch]) -> np.ndarray:
        """The value compared with the limit: mean + margin * std (ms)."""
        mean, std = self.predict(archs)
        return mean + self.margin * std

    def forget(self, archs: Sequence[Arch]) -> None:
        """Drop cached predictions (of Archs the search rejected and will not ask about again)."""
        for a in archs:
            self._cache.pop(a, None)


class Constraints:
    """A conjunction of per-device latency constraints (possibly none)."""

    def __init__(self, constraints: Sequence[Constraint] = ()) -> None:
        self.items = list(constraints)
        self.smallest_seen: dict[str, float] = {c.device: float("inf") for c in self.items}

    @property
    def devices(self) -> list[str]:
        return [c.device for c in self.items]

    def feasible(self, archs: Sequence[Arch]) -> np.ndarray:
        """Boolean mask; also tracks the smallest bound seen per device (for InfeasibleError).
        Predictions of infeasible Archs are not kept: a search samples tens of candidates per
        feasible one, and caching them all grew the driver's memory with every evaluation."""
        ok = np.ones(len(archs), dtype=bool)
        for c in self.items:
            bound = c.bound(archs)
            if len(bound):
                self.smallest_seen[c.device] = min(self.smallest_seen[c.device], float(bound.min()))
            ok &= bound <= c.limit_ms
        rejected = [a for a, good in zip(archs, ok) if not good]
        for c in self.items:
            c.forget(rejected)
        return ok

    def latencies(self, arch: Arch) -> dict[str, float]:
        """Predicted mean latency (ms) per device."""
        return {c.device: float(c.predict([arch])[0][0]) for c in self.items}

    def describe_infeasible(self) -> str:
        parts = [
            f"{c.device}: limit {c.limit_ms:g} ms, smallest predicted {self.smallest_seen[c.device]:.1f} ms"
            + (f" (incl. margin {c.margin:g} sigma)" if c.margin else "")
            for c in self.items
        ]
        return "; ".join(parts)
