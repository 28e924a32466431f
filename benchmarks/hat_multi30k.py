"""Benchmark: HAT's claim in miniature on real data (not in CI).

On Multi30k En-De with the ``demo`` space and this machine's CPU (``local_cpu``), run the whole
pipeline (SuperTransformer, latency collection, predictor, one search per latency limit, training,
real latency measurement, SacreBLEU on test2016) and compare each search winner against the
baseline Transformers (uniform Archs scaled by depth and width: largest, shallow, medium, narrow,
smallest). Winners and baselines are trained with the same budget and the same initialisation
(inherited SuperTransformer weights, as HAT fine-tunes its winners; ``--init scratch`` to train
all from scratch). HAT's claim holds for a limit when the winner's SacreBLEU is higher than that
of every baseline whose *measured* latency is equal or higher.

Everything runs through ``hat-ray pipeline`` (the experiment file is written to the run folder),
so an interrupted run resumes at its first unfinished stage. Writes
``benchmarks/results/hat_multi30k.json`` and prints a Markdown table for BENCHMARKS.md.

    nice python benchmarks/hat_multi30k.py                            # ~75 min on 2 cores
    python benchmarks/hat_multi30k.py --supernet-minutes 3 --train-minutes 0.5 --latency-archs 20 \\
        --out runs/bench_hat_small --test-sentences 200               # a quick check of the wiring
    python benchmarks/hat_multi30k.py --latency-only benchmarks/results/hat_multi30k.json
        # the latency half only, on the models of an earlier run (minutes)

``latency_check`` (issue 16): the winners' measured latencies come out in the order of their
predictions, each within 10% of its prediction, in reference units and in ms.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from hat_ray.pipeline.config import Experiment
from hat_ray.pipeline.run import run_pipeline

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "local_cpu"


def experiment(args: argparse.Namespace) -> Experiment:
    limits = [f"p{p:g}" for p in args.limits]
    return Experiment.from_dict({
        "name": "hat_multi30k",
        "space": "demo",
        "out": str(args.out),
        "devices": [{"profile": DEVICE, "limits_ms": limits}],
        "data": {"name": "multi30k", "data_dir": str(args.data_dir), "vocab_size": 8000,
                 "valid_sentences": args.valid_sentences, "test_sentences": args.test_sentences},
        "supernet": {"max_minutes": args.supernet_minutes, "max_tokens": 4096, "lr": 1e-3, "warmup_updates": 400,
                     "dropout": 0.1, "validate_every": 0, "save_every": 200, "threads": 2},
        "latency": {"archs": args.latency_archs},
        "search": {"algorithm": "hat", "scorers": 2, "population": 40, "parents": 10, "mutations": 15,
                   "crossovers": 15, "iterations": args.iterations, "max_tokens": 4096},
        "train": {"max_minutes": args.train_minutes, "init": args.init,
                  "baselines": ["largest", "shallow", "medium", "narrow", "smallest"],
                  "max_tokens": 4096, "lr": 5e-4, "warmup_updates": 50, "dropout": 0.1, "threads": 2},
        "evaluate": {"beam": args.beam},
    }, source="benchmarks/hat_multi30k.py")


def compare(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per search winner: the baselines at equal or higher measured latency, and whether
    the winner's SacreBLEU beats all of them."""
    measured = [m for m in models if m["measured_ms"].get(DEVICE) is not None]  # a failed measurement is None
    base = [m for m in measured if m["role"] == "baseline"]
    rows = []
    for w in sorted((m for m in measured if m["role"] == "searched"), key=lambda m: m["measured_ms"][DEVICE]):
        ms = w["measured_ms"][DEVICE]
        slower = [b for b in base if b["measured_ms"][DEVICE] >= ms]
        best = max(slower, key=lambda b: b["sacrebleu"], default=None)
        rows.append({
            "winner": w["name"], "targets": w.get("targets"), "measured_ms": round(ms, 2),
            "predicted_ms": round(w["predicted_ms"][DEVICE], 2), "params_m": round(w["params"] / 1e6, 2),
            "sacrebleu": round(w["sacrebleu"], 2), "valid_loss": round(w["valid_loss"], 3),
            "baselines_at_or_above": [b["name"] for b in slower],
            "best_such_baseline": best and {"name": best["name"], "sacrebleu": round(best["sacrebleu"], 2),
                                            "measured_ms": round(best["measured_ms"][DEVICE], 2)},
            "claim_holds": best is not None and w["sacrebleu"] > best["sacrebleu"],
        })
    return rows


