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
import difflib
import hashlib
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hat_ray.errors import ConfigError
from hat_ray.resources import load_named_yaml
from hat_ray.search.evolution import ENGINES, EngineOptions

_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d+)?)$")
_REFERENCE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)ref$")
PREDICTOR_MIN_ROWS = 10  # latency rows per device the predictor stage needs
# How to fix an experiment file's keys: every such message ends with where a complete one is.
EXPERIMENT_HINT = "compare with the bundled experiments/demo.yaml"


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
    largest_first_minutes: float = 0.0  # the first M minutes train the largest Arch only, then sampling
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
class SearchSection(EngineOptions):
    """The search stage: the engine's settings (population, parents, ...: declared with their
    defaults and checks by :class:`hat_ray.search.evolution.EngineOptions`) and these."""

    algorithm: str = "hat"  # a registered engine: hat | pareto | steady | random (see search.evolution.ENGINES)
    budget: int | None = None
    scorers: int = 2
    seed: int = 0
    margin: float = 0.0  # predictor standard deviations added to the predicted latency
    max_tokens: int = 4096
    gpu: bool = False  # each scorer asks Ray for one GPU and scores on it
    cpus_per_scorer: int = 1  # CPUs each scorer asks Ray for (and its torch threads)
    scorer_slots: int = 1  # candidates each scorer process scores at once (threads sharing its weights)

    def engine(self) -> EngineOptions:
        """The engine settings of this section, as the engines take them."""
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
    # deployed variants of every searched model, each exported (export/MODEL-VARIANT/) and its
    # BLEU measured on the test split: onnx | onnx-int8 | torchscript
    export: tuple[str, ...] = ()


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
        """Read and :meth:`check` an experiment; ConfigError lists every problem. A value of the wrong
        type (or missing) stands in as its default while the others are checked, so that type and
        value problems are reported together; what the checks say about a stand-in is dropped."""
        problems: list[str] = []
        bad: list[str] = []
        exp = _build(cls, {k: v for k, v in data.items() if k != "source"}, "", problems, bad)
        hint = EXPERIMENT_HINT if problems else None  # keys unknown, missing or of the wrong type
        if exp is not None:
            problems += [p for p in exp.check() if not _about(p, bad)]
        if problems or exp is None:
            raise ConfigError(source, problems, hint)
        return dataclasses.replace(exp, source=source)

    def check(self) -> list[str]:
        """Every value checked against the component that will use it (the search space, the
        dataset registry, device profiles, the latency predictor, the training configuration, the
        search engines), so that a bad value is refused, with every other problem, before the first
        stage starts. Each problem names its key as written in the file (``section.key``)."""
        problems = _top_problems(self)
        space = _space(self, problems)
        problems += _data_problems(self)
        problems += _device_problems(self, space)
        for section in ("supernet", "train"):
            s = getattr(self, section)
            if s.max_minutes is None and s.max_updates is None:
                problems.append(f"{section}: give max_minutes or max_updates")
        everything = " (or null: all)"
        for key, value, low, note in (("supernet.workers", self.supernet.workers, 1, ""),
                                      ("supernet.cpus_per_worker", self.supernet.cpus_per_worker, 1, ""),
                                      ("supernet.threads", self.supernet.threads, 1, " (or null: torch's default)"),
                                      ("train.workers", self.train.workers, 1, ""),
                                      ("train.cpus_per_worker", self.train.cpus_per_worker, 1, ""),
                                      ("train.threads", self.train.threads, 1, " (or null: torch's default)"),
                                      ("search.scorers", self.search.scorers, 1, ""),
                                      ("search.cpus_per_scorer", self.search.cpus_per_scorer, 1, ""),
                                      ("search.scorer_slots", self.search.scorer_slots, 1, ""),
                                      ("search.max_tokens", self.search.max_tokens, 1, ""),
                                      ("search.seed", self.search.seed, 0, ""),
                                      ("latency.archs", self.latency.archs, 1, ""),
                                      ("latency.seed", self.latency.seed, 0, ""),
                                      ("evaluate.beam", self.evaluate.beam, 1, ""),
                                      ("evaluate.lenpen", self.evaluate.lenpen, 0, " (0: no length normalisation)"),
                                      ("evaluate.max_tokens", self.evaluate.max_tokens, 1, ""),
                                      ("data.vocab_size", self.data.vocab_size, 16, ""),
                                      ("data.valid_sentences", self.data.valid_sentences, 1, everything),
                                      ("data.test_sentences", self.data.test_sentences, 1, everything)):
            if value is not None and value < low:
                problems.append(f"{key} must be >= {low}{note}, got {value}")
        if 1 <= self.latency.archs < PREDICTOR_MIN_ROWS and any(not d.latency_data for d in self.devices):
            problems.append(f"latency.archs must be >= {PREDICTOR_MIN_ROWS} (the rows a latency predictor needs per "
                            f"measured device), got {self.latency.archs}")
        if not 0 <= self.latency.holdout < 0.9:
            problems.append(f"latency.holdout must be in [0, 0.9), got {self.latency.holdout}")
        from hat_ray.latency.predictor import fit_problems

        problems += [f"latency.{p}" for p in fit_problems(model=self.latency.model)]
        if self.search.algorithm not in ENGINES:
            problems.append(f"search.algorithm must be one of {', '.join(ENGINES)}, got {self.search.algorithm!r}")
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
        problems += export_problems(self.evaluate.export)
        twice = sorted({b for b in self.train.baselines if self.train.baselines.count(b) > 1})
        if twice:
            problems.append(f"train.baselines: {twice} listed twice; list each baseline once")
        return problems

    def section(self, name: str) -> dict[str, Any]:
        value = getattr(self, name)
        return _plain(value)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "source"}


