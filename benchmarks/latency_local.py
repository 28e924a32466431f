"""Local latency measurement quality on THIS machine (`local_cpu` profile, demo space).

1. Agreement: two separate collections (`collect` on a local Ray instance, one probe) of the
   same 30 Archs with the profile's protocol (local_cpu: reference-interleaved), then two more
   with HAT's sequential protocol for comparison; reports, per protocol, the median relative
   difference |a - b| / b and Kendall tau between the two collections, in reference units
   (`latency_ref`) and in ms, and the collection time per Arch (the cost ratio of the protocols).
   Target (issue 16): within 3% median, tau >= 0.9 in reference units; cost at most 2.5x.
2. Predictor: one collection of 400 Archs; the default predictor fit on the first 300 rows
   (collection order) in the data's unit and evaluated on the last 100. Target: MAPE under 5%.
   The same rows fit in ms are reported beside it.

Every record carries the machine state while it was measured (1-min load, the share of CPU
capacity used by other processes): the JSON output reports them, because on a shared machine
the timings move with the other work (see BENCHMARKS.md).

    python benchmarks/latency_local.py [--agree 30] [--train 300] [--test 100] [--out runs/latency_local]
    (--agree 0 or --train 0 skips that check; --no-sequential skips the sequential comparison)
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


def agreement(a: LatencyDataset, b: LatencyDataset, column: str = "latency_ms") -> dict[str, Any]:
    """Median |a - b| / b of ``column`` over Archs present in both (matched by arch key)."""
    la = a.frame.set_index("arch_key")[column].astype(float)
    lb = b.frame.set_index("arch_key")[column].astype(float).reindex(la.index)
    rel = (la - lb).abs() / lb
    return {"n": int(rel.notna().sum()), "median_rel_diff_pct": round(float(100 * rel.median()), 2),
            "median_signed_diff_pct": round(float(100 * ((la - lb) / lb).median()), 2),
            "kendall_tau": round(kendall_tau(la.to_numpy(), lb.to_numpy()), 3)}


def two_collections(out: Path, name: str, archs: list, profile: DeviceProfile) -> dict[str, Any]:
    """Collect ``archs`` twice with ``profile``: agreement in ms (and in reference units), seconds per Arch."""
    times, data = [], []
    for part in ("a", "b"):
        t0 = time.time()
        data.append(collect_to(out / f"agree_{name}_{part}.parquet", archs, profile))
        times.append(time.time() - t0)
    result: dict[str, Any] = {"protocol": profile.protocol.mode, "ms": agreement(*data),
                              "seconds_per_arch": round(float(np.mean(times)) / len(archs), 3),
                              "machine_a": machine(data[0]), "machine_b": machine(data[1])}
    if profile.protocol.mode == "reference":
        result["ref"] = agreement(*data, column="latency_ref")
        result["reference_ms_median"] = [round(float(d.frame["reference_ms"].median()), 3) for d in data]
    return result


def run(n_agree: int, n_train: int, n_test: int, out: Path, profile: DeviceProfile,
        sequential: bool = True) -> dict[str, Any]:
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
            archs = sample(n_agree, 100)
            result["agreement"] = two_collections(out, profile.protocol.mode, archs, profile)
            if sequential and profile.protocol.mode != "sequential":
                seq = two_collections(out, "sequential", archs, profile.with_protocol(mode="sequential"))
                result["agreement_sequential"] = seq
                result["cost_ratio"] = round(result["agreement"]["seconds_per_arch"] / seq["seconds_per_arch"], 2)
        if n_train:
            t0 = time.time()
            data = collect_to(out / "predictor.parquet", sample(n_train + n_test, 200), profile)
            result["predictor"] = {**fit_and_eval(data, n_train, n_test), "seconds": round(time.time() - t0, 1)}
            if data.unit() == "ref":
                result["predictor_ms"] = fit_and_eval(data, n_train, n_test, unit="ms")
    finally:
        if started:
            ray.shutdown()
    return result


def fit_and_eval(data: LatencyDataset, n_train: int, n_test: int, unit: str = "auto") -> dict[str, Any]:
    """The default predictor fit on the first ``n_train`` rows, metrics on the next ``n_test`` (its unit)."""
    predictor = LatencyPredictor.fit(data.rows(f"0:{n_train}"), unit=unit)
    test = data.rows(f"{n_train}:{n_train + n_test}")
    metrics = latency_metrics(*predictor.paired(test))
    return {**{k: round(v, 3) for k, v in metrics.items()}, "unit": predictor.unit, "mode": predictor.mode,
            "n_train": n_train, "reference": predictor.reference, "machine": machine(data),
            "latency_ms_range": [round(float(data.latency().min()), 1), round(float(data.latency().max()), 1)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agree", type=int, default=30)
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--device", default="local_cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/latency_local"))
    parser.add_argument("--no-sequential", action="store_true", help="skip the sequential-protocol comparison")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = run(args.agree, args.train, args.test, args.out, DeviceProfile.load(args.device),
                 sequential=not args.no_sequential)
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
