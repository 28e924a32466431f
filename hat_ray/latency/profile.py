"""DeviceProfile: how and where one kind of device is measured.

File format (``device_profiles/*.yaml``)::

    name: raspberrypi4
    description: "..."
    device: cpu                  # torch device type: cpu | cuda
    dtype: float32               # float32 | float16 | bfloat16
    threads: 4                   # intra-op threads of the runtime; 0 = its default
    runtime: torch               # what runs the model (hat_ray.latency.backends): torch (default,
                                 #   eager) | torch-int8 | onnxruntime | onnxruntime-int8
    ray:
      resource: "device:rpi4"    # custom resource marking its nodes (1 per node: a probe holds it)
      label: {device: rpi4}      # optional node labels the probe also requires
      num_cpus: 4                # CPUs the probe holds on its node (keeps other work off it)
      local: false               # true: `collect` without --address may declare it on this machine
    protocol:
      batch: 1
      beam: 5
      src_len: null              # null: the search space's seq_len (30 WMT, 23 IWSLT)
      tgt_len: null              # decoder steps; null: src_len
      vocab: 32768               # rows of the output projection (HAT's WMT14 En-De joined dict)
      warmup: 5                  # untimed runs per part
      runs: 20                   # timed runs kept per part
      max_runs: 40               # cap when disturbed runs are dropped and replaced
      band: [0.1, 0.9]           # trimmed-mean band (HAT: 10-90%)
      statistic: trimmed_mean    # what latency_ms reports: trimmed_mean (HAT) | median
      max_cv: 0.1                # spread above this = machine disturbed: re-measure
      max_attempts: 3            # bounded re-measurement
      min_cpu_share: 0.0         # CPU drop-out detector (CPU only, 0 = off); see measure.py
      mode: sequential           # sequential: each Arch to the end (HAT) | reference: in rounds,
                                 #   each Arch timed right after the space's reference Arch
      rounds: 7                  # reference mode: rounds (one reference + Arch pair per Arch each)
      batch_archs: 8             # reference mode: Archs measured together (their models held in memory)
      max_rounds: 7              # reference mode: extra rounds, up to this, for Archs whose ratio is not
      precision: 0.01            #   yet this precise (relative standard error of its median)
    latency_normaliser_ms: 5000  # HAT's predictor target scale for this device

A SIMULATED device (``runtime: simulated``, hat_ray.latency.accelerator) is computed, not timed:
its ``simulator:`` section holds the hardware parameters, its protocol only ``batch``, ``beam``,
``src_len``, ``tgt_len``, ``vocab`` (and ``mode: sequential``), and it has no ``device``,
``dtype``, ``threads`` or device resource: it needs no node, its simulations run as Ray tasks
anywhere (``ray: {num_cpus: 1}``, the CPUs each task holds, is all its ``ray`` section may say)::

    name: gemmini_16x16
    runtime: simulated
    simulator: {rows: 16, cols: 16, dataflow: weight_stationary, dtype: int8, ...}
    protocol: {batch: 1, beam: 5, src_len: null, tgt_len: null, vocab: 32768}
    latency_normaliser_ms: 100

Validation reports every problem at once (ConfigError), like search spaces.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from hat_ray.errors import ConfigError
from hat_ray.latency import accelerator, backends
from hat_ray.latency.accelerator import Accelerator
from hat_ray.resources import load_named_yaml, section_values

# How to fix a profile file: every problem message ends with where complete examples are.
PROFILE_HINT = "compare with a bundled profile in device_profiles/, e.g. local_cpu.yaml"
_DEVICES = ("cpu", "cuda")
_DTYPES = ("float32", "float16", "bfloat16")
_STATISTICS = ("trimmed_mean", "median")
MODES = ("sequential", "reference")
SIMULATED = accelerator.RUNTIME  # the runtime of a simulated device
_SIMULATED_PROTOCOL = ("batch", "beam", "src_len", "tgt_len", "vocab", "mode")  # what a computed latency depends on


@dataclass(frozen=True)
class Protocol:
    """The measurement protocol (HAT section 4 plus the disturbance handling)."""

    batch: int = 1
    beam: int = 5
    src_len: int | None = None
    tgt_len: int | None = None
    vocab: int = 32768
    warmup: int = 5
    runs: int = 20
    max_runs: int = 40
    band: tuple[float, float] = (0.1, 0.9)
    statistic: str = "trimmed_mean"
    max_cv: float = 0.1
    max_attempts: int = 3
    min_cpu_share: float = 0.0
    mode: str = "sequential"
    rounds: int = 7
    batch_archs: int = 8
    max_rounds: int = 7
    precision: float = 0.01


@dataclass(frozen=True)
class RayPlacement:
    """Where probes for this device run: nodes carrying ``resource`` (and ``label``)."""

    resource: str
    label: Mapping[str, str] = field(default_factory=dict)
    num_cpus: float = 1.0
    local: bool = False


@dataclass(frozen=True)
class DeviceProfile:
    """A validated device profile. Build with :meth:`load` or :meth:`from_dict`."""

    name: str
    device: str
    dtype: str
    threads: int
    ray: RayPlacement
    protocol: Protocol
    latency_normaliser_ms: float
    description: str = ""
    runtime: str = backends.DEFAULT  # a registered latency backend (hat_ray.latency.backends), or SIMULATED
    simulator: Accelerator | None = None  # the hardware of a simulated device (runtime SIMULATED)

    @property
    def simulated(self) -> bool:
        """A simulated device: its latency is computed (hat_ray.latency.accelerator), on any node."""
        return self.simulator is not None

    @classmethod
    def load(cls, name_or_path: str | Path) -> DeviceProfile:
        """Load a bundled profile by name (``raspberrypi4``) or a YAML file path."""
        data, source = load_named_yaml("device_profiles", name_or_path, "device profile")
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Any, source: str = "device profile") -> DeviceProfile:
        """Validate a plain dict; ConfigError lists every problem."""
        if not isinstance(data, Mapping):
            raise ConfigError(source, [f"expected a mapping at top level, got {type(data).__name__}"], PROFILE_HINT)
        if data.get("runtime") == SIMULATED:
            return cls._simulated_from_dict(data, source)
        problems: list[str] = []
        known = {"name", "description", "device", "dtype", "threads", "runtime", "ray", "protocol",
                 "latency_normaliser_ms"}
        problems += [f"unknown top-level key {k!r} (allowed: {sorted(known)})"
                     + (f"; a simulator section needs runtime: {SIMULATED}" if k == "simulator" else "")
                     for k in data if k not in known]
        problems += [f"missing top-level key {k!r}" for k in ("name", "device", "ray", "latency_normaliser_ms")
                     if k not in data]
        name = data.get("name")
        if "name" in data and (not isinstance(name, str) or not name):
            problems.append(f"name must be a non-empty string, got {name!r}")
        device = data.get("device", "cpu")
        if device not in _DEVICES:
            problems.append(f"device must be one of {list(_DEVICES)}, got {device!r}")
        dtype = data.get("dtype", "float32")
        if dtype not in _DTYPES:
            problems.append(f"dtype must be one of {list(_DTYPES)}, got {dtype!r}")
        runtime = data.get("runtime", backends.DEFAULT)
        if not isinstance(runtime, str) or runtime not in backends.BACKENDS:
            problems.append(f"runtime must be one of {[*backends.BACKENDS, SIMULATED]}, got {runtime!r}")
        elif device in _DEVICES and dtype in _DTYPES:  # (a bad device or dtype is reported above)
            problems += backends.BACKENDS[runtime].problems(device, dtype)
        threads = data.get("threads", 0)
        if not _is_int(threads) or threads < 0:
            problems.append(f"threads must be an integer >= 0 (0 = PyTorch default), got {threads!r}")
        norm = data.get("latency_normaliser_ms")
        if "latency_normaliser_ms" in data and not _is_pos_number(norm):
            problems.append(f"latency_normaliser_ms must be a positive number, got {norm!r}")
        placement = _parse_ray(data.get("ray"), problems) if "ray" in data else None
        protocol = _parse_protocol(data.get("protocol", {}), problems)
        if problems:
            raise ConfigError(source, problems, PROFILE_HINT)
        assert placement is not None and protocol is not None
        return cls(name, device, dtype, int(threads), placement, protocol, float(norm),
                   str(data.get("description", "")), runtime)

    @classmethod
    def _simulated_from_dict(cls, data: Mapping[str, Any], source: str) -> DeviceProfile:
        """A ``runtime: simulated`` profile (see the module docstring); ConfigError lists every problem."""
        problems: list[str] = []
        known = {"name", "description", "runtime", "simulator", "ray", "protocol", "latency_normaliser_ms"}
        timed_only = {"device", "dtype", "threads"}
        problems += [f"{k}: a simulated device (runtime: simulated) has no {k}; its hardware is the simulator "
                     "section: remove it" for k in data if k in timed_only]
        problems += [f"unknown top-level key {k!r} (allowed for runtime: simulated: {sorted(known)})"
                     for k in data if k not in known and k not in timed_only]
        problems += [f"missing top-level key {k!r}" for k in ("name", "simulator", "latency_normaliser_ms")
                     if k not in data]
        name = data.get("name")
        if "name" in data and (not isinstance(name, str) or not name):
            problems.append(f"name must be a non-empty string, got {name!r}")
        norm = data.get("latency_normaliser_ms")
        if "latency_normaliser_ms" in data and not _is_pos_number(norm):
            problems.append(f"latency_normaliser_ms must be a positive number, got {norm!r}")
        hw = accelerator.parse_accelerator(data["simulator"], problems) if "simulator" in data else None
        raw_ray = data.get("ray", {}) or {}
        num_cpus = 1
        if not isinstance(raw_ray, Mapping):
            problems.append(f"ray must be a mapping, got {type(raw_ray).__name__}")
        else:
            problems += [f"ray: a simulated device runs anywhere, as Ray tasks: only num_cpus may be set, not {k!r}"
                         for k in raw_ray if k != "num_cpus"]
            num_cpus = raw_ray.get("num_cpus", 1)
            if not _is_number(num_cpus) or num_cpus <= 0:
                problems.append(f"ray.num_cpus must be a positive number (CPUs per simulation task), got {num_cpus!r}")
        raw_proto = data.get("protocol", {})
        if isinstance(raw_proto, Mapping):
            timed_keys = set(asdict(Protocol())) - set(_SIMULATED_PROTOCOL)
            problems += [f"protocol.{k}: a simulated device is computed, not timed: it takes only "
                         f"{list(_SIMULATED_PROTOCOL)}; remove {k}" for k in raw_proto if k in timed_keys]
            problems += [f"protocol: unknown key {k!r} (allowed for runtime: simulated: {list(_SIMULATED_PROTOCOL)})"
                         for k in raw_proto if k not in timed_keys and k not in _SIMULATED_PROTOCOL]
            if raw_proto.get("mode", "sequential") != "sequential":
                problems.append(f"protocol.mode: a simulated device is computed, not timed: its only mode is "
                                f"sequential, got {raw_proto['mode']!r}")
            raw_proto = {k: v for k, v in raw_proto.items() if k in _SIMULATED_PROTOCOL and k != "mode"}
        protocol = _parse_protocol(raw_proto, problems)
        if problems:
            raise ConfigError(source, problems, PROFILE_HINT.replace("local_cpu.yaml", "gemmini_16x16.yaml"))
        assert protocol is not None and hw is not None
        placement = RayPlacement("", {}, float(num_cpus), local=True)
        return cls(name, SIMULATED, hw.dtype, 0, placement, protocol, float(norm), str(data.get("description", "")),
                   SIMULATED, hw)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict that :meth:`from_dict` accepts (round trip)."""
        if self.simulator is not None:
            proto = asdict(self.protocol)
            return {"name": self.name, "description": self.description, "runtime": SIMULATED,
                    "simulator": self.simulator.to_dict(), "ray": {"num_cpus": self.ray.num_cpus},
                    "protocol": {k: proto[k] for k in _SIMULATED_PROTOCOL},
                    "latency_normaliser_ms": self.latency_normaliser_ms}
        out = asdict(self)
        out.pop("simulator")
        out["ray"]["label"] = dict(self.ray.label)
        out["protocol"]["band"] = list(self.protocol.band)
        return out

    def with_protocol(self, **changes: Any) -> DeviceProfile:
        """A copy with some protocol fields changed (validated again)."""
        data = self.to_dict()
        data["protocol"].update(changes)
        return DeviceProfile.from_dict(data, source=f"{self.name} (overridden)")

    def with_placement(self, **changes: Any) -> DeviceProfile:
        return replace(self, ray=replace(self.ray, **changes))


