"""Learning-rate schedules as pure functions of the update number (nothing to checkpoint).

``warmup``: linear from ``warmup_init_lr`` to ``lr`` over ``warmup_updates``; then
- ``cosine``: half a cosine from ``lr`` down to ``min_lr`` at ``max_updates`` (HAT's WMT recipe,
  one period; held at ``min_lr`` after),
- ``inverse_sqrt``: ``lr * sqrt(warmup_updates / update)`` (HAT's IWSLT recipe; fits runs whose
  length is a time budget, because it needs no horizon),
- ``constant``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("cosine", "inverse_sqrt", "constant")


@dataclass(frozen=True)
class Schedule:
    kind: str = "inverse_sqrt"
    lr: float = 5e-4
    warmup_updates: int = 4000
    warmup_init_lr: float = 1e-7
    min_lr: float = 1e-7
    max_updates: int | None = None  # horizon of the cosine

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}: use one of {', '.join(SCHEDULES)}")
        if self.kind == "cosine" and not self.max_updates:
            raise ValueError("the cosine schedule needs max_updates (its horizon)")

    def lr_at(self, update: int) -> float:
        """Learning rate for update number ``update`` (1-based: the first update is 1)."""
        update = max(update, 1)
        if update <= self.warmup_updates:
            return self.warmup_init_lr + (self.lr - self.warmup_init_lr) * update / self.warmup_updates
        if self.kind == "constant":
            return self.lr
        if self.kind == "inverse_sqrt":
            return self.lr * math.sqrt(max(self.warmup_updates, 1) / update)
        assert self.max_updates is not None
        span = max(self.max_updates - self.warmup_updates, 1)
        progress = min((update - self.warmup_updates) / span, 1.0)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))
