"""Simulated accelerators (issue 19): what the bundled Gemmini-like devices say about Archs, how
their ranking compares with this machine's CPU, and what a simulation costs.

1. Breakdown (matmul / memory stall / non-linear, encoder and decoder) on gemmini_16x16,
   gemmini_32x32 and gemmini_16x16_nlu for the demo space's smallest and largest Arch and two of
   HAT's released WMT14 En-De Archs (../shared/data/hat_subconfigs), and how it changes with the
   sequence length (source = decoder steps).
2. Ranking: Kendall tau between simulated latency and measured ``local_cpu`` latency over
   ``--archs`` random demo-space Archs (measured here, a few minutes, or read from ``--cpu-data``,
   a dataset with local_cpu rows), with the bundled protocol and with local_cpu's (12 decoder
   steps, 8000 output rows); the CPU side in reference units (drift-free) and in ms.
3. Cost: seconds per simulated Arch (demo and WMT spaces; enumeration vs cycle model), and the
   throughput of ``collect`` on a local Ray instance with 2 CPUs (2 simulation workers).
4. ``--pareto SUPERNET``: one multi-objective search (loss vs predicted latency) per device on a
   demo-space supernet trained on Multi30k; the four Pareto fronts side by side in
   benchmarks/results/accelerator_pareto.png (searches kept in runs/accelerator_pareto/).
5. ``--scalesim`` (needs ``pip install scalesim``, e.g. in a scratch virtualenv with this repo on
   PYTHONPATH: the rest of the benchmark is not needed there): SCALE-Sim 3.0.0's compute cycles
   against this model's (``overlap_folds: false``) on decoder-sized GEMMs, and its cost per GEMM:
   compute only, and with its memory simulation.

    python benchmarks/accelerator.py [--archs 100] [--cpu-data runs/latency_local/predictor.parquet]
        [--throughput 1000] [--out benchmarks/results/accelerator.json]
    python benchmarks/accelerator.py --pareto runs/runtimes/supernet/checkpoint_last.pt [--iterations 5]
    PYTHONPATH=. /path/to/scalesim-venv/bin/python benchmarks/accelerator.py --scalesim
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ("gemmini_16x16", "gemmini_32x32", "gemmini_16x16_nlu")
HAT_ARCHS = ("HAT_wmt14ende_raspberrypi@3.5s_bleu@25.8.yml", "HAT_wmt14ende_titanxp@208.1ms_bleu@28.5.yml")


def shared_data() -> Path:
    env = os.environ.get("HAT_RAY_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def r(x: float, digits: int = 3) -> float:
    return round(float(x), digits)


# ---- 1. breakdown ----
def breakdown(arch: Any, profile: Any, space: Any) -> dict[str, Any]:
    from hat_ray.latency.accelerator import arch_workload, by_op, simulate

    rec = simulate(arch, profile, space)
    sim = json.loads(rec["simulation"])
    per_ms = 1 / (profile.simulator.clock_mhz * 1e3)
    parts = {p: {"ms": r(v["cycles"] * per_ms), "matmul_ms": r(v["matmul_cycles"] * per_ms),
                 "memory_stall_ms": r(v["memory_stall_cycles"] * per_ms), "nonlinear_ms": r(v["nonlinear_cycles"] * per_ms),
                 "utilization": r(v["utilization"]), "dram_mb": r(v["dram_bytes"] / 1e6, 1)} for p, v in sim.items()}
    ops = by_op(arch_workload(arch, profile, space), profile.simulator)
    top = sorted(ops.items(), key=lambda kv: -sum(kv[1].values()))[:4]
    return {"latency_ms": r(rec["latency_ms"]), "matmul_ms": r(rec["matmul_ms"]),
            "memory_stall_ms": r(rec["memory_stall_ms"]), "nonlinear_ms": r(rec["nonlinear_ms"]), **parts,
            "top_ops": [[f"{part}.{op}", r(sum(c.values()) * per_ms)] for (part, op), c in top]}


def named_archs() -> dict[str, tuple[Any, Any]]:
    from hat_ray.cli.common import load_arch
    from hat_ray.space import SearchSpace

    demo, wmt = SearchSpace.load("demo"), SearchSpace.load("wmt14_en_de")
    out = {"demo_smallest": (demo.smallest(), demo), "demo_largest": (demo.largest(), demo)}
    folder = shared_data() / "hat_subconfigs"
    for name in HAT_ARCHS:
        if (folder / name).is_file():
            out["hat_" + name.split("_", 2)[2].split("_bleu")[0]] = (load_arch(folder / name, wmt.latency_space()), wmt)
    return out


def breakdowns() -> dict[str, Any]:
    from hat_ray.latency import DeviceProfile

    profiles = [DeviceProfile.load(p) for p in PROFILES]
    return {label: {p.name: breakdown(arch, p, space) for p in profiles} for label, (arch, space) in named_archs().items()}


def sequence_lengths(lengths: tuple[int, ...] = (8, 15, 30, 60, 120)) -> dict[str, Any]:
    from hat_ray.latency import DeviceProfile
    from hat_ray.latency.accelerator import simulate

    out: dict[str, Any] = {}
    archs = named_archs()
    for label in ("demo_largest", next((k for k in archs if k.startswith("hat_")), "demo_smallest")):
        arch, space = archs[label]
        for name in ("gemmini_16x16", "gemmini_16x16_nlu"):
            rows = []
            for n in lengths:
                rec = simulate(arch, DeviceProfile.load(name).with_protocol(src_len=n, tgt_len=n), space)
                total = rec["latency_ms"]
                rows.append({"len": n, "ms": r(total), "encoder_ms": r(rec["encoder_ms"]), "decoder_ms": r(rec["decoder_ms"]),
                             "matmul_share": r(rec["matmul_ms"] / total), "memory_share": r(rec["memory_stall_ms"] / total),
                             "nonlinear_share": r(rec["nonlinear_ms"] / total)})
            out[f"{label}@{name}"] = rows
    return out


# ---- 2. ranking against the CPU ----
def cpu_records(n: int, seed: int, data_path: Path | None) -> tuple[list[Any], np.ndarray, np.ndarray, dict[str, Any]]:
    """(archs, latency_ref, latency_ms) of local_cpu: the first ``n`` local_cpu rows of ``data_path``, or
    ``n`` random demo Archs measured here with local_cpu's protocol."""
    from hat_ray.latency import DeviceProfile, LatencyDataset
    from hat_ray.space import SearchSpace

    if data_path is not None:
        data = LatencyDataset.load(data_path).for_device("local_cpu").rows(f"0:{n}")
        f = data.frame
        return data.archs(), f["latency_ref"].to_numpy(float), f["latency_ms"].to_numpy(float), {
            "source": str(data_path), "rows": len(f)}
    from hat_ray.latency.measure import measure_many

    space = SearchSpace.load("demo")
    rng = np.random.default_rng(seed)
    archs = list({a.key(): a for a in (space.latency_space().sample(rng) for _ in range(n))}.values())
    t0 = time.time()
    recs = measure_many(archs, DeviceProfile.load("local_cpu"), space)
    info = {"source": "measured here", "rows": len(recs), "seconds": r(time.time() - t0, 1),
            "load_1m_median": r(np.median([x["load_1m"] or 0 for x in recs]), 2)}
    return archs, np.array([x["latency_ref"] for x in recs], float), np.array([x["latency_ms"] for x in recs], float), info


