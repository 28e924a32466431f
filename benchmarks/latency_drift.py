"""Drift in HAT's measured latency datasets, and whether a drift model helps the predictor.

HAT's device CSVs (../shared/data/hat_latency) are in collection order, and the machines
drifted while they were measured (the Raspberry Pi's first ~120 rows run ~43% slower). For
each CSV present (every ``{task}_{cpu|gpu}_{device}.csv.gz`` with a known device):

1. **How much drift.** Out-of-fold ratios ``measured / predicted`` (5-fold CV over all rows
   with hat-ray's default predictor, so a row's own drift is not absorbed by its fit), in
   collection order: a rolling median over 50 rows, its range (max / min) and where the
   extremes are, the spans where it is more than 5% off 1, the lag-1 autocorrelation of the
   log ratios, and the share of their variance a smooth function of the row index explains (a
   leave-one-out rolling median, so white noise scores ~0; a shuffled-order null beside it).
   Repeated without the first 120 rows (the Pi's warm-up).
2. **Does a drift model help on held-out rows.** Candidate fit procedures, each a function of
   its training rows only:

   * ``none``: the default predictor on every training row;
   * ``drop_cv``: drop the first K rows, K in (0, 60, 120, 240) chosen by 5-fold CV on the
     training rows (each K's fits scored on the same rows, those at index >= 240);
   * ``drift_w50`` / ``drift_w200``: a drift curve ``d(row)``, the centered rolling median
     (W rows) of the out-of-fold ratios on the training rows; fit on ``y / d(row)``; predict
     later rows x ``d_end``, the median ratio of the last W training rows (the drift at the end
     of the training period: the held-out rows come after, in collection order).

   The choice among them is made on a validation split carved from rows 0:1800 (fit 0:1500,
   score 1500:1800). Then every candidate is refit on 0:1800 and scored on the test rows
   1800:2000, which influence nothing. Reported beside them, not candidates: fixed K
   (``drop_60/120/240``) and ``detrend_w50`` (the drift_w50 fit predicted at d = 1, i.e.
   detrended training without the end-level shift).

Metrics: MAPE (%), Kendall tau, within 10%, the median signed error ``bias_pct``, and the
paired difference in MAPE against ``none`` with its standard error. A global level correction
(d_end) moves MAPE and bias only: Kendall tau is scale-invariant. ``drift_model_helps`` is true
only when a drift variant was chosen on validation AND beats ``none`` on the test rows by more
than 2 SE. Point predictions only (``members=0``: the bootstrap ensemble does not change them).
The result is written to benchmarks/results/latency_drift.json (``--out``) and printed, with
the markdown tables used in BENCHMARKS.md.

    python benchmarks/latency_drift.py [--data ../shared/data/hat_latency] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hat_ray.latency import LatencyDataset, LatencyPredictor, latency_metrics
from hat_ray.latency.dataset import guess_hat_names

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks/results/latency_drift.json"
FOLDS = 5
WINDOW = 50  # rows of the diagnostic rolling median
WARMUP = 120  # the Pi's known slow start: stats are repeated without these rows
KS = (0, 60, 120, 240)  # drop_cv's grid
DRIFT_WINDOWS = (50, 200)
TRAIN, VALID_FIT, VALID, TEST = "0:1800", "0:1500", "1500:1800", "1800:2000"
CANDIDATES = ("none", "drop_cv", *(f"drift_w{w}" for w in DRIFT_WINDOWS))
ORDER = ("raspberrypi4", "xeon_e5_2640", "titanxp")


# ---- drift estimation ----
def fit(data: LatencyDataset) -> LatencyPredictor:
    return LatencyPredictor.fit(data, members=0)


def oof_predictions(data: LatencyDataset, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Out-of-fold predictions (ms) for every row: ``folds`` random folds, each predicted by a
    default predictor fit on the other rows."""
    n = len(data)
    out = np.empty(n)
    for fold in np.array_split(np.random.default_rng(seed).permutation(n), folds):
        fold = np.sort(fold)
        rest = np.setdiff1d(np.arange(n), fold)
        out[fold] = fit(data.subset(rest)).predict_dataset(data.subset(fold))
    return out