def latency_check(models: list[dict[str, Any]], tolerance: float = 0.10, resolution: float = 0.03) -> dict[str, Any]:
    """Issue 16's target for the winners: their measured latencies come out in the order of their
    predictions, each within ``tolerance`` of its prediction. In reference units where the models
    have them (the reference protocol's measurement), and in ms beside. ``inversions`` lists the
    pairs measured in the other order with their predicted gap; ``order_beyond_resolution`` ignores
    pairs predicted closer than ``resolution`` (two collections of the same Archs agree to ~2-3%:
    such pairs have no measurable order)."""
    winners = [m for m in models if m["role"] == "searched"]
    out: dict[str, Any] = {}
    for unit, pred_key, meas_key in (("ref", "predicted_ref", "measured_ref"), ("ms", "predicted_ms", "measured_ms")):
        pairs = [(w["name"], w.get(pred_key, {}).get(DEVICE), w.get(meas_key, {}).get(DEVICE)) for w in winners]
        pairs = [p for p in pairs if p[1] is not None and p[2] is not None]
        if not pairs:
            continue
        by_prediction = [name for name, _, _ in sorted(pairs, key=lambda p: p[1])]
        by_measurement = [name for name, _, _ in sorted(pairs, key=lambda p: p[2])]
        errors = {name: round(100 * (meas / pred - 1), 1) for name, pred, meas in pairs}
        inversions = [{"pair": [a[0], b[0]], "predicted_gap_pct": round(100 * abs(b[1] / a[1] - 1), 1),
                       "measured_gap_pct": round(100 * abs(b[2] / a[2] - 1), 1)}
                      for i, a in enumerate(pairs) for b in pairs[i + 1:] if (a[1] - b[1]) * (a[2] - b[2]) < 0]
        out[unit] = {"order_by_prediction": by_prediction, "order_by_measurement": by_measurement,
                     "same_order": by_prediction == by_measurement, "inversions": inversions,
                     "order_beyond_resolution": all(i["predicted_gap_pct"] < 100 * resolution for i in inversions),
                     "error_pct": errors,
                     "all_within": all(abs(e) <= 100 * tolerance for e in errors.values()),
                     "holds": by_prediction == by_measurement and all(abs(e) <= 100 * tolerance for e in errors.values())}
    return out


def latency_only(result_json: Path, out: Path, n_archs: int) -> dict[str, Any]:
    """The latency half of the benchmark on the models of an earlier run (``result_json``): a fresh
    local collection of ``n_archs`` random Archs with the profile's protocol, the pipeline's
    predictor on it, then every model measured through the latency probes and compared, as the
    pipeline's latency, predictor and evaluate stages do. Training does not change latency, so
    this checks the latency claim without the hour of training."""
    import numpy as np
    import ray

    from hat_ray.arch import Arch
    from hat_ray.cluster import connect
    from hat_ray.latency import DeviceProfile, LatencyDataset, LatencyPredictor
    from hat_ray.latency.probe import collect, measure_on_devices
    from hat_ray.space import SearchSpace

    earlier = json.loads(result_json.read_text())
    space, profile = SearchSpace.load("demo"), DeviceProfile.load(DEVICE)
    out.mkdir(parents=True, exist_ok=True)
    data_path = out / "latency.parquet"
    rng = np.random.default_rng(0)
    archs = [space.latency_space().sample(rng) for _ in range(n_archs)]
    models = [dict(m) for m in earlier["models"]]
    started = connect(None, [profile])
    try:
        collect(archs, [profile], space, data_path, vocab=8000)
        predictor = LatencyPredictor.fit(LatencyDataset.load(data_path).for_device(DEVICE), space=space)
        records = measure_on_devices([Arch.from_dict(m["arch"]) for m in models], [profile], space, vocab=8000)
    finally:
        if started:
            ray.shutdown()
    by_key = {r["arch_key"]: r for r in records[DEVICE]}
    for m in models:
        arch = Arch.from_dict(m["arch"])
        record = by_key[arch.key()]
        m["predicted_ms"] = {DEVICE: float(predictor.predict([arch])[0])}
        m["measured_ms"] = {DEVICE: float(record["latency_ms"])}
        if predictor.unit == "ref":
            m["predicted_ref"] = {DEVICE: float(predictor.predict_native([arch])[0])}
            m["measured_ref"] = {DEVICE: float(record["latency_ref"])}
    keep = ("name", "role", "predicted_ms", "measured_ms", "predicted_ref", "measured_ref")
    return {"from": str(result_json), "latency_archs": n_archs, "protocol": profile.protocol.mode,
            "predictor": {"unit": predictor.unit, "reference": predictor.reference},
            "models": [{k: m[k] for k in keep if k in m} for m in models],
            "latency_check": latency_check(models)}