EXPORT_VARIANTS = {"onnx": ("onnx", False), "onnx-int8": ("onnx", True), "torchscript": ("torchscript", False)}


def export_problems(variants: tuple[str, ...]) -> list[str]:
    """evaluate.export: known variants, each once, and their runtime installed here."""
    from hat_ray.errors import ExportError
    from hat_ray.export.folder import check_format

    out = []
    for v in dict.fromkeys(variants):
        if v not in EXPORT_VARIANTS:
            out.append(f"evaluate.export: unknown variant {v!r}; use some of {', '.join(EXPORT_VARIANTS)}")
            continue
        try:
            check_format(*EXPORT_VARIANTS[v])
        except ExportError as exc:
            out.append(f"evaluate.export: {v}: {exc}")
    if len(set(variants)) != len(variants):
        out.append(f"evaluate.export lists a variant twice: {list(variants)}")
    return out


def _top_problems(exp: Experiment) -> list[str]:
    problems = []
    if not exp.name.strip():
        problems.append("name: give the experiment a name (it titles the report)")
    if not exp.out.strip():
        problems.append("out: give the run folder in the experiment or with --out")
    else:
        out = Path(exp.out)
        for folder in (out, *out.parents):  # the run folder, or the first of its parents that exists
            if folder.exists():
                if not folder.is_dir():
                    problems.append(f"out: {folder} is a file, not a folder; choose another out")
                break
    return problems


def _space(exp: Experiment, problems: list[str]) -> Any:
    """The experiment's SearchSpace (None, with its problems, when it cannot be loaded)."""
    from hat_ray.space import SearchSpace

    if not exp.space.strip():
        problems.append("space: give a bundled search space name (e.g. demo) or a space YAML path")
        return None
    try:
        return SearchSpace.load(exp.space)
    except ConfigError as exc:
        problems.append(f"space: {_message(exc, 'search space')}")
        return None


def _data_problems(exp: Experiment) -> list[str]:
    """The data section checked by the dataset registry's own rules
    (:func:`hat_ray.data.datasets.problems`): the name, data_dir, languages and the files of every
    split the stages read (the test split is the evaluate stage's)."""
    from hat_ray.data.datasets import problems

    d = exp.data
    return problems(d.name, d.data_dir, download=d.download, src_lang=d.src_lang, tgt_lang=d.tgt_lang,
                    splits={"train": "name", "valid": "name", d.test_split: "test_split"}, prefix="data.")


def _device_problems(exp: Experiment, space: Any) -> list[str]:
    """Each device: its profile loads, it is listed once, its limits parse (once each, in units its
    latency data will have), its latency_data imports with enough rows of this space, and a device
    to be measured can be (a local one, or one of the cluster at ``address``)."""
    from hat_ray.cluster import runs_locally
    from hat_ray.latency.profile import DeviceProfile

    problems = []
    if not exp.devices:
        problems.append("devices: list at least one device profile with its latency limits")
    address = exp.address or os.environ.get("RAY_ADDRESS")
    first: dict[str, int] = {}
    for i, dev in enumerate(exp.devices):
        key, profile = f"devices[{i}]", None
        if not dev.profile.strip():
            problems.append(f"{key}.profile: give a device profile name (e.g. local_cpu) or a profile YAML path")
        else:
            try:
                profile = DeviceProfile.load(dev.profile)
            except ConfigError as exc:
                problems.append(f"{key}.profile: {_message(exc, 'device profile')}")
        if profile is not None and profile.name in first:
            problems.append(f"devices: a profile is listed twice ({profile.name}: devices[{first[profile.name]}] and "
                            f"{key}); give all its limits in one entry")
        elif profile is not None:
            first[profile.name] = i
        if not dev.limits_ms:
            problems.append(f"{key}.limits_ms: give at least one limit (ms, or 'p30' for a percentile)")
        seen: set[tuple[str, float]] = set()
        for limit in dev.limits_ms:
            parsed = parse_limit(limit)
            if parsed is None:
                problems.append(f"{key}.limits_ms: {limit!r} is neither a positive number of ms, "
                                "a percentile like 'p30' nor a multiple of the reference Arch like '1.2ref'")
            elif parsed in seen:
                problems.append(f"{key}.limits_ms: {limit!r} is listed twice (one search per limit)")
            elif parsed[0] == "ref" and dev.latency_data:
                problems.append(f"{key}.limits_ms: {limit!r} is in reference units, but the device's "
                                "latency_data is imported (ms only): give ms or a percentile")
            elif parsed[0] == "ref" and profile is not None and profile.protocol.mode != "reference":
                problems.append(f"{key}.limits_ms: {limit!r} is in reference units, but {profile.name} is measured "
                                f"with the {profile.protocol.mode} protocol (ms): give ms or a percentile, or use "
                                "a profile whose protocol.mode is reference")
            if parsed is not None:
                seen.add(parsed)
        if dev.latency_data is not None:
            problems += _latency_data_problems(dev.latency_data, f"{key}.latency_data", profile, space)
        elif profile is not None and not address and not runs_locally(profile):
            why = "its profile's ray.local is false" if not profile.ray.local else "torch sees no CUDA GPU here"
            problems.append(f"{key}.profile: {profile.name} cannot be measured on this machine ({why}) and the "
                            f"experiment has no address: give the address of a Ray cluster with {profile.name} "
                            "nodes, or the device's latency_data")
    return problems


