"""Predictor metrics. Callers pass HELD-OUT rows only (the CLI refuses rows a predictor was fit on)."""

from __future__ import annotations

import numpy as np


def latency_metrics(pred_ms: np.ndarray, true_ms: np.ndarray) -> dict[str, float | int]:
    """``{"rmse_ms", "mape", "within_5", "within_10", "kendall_tau", "n"}``; mape and within_*
    in percent (within_k: share of rows whose relative error is at most k%)."""
    p = np.asarray(pred_ms, dtype=float)
    y = np.asarray(true_ms, dtype=float)
    if p.shape != y.shape or p.ndim != 1 or len(y) == 0:
        raise ValueError(f"need two equal-length non-empty vectors, got {p.shape} and {y.shape}")
    rel = np.abs(p - y) / y
    return {
        "rmse_ms": float(np.sqrt(np.mean((p - y) ** 2))),
        "mape": float(100 * rel.mean()),
        "within_5": float(100 * np.mean(rel <= 0.05)),
        "within_10": float(100 * np.mean(rel <= 0.10)),
        "kendall_tau": kendall_tau(p, y),
        "n": int(len(y)),
    }


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b (ties accounted for), O(n^2) time, O(n) memory; nan when undefined."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    n = len(a)
    score = ties_a = ties_b = 0
    for i in range(n - 1):
        da = np.sign(a[i + 1:] - a[i])
        db = np.sign(b[i + 1:] - b[i])
        score += int(np.sum(da * db))
        ties_a += int(np.sum(da == 0))
        ties_b += int(np.sum(db == 0))
    pairs = n * (n - 1) // 2
    denom = np.sqrt(float(pairs - ties_a) * float(pairs - ties_b))
    return float(score / denom) if denom > 0 else float("nan")