def oof_ratios(data: LatencyDataset, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """measured / out-of-fold predicted, per row in stored (collection) order."""
    return data.latency() / oof_predictions(data, folds, seed)


def drift_curve(ratio: np.ndarray, window: int) -> np.ndarray:
    """d(row): centered rolling median of the ratios over ``window`` rows (shorter at the ends)."""
    return pd.Series(np.asarray(ratio, dtype=float)).rolling(window, center=True, min_periods=1).median().to_numpy()


def loo_rolling_median(x: np.ndarray, window: int) -> np.ndarray:
    """Centered rolling median over ``window`` rows EXCLUDING the row itself."""
    x = np.asarray(x, dtype=float)
    half = window // 2
    out = np.empty(len(x))
    for i in range(len(x)):
        out[i] = np.median(np.concatenate([x[max(0, i - half):i], x[i + 1:i + half + 1]]))
    return out


def smooth_share(log_ratio: np.ndarray, window: int = WINDOW) -> float:
    """Share of the variance of ``log_ratio`` explained by a smooth function of the row index
    (leave-one-out rolling median; can be negative when there is no smooth component)."""
    e = np.asarray(log_ratio, dtype=float)
    return float(1.0 - np.var(e - loo_rolling_median(e, window)) / np.var(e))


def autocorr(x: np.ndarray, lag: int = 1) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.corrcoef(x[:-lag], x[lag:])[0, 1])


def off_spans(curve: np.ndarray, tol: float = 0.05, min_len: int = 10, offset: int = 0) -> list[dict[str, Any]]:
    """Spans of rows where the drift curve is more than ``tol`` off 1 (same direction)."""
    sign = np.where(curve > 1 + tol, 1, np.where(curve < 1 - tol, -1, 0))
    spans, start = [], None
    for i in range(len(sign) + 1):
        s = sign[i] if i < len(sign) else 0
        if start is not None and s != sign[start]:
            if i - start >= min_len:
                spans.append({"rows": f"{start + offset}:{i + offset}", "median_ratio": round(float(np.median(curve[start:i])), 3)})
            start = None
        if start is None and s != 0:
            start = i
    return spans


def drift_stats(ratio: np.ndarray, window: int = WINDOW, offset: int = 0, seed: int = 0) -> dict[str, Any]:
    """Drift summary of per-row ratios in collection order (``offset``: index of the first row)."""
    ratio = np.asarray(ratio, dtype=float)
    e = np.log(ratio)
    curve = drift_curve(ratio, window)
    rng = np.random.default_rng(seed)
    null = [smooth_share(rng.permutation(e), window) for _ in range(5)]
    return {
        "rows": len(ratio),
        "rolling_median_min": round(float(curve.min()), 3), "at_row_min": int(curve.argmin()) + offset,
        "rolling_median_max": round(float(curve.max()), 3), "at_row_max": int(curve.argmax()) + offset,
        "rolling_range": round(float(curve.max() / curve.min()), 3),
        "lag1_autocorr": round(autocorr(e, 1), 3),
        "lag10_autocorr": round(autocorr(e, 10), 3),
        "smooth_share": round(smooth_share(e, window), 3),
        "smooth_share_shuffled": round(float(np.mean(null)), 3),
        "oof_mape": round(float(100 * np.mean(np.abs(1 / ratio - 1))), 2),
        "spans_off_5pct": off_spans(curve, offset=offset),
    }


def diagnose(data: LatencyDataset) -> dict[str, Any]:
    ratio = oof_ratios(data)
    blocks = [round(float(np.median(ratio[i:i + 100])), 3) for i in range(0, len(ratio), 100)]
    return {"all_rows": drift_stats(ratio), f"after_first_{WARMUP}": drift_stats(ratio[WARMUP:], offset=WARMUP),
            f"first_{WARMUP}_median_ratio": round(float(np.median(ratio[:WARMUP])), 3),
            "median_ratio_per_100_rows": blocks}


