"""Search at HAT's scale (issue 21): end to end through Ray Tune, trial actors, driver memory,
and the memory a second scorer adds on a WMT14-sized SuperTransformer.

1. ``throughput``: HAT's generational search at its own size (population 125, 25 parents, 50
   mutations, 50 crossovers, 30 generations) through ``run_search`` (Ray Tune, the ScorerPool),
   once with 1 scorer and once with 2, on the ``demo`` space with randomly initialised weights
   (the scoring cost is real, the losses mean nothing: throughput does not depend on them) and
   ``--valid-sentences`` random validation pairs per candidate. Reported per run: evaluations per
   second of Tune's whole ``fit()``, the Tune/driver share of it (1 - scorer busy time /
   (fit x scorers)), trial actors started, and the driver's RSS every ``--every`` evaluations
   (growth per 1,000 evaluations after the first generation).
2. ``algorithms``: trial actors started by a search of every other algorithm (random, steady,
   pareto; ``--others-budget`` evaluations each, 2 scorers).
3. ``memory``: HAT's WMT14 En-De space (``wmt14_en_de``) with a 32,768-word joined vocabulary,
   random init: each scorer's private memory (USS) after scoring the same candidates in pools
   of 1 scorer, 2 scorers (a second process) and 1 scorer with 2 slots (``--scorer-slots 2``: a
   second thread in the same process), and the weights' placement (object store vs private).

Targets: 2 vs 1 scorer >= 1.8x; Tune/driver share < 5%; trial actors <= scorers + 2 for every
algorithm; driver growth < 50 MB per 1,000 evaluations; a 2nd WMT scorer adds < 0.2x the weights.

    nice python benchmarks/search_scale.py                  # ~25 min on 2 quiet cores
    python benchmarks/search_scale.py --generations 3 --population 20 --parents 5 --mutations 8 \\
        --crossovers 7 --others-budget 40 --sections throughput,algorithms     # a quick check

``--replay runs/search_scale/hat_2/evaluations.jsonl`` times the ``hat`` engine alone (no Ray) on
the losses a throughput run logged: the same Archs in the same order, each generation's hand-out.

Writes benchmarks/results/search_scale.json (``--json``) and prints a Markdown table. Ratios
from one run; the machine is shared (its 1-minute load is recorded per run).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search import AnalyticPredictor, _mem, _tune_shares  # noqa: E402  (benchmarks/search.py)
from search_load import RssWatcher  # noqa: E402  (benchmarks/search_load.py)

ROOT = Path(__file__).resolve().parents[1]
MB = 1024**2


def random_batches(sentences: int, vocab: int, seed: int = 0, max_tokens: int = 4096) -> list[Any]:
    """``sentences`` random validation pairs, lengths 8-30 tokens (a Multi30k-like spread), in
    length-sorted batches of at most ``max_tokens`` padded tokens, as the search batches them."""
    import torch

    from hat_ray.data.batching import Batch
    from hat_ray.tokens import EOS, PAD

    rng = np.random.default_rng(seed)
    lengths = np.sort(rng.integers(8, 31, size=sentences))
    out, start = [], 0
    while start < sentences:
        longest = int(lengths[start])
        end = start
        while end < sentences and (end - start + 1) * max(longest, int(lengths[end])) <= max_tokens:
            longest = max(longest, int(lengths[end]))
            end += 1
        n = end - start
        src = torch.full((n, longest), PAD, dtype=torch.long)
        target = torch.full((n, longest), PAD, dtype=torch.long)
        for i, length in enumerate(lengths[start:end].tolist()):
            src[i, longest - length:] = torch.from_numpy(rng.integers(4, vocab, size=length))
            src[i, -1] = EOS
            target[i, :length] = torch.from_numpy(rng.integers(4, vocab, size=length))
            target[i, length - 1] = EOS
        prev = torch.cat([torch.full((n, 1), EOS), target[:, :-1]], dim=1).masked_fill(target.eq(PAD), PAD)
        out.append(Batch(src, prev, target, int(target.ne(PAD).sum()), np.arange(start, end)))
        start = end
    return out


def demo_inputs(args: argparse.Namespace) -> tuple[Any, dict[str, Any], list[Any], Any]:
    """(space, packed weights, packed batches, constraints) of the demo space, random init; the
    latency limit is FLOPs-based at ``--limit-quantile`` of random Archs."""
    import torch

    from hat_ray.model.transformer import build_super
    from hat_ray.search.scorer import pack_batches, pack_weights
    from hat_ray.space import SearchSpace

    torch.set_num_threads(1)
    space = SearchSpace.load("demo")
    weights = pack_weights(build_super(space, args.vocab, seed=0).eval())
    batches = pack_batches(random_batches(args.valid_sentences, args.vocab))
    return space, weights, batches, demo_constraints(space, args.limit_quantile)


def demo_constraints(space: Any, quantile: float) -> Any:
    """The FLOPs-based latency limit at ``quantile`` of 500 random Archs of ``space``."""
    from hat_ray.search.constraints import Constraint, Constraints

    predictor = AnalyticPredictor(space)
    rng = np.random.default_rng(0)
    limit = float(np.quantile(predictor.predict([space.sample(rng) for _ in range(500)]), quantile))
    return Constraints([Constraint("local_cpu", limit, predictor)])


def replay(args: argparse.Namespace) -> dict[str, Any]:
    """The engine of a ``throughput`` search alone: a fresh ``hat`` engine (same settings and seed)
    told the losses of the search's evaluation log, timing each generation's hand-out. Without
    Ray, Tune or scoring; the Archs it asks must all be in the log (the same trajectory)."""
    from hat_ray.search.evolution import make_engine
    from hat_ray.search.searcher import read_log
    from hat_ray.space import SearchSpace

    losses = {e["key"]: e["valid_loss"] for e in read_log(args.replay)}
    space = SearchSpace.load("demo")
    engine = make_engine("hat", space, demo_constraints(space, args.limit_quantile), seed=0,
                         population=args.population, parents=args.parents, mutations=args.mutations,
                         crossovers=args.crossovers, iterations=args.generations)
    per_generation, asked, missing = [], 0, 0
    while not engine.finished:
        start, batch = time.perf_counter(), []
        while (arch := engine.ask()) is not None:
            batch.append(arch)
        per_generation.append(round(time.perf_counter() - start, 4))
        if not batch:
            break
        for arch in batch:
            missing += arch.key() not in losses
            engine.tell(arch, losses.get(arch.key()))
        asked += len(batch)
    return {"log": str(args.replay), "logged": len(losses), "asked": asked, "not_in_log": missing,
            "engine_ask_s": round(sum(per_generation), 3), "per_generation_s": per_generation}


def one_search(inputs: tuple[Any, ...], out: Path, algorithm: str, scorers: int, engine_kwargs: dict[str, Any],
               budget: int | None, every: int) -> dict[str, Any]:
    """One search through Tune; its Tune shares, trial actors and the driver's RSS curve."""
    from hat_ray.search.run import SearchOptions, run_search

    space, weights, batches, constraints = inputs
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    me = psutil.Process()
    rss_start = me.memory_info().rss
    watcher = RssWatcher(out / "evaluations.jsonl", every, time.time())
    watcher.start()
    try:
        r = run_search(space, weights, batches, constraints, out,
                       SearchOptions(algorithm=algorithm, scorers=scorers, seed=0, budget=budget,
                                     engine_kwargs=engine_kwargs))
    finally:
        watcher.stop.set()
        watcher.join()
    rss_end = me.memory_info().rss
    points = watcher.points
    first = points[0] if points else {"evaluations": 0, "rss_mb": rss_start / MB}
    grown = rss_end / MB - first["rss_mb"]
    span = r["evaluations"] - first["evaluations"]
    return {"algorithm": algorithm, **_tune_shares(r), "trial_actors": r["trial_actors"],
            "between_batches_s": r["between_batches_seconds"], "engine_ask_s": r["engine_ask_seconds"],
            "wall_s": round(r["wall_seconds"], 1), "load_1m_after": round(os.getloadavg()[0], 2),
            "driver_rss_mb": {"start": round(rss_start / MB, 1), "end": round(rss_end / MB, 1),
                              "every": points, "growth_after_first_block": round(grown, 1),
                              "growth_per_1000_evaluations": round(1000 * grown / span, 1) if span > 0 else None}}


