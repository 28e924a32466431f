"""Simulated accelerators as latency devices (hat_ray.latency.workload / accelerator; profiles with
``runtime: simulated``): the work enumeration agrees with the FLOPs accounting and with what the
static model actually runs, the cycle model behaves (and reproduces SCALE-Sim's compute cycles),
profiles validate, and a simulated device is measured, collected, fit and searched against like a
real one, without any node declaring it."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import yaml

from hat_ray.cli.main import main
from hat_ray.errors import ConfigError, DeviceError
from hat_ray.latency import DeviceProfile, LatencyDataset, LatencyPredictor
from hat_ray.latency.accelerator import (
    Accelerator,
    arch_workload,
    compute_cycles,
    gemm_costs,
    simulate,
    simulate_workload,
)
from hat_ray.latency.dataset import COLUMNS
from hat_ray.latency.workload import Gemm, Workload, workload
from hat_ray.model.accounting import count_flops
from hat_ray.space import SearchSpace

pytestmark = pytest.mark.usefixtures("no_ray_in_process")  # its ray_local instance ends with the module
DEMO = SearchSpace.load("demo")
G16, G32, NLU = (DeviceProfile.load(n) for n in ("gemmini_16x16", "gemmini_32x32", "gemmini_16x16_nlu"))
BREAKDOWN = ("matmul_ms", "memory_stall_ms", "nonlinear_ms")


def archs(space: SearchSpace, n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [space.smallest(), space.largest(), *(space.latency_space().sample(rng) for _ in range(n))]


# ---- the work of an Arch ----
@pytest.mark.parametrize("name", ["demo", "wmt14_en_de", "iwslt14_de_en"])
def test_workload_flops_agree_with_count_flops(name):
    space = SearchSpace.load(name)
    q, t = space.super.qkv_dim, space.super.seq_len
    for arch in archs(space, 6):
        forced = workload(arch, q, src_len=t, tgt_len=t, vocab=None, incremental=False)
        assert 2 * forced.macs() == count_flops(arch, q, t)  # the accounting's own convention, exactly
        steps = workload(arch, q, src_len=t, tgt_len=t, vocab=None)
        # incremental decoding: step i scores i cached keys, not all t (per layer q * t * (t - 1) fewer MACs)
        assert forced.macs() - steps.macs() == arch.decoder_layers * q * t * (t - 1)
        with_vocab = workload(arch, q, src_len=t, tgt_len=t, vocab=1000)
        assert with_vocab.macs() - steps.macs() == t * arch.decoder_embed_dim * 1000  # one output row per step


def test_workload_is_what_the_static_model_runs():
    """MACs, LayerNorm, ReLU and Softmax elements of every linear / attention call the torch model
    makes in the latency protocol's encode and decode (intercepted), part by part."""
    import torch
    from torch.overrides import TorchFunctionMode

    from hat_ray.latency.backends.torch_eager import eager_workloads, static_model

    class Count(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.n = collections.Counter()

        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if name == "linear":
                x, w = args[0], args[1]
                self.n["macs"] += x.numel() // x.shape[-1] * w.shape[0] * w.shape[1]
                self.n["linear"] += 1
            elif name == "scaled_dot_product_attention":
                (b, h, t, hd), keys = args[0].shape, args[1].shape[2]
                self.n["macs"] += 2 * b * h * t * keys * hd
                self.n["softmax"] += b * h * t * keys
            elif name in ("layer_norm", "relu"):
                self.n[name.replace("_", "")] += args[0].numel()
            return func(*args, **(kwargs or {}))

    profile = G16.with_protocol(batch=2, beam=2, tgt_len=3, vocab=64)
    for arch in (DEMO.largest(), archs(DEMO, 1, seed=3)[-1]):
        work = arch_workload(arch, profile, DEMO)
        model = static_model(DEMO, arch, 64, 0)
        with torch.inference_mode():
            parts = dict(zip(("encoder", "decoder"), eager_workloads(model, profile, DEMO, 64, 0)))
            for part, run in parts.items():
                counted = Count()
                with counted:
                    run()
                assert counted.n["macs"] == work.macs(part), part
                linear = [g for g in work.gemms if g.part == part and not g.op.endswith(("_scores", "_values"))]
                assert counted.n["linear"] == sum(g.count for g in linear), part
                for op in ("softmax", "layernorm", "relu"):
                    assert counted.n[op] == work.elements(op, part), (part, op)


# ---- the cycle model ----
# Compute cycles of SCALE-Sim 3.0.0's compute modules (rows of its systolic_compute_ws / _os demand
# matrices) for a 16x16 array, measured with `pip install scalesim==3.0.0` (benchmarks/accelerator.py
# --scalesim repeats the check live).
SCALESIM_16x16 = {
    "weight_stationary": {(5, 512, 512): 52224, (30, 512, 1536): 233472, (5, 64, 12): 204, (5, 512, 8000): 816000,
                          (30, 512, 64): 9728},
    "output_stationary": {(5, 512, 512): 17344, (30, 512, 1536): 104064, (5, 64, 12): 94, (5, 512, 8000): 271000},
}


@pytest.mark.parametrize("dataflow", list(SCALESIM_16x16))
def test_compute_cycles_without_overlap_are_scalesims(dataflow):
    hw = Accelerator(dataflow=dataflow, overlap_folds=False)
    for (m, k, n), cycles in SCALESIM_16x16[dataflow].items():
        assert int(compute_cycles(m, k, n, hw)[0]) == cycles, (m, k, n)


def test_compute_cycles_agree_with_scalesim_when_installed():
    pytest.importorskip("scalesim")
    from benchmarks.accelerator import scalesim_compute_cycles

    for dataflow in ("weight_stationary", "output_stationary"):
        hw = Accelerator(rows=8, cols=8, dataflow=dataflow, overlap_folds=False)
        for shape in ((3, 40, 20), (17, 9, 33)):
            assert int(compute_cycles(*shape, hw)[0]) == scalesim_compute_cycles(*shape, hw)


def one(gemm: Gemm, hw: Accelerator) -> tuple[float, float, float]:
    costs = gemm_costs(Workload([gemm]), hw)
    return float(costs["compute"][0]), float(costs["stall"][0]), float(costs["bytes"][0])


def test_cycle_model_sanity():
    hw16 = G16.simulator
    hw32 = replace(hw16, rows=32, cols=32)
    big = Gemm("encoder", "ffn1", 1024, 1024, 1024)
    assert one(big, hw32)[0] < one(big, hw16)[0] / 3  # a bigger array is faster on a big GEMM ...
    assert one(big, hw16)[1] == 0  # ... which is compute-bound (1024 rows reuse every weight)
    decoder_step = Gemm("decoder", "ffn1", 5, 512, 2048)  # 5 beam rows: each weight used 5 times
    compute, stall, moved = one(decoder_step, hw16)
    assert stall > 0 and moved == 512 * 2048  # memory-bound: int8 weights read once, the stall is the excess
    assert one(decoder_step, replace(hw16, dram_gb_per_s=64))[1] == 0
    assert one(decoder_step, replace(hw16, dtype="fp32"))[1] > stall  # 4-byte operands: more traffic
    assert one(decoder_step, replace(hw16, overlap_folds=False))[0] > compute  # every fold pays the fill
    # an accumulator too small for the rows' partial sums: row chunks, the weights loaded once per chunk
    tiny_acc = replace(hw16, accumulator_kib=1)  # 512 bytes: 8 rows x 16 columns x 4 bytes
    assert compute_cycles(30, 512, 512, tiny_acc)[1] == 4
    assert one(Gemm("encoder", "x", 30, 512, 512), tiny_acc)[2] == 4 * 512 * 512
    # an activation larger than half the scratchpad spills: written by its producer, read back once
    scores = Gemm("encoder", "attn_values", 400, 400, 64, b_dram=False)  # P (160 kB) @ V (25.6 kB)
    assert one(scores, replace(hw16, scratchpad_kib=512))[2] == 0
    assert one(scores, hw16)[2] == 400 * 400
    # neither operand fits: one is blocked on chip, the other re-streamed per block (fewer bytes)
    assert one(big, hw16)[2] == 1024 * 1024 * (1 + 8) + 1024 * 1024  # 128-row blocks of A; the output spills


def test_simulated_latency_breakdown_and_hardware_effects():
    arch = DEMO.largest()
    r16, r32, nlu = (simulate(arch, p, DEMO) for p in (G16, G32, NLU))
    for rec in (r16, r32, nlu):
        assert set(rec) == set(COLUMNS) and rec["runtime"] == "simulated" and rec["latency_ref"] is None
        assert rec["latency_ms"] == pytest.approx(sum(rec[k] for k in BREAKDOWN))
        assert rec["latency_ms"] == pytest.approx(rec["encoder_ms"] + rec["decoder_ms"])
        assert rec["cycles"] == pytest.approx(rec["latency_ms"] * 1e3 * 1000)  # 1 GHz
    sim = json.loads(r16["simulation"])
    # small-batch decoder steps are memory-bound, the encoder (30 rows per weight) hardly
    dec, enc = sim["decoder"], sim["encoder"]
    assert dec["memory_stall_cycles"] / dec["cycles"] > 0.2 > enc["memory_stall_cycles"] / enc["cycles"]
    assert 0 < dec["utilization"] < enc["utilization"] <= 1
    # hardware non-linear units: same matmuls, a fraction of the non-linear cycles
    assert nlu["matmul_ms"] == r16["matmul_ms"] and nlu["memory_stall_ms"] == r16["memory_stall_ms"]
    assert nlu["nonlinear_ms"] < r16["nonlinear_ms"] / 20
    assert r32["matmul_ms"] < r16["matmul_ms"] / 1.8 and r32["latency_ms"] < r16["latency_ms"]
    # longer sequences cost more; bigger Archs cost more
    longer = simulate(arch, G16.with_protocol(src_len=60), DEMO)
    assert longer["encoder_ms"] > 1.9 * r16["encoder_ms"] and longer["decoder_ms"] > r16["decoder_ms"]
    assert simulate(DEMO.smallest(), G16, DEMO)["latency_ms"] < r16["latency_ms"]


def test_simulation_is_deterministic():
    arch = archs(DEMO, 1, seed=5)[-1]
    a, b = simulate(arch, G16, DEMO), simulate(arch, G16, DEMO)
    varying = {"setup_s", "started_at", "finished_at"}
    assert {k: v for k, v in a.items() if k not in varying} == {k: v for k, v in b.items() if k not in varying}
    parts = simulate_workload(arch_workload(arch, G16, DEMO), G16.simulator)
    for part, values in json.loads(a["simulation"]).items():
        assert parts[part] == pytest.approx(values, rel=1e-5)


# ---- profiles ----
def test_bundled_simulated_profiles():
    for p in (G16, G32, NLU):
        assert p.simulated and p.runtime == "simulated" and p.ray.resource == "" and p.ray.num_cpus == 1
        assert DeviceProfile.from_dict(p.to_dict()) == p
        assert (p.protocol.batch, p.protocol.beam, p.protocol.src_len, p.protocol.mode) == (1, 5, None, "sequential")
    assert (G16.simulator.rows, G32.simulator.rows, NLU.simulator.nonlinear.unit) == (16, 32, "hardware")
    assert not DeviceProfile.load("local_cpu").simulated


def test_bad_simulated_profile_lists_every_problem():
    data = G16.to_dict()
    data.update(device="cpu", threads=2, colour="red")
    data["ray"] = {"resource": "device:gemmini", "num_cpus": 0}
    data["protocol"].update(mode="reference", warmup=3, beam=0, colour=1)
    data["simulator"].update(rows=0, cols="16", dataflow="diagonal", dtype="int4", clock_mhz=-1, dram_gb_per_s=0,
                             overlap_folds="yes", bogus=1)
    data["simulator"]["nonlinear"] = {"unit": "gpu", "lanes": 0, "overhead_cycles": -5,
                                      "cycles_per_element": {"softmax": -1, "gelu": 3}}
    with pytest.raises(ConfigError) as info:
        DeviceProfile.from_dict(data)
    problems = info.value.problems
    needles = ("device: a simulated device", "threads: a simulated device", "unknown top-level key 'colour'",
               "only num_cpus may be set, not 'resource'", "ray.num_cpus", "protocol.mode", "protocol.warmup",
               "protocol.beam", "protocol: unknown key 'colour'",
               "simulator.rows", "simulator.cols", "simulator.dataflow", "simulator.dtype", "simulator.clock_mhz",
               "simulator.dram_gb_per_s", "simulator.overlap_folds", "unknown key 'bogus'",
               "simulator.nonlinear.unit", "simulator.nonlinear.lanes", "simulator.nonlinear.overhead_cycles",
               "cycles_per_element.softmax", "unknown op 'gelu'", "missing op 'layernorm'")
    for needle in needles:
        assert sum(needle in p for p in problems) == 1, (needle, problems)
    assert "gemmini_16x16.yaml" in str(info.value)
    small = G16.to_dict()
    small["simulator"]["accumulator_kib"] = 0.1
    with pytest.raises(ConfigError, match="cannot hold one row of 16"):
        DeviceProfile.from_dict(small)
    with pytest.raises(ConfigError, match="its only mode is sequential"):
        G16.with_protocol(mode="reference")
    timed = DeviceProfile.load("local_cpu").to_dict()
    timed["simulator"] = G16.to_dict()["simulator"]
    with pytest.raises(ConfigError, match="a simulator section needs runtime: simulated"):
        DeviceProfile.from_dict(timed)


def test_simulated_profile_refuses_the_reference_bench():
    from hat_ray.latency.measure import ReferenceBench

    with pytest.raises(DeviceError, match="simulated"):
        ReferenceBench(G16, DEMO)


# ---- as a device: measure, collect, fit, search ----
def test_cli_measure_contract(capsys, tmp_path):
    import ray

    arch_path = tmp_path / "arch.yaml"
    arch_path.write_text(yaml.safe_dump(DEMO.largest().to_hat()))
    was_running = ray.is_initialized()
    code = main(["latency", "measure", "--device", "gemmini_16x16", "--space", "demo", "--arch", str(arch_path), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    records = json.loads(out)
    assert len(records) == 1 and ray.is_initialized() == was_running  # computed here: no Ray, no node
    rec = records[0]
    assert rec["device"] == "gemmini_16x16" and rec["arch_key"] == DEMO.largest().key() and rec["latency_ms"] > 0
    for word in ("matmul", "memory", "nonlinear"):
        assert any(word in key and isinstance(value, float) and value > 0 for key, value in rec.items()), word
    code = main(["latency", "measure", "--device", "gemmini_16x16_nlu", "--space", "demo", "-n", "2"])
    out, _ = capsys.readouterr()
    assert code == 0 and len(out.strip().splitlines()) == 2 and "nonlinear" in out
    code = main(["latency", "measure", "--device", "gemmini_16x16", "--space", "demo", "-n", "1", "--protocol", "reference"])
    _, err = capsys.readouterr()
    assert code == 2 and "its only mode is sequential" in err


def test_collect_and_fit_through_ray_tasks(ray_local, tmp_path):
    """30 Archs on two simulated devices through Ray tasks (no node has a device resource), written
    to one dataset, resumable, fit by the default predictor; a changed simulator is refused."""
    from hat_ray.cluster import require_devices
    from hat_ray.latency.probe import collect, existing_keys

    assert require_devices([G16, NLU]) == {"gemmini_16x16": [], "gemmini_16x16_nlu": []}
    sample = archs(DEMO, 40, seed=11)
    out = tmp_path / "sim.parquet"
    seen = []
    summary = collect(sample[:30], [G16, NLU], DEMO, out, progress=lambda *a: seen.append(a))
    assert summary.measured == {"gemmini_16x16": 30, "gemmini_16x16_nlu": 30} and not summary.failed
    assert seen[-1][1:] in ((30, 30),)
    data = LatencyDataset.load(out)
    assert len(data) == 60 and data.runtimes() == ["simulated"] and data.frame["node_id"].notna().all()
    assert (data.frame["matmul_ms"] > 0).all() and data.frame["simulator"].nunique() == 2
    again = collect(sample[:30], [G16], DEMO, out)
    assert again.measured == {} and again.skipped == {"gemmini_16x16": 30}
    predictor = LatencyPredictor.fit(data.for_device("gemmini_16x16"), space=DEMO)
    assert predictor.unit == "ms" and predictor.runtime == "simulated"
    held_out = sample[30:]
    truth = np.array([simulate(a, G16, DEMO)["latency_ms"] for a in held_out])
    assert np.median(np.abs(predictor.predict(held_out) / truth - 1)) < 0.03
    changed = G16.to_dict()
    changed["simulator"]["dram_gb_per_s"] = 4
    with pytest.raises(ConfigError, match="other hardware parameters"):
        existing_keys(out, DEMO.name, [DeviceProfile.from_dict(changed)])


def test_measure_on_devices_and_search_measurement(ray_local):
    from hat_ray.search.constraints import Constraint, Constraints
    from hat_ray.search.run import measure_candidates, measurement_profiles

    profiles = measurement_profiles(Constraints([Constraint("gemmini_16x16", 50.0, None)]), 2)
    assert profiles == {"gemmini_16x16": G16}
    top = archs(DEMO, 1, seed=2)
    measured = measure_candidates(top, profiles, DEMO)
    for arch in top:
        assert measured[arch.key()]["gemmini_16x16"] == pytest.approx(simulate(arch, G16, DEMO)["latency_ms"])


def test_cli_collect_needs_no_device_node(tmp_path):
    """`hat-ray latency collect --device gemmini_16x16` starts a local Ray that declares no device
    resource for it (and would refuse a remote real device), then `fit` works on the rows."""
    out = tmp_path / "g.parquet"
    proc = subprocess.run([sys.executable, "-m", "hat_ray.cli.main", "latency", "collect", "--space", "demo", "--device",
                           "gemmini_16x16", "-n", "12", "--out", str(out), "--json"], capture_output=True, text=True,
                          timeout=240, env={**os.environ, "HAT_RAY_DASHBOARD": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["measured"] == {"gemmini_16x16": 12} and summary["rows"] == 12
    pred = tmp_path / "g.npz"
    assert main(["latency", "fit", "--data", str(out), "--out", str(pred)]) == 0
    assert LatencyPredictor.load(pred).device == "gemmini_16x16"


@pytest.mark.slow  # ~1 min: a search constrained on a simulated and a real device, top 2 measured on both
def test_search_next_to_a_real_device(tmp_path):
    from search_helpers import write_fake_predictor, write_supernet_checkpoint

    write_supernet_checkpoint(tmp_path / "super.pt")
    preds = {}
    for device in ("gemmini_16x16", "local_cpu"):
        write_fake_predictor(tmp_path / f"{device}.pred", device=device)
        preds[device] = tmp_path / f"{device}.pred"
    out = tmp_path / "search"
    cmd = [sys.executable, "-m", "hat_ray.cli.main", "search", "--supernet", str(tmp_path / "super.pt"), "--data",
           "synthetic", "--device", "gemmini_16x16:45", "--device", "local_cpu:45", "--predictor",
           f"gemmini_16x16:{preds['gemmini_16x16']}", "--predictor", f"local_cpu:{preds['local_cpu']}", "--out",
           str(out), "--scorers", "2", "--valid-sentences", "24", "--seed", "1", "--population", "8", "--parents", "3",
           "--mutations", "3", "--crossovers", "2", "--iterations", "2", "--measure-top", "2", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HAT_RAY_DASHBOARD": "0", "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    for cand in result["top"]:
        assert cand["measured_ms"]["gemmini_16x16"] > 0 and cand["measured_ms"]["local_cpu"] > 0
    assert set(result["measured"]["per_device"]) == {"gemmini_16x16", "local_cpu"}