def _latency_data_problems(path: str, key: str, profile: Any, space: Any) -> list[str]:
    """An imported latency file read as the latency stage will, then checked by the predictor's
    rules (:func:`hat_ray.latency.predictor.fit_problems`)."""
    from hat_ray.errors import HatRayError
    from hat_ray.latency.predictor import fit_problems

    if not Path(path).is_file():
        return [f"{key}: {path} is not a file (give a hat-ray latency dataset .parquet or HAT's latency CSV)"]
    if profile is None or space is None:
        return []
    from hat_ray.latency.dataset import LatencyDataset

    try:
        data = LatencyDataset.load_device(path, profile.name, space.name)  # as the latency stage reads it
    except HatRayError as exc:
        return [f"{key}: {exc}"]
    return [f"{key}: {p}" for p in fit_problems(data, space=space, min_rows=PREDICTOR_MIN_ROWS)]


def _message(exc: ConfigError, kind: str) -> str:
    """A component's ConfigError as a problem of the experiment (without its generic source)."""
    return str(exc).removeprefix(f"{kind}: ")


def _about(problem: str, keys: list[str]) -> bool:
    """Whether a check's ``problem`` concerns one of ``keys`` (values that could not be read, checked
    as their stand-ins): it is in the key's section and names the key."""
    for key in keys:
        section, name = re.split(r"[.\[]", key, maxsplit=1)[0], key.rsplit(".", 1)[-1]
        if re.match(rf"{re.escape(section)}(?!\w)", problem) and re.search(rf"(?<!\w){re.escape(name)}(?!\w)",
                                                                            problem):
            return True
    return False


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
        return ("ms", float(limit)) if 0 < limit < math.inf else None
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


def _build(cls: type, data: Any, path: str, problems: list[str], bad: list[str]) -> Any:
    """Instantiate dataclass ``cls`` from ``data`` with type checks; problems appended. A missing
    or ill-typed value stands in as its default (its key appended to ``bad``) so that the others
    are still built and checked; None when ``data`` is not a mapping."""
    where = path or "top level"
    if not isinstance(data, dict):
        problems.append(f"{where}: expected a mapping, got {type(data).__name__}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        problems.append(f"{where}: unknown key(s) {', '.join(_maybe_meant(k, fields) for k in unknown)}; "
                        f"known: {', '.join(fields)}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{path}.{name}" if path else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{key}: missing (required)")
                bad.append(key)
                kwargs[name] = _stand_in(f, hints[name])
            continue
        value = _convert(hints[name], data[name], key, problems, bad)
        if value is _BAD:
            bad.append(key)
            kwargs[name] = _stand_in(f, hints[name])
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _maybe_meant(key: Any, fields: dict[str, Any]) -> str:
    close = difflib.get_close_matches(str(key), fields, n=1, cutoff=0.7)
    return f"{key} (did you mean {close[0]}?)" if close else str(key)


def _stand_in(f: dataclasses.Field, hint: Any) -> Any:
    """A missing or unreadable value's stand-in: its default, else an empty one."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return () if typing.get_origin(hint) is tuple else ""


_BAD = object()


def _convert(hint: Any, value: Any, key: str, problems: list[str], bad: list[str]) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        trial: list[str] = []
        for option in options:
            got = _convert(option, value, key, trial, [])
            if got is not _BAD:
                return got
        problems.append(f"{key}: expected {_describe(hint)}, got {value!r}")
        return _BAD
    if origin is tuple:
        if not isinstance(value, list | tuple):
            problems.append(f"{key}: expected a list, got {value!r}")
            return _BAD
        items = []
        for i, v in enumerate(value):
            item = _convert(args[0], v, f"{key}[{i}]", problems, bad)
            if item is _BAD:
                bad.append(f"{key}[{i}]")
                if not dataclasses.is_dataclass(args[0]):
                    continue
                item = _build(args[0], {}, f"{key}[{i}]", [], [])  # a stand-in keeps the entries' numbers
            items.append(item)
        if value and not items:
            return _BAD
        return tuple(items)
    if dataclasses.is_dataclass(hint):
        built = _build(hint, value, key, problems, bad)
        return _BAD if built is None else built
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
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
    return {int: "an integer", float: "a finite number", str: "a string", bool: "true/false"}.get(hint, str(hint))
