"""TrainConfig: every knob of a training run, as plain data (saved in checkpoints)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from types import SimpleNamespace
from typing import Any

from hat_ray.errors import ConfigError
from hat_ray.train.schedule import SCHEDULES, Schedule

MODES = ("supernet", "subnet")


@dataclass(frozen=True)
class TrainConfig:
    """Defaults follow HAT's IWSLT recipe scaled to CPU runs (inverse-sqrt, warmup, clip 25)."""

    mode: str = "supernet"  # "supernet": one sampled Arch per update; "subnet": one fixed Arch
    max_updates: int | None = None
    max_minutes: float | None = None  # wall-clock budget (training + validation + saving)
    max_tokens: int = 4096  # padded tokens per batch (per worker, per micro-batch)
    update_freq: int = 1  # micro-batches accumulated per update (per worker)
    schedule: str = "inverse_sqrt"
    lr: float = 5e-4
    warmup_updates: int = 4000
    warmup_init_lr: float = 1e-7
    min_lr: float = 1e-7
    clip_norm: float = 25.0  # 0: no clipping (the norm is still logged)
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_eps: float = 1e-8
    label_smoothing: float = 0.1
    dropout: float | None = None  # None: the space's; a short run learns faster with less
    seed: int = 1
    sandwich: bool = False  # each update: largest + smallest + one sampled Arch (supernet only)
    largest_prob: float = 0.0  # chance that an update trains the largest Arch instead of a sample (supernet)
    largest_first: int = 0  # the first N updates train the largest Arch only, then sampling (supernet)
    # the first M minutes of training time train the largest Arch only, then sampling (supernet):
    # the same share of a time budget on a fast, slow or loaded machine (the switch update is
    # agreed by every worker and kept in the checkpoint)
    largest_first_minutes: float = 0.0
    validate_every: int = 1000  # updates; 0: only at the end
    save_every: int = 1000  # updates; 0: only at the end
    keep_last: int = 5  # numbered model-only checkpoints kept for averaging
    log_every: int = 100
    progress: bool = True
    tensorboard: bool = True
    trace: bool = False  # per-rank JSONL of Archs and gradient hashes (tests / debugging)

    def __post_init__(self) -> None:
        problems = self.problems_of(asdict(self))
        if problems:
            raise ConfigError("training configuration", problems)

    @classmethod
    def problems_of(cls, values: dict[str, Any]) -> list[str]:
        """Every problem of these settings (defaults for the missing ones), without raising: the
        pipeline checks its supernet and train sections with it before any stage runs."""
        c = SimpleNamespace(**{**{f.name: f.default for f in fields(cls)}, **values})
        problems = []
        if c.mode not in MODES:
            problems.append(f"mode must be one of {MODES}, got {c.mode!r}")
        if c.max_updates is None and c.max_minutes is None:
            problems.append("give --max-updates or --max-minutes (or both)")
        for name in ("max_tokens", "update_freq", "log_every"):
            if getattr(c, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(c, name)}")
        for name in ("validate_every", "save_every", "keep_last"):  # 0: only at the end / keep none
            if getattr(c, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(c, name)}")
        if c.seed < 0:  # numpy's generators (batches, Archs) refuse negative seeds
            problems.append(f"seed must be >= 0, got {c.seed}")
        if c.max_updates is not None and c.max_updates < 0:
            problems.append(f"max_updates must be >= 0, got {c.max_updates}")
        if c.max_minutes is not None and c.max_minutes <= 0:
            problems.append(f"max_minutes must be > 0, got {c.max_minutes}")
        if c.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {SCHEDULES}, got {c.schedule!r}")
        if c.schedule == "cosine" and c.max_updates is None:
            problems.append("schedule cosine needs max_updates (its horizon); use inverse_sqrt with a time budget")
        if c.dropout is not None and not 0 <= c.dropout < 1:
            problems.append(f"dropout must be in [0, 1), got {c.dropout}")
        if not 0 <= c.label_smoothing < 1:
            problems.append(f"label_smoothing must be in [0, 1), got {c.label_smoothing}")
        if c.lr <= 0 or c.warmup_updates < 0:
            problems.append("lr must be > 0 and warmup_updates >= 0")
        if c.sandwich and c.mode != "supernet":
            problems.append("the sandwich rule applies to supernet training only")
        if not 0 <= c.largest_prob <= 1:
            problems.append(f"largest_prob must be in [0, 1], got {c.largest_prob}")
        elif c.largest_prob and (c.sandwich or c.mode != "supernet"):
            problems.append("largest_prob applies to supernet training without the sandwich rule (which trains "
                            "the largest Arch every update already)")
        if c.largest_first < 0:
            problems.append(f"largest_first must be >= 0 updates, got {c.largest_first}")
        elif c.largest_first and c.mode != "supernet":
            problems.append("largest_first applies to supernet training only")
        if not c.largest_first_minutes >= 0:  # also refuses nan
            problems.append(f"largest_first_minutes must be >= 0 minutes, got {c.largest_first_minutes}")
        elif c.largest_first_minutes and c.mode != "supernet":
            problems.append("largest_first_minutes applies to supernet training only")
        elif c.largest_first_minutes and c.max_minutes is not None and c.largest_first_minutes >= c.max_minutes:
            problems.append(f"largest_first_minutes ({c.largest_first_minutes:g}) must be below max_minutes "
                            f"({c.max_minutes:g}), or no update would sample an Arch")
        return problems

    def schedule_fn(self) -> Schedule:
        return Schedule(self.schedule, self.lr, self.warmup_updates, self.warmup_init_lr, self.min_lr,
                        self.max_updates)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **changes})


# Settings that change which batches or Archs a resumed run sees: a resume with different values
# still runs, but is no longer an exact continuation (logged).
EXACT_RESUME_KEYS = ("max_tokens", "update_freq", "seed", "sandwich", "largest_prob", "largest_first",
                     "largest_first_minutes", "schedule", "lr", "warmup_updates", "label_smoothing")