def throughput(args: argparse.Namespace, inputs: tuple[Any, ...]) -> dict[str, Any]:
    evo = {"population": args.population, "parents": args.parents, "mutations": args.mutations,
           "crossovers": args.crossovers, "iterations": args.generations}
    runs = {str(k): one_search(inputs, args.out / f"hat_{k}", "hat", k, evo, None, args.every) for k in (1, 2)}
    one, two = runs["1"], runs["2"]
    return {"engine": evo, "runs": runs,
            "speedup_2_vs_1": round(two["candidates_per_s"] / one["candidates_per_s"], 3)}


def algorithms(args: argparse.Namespace, inputs: tuple[Any, ...]) -> dict[str, Any]:
    small = {"population": max(4, args.others_budget // 5), "parents": max(2, args.others_budget // 20)}
    runs = {}
    for algorithm, kwargs in (("random", {}), ("steady", small),
                              ("pareto", {**small, "mutations": small["population"] // 2,
                                          "crossovers": small["population"] - small["parents"]
                                          - small["population"] // 2, "iterations": 1000})):
        runs[algorithm] = one_search(inputs, args.out / f"algo_{algorithm}", algorithm, 2, kwargs,
                                     args.others_budget, args.every)
    return runs


def wmt_memory(args: argparse.Namespace) -> dict[str, Any]:
    """Private memory (USS) of the scorers on HAT's WMT14 En-De SuperTransformer, after each
    scored the same candidates: pools of 1 scorer, 2 scorers (a second process) and 1 scorer
    with 2 slots (a second thread in the same process, ``--scorer-slots 2``)."""
    import ray
    import torch

    from hat_ray.model.transformer import build_super
    from hat_ray.search.pool import start_pool
    from hat_ray.search.scorer import pack_batches, pack_weights
    from hat_ray.space import SearchSpace

    space = SearchSpace.load("wmt14_en_de")
    torch.set_num_threads(1)
    model = build_super(space, args.wmt_vocab, seed=0).eval()
    weights = pack_weights(model)
    weights_mib = sum(a.nbytes for a in weights["arrays"].values()) / MB
    del model
    batches = pack_batches(random_batches(args.wmt_sentences, args.wmt_vocab, seed=1))
    rng = np.random.default_rng(2)
    archs = [space.sample(rng).to_dict() for _ in range(6)]
    out: dict[str, Any] = {"space": space.name, "vocab": args.wmt_vocab, "weights_mib": round(weights_mib, 1),
                           "sentences": args.wmt_sentences}
    for label, size, slots in (("1x1", 1, 1), ("2x1", 2, 1), ("1x2", 1, 2)):
        pool = start_pool(weights, batches, size, f"scale-wmt{label}-{os.getpid()}", slots=slots)
        try:
            ray.get(pool.score_many.remote(archs))
            stats = ray.get(pool.stats.remote())
        finally:
            ray.kill(pool)
        out[f"scorers_{label}"] = [_mem(s) for s in stats["scorers"]]
        time.sleep(3.0)  # let the killed scorers exit before the next pool maps the weights
    one = out["scorers_1x1"][0]["uss_mib"]
    process = max(m["uss_mib"] for m in out["scorers_2x1"])
    slot = out["scorers_1x2"][0]["uss_mib"] - one
    out["second_scorer_process_adds_mib"] = process
    out["second_scorer_process_adds_x_weights"] = round(process / weights_mib, 3)
    out["second_slot_adds_mib"] = round(slot, 1)
    out["second_slot_adds_x_weights"] = round(slot / weights_mib, 3)
    out["weights_private_mib"] = [m.get("weights_private_mib") for k in ("scorers_2x1", "scorers_1x2")
                                  for m in out[k]]
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = ["| run | evaluations | eval/s | Tune/driver share of fit | trial actors | driver MB / 1,000 eval |",
             "|---|---|---|---|---|---|"]
    rows = [(f"hat, {k} scorer(s)", r) for k, r in result.get("throughput", {}).get("runs", {}).items()]
    rows += [(f"{name}, 2 scorers", r) for name, r in result.get("algorithms", {}).items()]
    for name, r in rows:
        lines.append(f"| {name} | {r['evaluations']} | {r['candidates_per_s']:.2f} | {100 * r['tune_share_of_fit']:.1f}% "
                     f"| {r['trial_actors']} | {r['driver_rss_mb']['growth_per_1000_evaluations']} |")
    if "throughput" in result:
        lines.append(f"\n2 vs 1 scorer, end to end: {result['throughput']['speedup_2_vs_1']:.2f}x")
    if "memory" in result:
        m = result["memory"]
        lines.append(f"WMT14 En-De supernet ({m['weights_mib']} MiB): a second scorer process adds "
                     f"{m['second_scorer_process_adds_mib']} MiB USS = {m['second_scorer_process_adds_x_weights']}x "
                     f"the weights; a second slot (--scorer-slots 2) adds {m['second_slot_adds_mib']} MiB = "
                     f"{m['second_slot_adds_x_weights']}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", default="throughput,algorithms,memory")
    p.add_argument("--population", type=int, default=125)
    p.add_argument("--parents", type=int, default=25)
    p.add_argument("--mutations", type=int, default=50)
    p.add_argument("--crossovers", type=int, default=50)
    p.add_argument("--generations", type=int, default=30)
    p.add_argument("--others-budget", type=int, default=400, help="evaluations of each other algorithm's search")
    p.add_argument("--valid-sentences", type=int, default=40, help="random validation pairs per candidate")
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--limit-quantile", type=float, default=0.6)
    p.add_argument("--every", type=int, default=250, help="driver RSS sample every N evaluations")
    p.add_argument("--wmt-vocab", type=int, default=32768)
    p.add_argument("--wmt-sentences", type=int, default=32)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "search_scale")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "search_scale.json")
    p.add_argument("--replay", type=Path, metavar="EVALUATIONS_JSONL",
                   help="run nothing else: time the engine alone on a throughput search's evaluation log")
    args = p.parse_args(argv)
    if args.replay:
        if not args.replay.is_file():
            print(f"error: --replay {args.replay}: no such evaluation log (a throughput run writes "
                  f"{args.out}/hat_2/evaluations.jsonl)", file=sys.stderr)
            return 2
        print(json.dumps(replay(args), indent=2))
        return 0
    sections = set(args.sections.split(","))
    unknown = sections - {"throughput", "algorithms", "memory"}
    if unknown:
        print(f"error: unknown --sections {sorted(unknown)}: choose from throughput, algorithms, memory", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    result: dict[str, Any] = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                              "cpus": psutil.cpu_count(), "load_1m_start": round(os.getloadavg()[0], 2)}
    t0 = time.time()
    try:
        if sections & {"throughput", "algorithms"}:
            inputs = demo_inputs(args)
            if "throughput" in sections:
                result["throughput"] = throughput(args, inputs)
            if "algorithms" in sections:
                result["algorithms"] = algorithms(args, inputs)
        if "memory" in sections:
            result["memory"] = wmt_memory(args)
    finally:
        ray.shutdown()
    result["wall_minutes"] = round((time.time() - t0) / 60, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
