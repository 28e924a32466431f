"""Multi-fidelity scoring, second question (issue 21): the same search with and without
successive halving, on a trained SuperTransformer: validation tokens scored, and the final best
Arch's loss on the whole validation set.

One pipeline search target of a finished ``benchmarks/hat_multi30k.py`` run (``--run``,
``--target``: its supernet, latency predictor and limit) is searched with HAT's generational
algorithm at the pipeline's size (population 40, 10 parents, 15 mutations, 15 crossovers, 6
generations: 190 Archs) on the WHOLE validation split, once as HAT scores (every Arch on every pair)
and once with ``--fidelity F --promote Q`` (a generation's new Archs on a fixed random share F
of the pairs, the best share Q of them on all pairs), for each of ``--seeds`` (the same seed: the
same first population). Both report the best Arch by its full-validation loss (a multi-fidelity
search ranks only full-fidelity scores), so the losses compare directly.

Reported: per seed and mode, tokens scored, evaluations, full-fidelity evaluations, wall
seconds of the search, the best's loss; over the seeds, the token ratio (HAT / multi-fidelity)
and the best's loss mean and spread per mode. Target: >= 3x fewer tokens at an equal (within the
seeds' spread) final loss. Validation data only (this is a search: nothing here touches a test
split).

    nice python benchmarks/fidelity_search.py --run runs/bench_hat_multi30k_3seeds/seed1
        # Multi30k validation (1,014 pairs), 3 seeds x 2 modes: ~40 min on 2 busy cores

Writes benchmarks/results/fidelity_search.json (``--json``) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ENGINE = dict(population=40, parents=10, mutations=15, crossovers=15, iterations=6)


def search_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """Supernet weights, the whole validation split's batches, and the target's constraint."""
    from hat_ray.latency.predictor import LatencyPredictor
    from hat_ray.search.constraints import Constraint, Constraints
    from hat_ray.search.inputs import load_supernet, validation_batches
    from hat_ray.search.scorer import pack_batches, pack_weights

    target = json.loads((args.run / "search" / args.target / "result.json").read_text())
    device, limit_ms = target["devices"][0]
    supernet = args.run / "supernet" / "checkpoint_last.pt"
    model, space, ckpt = load_supernet(supernet)
    batches = validation_batches(ckpt, args.data, str(args.data_dir), space.super.max_positions, args.max_tokens)
    predictor = LatencyPredictor.load(args.run / "latency" / f"{device}.npz")
    return {"space": space, "weights": pack_weights(model), "batches": pack_batches(batches),
            "constraints": Constraints([Constraint(device, limit_ms, predictor)]),
            "info": {"supernet": str(supernet), "target": args.target, "device": device, "limit_ms": limit_ms,
                     "valid_pairs": sum(len(b.indices) for b in batches),
                     "valid_tokens": sum(b.ntokens for b in batches)}}


def one_search(inputs: dict[str, Any], seed: int, fidelity: float, promote: float, out: Path) -> dict[str, Any]:
    from hat_ray.search.run import SearchOptions, run_search

    if out.exists():
        shutil.rmtree(out)
    options = SearchOptions(algorithm="hat", scorers=2, seed=seed,
                            engine_kwargs={**ENGINE, "fidelity": fidelity, "promote": promote})
    t0 = time.time()
    result = run_search(inputs["space"], inputs["weights"], inputs["batches"], inputs["constraints"], out, options)
    mf = result.get("multi_fidelity", {})
    return {"seed": seed, "fidelity": fidelity, "promote": promote if fidelity < 1 else None,
            "evaluations": result["evaluations"],
            "full_fidelity_evaluations": mf.get("full_fidelity_evaluations", result["evaluations"]),
            "scored": result["scored"], "tokens_scored": result["tokens_scored"],
            "search_seconds": round(time.time() - t0, 1), "tune_seconds": result["tune_seconds"],
            "best_valid_loss": result["best"]["valid_loss"], "best_key": result["best"]["key"],
            "best_predicted_ms": result["best"]["predicted_ms"]}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    plain = {r["seed"]: r for r in runs if r["fidelity"] == 1.0}
    multi = {r["seed"]: r for r in runs if r["fidelity"] < 1.0}
    seeds = sorted(set(plain) & set(multi))
    if not seeds:
        return {"seeds": []}

    def spread(values: list[float]) -> dict[str, float | None]:
        return {"mean": round(statistics.fmean(values), 4),
                "sd": round(statistics.stdev(values), 4) if len(values) > 1 else None}

    ratios = [plain[s]["tokens_scored"] / multi[s]["tokens_scored"] for s in seeds]
    diffs = [multi[s]["best_valid_loss"] - plain[s]["best_valid_loss"] for s in seeds]
    return {"seeds": seeds, "token_ratio": spread(ratios), "wall_ratio": spread(
                [plain[s]["search_seconds"] / multi[s]["search_seconds"] for s in seeds]),
            "best_loss_hat": spread([plain[s]["best_valid_loss"] for s in seeds]),
            "best_loss_multi_fidelity": spread([multi[s]["best_valid_loss"] for s in seeds]),
            "best_loss_difference": spread(diffs), "same_best_arch": sum(
                plain[s]["best_key"] == multi[s]["best_key"] for s in seeds)}


def markdown(result: dict[str, Any]) -> str:
    lines = ["| seed | scoring | evaluations (full set) | tokens scored | search s | best full-valid loss (bits) |",
             "|---|---|---|---|---|---|"]
    for r in sorted(result["runs"], key=lambda r: (r["seed"], -r["fidelity"])):
        mode = "HAT (all pairs)" if r["fidelity"] == 1.0 else f"halving {r['fidelity']:g} / {r['promote']:g}"
        lines.append(f"| {r['seed']} | {mode} | {r['evaluations']} ({r['full_fidelity_evaluations']}) | "
                     f"{r['tokens_scored']:,} | {r['search_seconds']:.0f} | {r['best_valid_loss']:.4f} |")
    s = result.get("summary")
    if s and s["seeds"]:
        lines.append("")
        lines.append(f"Over seeds {s['seeds']}: tokens HAT / halving {s['token_ratio']['mean']:.2f}x "
                     f"(sd {s['token_ratio']['sd']}), search time {s['wall_ratio']['mean']:.2f}x; best loss HAT "
                     f"{s['best_loss_hat']['mean']:.4f} (sd {s['best_loss_hat']['sd']}), halving "
                     f"{s['best_loss_multi_fidelity']['mean']:.4f} (sd {s['best_loss_multi_fidelity']['sd']}), "
                     f"difference {s['best_loss_difference']['mean']:+.4f} (sd {s['best_loss_difference']['sd']}); "
                     f"same best Arch in {s['same_best_arch']}/{len(s['seeds'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="a finished benchmarks/hat_multi30k.py seed folder")
    p.add_argument("--target", default="local_cpu-p50", help="its search target (DEVICE-LIMIT folder)")
    p.add_argument("--data", default="multi30k")
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "multi30k")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--fidelity", type=float, default=1 / 16)
    p.add_argument("--promote", type=float, default=0.25)
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_fidelity_search")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "fidelity_search.json")
    args = p.parse_args(argv)
    if not (args.run / "search" / args.target / "result.json").is_file():
        print(f"error: {args.run}/search/{args.target} is not a finished search: pass --run (a seed folder of "
              "benchmarks/hat_multi30k.py) and --target", file=sys.stderr)
        return 2
    import ray

    inputs = search_inputs(args)
    done: list[dict[str, Any]] = []
    if args.json.is_file():  # resumable: runs of the same settings already measured are kept
        previous = json.loads(args.json.read_text())
        if previous.get("info") == inputs["info"] and previous.get("engine") == ENGINE:
            done = previous["runs"]
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        for seed in args.seeds:
            for fidelity in (1.0, args.fidelity):
                if any(r["seed"] == seed and math.isclose(r["fidelity"], fidelity) for r in done):
                    continue
                print(f"seed {seed}, fidelity {fidelity:g}", file=sys.stderr, flush=True)
                done.append(one_search(inputs, seed, fidelity, args.promote, args.out / f"s{seed}-f{fidelity:g}"))
                result = {"info": inputs["info"], "engine": ENGINE, "runs": done, "summary": summary(done)}
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(result, indent=2) + "\n")
                print(markdown(result), file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
    print(markdown({"runs": done, "summary": summary(done)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
