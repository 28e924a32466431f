"""Local latency measurement quality on THIS machine (`local_cpu` profile, demo space).

1. Agreement: two separate collections (`collect` on a local Ray instance, one probe) of the
   same 30 Archs; reports the median relative difference |a - b| / b and Kendall tau between
   them. Target on a quiet machine: median relative difference under 3%.
2. Predictor: one collection of 400 Archs; the default predictor fit on the first 300 rows
   (collection order) and evaluated on the last 100. Target: MAPE under 5%.

Every record carries the machine state while it was measured (1-min load, the share of CPU
capacity used by other processes): the JSON output reports them, because on a shared machine
the timings move with the other work (see BENCHMARKS.md).

    python benchmarks/latency_local.py [--agree 30] [--train 300] [--test 100] [--out runs/latency_local]
    (--agree 0 or --train 0 skips that check)
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from hat_ray.latency import DeviceProfile, LatencyDataset, LatencyPredictor, latency_metrics
from hat_ray.latency.metrics import kendall_tau
from hat_ray.space import SearchSpace


def sample(n: int, seed: int) -> list:
    space = SearchSpace.load("demo").latency_space()
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


def collect_to(path: Path, archs: list, profile: DeviceProfile) -> LatencyDataset:
    from hat_ray.latency.probe import collect

    collect(archs, [profile], SearchSpace.load("demo"), path)
    return LatencyDataset.load(path)


def machine(data: LatencyDataset) -> dict[str, float]:
    f = data.frame
    return {"load_1m_median": round(float(f["load_1m"].median()), 2),
            "others_cpu_share_median": round(float(f["others_cpu_share"].median()), 3),
            "disturbed_rows": int(f["disturbed"].astype(bool).sum())}


def agreement(a: LatencyDataset, b: LatencyDataset) -> dict[str, Any]:
    """Median |a - b| / b over Archs present in both (matched by arch key)."""
    la = a.frame.set_index("arch_key")["latency_ms"]
    lb = b.frame.set_index("arch_key")["latency_ms"].reindex(la.index)
    rel = (la - lb).abs() / lb
    return {"n": int(rel.notna().sum()), "median_rel_diff_pct": round(float(100 * rel.median()), 2),
            "median_signed_diff_pct": round(float(100 * ((la - lb) / lb).median()), 2),
            "kendall_tau": round(kendall_tau(la.to_numpy(), lb.to_numpy()), 3)}


def run(n_agree: int, n_train: int, n_test: int, out: Path, profile: DeviceProfile) -> dict[str, Any]:
    """Both checks (either is skipped when its count is 0); fresh output files in ``out``."""
    import ray

    from hat_ray.cluster import connect

    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.parquet*"):
        old.unlink()
    started = connect(None, [profile])
    result: dict[str, Any] = {"profile": profile.name, "protocol": profile.to_dict()["protocol"]}
    try:
        if n_agree:
            t0 = time.time()
            first = collect_to(out / "agree_a.parquet", sample(n_agree, 100), profile)
            second = collect_to(out / "agree_b.parquet", sample(n_agree, 100), profile)
            result["agreement"] = {**agreement(first, second), "seconds": round(time.time() - t0, 1),
                                   "machine_a": machine(first), "machine_b": machine(second)}
        if n_train:
            t0 = time.time()
            data = collect_to(out / "predictor.parquet", sample(n_train + n_test, 200), profile)
            result["predictor"] = {**fit_and_eval(data, n_train, n_test), "seconds": round(time.time() - t0, 1)}
    finally:
        if started:
            ray.shutdown()
    return result


def fit_and_eval(data: LatencyDataset, n_train: int, n_test: int) -> dict[str, Any]:
    predictor = LatencyPredictor.fit(data.rows(f"0:{n_train}"))
    test = data.rows(f"{n_train}:{n_train + n_test}")
    metrics = latency_metrics(predictor.predict_dataset(test), test.latency())
    return {**{k: round(v, 3) for k, v in metrics.items()}, "mode": predictor.mode, "n_train": n_train,
            "machine": machine(data),
            "latency_ms_range": [round(float(data.latency().min()), 1), round(float(data.latency().max()), 1)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agree", type=int, default=30)
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--device", default="local_cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/latency_local"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = run(args.agree, args.train, args.test, args.out, DeviceProfile.load(args.device))
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
