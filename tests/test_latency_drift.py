"""benchmarks/latency_drift.py's drift estimator on synthetic data with a known drift: the first
120 rows 40% slower (as HAT's Pi data), the rest at the model's level with 1% noise."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hat_ray.arch import FEATURE_NAMES
from hat_ray.latency import LatencyDataset
from hat_ray.latency import features as feat
from hat_ray.space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
SLOW_ROWS, SLOW = 120, 1.4


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("latency_drift", ROOT / "benchmarks" / "latency_drift.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic(n: int = 600, slow_rows: int = SLOW_ROWS, slow: float = SLOW, seed: int = 0) -> LatencyDataset:
    """Random WMT14 Archs; latency = a positive combination of the default model's features x
    1% log-normal noise, x ``slow`` on the first ``slow_rows`` rows."""
    rng = np.random.default_rng(seed)
    space = SearchSpace.load("wmt14_en_de").latency_space()
    x10 = np.array([space.sample(rng).features() for _ in range(n)], dtype=float)
    coef = rng.uniform(0.5, 1.5, feat.from_features(x10[:1]).shape[1])
    y = feat.from_features(x10) @ coef * np.exp(rng.normal(0, 0.01, n))
    y[:slow_rows] *= slow
    frame = pd.DataFrame(x10, columns=list(FEATURE_NAMES))
    frame["latency_ms"] = y
    frame["space"], frame["device"], frame["source"] = "wmt14_en_de", "raspberrypi4", "synthetic"
    return LatencyDataset(frame, source="synthetic")


def test_drift_curve_finds_the_slow_start(bench):
    data = synthetic()
    ratio = bench.oof_ratios(data)
    curve = bench.drift_curve(ratio, 50)
    assert abs(np.median(curve[:SLOW_ROWS - 25]) - SLOW) < 0.05, curve[:SLOW_ROWS]
    assert curve[:SLOW_ROWS - 25].min() > 1.3 and np.abs(curve[SLOW_ROWS + 25:] - 1).max() < 0.03, curve
    stats = bench.drift_stats(ratio)
    (span,) = stats["spans_off_5pct"]
    start, stop = map(int, span["rows"].split(":"))
    assert start == 0 and abs(stop - SLOW_ROWS) <= 10 and abs(span["median_ratio"] - SLOW) < 0.05, stats
    assert abs(stats["rolling_range"] - SLOW) < 0.06 and stats["lag1_autocorr"] > 0.5 and stats["smooth_share"] > 0.7, stats
    late = bench.drift_stats(ratio[SLOW_ROWS:], offset=SLOW_ROWS)
    assert late["spans_off_5pct"] == [] and late["smooth_share"] < 0.1 and late["rolling_range"] < 1.03, late


def test_no_drift_gives_a_flat_curve(bench):
    ratio = bench.oof_ratios(synthetic(slow_rows=0, seed=1))
    stats = bench.drift_stats(ratio)
    assert stats["spans_off_5pct"] == [] and stats["rolling_range"] < 1.03 and stats["smooth_share"] < 0.1, stats


def test_drift_model_fit_on_the_synthetic_rows(bench):
    """drop_cv's cross-validation drops (at least) the slow start, the drift model's end level is
    the settled one, and every variant predicts the later rows within the noise."""
    data = synthetic(n=700, seed=2)
    metrics, info = bench.evaluate(data.rows("0:600"), data.rows("600:700"))
    assert info["drop_cv_k"] >= SLOW_ROWS, info
    assert abs(info["d_end"]["w50"] - 1) < 0.02 and abs(info["d_end"]["w200"] - 1) < 0.02, info
    assert all(m["mape"] < 1.5 for m in metrics.values()), metrics