def ranking(n: int, seed: int, data_path: Path | None) -> dict[str, Any]:
    from hat_ray.latency import DeviceProfile
    from hat_ray.latency.accelerator import simulate
    from hat_ray.latency.metrics import kendall_tau
    from hat_ray.space import SearchSpace

    space = SearchSpace.load("demo")
    archs, ref, ms, info = cpu_records(n, seed, data_path)
    local = DeviceProfile.load("local_cpu").protocol
    out: dict[str, Any] = {"cpu": info, "kendall_tau": {}}
    sims: dict[str, np.ndarray] = {}
    for name in PROFILES:
        bundled = DeviceProfile.load(name)
        like_cpu = bundled.with_protocol(tgt_len=local.tgt_len, vocab=local.vocab)
        for label, profile in ((name, bundled), (f"{name}@local_cpu_protocol", like_cpu)):
            recs = [simulate(a, profile, space) for a in archs]
            sim = np.array([x["latency_ms"] for x in recs])
            sims[label] = sim
            out["kendall_tau"][label] = {"vs_cpu_ref": r(kendall_tau(sim, ref)) if np.isfinite(ref).all() else None,
                                         "vs_cpu_ms": r(kendall_tau(sim, ms)), "range_ms": [r(sim.min()), r(sim.max())]}
    names = list(PROFILES)
    out["between_devices"] = {f"{a}~{b}": r(kendall_tau(sims[a], sims[b])) for i, a in enumerate(names) for b in names[i + 1:]}
    # how the fastest Archs differ: the CPU's 10 fastest, ranked on each device
    order = np.argsort(ref if np.isfinite(ref).all() else ms)
    out["cpu_fastest10_rank_on"] = {k: sorted(int(np.argsort(np.argsort(v))[i]) for i in order[:10])
                                    for k, v in sims.items() if "@" not in k}
    return out