def _parse_ray(raw: Any, problems: list[str]) -> RayPlacement | None:
    if not isinstance(raw, Mapping):
        problems.append(f"ray must be a mapping, got {type(raw).__name__}")
        return None
    start = len(problems)
    allowed = {"resource", "label", "num_cpus", "local"}
    problems += [f"ray: unknown key {k!r} (allowed: {sorted(allowed)})" for k in raw if k not in allowed]
    resource = raw.get("resource")
    if not isinstance(resource, str) or not resource or resource in ("CPU", "GPU", "memory"):
        problems.append(f"ray.resource must name a custom resource such as 'device:rpi4', got {resource!r}")
    label = raw.get("label", {}) or {}
    if not isinstance(label, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in label.items()):
        problems.append(f"ray.label must map label names to string values, got {label!r}")
    num_cpus = raw.get("num_cpus", 1)
    if not isinstance(num_cpus, (int, float)) or isinstance(num_cpus, bool) or num_cpus < 0:
        problems.append(f"ray.num_cpus must be a number >= 0, got {num_cpus!r}")
    local = raw.get("local", False)
    if not isinstance(local, bool):
        problems.append(f"ray.local must be true or false, got {local!r}")
    if len(problems) > start:
        return None
    return RayPlacement(resource, dict(label), float(num_cpus), local)


