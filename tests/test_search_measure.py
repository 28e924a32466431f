"""`hat-ray search --measure-top K`: the final top-K re-measured on the real devices through the
latency probes (predicted vs measured in result.json), and a clear, early error when a
constrained device has no node."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from search_helpers import (
    FakePredictor,
    random_batches,
    tiny_space,
    tiny_super,
    write_fake_predictor,
    write_supernet_checkpoint,
)

from hat_ray.search.constraints import Constraint, Constraints
from hat_ray.search.evolution import HatEvolution
from hat_ray.search.pool import start_pool, weight_placement
from hat_ray.search.report import measured_summary, top_candidates
from hat_ray.search.scorer import pack_batches, pack_weights

EVO = ["--population", "8", "--parents", "3", "--mutations", "3", "--crossovers", "2", "--iterations", "2"]


def _env() -> dict:
    return {**os.environ, "HAT_RAY_DASHBOARD": "0", "PYTHONUNBUFFERED": "1"}


def _search(inputs: dict, out: Path, device: str, *extra: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "hat_ray.cli.main", "search", "--supernet", str(inputs["ckpt"]), "--data",
           "synthetic", "--device", f"{device}:45", "--predictor", f"{device}:{inputs[device]}", "--out", str(out),
           "--scorers", "2", "--valid-sentences", "24", "--seed", "1", *EVO, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("search_measure")
    write_supernet_checkpoint(root / "super.pt")
    paths = {"root": root, "ckpt": root / "super.pt"}
    for device in ("local_cpu", "raspberrypi4", "fake"):
        pred = write_fake_predictor(root / f"{device}.pred", device=device)
        assert pred.device == device
        paths[device] = root / f"{device}.pred"
    return paths


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hat-ray: error")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return errors[0]


@pytest.mark.slow  # ~40 s: a search, then two probes measuring on this machine
def test_measure_top_two_on_local_cpu(inputs):
    out = inputs["root"] / "measured"
    proc = _search(inputs, out, "local_cpu", "--measure-top", "2", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result == json.loads((out / "result.json").read_text())
    top = result["top"]
    assert len(top) == 2
    for cand in top:
        assert cand["measured_ms"]["local_cpu"] > 0 and math.isfinite(cand["measured_ms"]["local_cpu"])
        assert cand["predicted_ms"]["local_cpu"] <= 45
    assert top[0]["valid_loss"] <= top[1]["valid_loss"]
    assert top[0]["key"] == result["best"]["key"] and result["best"]["measured_ms"] == top[0]["measured_ms"]
    summary = result["measured"]
    assert summary["k"] == 2
    per = summary["per_device"]["local_cpu"]
    assert per["n"] == 2 and per["mape"] >= 0 and per["max_abs_err_ms"] >= 0 and per["limit_ms"] == 45
    errs = [abs(c["predicted_ms"]["local_cpu"] - c["measured_ms"]["local_cpu"]) for c in top]
    assert per["max_abs_err_ms"] == pytest.approx(max(errs), abs=1e-3)
    assert result["measure_seconds"] > 0
    assert result["scored"] == result["evaluations"] and result["scorer_busy_seconds"] > 0
    assert 0 < result["scoring_window_seconds"] <= result["tune_seconds"]
    trials = pd.read_parquet(out / "trials.parquet")
    measured = trials[trials["measured_local_cpu"].notna()]
    assert sorted(measured["key"]) == sorted(c["key"] for c in top)


def test_device_without_node_fails_before_the_search(inputs):
    out = inputs["root"] / "pi"
    proc = _search(inputs, out, "raspberrypi4", "--measure-top", "2", timeout=300)
    line = _one_error_line(proc)
    assert "raspberrypi4" in line and "device:rpi4" in line and "--address" in line
    assert not (out / "evaluations.jsonl").exists()  # nothing was searched


@pytest.mark.parametrize("device, extra, needle", [
    ("fake", ["--measure-top", "1"], "'fake' is not one"),
    ("local_cpu", ["--measure-top", "-1"], "--measure-top must be 0 (off) or a positive number"),
])
def test_bad_measure_top_input(inputs, device, extra, needle):
    line = _one_error_line(_search(inputs, inputs["root"] / "bad", device, *extra, timeout=300))
    assert needle in line


def _scored_engine() -> HatEvolution:
    c = Constraints([Constraint("fake", 60.0, FakePredictor())])
    engine = HatEvolution(tiny_space(), c, seed=0, population=12, parents=4, mutations=4, crossovers=2, iterations=1)
    rng = np.random.default_rng(0)
    while (arch := engine.ask()) is not None:
        engine.tell(arch, float(rng.uniform(5, 9)))
    return engine


def test_top_candidates_best_k_and_pareto_spread():
    engine = _scored_engine()
    top = top_candidates(engine, 3)
    assert [loss for _, loss in top] == sorted(engine.scores.values())[:3]
    assert top_candidates(engine, 0) == []
    front = [(a, loss) for a, loss, _ in engine.pareto_front()]
    assert top_candidates(engine, len(front) + 5, pareto=True) == front
    if len(front) >= 3:
        picked = top_candidates(engine, 2, pareto=True)
        assert picked == [front[0], front[-1]]  # both ends of the front


def test_measured_summary():
    c = Constraints([Constraint("dev", 10.0, FakePredictor())])
    top = [{"predicted_ms": {"dev": 9.0}, "measured_ms": {"dev": 10.0}},
           {"predicted_ms": {"dev": 8.0}, "measured_ms": {"dev": 12.0}},
           {"predicted_ms": {"dev": 5.0}, "measured_ms": {}}]
    s = measured_summary(top, c)["per_device"]["dev"]
    assert s["n"] == 2 and s["mape"] == pytest.approx(100 * (0.1 + 4 / 12) / 2, abs=1e-3)
    assert s["max_abs_err_ms"] == pytest.approx(4.0) and s["over_limit"] == 1 and s["mean_err_ms"] == pytest.approx(-2.5)


def test_scorers_map_the_weights_zero_copy(ray_local):
    """Every scorer's parameters live in the shared object-store mapping, none in private memory
    (a model built in this process is entirely private); the pool counts busy time."""
    model = tiny_super()
    total = sum(t.numel() * t.element_size() for t in {t.data_ptr(): t for t in model.state_dict().values()}.values())
    assert weight_placement(model) == {"weights_shared_bytes": 0, "weights_private_bytes": total}
    pool = start_pool(pack_weights(model), pack_batches(random_batches()), 2, "zero-copy-test")
    try:
        arch = tiny_space().sample(np.random.default_rng(0))
        ray_local.get(pool.score.remote(arch.to_dict()))
        ray_local.get(pool.score.remote(arch.to_dict()))  # answered from the cache
        stats = ray_local.get(pool.stats.remote())
    finally:
        ray_local.kill(pool)
    assert stats["scored"] == 1 and stats["cache_hits"] == 1 and stats["busy_seconds"] > 0
    assert len(stats["scorers"]) == 2
    for info in stats["scorers"]:
        assert info["weights_private_bytes"] == 0 and info["weights_shared_bytes"] == total