# ---- drift models ----
def rescaled(data: LatencyDataset, factor: np.ndarray) -> LatencyDataset:
    """``data`` with latency_ms divided by ``factor`` (provenance kept: held-out checks still apply)."""
    frame = data.frame.copy()
    frame["latency_ms"] = frame["latency_ms"].to_numpy(dtype=float) / factor
    return LatencyDataset(frame, data.source, data.fingerprint, data.row_ids)


def choose_drop(data: LatencyDataset, ks: tuple[int, ...] = KS, folds: int = FOLDS, seed: int = 0) -> tuple[int, dict[int, float]]:
    """K of ``ks`` with the lowest 5-fold CV MAPE over ``data`` (training rows only): every K's
    fits leave out the first K rows; all are scored on the held fold's rows at index >= max(ks).
    Ties go to the smaller K."""
    n, y = len(data), data.latency()
    scored = np.arange(n) >= max(ks)
    errors: dict[int, list[np.ndarray]] = {k: [] for k in ks}
    for fold in np.array_split(np.random.default_rng(seed).permutation(n), folds):
        held = np.sort(fold[scored[fold]])
        rest = np.setdiff1d(np.arange(n), fold)
        for k in ks:
            pred = fit(data.subset(rest[rest >= k])).predict_dataset(data.subset(held))
            errors[k].append(np.abs(pred / y[held] - 1))
    cv = {k: float(100 * np.mean(np.concatenate(v))) for k, v in errors.items()}
    return min(ks, key=lambda k: (round(cv[k], 6), k)), cv


def procedures(train: LatencyDataset) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every variant fit on ``train``: name -> (predictor, level factor for later rows); plus
    what each chose (K, d_end)."""
    out: dict[str, Any] = {"none": (fit(train), 1.0)}
    k, cv = choose_drop(train)
    out["drop_cv"] = (fit(train.rows(f"{k}:")) if k else out["none"][0], 1.0)
    for fixed in KS[1:]:
        out[f"drop_{fixed}"] = (fit(train.rows(f"{fixed}:")), 1.0)
    ratio = oof_ratios(train)
    info: dict[str, Any] = {"drop_cv_k": k, "drop_cv_mape": {str(a): round(b, 3) for a, b in cv.items()}, "d_end": {}}
    for w in DRIFT_WINDOWS:
        curve = drift_curve(ratio, w)
        d_end = float(np.median(ratio[-w:]))
        model = fit(rescaled(train, curve))
        out[f"drift_w{w}"] = (model, d_end)
        if w == DRIFT_WINDOWS[0]:
            out[f"detrend_w{w}"] = (model, 1.0)
        info["d_end"][f"w{w}"] = round(d_end, 4)
    return out, info


def score(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    m = latency_metrics(pred, y)
    return {"mape": round(m["mape"], 3), "kendall_tau": round(m["kendall_tau"], 4), "within_10": round(m["within_10"], 1),
            "bias_pct": round(float(100 * (np.median(pred / y) - 1)), 2)}


def evaluate(train: LatencyDataset, held: LatencyDataset) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Every variant fit on ``train``, scored on ``held``; ``mape_minus_none`` is the paired
    difference of absolute percentage errors against ``none`` (mean, and ``se_vs_none`` its
    standard error over rows, treating rows as independent)."""
    fitted, info = procedures(train)
    y = held.latency()
    preds = {name: model.predict_dataset(held) * level for name, (model, level) in fitted.items()}
    base = np.abs(preds["none"] / y - 1)
    out = {}
    for name, pred in preds.items():
        diff = 100 * (np.abs(pred / y - 1) - base)
        out[name] = {**score(pred, y), "mape_minus_none": round(float(diff.mean()), 3),
                     "se_vs_none": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 3)}
    return out, info