def markdown(models: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    lines = ["| model | role | params (M) | measured ms | predicted ms | valid loss | SacreBLEU |",
             "|---|---|---|---|---|---|---|"]
    for m in sorted(models, key=lambda m: m["measured_ms"].get(DEVICE) or math.inf):
        ms = m["measured_ms"].get(DEVICE)
        lines.append(f"| {m['name']} | {m['role']} | {m['params'] / 1e6:.2f} | {'-' if ms is None else f'{ms:.1f}'} | "
                     f"{m['predicted_ms'][DEVICE]:.1f} | {m['valid_loss']:.3f} | {m['sacrebleu']:.2f} |")
    lines += ["", "| winner | measured ms | SacreBLEU | best baseline at >= its latency | claim |", "|---|---|---|---|---|"]
    for r in rows:
        b = r["best_such_baseline"]
        other = f"{b['name']} {b['sacrebleu']:.2f} ({b['measured_ms']:.1f} ms)" if b else "none"
        lines.append(f"| {r['winner']} | {r['measured_ms']:.1f} | {r['sacrebleu']:.2f} | {other} | "
                     f"{'holds' if r['claim_holds'] else 'fails'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "multi30k")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_hat_multi30k")
    p.add_argument("--limits", type=float, nargs="+", default=[20, 50, 80],
                   help="latency limits as percentiles of the latencies measured on this machine")
    p.add_argument("--supernet-minutes", type=float, default=20)
    p.add_argument("--train-minutes", type=float, default=4, help="per model, winners and baselines alike")
    p.add_argument("--init", choices=["supernet", "scratch"], default="supernet")
    p.add_argument("--latency-archs", type=int, default=80)
    p.add_argument("--iterations", type=int, default=6)
    p.add_argument("--valid-sentences", type=int, default=300, help="validation pairs each search candidate is scored on")
    p.add_argument("--test-sentences", type=int, default=None, help="test2016 pairs for BLEU (default: all 1,000)")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "hat_multi30k.json")
    p.add_argument("--latency-only", type=Path, metavar="RESULT_JSON",
                   help="only re-check the latency of the models of an earlier run's JSON (minutes, no training); "
                        "writes benchmarks/results/hat_multi30k_latency.json")
    args = p.parse_args(argv)
    if args.latency_only:
        check = latency_only(args.latency_only, args.out / "latency_only", args.latency_archs)
        path = args.json.with_name("hat_multi30k_latency.json")
        path.write_text(json.dumps(check, indent=2, default=str))
        print(json.dumps(check["latency_check"], indent=2))
        return 0
    if not (args.data_dir / "train.en").is_file() and not (args.data_dir / "train.en.gz").is_file():
        print(f"error: no Multi30k under {args.data_dir}: pass --data-dir", file=sys.stderr)
        return 2
    exp = experiment(args)
    t0 = time.time()
    done = run_pipeline(exp, args.out)
    models = done["evaluate"]["models"]
    rows = compare(models)
    stages = json.loads((args.out / "pipeline.json").read_text())["stages"]
    result = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "wall_minutes_this_call": round((time.time() - t0) / 60, 1),
              "stage_seconds": {k: round(v["seconds"]) for k, v in stages.items()},
              "supernet": done["supernet"], "searches": done["search"], "comparison": rows,
              "models": models, "claim_holds": f"{sum(r['claim_holds'] for r in rows)}/{len(rows)}",
              "latency_check": latency_check(models)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str))
    print(markdown(models, rows))
    print(f"\nclaim holds for {result['claim_holds']} limits; JSON in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
