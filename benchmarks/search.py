"""Search benchmark on a trained `demo` SuperTransformer (2 CPU cores): scorer throughput and
Tune overhead, memory of scorers sharing the weights, and search quality.

1. Throughput: the same candidates scored by a ScorerPool of 1 and of 2 scorer actors (1 torch
   thread each), in alternating rounds (each round's candidates queued at once on one pool,
   then on the other; speedup = median of the per-round ratios, robust to the machine's speed
   drifting), then whole searches (`run_search`, random algorithm, Ray Tune) with 1 and 2 scorers. Tune/driver share of the search wall time =
   1 - (sum of scorer busy time) / (wall x scorers); reported over Tune's whole `fit()` and over
   the scoring window (first dispatch to last result: without Tune's fixed start and cleanup).
2. Memory: private memory (USS, psutil) of the scorers with 1 and 2 in the pool; the weights are
   mapped zero-copy from the object store. Control: the same scorer holding a PRIVATE copy of
   the weights (what one copy per actor costs), which tells the process baseline apart from the
   weights.
3. Quality: evolution (HAT's algorithm, scaled down) vs random search at equal budget (random
   gets exactly evolution's number of evaluations) under one latency limit on `local_cpu`, one
   search per seed; best validation loss on the search subset, and the winners re-scored on the
   full validation split. HAT-style scoring at equal generations (every member re-scored each
   generation, no cache, batches in corpus order instead of by length): evaluations saved by the
   cache, and the measured per-evaluation cost of length-sorted vs corpus-order batches.

The latency limit needs a `local_cpu` predictor: `--predictor PATH`, `--predictor collect`
(default: measure `--collect` Archs with the local_cpu probe, cached, and fit one) or
`--predictor analytic` (FLOPs / 1 GFLOP/s: no measurement, for smoke runs). The limit is the
`--limit-quantile` of predicted latency over random Archs unless `--limit-ms` is given.

    nice python benchmarks/search.py     # 10 min on 2 quiet cores, 19 min at load ~25
    python benchmarks/search.py --supernet CKPT --seeds 0 --sections throughput,memory

Without `--supernet` a demo SuperTransformer is trained once into `--cache`
(`hat-ray train supernet --space demo --data synthetic --max-updates N ...`) and reused.
Writes benchmarks/results/search_<tag>.json and prints a table. The machine is shared: ratios
matter, absolute times move with the other load (recorded: load average).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MiB = 2**20
log = logging.getLogger("bench.search")


# ---------------------------------------------------------------- inputs
def ensure_supernet(args: argparse.Namespace) -> Path:
    """``--supernet`` or the cached demo SuperTransformer (trained here when missing)."""
    if args.supernet:
        path = Path(args.supernet)
        if not path.is_file():
            raise SystemExit(f"--supernet {path} does not exist")
        return path
    out = args.cache / f"supernet_demo_u{args.train_updates}"
    ckpt = out / "checkpoint_last.pt"
    if ckpt.is_file() and _trained_updates(out) >= args.train_updates:
        return ckpt
    cmd = [sys.executable, "-m", "hat_ray.cli.main", "train", "supernet", "--space", "demo", "--data", "synthetic",
           "--out", str(out), "--max-updates", str(args.train_updates), "--schedule", "cosine", "--lr", "1e-3",
           "--warmup-updates", str(max(1, args.train_updates // 8)), "--save-every", "50", "--threads",
           str(os.cpu_count() or 1), "--no-progress", "--no-tensorboard", "--json"]
    if ckpt.is_file():
        cmd.append("--resume")
    print(f"training the demo SuperTransformer ({args.train_updates} updates, cached in {out}) ...", flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return ckpt


def _trained_updates(folder: Path) -> int:
    logfile = folder / "train_log.jsonl"
    if not logfile.is_file():
        return 0
    lines = [ln for ln in logfile.read_text().splitlines() if ln.strip()]
    try:
        return int(json.loads(lines[-1]).get("update", 0)) if lines else 0
    except json.JSONDecodeError:
        return 0


def corpus_order_batches(ckpt: dict[str, Any], source: str, sentences: int | None, max_tokens: int,
                         max_positions: int) -> list[Any]:
    """HAT-style batches: the same pairs, packed greedily in corpus order (no sort by length)."""
    from hat_ray.data.batching import collate, encode_corpus
    from hat_ray.data.datasets import load_split
    from hat_ray.data.tokenizer import tokenizer_from_checkpoint

    corpus = load_split("synthetic", "valid")
    if sentences is not None:
        corpus = corpus.subset(range(min(sentences, len(corpus))))
    encoded = encode_corpus(corpus, tokenizer_from_checkpoint(ckpt, source), max_positions)
    sizes = np.maximum(encoded.src_lens, encoded.tgt_lens)
    batches, start, longest = [], 0, 0
    for i, size in enumerate(sizes.tolist()):
        if (i - start + 1) * max(longest, size) > max_tokens:
            batches.append(np.arange(start, i))
            start, longest = i, 0
        longest = max(longest, size)
    batches.append(np.arange(start, len(sizes)))
    return [collate(encoded, idx) for idx in batches]


class AnalyticPredictor:
    """Fallback latency model without measurements: FLOPs at 1 GFLOP/s (ms)."""

    device = "local_cpu"
    space_name = None

    def __init__(self, space: Any) -> None:
        self.q, self.t = space.super.qkv_dim, space.super.seq_len

    def predict(self, archs: list[Any]) -> np.ndarray:
        from hat_ray.model.accounting import count_flops

        return np.array([count_flops(a, self.q, self.t) / 1e6 for a in archs])


def make_predictor(args: argparse.Namespace, space: Any, profile: Any) -> tuple[Any, dict[str, Any]]:
    """The local_cpu latency model of the constraint (see the module docstring)."""
    analytic = AnalyticPredictor(space), {"kind": "analytic (FLOPs / 1 GFLOP/s)"}
    if args.predictor == "analytic":
        return analytic
    from hat_ray.latency import LatencyDataset, LatencyPredictor, latency_metrics

    if args.predictor not in ("collect", "auto"):
        pred = LatencyPredictor.load(args.predictor)
        return pred, {"kind": "file", "path": args.predictor, "n_train": pred.meta.get("n_train")}
    path = args.cache / f"local_cpu_{space.name}.parquet"
    t0 = time.time()
    if args.predictor == "collect":
        from hat_ray.latency.probe import collect

        rng = np.random.default_rng(1234)
        collect([space.sample(rng) for _ in range(args.collect)], [profile], space, path)
    elif not path.is_file():
        return analytic[0], {**analytic[1], "why": f"no cached dataset {path} (--predictor collect makes one)"}
    data = LatencyDataset.load(path)
    n_train = max(2, int(0.8 * len(data)))
    pred = LatencyPredictor.fit(data.rows(f"0:{n_train}"), space=space, device=profile.name, mode="features")
    held = data.rows(f"{n_train}:{len(data)}")
    metrics = latency_metrics(pred.predict_dataset(held), held.latency()) if len(held) >= 2 else {}
    full = LatencyPredictor.fit(data, space=space, device=profile.name, mode="features")
    info = {"kind": "collected local_cpu dataset", "path": str(path), "rows": len(data),
            "collect_seconds": round(time.time() - t0, 1),
            "held_out": {k: round(float(v), 3) for k, v in metrics.items()},
            "others_cpu_share_median": round(float(data.frame["others_cpu_share"].median()), 3),
            "latency_ms_range": [round(float(data.latency().min()), 1), round(float(data.latency().max()), 1)]}
    if args.predictor == "auto" and not metrics.get("kendall_tau", 0) >= 0.5:
        # measured while other work loaded the machine: latencies that do not rank Archs define
        # no meaningful limit
        return analytic[0], {**analytic[1], "why": "the cached dataset's held-out Kendall tau is below 0.5",
                             "rejected_dataset": info}
    return full, info


# ---------------------------------------------------------------- 1. throughput + 2. memory
def pool_throughput(weights: dict[str, Any], batches: list[Any], archs: list[Any], warm: list[Any],
                    rounds: int) -> dict[str, Any]:
    """Pools of 1 and 2 scorers, both alive (Ray has >= 3 logical CPUs; only one pool works at a
    time). ``archs`` are split into ``rounds`` chunks; each chunk is queued at once on one pool,
    then on the other (alternating which goes first), so slow drifts of the machine's speed hit
    both alike. Speedup = median over rounds of the wall-time ratio."""
    import ray

    from hat_ray.search.pool import start_pool

    pools = {k: start_pool(weights, batches, k, f"bench-pool{k}-{os.getpid()}") for k in (1, 2)}
    try:
        for k, pool in pools.items():  # one warm-up candidate per scorer (maps the weights)
            ray.get([pool.score.remote(a.to_dict()) for a in warm[:k]])
        before = {k: ray.get(pool.stats.remote()) for k, pool in pools.items()}
        walls: dict[int, list[float]] = {1: [], 2: []}
        seconds: dict[int, list[float]] = {1: [], 2: []}
        loads = []
        for r, chunk in enumerate(np.array_split(np.arange(len(archs)), rounds)):
            for k in ((1, 2) if r % 2 == 0 else (2, 1)):
                t0 = time.perf_counter()
                out = ray.get([pools[k].score.remote(archs[i].to_dict()) for i in chunk])
                walls[k].append(time.perf_counter() - t0)
                seconds[k] += [o["seconds"] for o in out]
            loads.append(os.getloadavg()[0])
        after = {k: ray.get(pool.stats.remote()) for k, pool in pools.items()}
    finally:
        for pool in pools.values():
            ray.kill(pool)
    out: dict[str, Any] = {}
    for k in (1, 2):
        busy, wall = after[k]["busy_seconds"] - before[k]["busy_seconds"], sum(walls[k])
        out[str(k)] = {"scorers": k, "candidates": len(archs), "wall_s": round(wall, 2),
                       "candidates_per_s": round(len(archs) / wall, 3), "utilisation": round(busy / (wall * k), 3),
                       "mean_score_s": round(float(np.mean(seconds[k])), 3),
                       "memory": [{**_mem(i), "pss_mib": round(float(i.get("pss") or 0) / MiB, 1),
                                   "rss_mib": round(float(i["rss"]) / MiB, 1)} for i in after[k]["scorers"]]}
    ratios = [a / b for a, b in zip(walls[1], walls[2])]
    out["round_speedups"] = [round(x, 3) for x in ratios]
    out["speedup_2_vs_1"] = round(float(np.median(ratios)), 3)
    out["speedup_2_vs_1_total"] = round(sum(walls[1]) / sum(walls[2]), 3)
    out["load_1m"] = [round(x, 1) for x in loads]
    return out


def copying_scorers_memory(weights: dict[str, Any], batches: list[Any], archs: list[Any], n: int) -> list[dict[str, float]]:
    """Control: ``n`` scorers that each hold a PRIVATE copy of the weights (what one copy per
    actor costs); per scorer USS and where its weights live (MiB)."""
    import ray

    @ray.remote(num_cpus=1)
    class CopyingScorer:
        def __init__(self, packed: dict[str, Any], packed_batches: list[Any]) -> None:
            import torch

            from hat_ray.search.scorer import Scorer, unpack_batches, unpack_weights

            torch.set_num_threads(1)
            private = {**packed, "arrays": {k: np.array(v, copy=True) for k, v in packed["arrays"].items()}}
            self.scorer = Scorer(unpack_weights(private), unpack_batches(packed_batches))

        def score(self, arch: dict[str, Any]) -> float:
            from hat_ray.arch import Arch

            return self.scorer.score(Arch.from_dict(arch)).loss

        def info(self) -> dict[str, Any]:
            import psutil

            from hat_ray.search.pool import weight_placement

            return {"uss": psutil.Process().memory_full_info().uss, **weight_placement(self.scorer.model)}

    weights_ref, batches_ref = ray.put(weights), ray.put(batches)
    actors = [CopyingScorer.remote(weights_ref, batches_ref) for _ in range(n)]
    try:
        ray.get([a.score.remote(arch.to_dict()) for a in actors for arch in archs[:2]])
        return [_mem(i) for i in ray.get([a.info.remote() for a in actors])]
    finally:
        for a in actors:
            ray.kill(a)


def _mem(info: dict[str, Any]) -> dict[str, float]:
    out = {"uss_mib": round(float(info["uss"]) / MiB, 1)}
    for key in ("weights_private_bytes", "weights_shared_bytes"):
        if info.get(key) is not None:
            out[key.replace("_bytes", "_mib")] = round(float(info[key]) / MiB, 2)
    return out


def memory_summary(weights_mib: float, shared: list[dict[str, float]], copying: list[dict[str, float]]) -> dict[str, Any]:
    """What one more scorer costs on a node: its private memory (USS: the process plus any
    private weights); the weights themselves are in the object store once per node."""
    uss = float(np.mean([m["uss_mib"] for m in shared]))
    weights_private = float(np.mean([m.get("weights_private_mib", math.nan) for m in shared]))
    copy_private = float(np.mean([m.get("weights_private_mib", math.nan) for m in copying]))
    return {"weights_mib": round(weights_mib, 1), "shared_scorers": shared, "copying_scorers": copying,
            "node_scorers_1_mib": round(weights_mib + uss, 1), "node_scorers_2_mib": round(weights_mib + 2 * uss, 1),
            "second_scorer_adds_mib": round(uss, 1), "second_scorer_adds_x_weights": round(uss / weights_mib, 2),
            "second_scorer_weight_memory_mib": round(weights_private, 2),
            "second_scorer_weight_memory_x_weights": round(weights_private / weights_mib, 3),
            "copying_scorer_weight_memory_mib": round(copy_private, 2),
            "uss_mean_shared_vs_copying_mib": [round(uss, 1),
                                               round(float(np.mean([m["uss_mib"] for m in copying])), 1)]}


def search_throughput(space: Any, weights: dict[str, Any], batches: list[Any], constraints: Any, out: Path,
                      scorers: int, budget: int, seed: int) -> dict[str, Any]:
    """A whole random search through Ray Tune with ``scorers`` scorers."""
    from hat_ray.search.run import SearchOptions, run_search

    shutil.rmtree(out, ignore_errors=True)
    r = run_search(space, weights, batches, constraints, out,
                   SearchOptions(algorithm="random", budget=budget, scorers=scorers, seed=seed))
    return {"scorers": scorers, **_tune_shares(r)}


def _tune_shares(r: dict[str, Any]) -> dict[str, Any]:
    k, busy = r["scorers"], r["scorer_busy_seconds"]
    fit, window = r["tune_seconds"], r["scoring_window_seconds"]
    return {"evaluations": r["evaluations"], "tune_fit_s": round(fit, 2), "scoring_window_s": round(window, 2),
            "busy_s": round(busy, 2), "candidates_per_s": round(r["evaluations"] / fit, 3),
            "tune_share_of_fit": round(1 - busy / (fit * k), 3),
            "tune_share_of_window": round(1 - busy / (window * k), 3) if window > 0 else None}


# ---------------------------------------------------------------- 3. quality
def quality(space: Any, model: Any, weights: dict[str, Any], batches: list[Any], constraints: Any,
            full_batches: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    from hat_ray.arch import Arch
    from hat_ray.search.run import SearchOptions, run_search
    from hat_ray.search.scorer import Scorer

    evo = {"population": args.population, "parents": args.parents, "mutations": args.mutations,
           "crossovers": args.crossovers, "iterations": args.generations}
    rescorer = Scorer(model, full_batches)
    runs: list[dict[str, Any]] = []
    for seed in args.seeds:
        budget = None
        for algorithm in ("hat", "random"):
            out = args.cache / "runs" / f"{algorithm}_s{seed}"
            shutil.rmtree(out, ignore_errors=True)
            opts = SearchOptions(algorithm=algorithm, scorers=2, seed=seed, budget=budget,
                                 engine_kwargs=evo if algorithm == "hat" else {})
            t0 = time.time()
            r = run_search(space, weights, batches, constraints, out, opts)
            best = Arch.from_dict(r["best"]["arch"])
            row = {"algorithm": algorithm, "seed": seed, "best_loss": r["best"]["valid_loss"],
                   "best_full_valid_loss": rescorer.score(best).loss,
                   "best_predicted_ms": round(r["best"]["predicted_ms"][constraints.items[0].device], 2),
                   "seconds": round(time.time() - t0, 1), **_tune_shares(r)}
            runs.append(row)
            print(f"  {algorithm:6s} seed {seed}: best {row['best_loss']:.4f} bits (full valid "
                  f"{row['best_full_valid_loss']:.4f}) after {r['evaluations']} evaluations, {row['seconds']} s",
                  flush=True)
            budget = r["evaluations"]  # random search gets exactly evolution's budget
    by = {a: [r for r in runs if r["algorithm"] == a] for a in ("hat", "random")}
    mean = {a: {"best_loss": round(float(np.mean([r["best_loss"] for r in rs])), 4),
                "best_full_valid_loss": round(float(np.mean([r["best_full_valid_loss"] for r in rs])), 4),
                "evaluations": round(float(np.mean([r["evaluations"] for r in rs])), 1)} for a, rs in by.items()}
    wins = sum(h["best_loss"] < r["best_loss"] for h, r in zip(by["hat"], by["random"]))
    # HAT-style scoring at equal generations: every population member scored every generation
    hat_evals = args.population * args.generations
    ours = mean["hat"]["evaluations"]
    return {"evolution": evo, "seeds": args.seeds, "runs": runs, "mean": mean,
            "evolution_beats_random_seeds": f"{wins}/{len(args.seeds)}",
            "hat_style_evaluations": hat_evals, "cached_evaluations": ours,
            "evaluations_saved_pct": round(100 * (1 - ours / hat_evals), 1)}


def batching_cost(model: Any, sorted_batches: list[Any], corpus_batches: list[Any], archs: list[Any],
                  rounds: int = 3) -> dict[str, Any]:
    """Per-evaluation seconds (median over Archs of the min over rounds) with length-sorted vs
    corpus-order batches on the same pairs; alternating, in this process (1 thread)."""
    from hat_ray.search.scorer import Scorer

    s_sorted, s_corpus = Scorer(model, sorted_batches), Scorer(model, corpus_batches)
    t_sorted, t_corpus, diffs = [], [], []
    for arch in archs:
        a = [s_sorted.score(arch) for _ in range(rounds)]
        b = [s_corpus.score(arch) for _ in range(rounds)]
        t_sorted.append(min(x.seconds for x in a))
        t_corpus.append(min(x.seconds for x in b))
        diffs.append(abs(a[0].loss - b[0].loss))

    def pad(batches: list[Any]) -> float:
        real = sum(int(b.target.ne(1).sum()) + int(b.src.ne(1).sum()) for b in batches)
        return 1 - real / sum(b.target.numel() + b.src.numel() for b in batches)

    return {"batches_sorted": len(sorted_batches), "batches_corpus_order": len(corpus_batches),
            "padding_sorted": round(pad(sorted_batches), 3), "padding_corpus_order": round(pad(corpus_batches), 3),
            "score_s_sorted": round(float(np.median(t_sorted)), 3),
            "score_s_corpus_order": round(float(np.median(t_corpus)), 3),
            "corpus_order_slowdown": round(float(np.median(t_corpus) / np.median(t_sorted)), 3),
            "max_loss_diff": float(max(diffs))}


# ---------------------------------------------------------------- main
def run_sections(args: argparse.Namespace, sections: set[str], result: dict[str, Any], space: Any, model: Any,
                 ckpt: dict[str, Any], supernet: Path, batches: list[Any], weights: dict[str, Any], packed: list[Any],
                 weights_mib: float, profile: Any, archs: list[Any]) -> None:
    """The measurements (Ray is up); fills ``result``."""
    from hat_ray.search.constraints import Constraint, Constraints
    from hat_ray.search.inputs import validation_batches

    mp = space.super.max_positions
    t0 = time.time()
    predictor, result["predictor"] = make_predictor(args, space, profile)
    sample_rng = np.random.default_rng(99)
    pred = np.asarray(predictor.predict([space.sample(sample_rng) for _ in range(2000)]), float)
    limit = args.limit_ms or float(np.quantile(pred, args.limit_quantile))
    constraints = Constraints([Constraint(profile.name, limit, predictor)])
    result["limit_ms"] = round(limit, 2)
    result["feasible_share"] = round(float(np.mean(pred <= limit)), 3)
    result["predictor"]["seconds"] = round(time.time() - t0, 1)

    if "throughput" in sections or "memory" in sections:
        t0 = time.time()
        pools = pool_throughput(weights, packed, archs[8:], archs[:8], args.rounds)
        result["pool_throughput"] = pools
        result["pool_seconds"] = round(time.time() - t0, 1)
        if "memory" in sections:
            copying = copying_scorers_memory(weights, packed, archs, 2)
            result["memory"] = memory_summary(weights_mib, pools["1"]["memory"] + pools["2"]["memory"], copying)
    if "throughput" in sections:
        t0 = time.time()
        searches = {k: search_throughput(space, weights, packed, constraints, args.cache / "runs" / f"tp{k}", k,
                                         args.search_candidates, seed=11) for k in (1, 2)}
        result["search_throughput"] = {**{str(k): v for k, v in searches.items()},
                                       "speedup_2_vs_1": round(searches[2]["candidates_per_s"]
                                                               / searches[1]["candidates_per_s"], 3)}
        result["search_throughput_seconds"] = round(time.time() - t0, 1)
    if "quality" in sections:
        t0 = time.time()
        full = validation_batches(ckpt, "synthetic", None, mp, args.max_tokens, None, source=str(supernet))
        corpus = corpus_order_batches(ckpt, str(supernet), None, args.max_tokens, mp)
        result["batching"] = batching_cost(model, full, corpus, archs[:3], rounds=2)
        result["quality"] = q = quality(space, model, weights, packed, constraints, full, args)
        b = result["batching"]
        # HAT-style scoring at equal generations: more evaluations, each on corpus-order batches
        q["hat_style_work_ratio"] = round(q["hat_style_evaluations"] * b["score_s_corpus_order"]
                                          / (q["cached_evaluations"] * b["score_s_sorted"]), 2)
        if "pool_throughput" in result:  # ... and one process instead of 2 scorers
            q["hat_style_slowdown_vs_2_scorers"] = round(q["hat_style_work_ratio"]
                                                         * result["pool_throughput"]["speedup_2_vs_1"], 2)
        result["quality_seconds"] = round(time.time() - t0, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--supernet", help="SuperTransformer checkpoint (default: train/reuse a demo one in --cache)")
    p.add_argument("--train-updates", type=int, default=150, help="updates when training the default supernet")
    p.add_argument("--cache", type=Path, default=ROOT / "runs" / "bench_search")
    p.add_argument("--sections", default="throughput,memory,quality")
    p.add_argument("--valid-sentences", type=int, default=60, help="validation pairs scored per candidate")
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--pool-candidates", type=int, default=24, help="candidates per pool (split in --rounds)")
    p.add_argument("--rounds", type=int, default=3, help="alternating 1-scorer / 2-scorer rounds")
    p.add_argument("--search-candidates", type=int, default=20, help="evaluations per Tune throughput search")
    p.add_argument("--predictor", default="auto",
                   help="PATH | collect | analytic | auto (default: a sane cached local_cpu dataset, else analytic)")
    p.add_argument("--collect", type=int, default=40, help="Archs measured for --predictor collect")
    p.add_argument("--limit-ms", type=float, help="latency limit (default: --limit-quantile of predictions)")
    p.add_argument("--limit-quantile", type=float, default=0.35)
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    p.add_argument("--population", type=int, default=12, help="evolution (HAT: 125)")
    p.add_argument("--parents", type=int, default=3, help="(HAT: 25)")
    p.add_argument("--mutations", type=int, default=5, help="(HAT: 50)")
    p.add_argument("--crossovers", type=int, default=4, help="(HAT: 50)")
    p.add_argument("--generations", type=int, default=5, help="(HAT: 30)")
    p.add_argument("--tag", default="demo")
    args = p.parse_args()
    sections = set(args.sections.split(","))
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HAT_RAY_DASHBOARD", "0")
    args.cache.mkdir(parents=True, exist_ok=True)

    import ray
    import torch

    from hat_ray.cli.common import stdout_to_stderr
    from hat_ray.latency.profile import DeviceProfile
    from hat_ray.search.inputs import load_supernet, validation_batches
    from hat_ray.search.scorer import pack_batches, pack_weights

    torch.set_num_threads(1)
    started, load0 = time.time(), os.getloadavg()
    supernet = ensure_supernet(args)
    model, space, ckpt = load_supernet(supernet)
    mp = space.super.max_positions
    batches = validation_batches(ckpt, "synthetic", None, mp, args.max_tokens, args.valid_sentences, source=str(supernet))
    weights, packed = pack_weights(model), pack_batches(batches)
    weights_mib = sum(a.nbytes for a in weights["arrays"].values()) / MiB
    profile = DeviceProfile.load("local_cpu")
    rng = np.random.default_rng(7)
    archs = [space.sample(rng) for _ in range(args.pool_candidates + 8)]
    result: dict[str, Any] = {"supernet": str(supernet), "space": space.name, "valid_sentences": args.valid_sentences,
                              "valid_batches": len(batches), "weights_mib": round(weights_mib, 1),
                              "cpus": os.cpu_count(), "load_avg_start": [round(x, 2) for x in load0]}
    # A fresh local instance declaring the local_cpu device (address="local": never join another
    # Ray instance that happens to run on this shared machine).
    for attempt in range(3):  # Ray gives a raylet 30 s to register: not always enough on a loaded machine
        try:
            # >= 3 logical CPUs: the 1- and 2-scorer pools live side by side (they take turns)
            ray.init(address="local", num_cpus=max(3, os.cpu_count() or 1), resources={profile.ray.resource: 1.0},
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
            break
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception on a start-up timeout
            ray.shutdown()
            if attempt == 2 or "timed out during startup" not in str(exc):
                raise
            print("Ray start-up timed out (machine busy): retrying", file=sys.stderr)
    with stdout_to_stderr():  # Tune's progress boxes; stdout keeps the table
        try:
            run_sections(args, sections, result, space, model, ckpt, supernet, batches, weights, packed, weights_mib,
                         profile, archs)
        finally:
            ray.shutdown()
    result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["total_seconds"] = round(time.time() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"search_{args.tag}.json"
    path.write_text(json.dumps(result, indent=2))
    print_table(result)
    print(f"-> {path}")


def print_table(r: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str]] = []
    if "pool_throughput" in r:
        t = r["pool_throughput"]
        rows.append(("pool: candidates/s, 1 -> 2 scorers", f"{t['1']['candidates_per_s']} -> {t['2']['candidates_per_s']}",
                     f"{t['speedup_2_vs_1']}x median of rounds {t['round_speedups']} (target >= 1.7x)"))
    if "search_throughput" in r:
        t = r["search_throughput"]
        rows.append(("search (Tune): candidates/s, 1 / 2 scorers", f"{t['1']['candidates_per_s']} / {t['2']['candidates_per_s']}",
                     "single runs: load-sensitive"))
        for k in ("1", "2"):
            rows.append((f"Tune/driver share, {k} scorer(s): fit / window",
                         f"{100 * t[k]['tune_share_of_fit']:.1f}% / {100 * (t[k]['tune_share_of_window'] or math.nan):.1f}%",
                         "target < 10%"))
    if "memory" in r:
        m = r["memory"]
        rows.append(("weights (MiB)", f"{m['weights_mib']}", ""))
        rows.append(("2nd scorer adds (USS MiB: process + private weights)", f"{m['second_scorer_adds_mib']}",
                     f"{m['second_scorer_adds_x_weights']}x weights"))
        rows.append(("  of which weights (MiB), shared / copying control",
                     f"{m['second_scorer_weight_memory_mib']} / {m['copying_scorer_weight_memory_mib']}",
                     f"{m['second_scorer_weight_memory_x_weights']}x weights (target < 1.2x)"))
    if "quality" in r:
        q = r["quality"]
        for a in ("hat", "random"):
            rows.append((f"{a}: mean best loss (full valid), {len(q['seeds'])} seeds",
                         f"{q['mean'][a]['best_loss']} ({q['mean'][a]['best_full_valid_loss']})",
                         f"{q['mean'][a]['evaluations']} evals"))
        rows.append(("evolution beats random (seeds)", q["evolution_beats_random_seeds"], ""))
        rows.append(("HAT-style evaluations vs cached", f"{q['hat_style_evaluations']} vs {q['cached_evaluations']}",
                     f"{q['evaluations_saved_pct']}% saved"))
        b = r["batching"]
        rows.append(("score s: sorted vs corpus-order batches", f"{b['score_s_sorted']} vs {b['score_s_corpus_order']}",
                     f"{b['corpus_order_slowdown']}x"))
        rows.append(("HAT-style scoring work / ours (x 2-scorer speedup)", f"{q['hat_style_work_ratio']}x",
                     f"{q.get('hat_style_slowdown_vs_2_scorers', '-')}x"))
    width = max(len(a) for a, _, _ in rows) if rows else 10
    for a, b, c in rows:
        print(f"{a:<{width}}  {b:<22}  {c}")


if __name__ == "__main__":
    main()