def compare(data: LatencyDataset) -> dict[str, Any]:
    valid, valid_info = evaluate(data.rows(VALID_FIT), data.rows(VALID))
    chosen = min(CANDIDATES, key=lambda name: (valid[name]["mape"], CANDIDATES.index(name)))
    test, test_info = evaluate(data.rows(TRAIN), data.rows(TEST))
    none, pick = test["none"], test[chosen]
    return {
        "validation": {"fit_rows": VALID_FIT, "rows": VALID, "chosen_by": "lowest validation MAPE among candidates",
                       "candidates": list(CANDIDATES), "fit": valid_info, "metrics": valid},
        "chosen": chosen,
        "test": {"fit_rows": TRAIN, "rows": TEST, "fit": test_info, "metrics": test},
        "chosen_on_test": pick,
        "chosen_minus_none_mape": round(pick["mape"] - none["mape"], 3),
        "chosen_minus_none_tau": round(pick["kendall_tau"] - none["kendall_tau"], 4),
        # "helps": a drift variant was chosen and it beats none on the test rows by > 2 SE
        "drift_model_helps": bool(chosen != "none" and pick["mape_minus_none"] < -2 * pick["se_vs_none"]),
        "best_candidate_on_test_not_used": min(CANDIDATES, key=lambda name: test[name]["mape"]),
    }


# ---- driver ----
def datasets(folder: Path) -> list[tuple[str, Path]]:
    found = []
    for path in sorted(folder.glob("*.csv*")):
        space, device = guess_hat_names(path)
        if space and device:
            found.append((device, path))
    return sorted(found, key=lambda dp: (not dp[1].name.startswith("wmt14ende"), ORDER.index(dp[0]) if dp[0] in ORDER else 9, dp[1].name))


def run(folder: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"data": str(folder), "config": {
        "folds": FOLDS, "window": WINDOW, "warmup_rows": WARMUP, "drop_ks": list(KS), "drift_windows": list(DRIFT_WINDOWS),
        "train": TRAIN, "validation_fit": VALID_FIT, "validation": VALID, "test": TEST}, "datasets": {}}
    t0 = time.time()
    for device, path in datasets(folder):
        t = time.time()
        data = LatencyDataset.from_hat_csv(path)
        result["datasets"][path.name] = {"device": device, "rows": len(data), "drift": diagnose(data),
                                         "drift_model": compare(data), "seconds": round(time.time() - t, 1)}
    result["seconds"] = round(time.time() - t0, 1)
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = ["| dataset | rolling-50 median min..max (range) | lag-1 AC of log ratio (after row 120) | smooth share (shuffled) | spans > 5% off |",
             "|---|---|---|---|---|"]
    for name, r in result["datasets"].items():
        d, late = r["drift"]["all_rows"], r["drift"][f"after_first_{WARMUP}"]
        spans = ", ".join(f"{s['rows']} ({s['median_ratio']})" for s in d["spans_off_5pct"]) or "none"
        lines.append(f"| {name} | {d['rolling_median_min']}..{d['rolling_median_max']} ({d['rolling_range']}) | "
                     f"{d['lag1_autocorr']} ({late['lag1_autocorr']}) | {d['smooth_share']} ({d['smooth_share_shuffled']}) | {spans} |")
    names = [*CANDIDATES, *(n for n in next(iter(result["datasets"].values()))["drift_model"]["test"]["metrics"] if n not in CANDIDATES)]
    lines += ["", "| dataset | variant | valid MAPE % | valid tau | test MAPE % | test tau | test bias % | test MAPE - none (SE) |",
              "|---|---|---|---|---|---|---|---|"]
    for name, r in result["datasets"].items():
        c = r["drift_model"]
        for v in names:
            vm, tm = c["validation"]["metrics"][v], c["test"]["metrics"][v]
            tag = f"**{v}** (chosen)" if v == c["chosen"] else (v if v in CANDIDATES else f"{v} (info)")
            lines.append(f"| {name} | {tag} | {vm['mape']:.2f} | {vm['kendall_tau']:.3f} | {tm['mape']:.2f} | "
                         f"{tm['kendall_tau']:.3f} | {tm['bias_pct']:+.2f} | {tm['mape_minus_none']:+.2f} ({tm['se_vs_none']:.2f}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/hat_latency")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    result = run(args.data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(markdown(result))


if __name__ == "__main__":
    main()