# ---- 3. cost and throughput ----
def cost(n: int = 500, seed: int = 0) -> dict[str, Any]:
    from hat_ray.latency import DeviceProfile
    from hat_ray.latency.accelerator import arch_workload, simulate, simulate_workload
    from hat_ray.space import SearchSpace

    profile = DeviceProfile.load("gemmini_16x16")
    out = {}
    for name in ("demo", "wmt14_en_de"):
        space = SearchSpace.load(name)
        rng = np.random.default_rng(seed)
        archs = [space.latency_space().sample(rng) for _ in range(n)]
        simulate(archs[0], profile, space)  # imports
        t0 = time.perf_counter()
        for a in archs:
            simulate(a, profile, space)
        total = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        works = [arch_workload(a, profile, space) for a in archs]
        enumerate_s = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        for w in works:
            simulate_workload(w, profile.simulator)
        model_s = (time.perf_counter() - t0) / n
        out[name] = {"ms_per_arch": r(1e3 * total), "enumerate_ms": r(1e3 * enumerate_s), "cycle_model_ms": r(1e3 * model_s),
                     "gemm_records_mean": r(np.mean([len(w.gemms) for w in works]), 1),
                     "gemms_mean": r(np.mean([sum(g.count for g in w.gemms) for w in works]), 1),
                     "unique_gemm_shapes_mean": r(np.mean([len({(g.m, g.k, g.n) for g in w.gemms}) for w in works]), 1)}
    return out


def throughput(n: int, seed: int = 1) -> dict[str, Any]:
    import ray

    from hat_ray.latency import DeviceProfile, LatencyDataset
    from hat_ray.latency.probe import collect
    from hat_ray.space import SearchSpace

    space = SearchSpace.load("demo")
    rng = np.random.default_rng(seed)
    archs = list({a.key(): a for a in (space.latency_space().sample(rng) for _ in range(n))}.values())
    profile = DeviceProfile.load("gemmini_16x16")
    t0 = time.time()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    start_s = time.time() - t0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "sim.parquet"
            t0 = time.time()
            summary = collect(archs, [profile], space, out)
            first = time.time() - t0
            rows = len(LatencyDataset.load(out))
            more = list({a.key(): a for a in (space.latency_space().sample(rng) for _ in range(n))}.values())
            t0 = time.time()
            collect(more, [profile], space, out)  # warm workers: the steady state
            second = time.time() - t0
            rows2 = len(LatencyDataset.load(out)) - rows
    finally:
        ray.shutdown()
    return {"workers": 2, "ray_start_s": r(start_s, 1), "archs": rows, "seconds": r(first, 2),
            "archs_per_s": r(rows / first, 1), "warm_archs": rows2, "warm_seconds": r(second, 2),
            "warm_archs_per_s": r(rows2 / second, 1), "failed": summary.failed}


# ---- 4. SCALE-Sim ----
_SCALESIM_CFG = """[general]
run_name = hat_ray_check

[run_presets]
InterfaceBandwidth = USER
UseRamulatorTrace = False

[architecture_presets]
ArrayHeight = {rows}
ArrayWidth = {cols}
ifmapsramszkB = {spad}
filtersramszkB = {spad}
ofmapsramszkB = {acc}
IfmapOffset = 0
FilterOffset = 10000000
OfmapOffset = 20000000
Dataflow = {df}
Bandwidth = {bw}
ReadRequestBuffer = 32
WriteRequestBuffer = 32

[layout]
IfmapCustomLayout = False
FilterCustomLayout = False
IfmapSRAMBankBandwidth = {bw}
IfmapSRAMBankNum = 1
IfmapSRAMBankPort = 2
FilterSRAMBankBandwidth = {bw}
FilterSRAMBankNum = 1
FilterSRAMBankPort = 2

[sparsity]
SparsitySupport = false
SparseRep = ellpack_block
OptimizedMapping = false
BlockSize = 8
RandomNumberGeneratorSeed = 40
"""


