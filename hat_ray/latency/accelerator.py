"""A simulated accelerator as a latency device: a Gemmini-like systolic array, computed not timed.

A device profile with ``runtime: simulated`` and a ``simulator:`` section (:class:`Accelerator`)
"measures" an Arch by computing the cycles of its latency protocol's work
(hat_ray.latency.workload: the encoder forward and the incremental decoder steps on
``batch * beam`` rows, full-vocabulary output projection included) on that hardware. The result
is deterministic: no warm-up, rounds or reference Arch; the record has the dataset's columns with
``latency_ms = cycles / clock`` and the breakdown ``matmul_ms + memory_stall_ms + nonlinear_ms``.

The model (documented, analytic; per GEMM ``(m x k) @ (k x n)``, array ``R`` rows x ``C`` cols):

* **Compute** follows SCALE-Sim's analytical systolic-array model (Samajdar et al., the
  ``scalesim`` package): the GEMM is cut into folds of the array. Weight stationary: a ``R x C``
  tile of ``B`` (``k`` over rows, ``n`` over columns) is held in the PEs and the ``m`` rows of
  ``A`` stream through; ``ceil(k/R) * ceil(n/C)`` folds of ``2R + C + m - 2`` cycles each (weight
  fill, skewed stream, drain). Output stationary: a ``R x C`` tile of the output accumulates over
  ``k``; ``ceil(m/R) * ceil(n/C)`` folds of ``R + C + k - 2`` cycles. With ``overlap_folds: false``
  these are exactly SCALE-Sim 3.0.0's compute cycles (checked against its compute module, see
  benchmarks/accelerator.py); with ``overlap_folds: true`` (Gemmini's double-buffered PE
  weights) only the first fold pays the fill: every further fold costs ``max(m, R)`` cycles (WS)
  or ``max(k, R)`` (OS). Weight stationary keeps partial sums of ``m x C`` outputs in the
  accumulator (4-byte entries, half of it: double buffering); when ``m`` rows do not fit, ``A``
  is processed in row chunks and the weights are loaded once per chunk.
* **Memory**: bytes moved between DRAM and the scratchpad, at ``dram_gb_per_s``. Weights and
  the decoder's key/value caches always come from DRAM; a persistent tensor (the encoder's kept
  layer outputs, the K/V caches) is stored there when produced. A transient activation stays on
  chip when it fits in half the scratchpad (double buffering); one that does not spills: it is
  written by its producer and read back by its consumer. An operand that fits in half the
  scratchpad is moved once; when neither does, the one kept on chip is blocked (as many rows of
  ``A``, or columns of ``B``, as fit) and the other is re-streamed once per block, in whichever
  order moves fewer bytes. Weight stationary also reloads the weights once per accumulator row
  chunk. Transfers overlap compute (double-buffered DMA), so a GEMM's **memory stall** is what
  its transfer time exceeds its compute time by: ``max(0, bytes / bandwidth - compute)``.
  Embedding gathers have no compute to hide behind: all their transfer time is stall.
* **Non-linear ops** (Softmax, LayerNorm, ReLU, element-wise: residual adds, embedding scale and
  position add) run on ``nonlinear.unit``: the host CPU or a vector unit, or hardware units next
  to the array. An invocation over ``E`` elements costs ``overhead_cycles + ceil(E / lanes) *
  cycles_per_element[op]``, after the GEMMs that produce its input (no overlap: Gemmini's host
  and array hand tensors back and forth).

Latency of a part = matmul cycles + memory stall cycles + non-linear cycles; the record gives them
per part in ``simulation`` (JSON) and in ms for the whole Arch. What this model leaves out: DRAM
latency and request queueing (SCALE-Sim's trace-driven memory simulation goes further there),
scratchpad bank conflicts, the host's own work between ops, and layout changes (attention's
``K^T`` and the head split are assumed laid out for the array by the DMA).

SCALE-Sim itself (``pip install scalesim``, 3.0.0) simulates each GEMM cycle by cycle from
operand address traces. Measured on a 2-core VM (benchmarks/accelerator.py --scalesim): its
compute module alone takes 0.003-5 s per GEMM (8-11 s for the 73 distinct GEMM shapes of the
demo space's smallest Arch), its whole simulation with the memory system 4 s for a 5x512x512
GEMM and 32 s for 5x512x2048, against about 0.5 ms per Arch for this model, whose compute cycles
equal its compute module's on every shape checked. Its memory simulation also fails with NumPy
2.4 (``TypeError: only 0-dimensional arrays can be converted to Python scalars`` in
``read_buffer.prefetch_active_buffer``). Hence the closed form of its compute model, checked
against it, and the documented memory model above.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from hat_ray.latency.workload import PARTS, VECTOR_OPS, Workload, workload
from hat_ray.resources import section_values

if TYPE_CHECKING:
    from hat_ray.arch import Arch
    from hat_ray.latency.profile import DeviceProfile
    from hat_ray.space import SearchSpace

RUNTIME = "simulated"  # the profile ``runtime`` of a simulated device
MODEL_VERSION = "systolic-analytic-1"  # bump when the cycle model changes (recorded as runtime_version)
DATAFLOWS = ("weight_stationary", "output_stationary")
DTYPES = {"int8": 1, "fp32": 4}  # element bytes of operands in DRAM / scratchpad
ACC_BYTES = 4  # accumulator entry (int32 / fp32)
UNITS = ("host_cpu", "vector_unit", "hardware")
_FIX = "see the simulator section of a bundled profile, e.g. device_profiles/gemmini_16x16.yaml"


@dataclass(frozen=True)
class NonLinearUnit:
    """Where Softmax / LayerNorm / ReLU / element-wise ops run, and what each element costs."""

    unit: str = "host_cpu"
    lanes: int = 1
    overhead_cycles: float = 0.0
    cycles_per_element: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(VECTOR_OPS, 1.0))

    def cycles(self, op: str, elements: int, count: int = 1) -> float:
        return count * (self.overhead_cycles + math.ceil(elements / self.lanes) * self.cycles_per_element[op])


@dataclass(frozen=True)
class Accelerator:
    """Hardware parameters of a simulated systolic-array accelerator (a profile's ``simulator:``)."""

    rows: int = 16
    cols: int = 16
    dataflow: str = "weight_stationary"
    dtype: str = "int8"
    clock_mhz: float = 1000.0
    scratchpad_kib: float = 256.0
    accumulator_kib: float = 64.0
    dram_gb_per_s: float = 8.0
    overlap_folds: bool = True
    nonlinear: NonLinearUnit = field(default_factory=NonLinearUnit)

    @property
    def element_bytes(self) -> int:
        return DTYPES[self.dtype]

    @property
    def bytes_per_cycle(self) -> float:
        return self.dram_gb_per_s * 1e9 / (self.clock_mhz * 1e6)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["nonlinear"]["cycles_per_element"] = dict(self.nonlinear.cycles_per_element)
        return out

    def fingerprint(self) -> str:
        """Canonical JSON of the parameters (the dataset's ``simulator`` column)."""
        return json.dumps(self.to_dict(), sort_keys=True)


# ---- validation ----
def parse_accelerator(raw: Any, problems: list[str]) -> Accelerator | None:
    """The ``simulator:`` section of a profile; appends one problem per bad value to ``problems``."""
    start = len(problems)
    v = section_values(raw, asdict(Accelerator()), "simulator", problems, "a mapping of hardware parameters", _FIX)
    if v is None:
        return None
    for key in ("rows", "cols"):
        if not _is_int(v[key]) or not 1 <= v[key] <= 4096:
            problems.append(f"simulator.{key} must be an integer from 1 to 4096 (PEs), got {v[key]!r}")
    if v["dataflow"] not in DATAFLOWS:
        problems.append(f"simulator.dataflow must be one of {list(DATAFLOWS)}, got {v['dataflow']!r}")
    if v["dtype"] not in DTYPES:
        problems.append(f"simulator.dtype must be one of {list(DTYPES)}, got {v['dtype']!r}")
    for key, unit in (("clock_mhz", "MHz"), ("scratchpad_kib", "KiB"), ("accumulator_kib", "KiB"),
                      ("dram_gb_per_s", "GB/s")):
        if not _is_number(v[key]) or v[key] <= 0:
            problems.append(f"simulator.{key} must be a positive number ({unit}), got {v[key]!r}")
    if not isinstance(v["overlap_folds"], bool):
        problems.append(f"simulator.overlap_folds must be true or false, got {v['overlap_folds']!r}")
    if (_is_int(v["cols"]) and v["cols"] >= 1 and _is_number(v["accumulator_kib"]) and v["accumulator_kib"] > 0
            and v["accumulator_kib"] * 1024 / 2 < v["cols"] * ACC_BYTES):
        problems.append(f"simulator.accumulator_kib {v['accumulator_kib']!r} cannot hold one row of {v['cols']} "
                        f"partial sums twice ({2 * v['cols'] * ACC_BYTES} bytes)")
    unit = _parse_nonlinear(raw.get("nonlinear", {}), problems) if "nonlinear" in raw else NonLinearUnit()
    if len(problems) > start or unit is None:
        return None
    return Accelerator(int(v["rows"]), int(v["cols"]), v["dataflow"], v["dtype"], float(v["clock_mhz"]),
                       float(v["scratchpad_kib"]), float(v["accumulator_kib"]), float(v["dram_gb_per_s"]),
                       v["overlap_folds"], unit)


def _parse_nonlinear(raw: Any, problems: list[str]) -> NonLinearUnit | None:
    if not isinstance(raw, Mapping):
        problems.append(f"simulator.nonlinear must be a mapping (unit, lanes, overhead_cycles, cycles_per_element), "
                        f"got {type(raw).__name__}")
        return None
    start = len(problems)
    allowed = ("unit", "lanes", "overhead_cycles", "cycles_per_element")
    problems += [f"simulator.nonlinear: unknown key {k!r} (allowed: {list(allowed)})" for k in raw if k not in allowed]
    unit = raw.get("unit", "host_cpu")
    if unit not in UNITS:
        problems.append(f"simulator.nonlinear.unit must be one of {list(UNITS)}, got {unit!r}")
    lanes = raw.get("lanes", 1)
    if not _is_int(lanes) or lanes < 1:
        problems.append(f"simulator.nonlinear.lanes must be a positive integer (elements per cycle), got {lanes!r}")
    overhead = raw.get("overhead_cycles", 0)
    if not _is_number(overhead) or overhead < 0:
        problems.append(f"simulator.nonlinear.overhead_cycles must be a number >= 0 (per op), got {overhead!r}")
    costs = raw.get("cycles_per_element")
    if not isinstance(costs, Mapping):
        problems.append(f"simulator.nonlinear.cycles_per_element must map each of {list(VECTOR_OPS)} to cycles per "
                        f"element, got {costs!r}")
        costs = None
    else:
        problems += [f"simulator.nonlinear.cycles_per_element: unknown op {k!r} (ops: {list(VECTOR_OPS)})"
                     for k in costs if k not in VECTOR_OPS]
        problems += [f"simulator.nonlinear.cycles_per_element: missing op {k!r}" for k in VECTOR_OPS if k not in costs]
        problems += [f"simulator.nonlinear.cycles_per_element.{k} must be a number >= 0, got {costs[k]!r}"
                     for k in VECTOR_OPS if k in costs and (not _is_number(costs[k]) or costs[k] < 0)]
    if len(problems) > start or costs is None:
        return None
    return NonLinearUnit(unit, int(lanes), float(overhead), {k: float(costs[k]) for k in VECTOR_OPS})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---- the cycle model ----
def compute_cycles(m: Any, k: Any, n: Any, hw: Accelerator) -> tuple[np.ndarray, np.ndarray]:
    """Compute cycles of GEMMs ``(m x k) @ (k x n)`` (arrays or scalars) on ``hw``'s array, and the
    number of row chunks weight stationary needs for the accumulator (1 for output stationary)."""
    m, k, n = (np.asarray(x, dtype=np.int64) for x in (m, k, n))
    r, c = hw.rows, hw.cols
    if hw.dataflow == "weight_stationary":
        rows_per_chunk = max(1, int(hw.accumulator_kib * 1024 / 2 // (c * ACC_BYTES)))
        chunks = -(-m // rows_per_chunk)
        mc = -(-m // chunks)  # rows streamed per chunk
        folds = -(-k // r) * -(-n // c)
        first = 2 * r + c + mc - 2
        later = np.maximum(mc, r) if hw.overlap_folds else first
        return chunks * (first + (folds - 1) * later), chunks
    folds = -(-m // r) * -(-n // c)
    first = r + c + k - 2
    later = np.maximum(k, r) if hw.overlap_folds else first
    return first + (folds - 1) * later, np.ones_like(m)


def gemm_costs(w: Workload, hw: Accelerator) -> dict[str, np.ndarray]:
    """Per GEMM record of ``w`` (all ``count`` copies): compute cycles, stall cycles, DRAM bytes."""
    if not w.gemms:
        zero = np.zeros(0)
        return {"compute": zero, "stall": zero, "bytes": zero, "macs": zero}
    arr = np.array([(g.m, g.k, g.n, g.count, g.b_dram, g.a_dram, g.write) for g in w.gemms], dtype=np.int64)
    m, k, n, count, b_dram, a_dram, write = arr.T
    compute, chunks = compute_cycles(m, k, n, hw)
    eb, half = hw.element_bytes, hw.scratchpad_kib * 1024 / 2
    a, b, out = m * k * eb, k * n * eb, m * n * eb
    a_moves, b_moves = (a_dram > 0) | (a > half), (b_dram > 0) | (b > half)  # off-chip operands, and spills
    # Neither operand fits: block the one kept on chip (rows of A, or columns of B, that fit in half the
    # scratchpad) and re-stream the other once per block, whichever order moves fewer bytes.
    block = np.maximum(1, half // (k * eb)).astype(np.int64)
    keep_a = a * a_moves + b * b_moves * -(-m // block)
    keep_b = a * a_moves * -(-n // block) + b * b_moves
    neither = (a > half) & (b > half)
    a_passes = np.where(neither & (keep_b < keep_a), -(-n // block), 1)
    b_passes = np.where(neither & (keep_b >= keep_a), -(-m // block), 1)
    if hw.dataflow == "weight_stationary":
        b_passes = np.maximum(b_passes, chunks)  # the weights are loaded once per accumulator row chunk
    moved = (a * a_moves * a_passes + b * b_moves * b_passes + np.where(out > half, out, 0) + write * eb).astype(float)
    stall = np.maximum(0.0, moved / hw.bytes_per_cycle - compute)
    return {"compute": compute * count, "stall": stall * count, "bytes": moved * count, "macs": (m * k * n * count)}


def simulate_workload(w: Workload, hw: Accelerator) -> dict[str, dict[str, float]]:
    """Cycles of ``w`` on ``hw`` per part: ``matmul_cycles``, ``memory_stall_cycles``,
    ``nonlinear_cycles``, ``cycles`` (their sum), ``macs``, ``dram_bytes`` and ``utilization``
    (MACs / (matmul cycles x PEs))."""
    costs = gemm_costs(w, hw)
    parts = np.array([g.part for g in w.gemms])
    out = {}
    for part in PARTS:
        sel = parts == part
        gather_bytes = sum(g.elements * g.count for g in w.gathers if g.part == part) * hw.element_bytes
        matmul = float(costs["compute"][sel].sum())
        stall = float(costs["stall"][sel].sum()) + gather_bytes / hw.bytes_per_cycle
        nonlinear = float(sum(hw.nonlinear.cycles(v.op, v.elements, v.count) for v in w.vector_ops if v.part == part))
        macs = float(costs["macs"][sel].sum())
        out[part] = {"matmul_cycles": matmul, "memory_stall_cycles": stall, "nonlinear_cycles": nonlinear,
                     "cycles": matmul + stall + nonlinear, "macs": macs,
                     "dram_bytes": float(costs["bytes"][sel].sum()) + gather_bytes,
                     "utilization": macs / (matmul * hw.rows * hw.cols) if matmul else 0.0}
    return out


def by_op(w: Workload, hw: Accelerator) -> dict[tuple[str, str], dict[str, float]]:
    """Cycles per (part, op): GEMM ops (``compute``, ``stall``) and vector ops (``nonlinear``)."""
    costs = gemm_costs(w, hw)
    out: dict[tuple[str, str], dict[str, float]] = {}
    for i, g in enumerate(w.gemms):
        row = out.setdefault((g.part, g.op), {"compute": 0.0, "stall": 0.0, "nonlinear": 0.0})
        row["compute"] += float(costs["compute"][i])
        row["stall"] += float(costs["stall"][i])
    for v in w.vector_ops:
        row = out.setdefault((v.part, v.op), {"compute": 0.0, "stall": 0.0, "nonlinear": 0.0})
        row["nonlinear"] += hw.nonlinear.cycles(v.op, v.elements, v.count)
    for g in w.gathers:
        row = out.setdefault((g.part, "embedding"), {"compute": 0.0, "stall": 0.0, "nonlinear": 0.0})
        row["stall"] += g.elements * g.count * hw.element_bytes / hw.bytes_per_cycle
    return out


def arch_workload(arch: Arch, profile: DeviceProfile, space: SearchSpace, vocab: int | None = None) -> Workload:
    """The work of ``profile``'s protocol for ``arch`` (lengths from the space, as measured)."""
    from hat_ray.latency.backends.torch_eager import lengths  # torch-free helper

    proto = profile.protocol
    src_len, tgt_len = lengths(proto, space)
    return workload(arch, space.latency_space().super.qkv_dim, batch=proto.batch, beam=proto.beam,
                    src_len=src_len, tgt_len=tgt_len, vocab=vocab or proto.vocab)


def simulate(arch: Arch, profile: DeviceProfile, space: SearchSpace, *, vocab: int | None = None) -> dict[str, Any]:
    """The latency record of ``arch`` on ``profile``'s simulated accelerator (dataset.COLUMNS):
    ``latency_ms`` = cycles / clock, ``encoder_ms`` / ``decoder_ms``, the breakdown
    ``matmul_ms`` / ``memory_stall_ms`` / ``nonlinear_ms`` (summing to ``latency_ms``), ``cycles``,
    the hardware (``simulator``, JSON) and per-part cycles, MACs, DRAM bytes and utilisation
    (``simulation``, JSON). ArchError when ``arch`` is outside the space's latency space."""
    from hat_ray import __version__
    from hat_ray.arch import FEATURE_NAMES
    from hat_ray.latency.dataset import COLUMNS

    hw = profile.simulator
    if hw is None:
        raise ValueError(f"device profile {profile.name} is not a simulated device (runtime {profile.runtime})")
    space.latency_space().check(arch)
    started, t0 = time.time(), time.perf_counter()
    vocab = vocab or profile.protocol.vocab
    parts = simulate_workload(arch_workload(arch, profile, space, vocab), hw)
    per_ms = 1.0 / (hw.clock_mhz * 1e3)  # ms per cycle
    rec: dict[str, Any] = dict.fromkeys(COLUMNS)
    rec.update(space=space.name, device=profile.name, arch_key=arch.key(),
               arch=json.dumps(arch.to_dict(), sort_keys=True), source="hat-ray")
    rec.update(zip(FEATURE_NAMES, arch.features(), strict=True))
    for part in PARTS:
        ms = parts[part]["cycles"] * per_ms
        rec[f"{part}_ms"] = ms
        rec.update({f"{part}_{s}": ms for s in ("median_ms", "trimmed_mean_ms", "min_ms")})
        rec.update({f"{part}_{s}": 0.0 for s in ("std_ms", "iqr_ms", "cv")})
        rec.update({f"{part}_{s}": 1 for s in ("runs", "attempts")}, **{f"{part}_dropped": 0})
    total = {key: sum(parts[p][key] for p in PARTS) for key in ("cycles", "matmul_cycles", "memory_stall_cycles",
                                                               "nonlinear_cycles")}
    rec.update(latency_ms=rec["encoder_ms"] + rec["decoder_ms"], cycles=total["cycles"],
               matmul_ms=total["matmul_cycles"] * per_ms, memory_stall_ms=total["memory_stall_cycles"] * per_ms,
               nonlinear_ms=total["nonlinear_cycles"] * per_ms, simulator=hw.fingerprint(),
               simulation=json.dumps({p: {k: round(v, 6) for k, v in parts[p].items()} for p in PARTS}, sort_keys=True))
    rec.update(disturbed=False, statistic="simulated", protocol=json.dumps(profile.to_dict()["protocol"]), vocab=vocab,
               threads=0, dtype=hw.dtype, runtime=RUNTIME, runtime_version=f"hat-ray {__version__} {MODEL_VERSION}",
               setup_s=time.perf_counter() - t0, host=socket.gethostname(), pid=os.getpid(),
               platform=platform.machine(), hat_ray_version=__version__, python_version=platform.python_version(),
               started_at=started, finished_at=time.time())
    return rec