def _parse_protocol(raw: Any, problems: list[str]) -> Protocol | None:
    start = len(problems)
    v = section_values(raw, asdict(Protocol()), "protocol", problems)
    if v is None:
        return None
    for key in ("batch", "beam", "vocab", "runs", "max_runs", "max_attempts", "rounds", "batch_archs", "max_rounds"):
        if not _is_int(v[key]) or v[key] < 1:
            problems.append(f"protocol.{key} must be a positive integer, got {v[key]!r}")
    if not _is_int(v["warmup"]) or v["warmup"] < 0:
        problems.append(f"protocol.warmup must be an integer >= 0, got {v['warmup']!r}")
    for key in ("src_len", "tgt_len"):
        if v[key] is not None and (not _is_int(v[key]) or v[key] < 1):
            problems.append(f"protocol.{key} must be a positive integer or null, got {v[key]!r}")
    if _is_int(v["vocab"]) and v["vocab"] < 8:
        problems.append(f"protocol.vocab must be at least 8 (special tokens), got {v['vocab']!r}")
    if _is_int(v["runs"]) and _is_int(v["max_runs"]) and v["max_runs"] < v["runs"]:
        problems.append(f"protocol.max_runs ({v['max_runs']}) must be >= protocol.runs ({v['runs']})")
    band = v["band"]
    if (not isinstance(band, (list, tuple)) or len(band) != 2 or not all(_is_number(b) for b in band)
            or not 0 <= band[0] < band[1] <= 1):
        problems.append(f"protocol.band must be [low, high] with 0 <= low < high <= 1, got {band!r}")
    if v["statistic"] not in _STATISTICS:
        problems.append(f"protocol.statistic must be one of {list(_STATISTICS)}, got {v['statistic']!r}")
    if not _is_pos_number(v["precision"]):
        problems.append(f"protocol.precision must be a positive number, got {v['precision']!r}")
    if v["mode"] not in MODES:
        problems.append(f"protocol.mode must be one of {list(MODES)}, got {v['mode']!r}")
    if not _is_pos_number(v["max_cv"]):
        problems.append(f"protocol.max_cv must be a positive number, got {v['max_cv']!r}")
    if not _is_number(v["min_cpu_share"]) or not 0 <= v["min_cpu_share"] <= 1:
        problems.append(f"protocol.min_cpu_share must be a number in [0, 1], got {v['min_cpu_share']!r}")
    if len(problems) > start:
        return None
    v["band"] = (float(band[0]), float(band[1]))
    v["max_cv"], v["min_cpu_share"], v["precision"] = float(v["max_cv"]), float(v["min_cpu_share"]), float(v["precision"])
    return Protocol(**v)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_pos_number(value: Any) -> bool:
    return _is_number(value) and value > 0