def _scalesim_files(folder: Path, m: int, k: int, n: int, hw: Any) -> tuple[Path, Path, Path]:
    df = {"weight_stationary": "ws", "output_stationary": "os"}[hw.dataflow]
    cfg = folder / "gemm.cfg"
    cfg.write_text(_SCALESIM_CFG.format(rows=hw.rows, cols=hw.cols, spad=int(hw.scratchpad_kib // 2),
                                        acc=int(hw.accumulator_kib), df=df, bw=max(1, round(hw.bytes_per_cycle))))
    topo = folder / "gemm.csv"
    topo.write_text(f"Layer, M, N, K,\ng, {m}, {n}, {k},\n")
    layout = folder / "layout.csv"
    layout.write_text("Layer, x,\n")
    return cfg, topo, layout


def scalesim_compute_cycles(m: int, k: int, n: int, hw: Any) -> int:
    """Compute cycles of SCALE-Sim's compute module for one GEMM on ``hw``'s array and dataflow (the
    rows of its demand matrices: one per cycle)."""
    from scalesim.compute.operand_matrix import operand_matrix
    from scalesim.compute.systolic_compute_os import systolic_compute_os
    from scalesim.compute.systolic_compute_ws import systolic_compute_ws
    from scalesim.layout_utils import layouts
    from scalesim.scale_config import scale_config
    from scalesim.topology_utils import topologies

    with tempfile.TemporaryDirectory() as tmp:
        cfg_path, topo_path, layout_path = _scalesim_files(Path(tmp), m, k, n, hw)
        cfg = scale_config()
        cfg.read_conf_file(str(cfg_path))
        topo = topologies()
        topo.load_arrays(str(topo_path), mnk_inputs=True)
        lay = layouts()
        lay.load_arrays(str(layout_path))
    op = operand_matrix()
    op.set_params(layer_id=0, config_obj=cfg, topoutil_obj=topo, layoututil_obj=lay)
    _, ifmap = op.get_ifmap_matrix()
    _, filt = op.get_filter_matrix()
    _, ofmap = op.get_ofmap_matrix()
    if hw.dataflow == "weight_stationary":
        comp = systolic_compute_ws()
        comp.set_params(config_obj=cfg, ifmap_op_mat=ifmap, filter_op_mat=filt, ofmap_op_mat=ofmap,
                        ifmap_op_mat_original=op.ifmap_addr_matrix_original, sparsity_filter_array=op.sparse_filter_array)
    else:
        comp = systolic_compute_os()
        comp.set_params(config_obj=cfg, ifmap_op_mat=ifmap, filter_op_mat=filt, ofmap_op_mat=ofmap)
    comp.get_prefetch_matrices()
    demand, _, _ = comp.get_demand_matrices()
    return int(demand.shape[0])


def scalesim_full(m: int, k: int, n: int, hw: Any) -> dict[str, Any]:
    """SCALE-Sim's whole simulation (compute + trace-driven memory) of one GEMM: cycles and seconds."""
    import contextlib
    import io

    from scalesim.scale_sim import scalesim

    with tempfile.TemporaryDirectory() as tmp:
        cfg, topo, layout = _scalesim_files(Path(tmp), m, k, n, hw)
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                sim = scalesim(save_disk_space=True, verbose=False, config=str(cfg), topology=str(topo),
                               layout=str(layout), input_type_gemm=True)
                sim.run_scale(top_path=tmp)
        except Exception as exc:  # noqa: BLE001 - report what SCALE-Sim raised
            return {"error": f"{type(exc).__name__}: {exc}"[:200], "seconds": r(time.perf_counter() - t0, 2)}
        items = sim.runner.single_layer_sim_object_list[0].get_compute_report_items()
        return {"seconds": r(time.perf_counter() - t0, 2), "total_cycles": int(items[1]), "stall_cycles": int(items[2])}


def scalesim_check(shapes: tuple[tuple[int, int, int], ...] = ((5, 512, 512), (5, 512, 2048), (30, 512, 1536),
                                                              (5, 64, 30), (150, 512, 1024), (5, 512, 8000))
                   ) -> dict[str, Any]:
    import numpy
    import scalesim  # noqa: F401 - fails early when it is not installed

    from hat_ray.latency.accelerator import Accelerator, compute_cycles

    out: dict[str, Any] = {"numpy": numpy.__version__, "shapes": []}
    for dataflow in ("weight_stationary", "output_stationary"):
        hw = Accelerator(dataflow=dataflow, overlap_folds=False)
        for m, k, n in shapes:
            t0 = time.perf_counter()
            theirs = scalesim_compute_cycles(m, k, n, hw)
            seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            ours = int(compute_cycles(m, k, n, hw)[0])
            ours_s = time.perf_counter() - t0
            row = {"dataflow": dataflow, "mkn": [m, k, n], "scalesim_compute_cycles": theirs, "ours": ours,
                   "scalesim_compute_s": r(seconds, 3), "ours_us": r(1e6 * ours_s, 1)}
            if dataflow == "weight_stationary" and m * k * n <= 5 * 512 * 2048:
                row["scalesim_full"] = scalesim_full(m, k, n, hw)
            out["shapes"].append(row)
            print(json.dumps(row), flush=True)
    out["all_equal"] = all(s["scalesim_compute_cycles"] == s["ours"] for s in out["shapes"])
    out["per_arch"] = scalesim_arch_cost()
    return out


def scalesim_arch_cost() -> dict[str, Any]:
    """SCALE-Sim's compute module over every distinct GEMM shape of the demo space's smallest Arch
    (bundled protocol: beam 5, 30 steps, 32768 output rows): what one Arch would cost it, compute only."""
    from hat_ray.latency.accelerator import Accelerator, compute_cycles
    from hat_ray.latency.workload import workload
    from hat_ray.space import SearchSpace

    space = SearchSpace.load("demo")
    work = workload(space.smallest(), space.super.qkv_dim, batch=1, beam=5, src_len=30, tgt_len=30, vocab=32768)
    shapes = sorted({(g.m, g.k, g.n) for g in work.gemms})
    hw = Accelerator(overlap_folds=False)
    t0 = time.perf_counter()
    equal = all(scalesim_compute_cycles(*shape, hw) == int(compute_cycles(*shape, hw)[0]) for shape in shapes)
    return {"arch": "demo smallest", "distinct_gemm_shapes": len(shapes), "scalesim_compute_s": r(time.perf_counter() - t0, 1),
            "all_equal": equal}


# ---- 5. Pareto fronts of one search per device ----
def pareto(supernet: Path, data_dir: Path, cpu_data: Path | None, out: Path, iterations: int = 5) -> dict[str, Any]:
    """One multi-objective search (``--algorithm pareto``: validation loss vs predicted latency) per
    device on the same supernet: the three simulated devices (predictors fit on 300 simulated Archs
    at the supernet's vocabulary) and local_cpu (a predictor fit on ``cpu_data``); the fronts side
    by side in ``accelerator_pareto.png``, and each front's Archs simulated on every device."""
    import subprocess
    import sys

    import pandas as pd
    import torch

    from hat_ray.latency import DeviceProfile, LatencyDataset, LatencyPredictor
    from hat_ray.latency.accelerator import simulate
    from hat_ray.space import SearchSpace

    space = SearchSpace.load("demo")
    vocab = int(torch.load(supernet, map_location="cpu", weights_only=False)["model_config"]["tgt_vocab"])
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    train = list({a.key(): a for a in (space.latency_space().sample(rng) for _ in range(300))}.values())
    predictors: dict[str, Path] = {}
    for name in PROFILES:
        profile = DeviceProfile.load(name).with_protocol(vocab=vocab)
        frame = pd.DataFrame([simulate(a, profile, space) for a in train])
        path = out / f"{name}.npz"
        LatencyPredictor.fit(LatencyDataset(frame, source=f"simulated {name}"), space=space).save(path)
        predictors[name] = path
    if cpu_data is not None and cpu_data.is_file():
        path = out / "local_cpu.npz"
        LatencyPredictor.fit(LatencyDataset.load(cpu_data).for_device("local_cpu"), space=space).save(path)
        predictors["local_cpu"] = path
    result: dict[str, Any] = {"vocab": vocab, "supernet": str(supernet), "devices": {}}
    fronts: dict[str, list[dict[str, Any]]] = {}
    frames: dict[str, Any] = {}
    for device, pred in predictors.items():
        folder = out / f"search_{device}"
        cmd = [sys.executable, "-m", "hat_ray.cli.main", "search", "--supernet", str(supernet), "--data", "multi30k",
               "--data-dir", str(data_dir), "--algorithm", "pareto", "--device", device, "--predictor", f"{device}:{pred}",
               "--out", str(folder), "--valid-sentences", "200", "--population", "24", "--parents", "6", "--mutations",
               "9", "--crossovers", "9", "--iterations", str(iterations), "--scorers", "2", "--seed", "0", "--json"]
        if (folder / "result.json").is_file():
            res = json.loads((folder / "result.json").read_text())
        else:
            t0 = time.time()
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HAT_RAY_DASHBOARD": "0"})
            if proc.returncode:
                result["devices"][device] = {"error": proc.stderr[-500:]}
                continue
            res = json.loads(proc.stdout)
            res["bench_seconds"] = time.time() - t0
        fronts[device] = sorted(res["pareto"], key=lambda c: c["predicted_ms"][device])
        frames[device] = pd.read_parquet(folder / "trials.parquet")
        result["devices"][device] = {
            "evaluations": res["evaluations"], "seconds": r(res.get("bench_seconds", res.get("wall_seconds", 0)), 1),
            "front": [[r(c["predicted_ms"][device], 2), r(c["valid_loss"], 4), c["key"]] for c in fronts[device]]}
    # the fronts' Archs on every simulated device: does one device's front stay a front elsewhere?
    profiles = {n: DeviceProfile.load(n).with_protocol(vocab=vocab) for n in PROFILES}
    from hat_ray.arch import Arch

    cross: dict[str, dict[str, list[float]]] = {}
    for device, front in fronts.items():
        archs = [Arch.from_dict(c["arch"]) for c in front]
        cross[device] = {n: [r(simulate(a, p, space)["latency_ms"], 2) for a in archs] for n, p in profiles.items()}
    result["front_on_simulated_devices"] = cross
    result["shared_front_archs"] = {f"{a}~{b}": len({c["key"] for c in fronts[a]} & {c["key"] for c in fronts[b]})
                                    for i, a in enumerate(fronts) for b in list(fronts)[i + 1:]}
    _plot_fronts(frames, fronts, ROOT / "benchmarks" / "results" / "accelerator_pareto.png")
    return result


def _plot_fronts(frames: dict[str, Any], fronts: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(fronts), figsize=(4 * len(fronts), 3.6), dpi=120, sharey=True, squeeze=False)
    for ax, (device, front) in zip(axes[0], fronts.items()):
        f = frames[device]
        f = f[~f["failed"]]
        ax.scatter(f[f"latency_{device}"], f["valid_loss"], s=7, alpha=0.35, label="evaluated")
        ax.plot([c["predicted_ms"][device] for c in front], [c["valid_loss"] for c in front], "o-", color="C3", ms=4,
                label="Pareto front")
        ax.set_title(device, fontsize=10)
        ax.set_xlabel("predicted latency (ms)")
    axes[0][0].set_ylabel("validation loss (bits/token)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", type=int, default=100, help="Archs for the CPU ranking (0: skip)")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--cpu-data", type=Path, help="reuse local_cpu rows of this dataset instead of measuring")
    parser.add_argument("--throughput", type=int, default=1000, help="Archs collected with 2 workers (0: skip)")
    parser.add_argument("--scalesim", action="store_true", help="only the SCALE-Sim comparison (needs scalesim)")
    parser.add_argument("--pareto", type=Path, metavar="SUPERNET",
                        help="only the Pareto fronts: one search per device on this demo-space supernet (Multi30k)")
    parser.add_argument("--data-dir", type=Path, default=shared_data() / "multi30k", help="Multi30k for --pareto")
    parser.add_argument("--iterations", type=int, default=5, help="generations of each --pareto search")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "accelerator.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.scalesim:
        result: dict[str, Any] = {"scalesim": scalesim_check()}
        path = args.out.with_name(args.out.stem + "_scalesim.json")
    elif args.pareto:
        cpu = args.cpu_data or ROOT / "runs" / "latency_local" / "predictor.parquet"
        result = {"pareto": pareto(args.pareto, args.data_dir, cpu, ROOT / "runs" / "accelerator_pareto", args.iterations)}
        path = args.out.with_name(args.out.stem + "_pareto.json")
    else:
        result = {"breakdown": breakdowns(), "sequence_length": sequence_lengths(), "cost": cost()}
        print(json.dumps(result, indent=1), flush=True)
        if args.throughput:
            result["throughput"] = throughput(args.throughput)
        if args.archs:
            result["ranking"] = ranking(args.archs, args.seed, args.cpu_data)
        path = args.out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k not in ("breakdown", "sequence_length")}, indent=2))


if __name__ == "__main__":
    main()
