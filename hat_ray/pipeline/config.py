"""Experiment files for `hat-ray pipeline`: one YAML naming the space, data, devices + limits,
budgets of every stage, the cluster and the output folder. Validated like search spaces: every
problem (unknown key, wrong type, bad value) is reported at once, with the key's path.

Latency limits are milliseconds (``80``), percentiles of the latencies measured on that device
in the latency stage (``"p30"``), or multiples of the reference Arch's latency (``"1.2ref"``,
for devices measured with the reference protocol): percentile and reference limits make an
experiment portable across machines of different speed (the demo uses percentiles).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hat_ray.errors import ConfigError
from hat_ray.resources import load_named_yaml

_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d+)?)$")
_REFERENCE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)ref$")


@dataclass(frozen=True)
class DataSection:
    name: str = "synthetic"  # multi30k | wmt14_en_de | iwslt14_de_en | synthetic | a folder
    data_dir: str | None = None  # folder already holding the named dataset's files (no download)
    src_lang: str | None = None
    tgt_lang: str | None = None
    vocab_size: int = 8000
    download: bool = True
    valid_sentences: int | None = None  # scored by the search (default: all)
    test_split: str = "test"  # BLEU of the trained models
    test_sentences: int | None = None  # default: all


@dataclass(frozen=True)
class DeviceSection:
    profile: str  # device profile name or YAML path
    limits_ms: tuple[float | str, ...] = ()  # ms, or "pNN": NN-th percentile of measured latency
    latency_data: str | None = None  # use this dataset / HAT CSV instead of measuring


@dataclass(frozen=True)
class SupernetSection:
    max_minutes: float | None = None
    max_updates: int | None = None
    max_tokens: int = 4096
    lr: float = 5e-4
    warmup_updates: int = 4000
    schedule: str = "inverse_sqrt"
    dropout: float | None = None  # None: the space's
    seed: int = 1
    sandwich: bool = False
    largest_prob: float = 0.0  # chance per update of training the largest Arch instead of a sample
    largest_first: int = 0  # the first N updates train the largest Arch only, then sampling
    validate_every: int = 1000
    save_every: int = 1000
    workers: int = 1  # >1: Ray Train data-parallel workers
    cpus_per_worker: int = 1
    gpu: bool = False
    threads: int | None = None  # torch threads for a 1-worker run


@dataclass(frozen=True)
class LatencySection:
    archs: int = 200  # random Archs measured per device (skipped for devices with latency_data)
    seed: int = 0
    model: str = "default"  # predictor: default | hat-mlp
    holdout: float = 0.2  # share of rows held out to report the predictor's error


@dataclass(frozen=True)
class SearchSection:
    algorithm: str = "hat"  # hat | steady | random
    budget: int | None = None
    scorers: int = 2
    seed: int = 0
    margin: float = 0.0  # predictor standard deviations added to the predicted latency
    max_tokens: int = 4096
    population: int = 125
    parents: int = 25
    mutations: int = 50
    crossovers: int = 50
    mutation_prob: float = 0.3
    iterations: int = 30
    gpu: bool = False  # each scorer asks Ray for one GPU and scores on it
    cpus_per_scorer: int = 1  # CPUs each scorer asks Ray for (and its torch threads)

    def engine(self) -> Any:
        """The engine settings of this section (declared, with their defaults and checks, by
        :class:`hat_ray.search.evolution.EngineOptions`)."""
        from hat_ray.search.evolution import EngineOptions

        return EngineOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(EngineOptions)})


@dataclass(frozen=True)
class TrainSection:
    """Training of the search winners and of the baseline Transformers (uniform Archs scaled by
    depth and width), all with the same budget and initialisation."""

    max_minutes: float | None = None
    max_updates: int | None = None
    init: str = "supernet"  # supernet: inherit the SuperTransformer's weights | scratch
    baselines: tuple[str, ...] = ("largest", "shallow", "narrow", "smallest")
    max_tokens: int = 4096
    lr: float = 5e-4
    warmup_updates: int = 4000
    dropout: float | None = None  # None: the space's
    seed: int = 1
    threads: int | None = None  # torch threads for a 1-worker run
    workers: int = 1  # >1: each model trains on this many Ray Train data-parallel workers
    cpus_per_worker: int = 1
    gpu: bool = False  # one GPU per worker (with workers 1: this machine's GPU)


@dataclass(frozen=True)
class EvaluateSection:
    beam: int = 4
    lenpen: float = 0.6
    max_tokens: int = 4096


@dataclass(frozen=True)
class Experiment:
    name: str
    space: str
    out: str
    devices: tuple[DeviceSection, ...]
    data: DataSection = field(default_factory=DataSection)
    address: str | None = None  # Ray cluster; None: a local Ray instance
    supernet: SupernetSection = field(default_factory=SupernetSection)
    latency: LatencySection = field(default_factory=LatencySection)
    search: SearchSection = field(default_factory=SearchSection)
    train: TrainSection = field(default_factory=TrainSection)
    evaluate: EvaluateSection = field(default_factory=EvaluateSection)
    source: str = field(default="experiment", compare=False)

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> Experiment:
        """Read an experiment YAML (a path, or a bundled name from ``experiments/``)."""
        data, source = load_named_yaml("experiments", path, "experiment")
        if not isinstance(data, dict):
            raise ConfigError(source, ["an experiment file must be a YAML mapping"])
        data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "experiment") -> Experiment:
        problems: list[str] = []
        exp = _build(cls, {k: v for k, v in data.items() if k != "source"}, "", problems)
        if exp is not None:
            problems += exp.check()
        if problems or exp is None:
            raise ConfigError(source, problems)
        return dataclasses.replace(exp, source=source)

    def check(self) -> list[str]:
        """Value checks beyond types (names resolved lazily by the stages)."""
        problems = []
        if not self.devices:
            problems.append("devices: list at least one device profile with its latency limits")
        names = [d.profile for d in self.devices]
        if len(set(names)) != len(names):
            problems.append("devices: a profile is listed twice (give all its limits in one entry)")
        for i, dev in enumerate(self.devices):
            if not dev.limits_ms:
                problems.append(f"devices[{i}].limits_ms: give at least one limit (ms, or 'p30' for a percentile)")
            for limit in dev.limits_ms:
                parsed = parse_limit(limit)
                if parsed is None:
                    problems.append(f"devices[{i}].limits_ms: {limit!r} is neither a positive number of ms, "
                                    "a percentile like 'p30' nor a multiple of the reference Arch like '1.2ref'")
                elif parsed[0] == "ref" and dev.latency_data:
                    problems.append(f"devices[{i}].limits_ms: {limit!r} is in reference units, but the device's "
                                    "latency_data is imported (ms only): give ms or a percentile")
        for section in ("supernet", "train"):
            s = getattr(self, section)
            if s.max_minutes is None and s.max_updates is None:
                problems.append(f"{section}: give max_minutes or max_updates")
        for key, value, low in (("supernet.workers", self.supernet.workers, 1),
                                ("supernet.cpus_per_worker", self.supernet.cpus_per_worker, 1),
                                ("train.workers", self.train.workers, 1),
                                ("train.cpus_per_worker", self.train.cpus_per_worker, 1),
                                ("search.scorers", self.search.scorers, 1),
                                ("search.cpus_per_scorer", self.search.cpus_per_scorer, 1),
                                ("latency.archs", self.latency.archs, 1), ("evaluate.beam", self.evaluate.beam, 1),
                                ("data.vocab_size", self.data.vocab_size, 16)):
            if value < low:
                problems.append(f"{key} must be >= {low}, got {value}")
        if not 0 <= self.latency.holdout < 0.9:
            problems.append(f"latency.holdout must be in [0, 0.9), got {self.latency.holdout}")
        if self.latency.model not in ("default", "hat-mlp"):
            problems.append(f"latency.model must be default or hat-mlp, got {self.latency.model!r}")
        if self.search.algorithm not in ("hat", "steady", "random"):
            problems.append(f"search.algorithm must be hat, steady or random, got {self.search.algorithm!r}")
        else:
            problems += self.search.engine().problems(self.search.algorithm, prefix="search.")
        if self.search.budget is not None and self.search.budget < 1:
            problems.append(f"search.budget must be >= 1 (or null: the algorithm's own end), got {self.search.budget}")
        if self.search.margin < 0:
            problems.append(f"search.margin must be >= 0 predictor standard deviations, got {self.search.margin}")
        problems += _training_problems(self)
        if self.train.init not in ("supernet", "scratch"):
            problems.append(f"train.init must be supernet or scratch, got {self.train.init!r}")
        from hat_ray.pipeline.baselines import BASELINES

        unknown = [b for b in self.train.baselines if b not in BASELINES]
        if unknown:
            problems.append(f"train.baselines: unknown {unknown}; use some of {list(BASELINES)}")
        return problems

    def section(self, name: str) -> dict[str, Any]:
        value = getattr(self, name)
        return _plain(value)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "source"}


def _training_problems(exp: Experiment) -> list[str]:
    """The supernet and train sections checked by the training configuration's own rules
    (:meth:`hat_ray.train.config.TrainConfig.problems_of`), before any stage runs."""
    from hat_ray.train.config import TrainConfig

    problems = []
    for name, mode in (("supernet", "supernet"), ("train", "subnet")):
        section = dataclasses.asdict(getattr(exp, name))
        values = {k: v for k, v in section.items() if k in TrainConfig.__dataclass_fields__}
        # the budget is reported once, in the section's own words, by Experiment.check
        problems += [f"{name}.{p}" for p in TrainConfig.problems_of({**values, "mode": mode})
                     if not p.startswith("give --max-updates")]
    return problems


def parse_limit(limit: Any) -> tuple[str, float] | None:
    """``80`` -> ("ms", 80.0); ``"p30"`` -> ("percentile", 30.0); ``"1.2ref"`` -> ("ref", 1.2); None
    when invalid."""
    if isinstance(limit, bool):
        return None
    if isinstance(limit, int | float):
        return ("ms", float(limit)) if limit > 0 else None
    if isinstance(limit, str):
        m = _PERCENTILE.match(limit.strip())
        if m and 0 < float(m.group(1)) < 100:
            return "percentile", float(m.group(1))
        m = _REFERENCE.match(limit.strip())
        if m and float(m.group(1)) > 0:
            return "ref", float(m.group(1))
    return None


def fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "source"}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, data: Any, path: str, problems: list[str]) -> Any:
    """Instantiate dataclass ``cls`` from ``data`` with type checks; problems appended, None on failure."""
    where = path or "top level"
    if not isinstance(data, dict):
        problems.append(f"{where}: expected a mapping, got {type(data).__name__}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        problems.append(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(fields)}")
    kwargs: dict[str, Any] = {}
    ok = True
    for name, f in fields.items():
        key = f"{path}.{name}" if path else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{key}: missing (required)")
                ok = False
            continue
        value = _convert(hints[name], data[name], key, problems)
        if value is _BAD:
            ok = False
        else:
            kwargs[name] = value
    if not ok or unknown:
        return None
    return cls(**kwargs)


_BAD = object()


def _convert(hint: Any, value: Any, key: str, problems: list[str]) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        trial: list[str] = []
        for option in options:
            got = _convert(option, value, key, trial)
            if got is not _BAD:
                return got
        problems.append(f"{key}: expected {_describe(hint)}, got {value!r}")
        return _BAD
    if origin is tuple:
        if not isinstance(value, list | tuple):
            problems.append(f"{key}: expected a list, got {value!r}")
            return _BAD
        items = [_convert(args[0], v, f"{key}[{i}]", problems) for i, v in enumerate(value)]
        return _BAD if any(i is _BAD for i in items) else tuple(items)
    if dataclasses.is_dataclass(hint):
        built = _build(hint, value, key, problems)
        return _BAD if built is None else built
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    problems.append(f"{key}: expected {_describe(hint)}, got {value!r}")
    return _BAD


def _describe(hint: Any) -> str:
    args = typing.get_args(hint)
    if args:
        return " or ".join(_describe(a) for a in args if a is not type(None)) + (
            " or null" if type(None) in args else "")
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(hint, str(hint))
