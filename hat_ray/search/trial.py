"""The Tune trainable: one trial = a batch of candidates (a generation), scored by the shared
ScorerPool.

Kept free of torch imports: trial actors only route candidates to the pool (the scorers hold
the model), so a reused trial actor stays small.
"""

from __future__ import annotations

import math
from typing import Any

import ray
from ray import tune


def score_trial(config: dict[str, Any]) -> None:
    """Queue every candidate of ``config["candidates"]`` on the pool at once (each on its
    ``fidelity``: the share of the validation set, default all) and report, in one result:
    ``losses`` (bits, in the candidates' order; NaN for a candidate that failed), ``valid_loss``
    (the batch's best), ``fidelity`` (the batch's lowest), and counts and seconds of the batch."""
    pool = ray.get_actor(config["pool"], namespace=config.get("namespace"))
    candidates = config["candidates"]
    order = dispatch_order(candidates)
    scored = ray.get(pool.score_many.remote([candidates[i]["arch"] for i in order],
                                            trial=tune.get_context().get_trial_id(),
                                            actor=ray.get_runtime_context().get_actor_id(),
                                            fidelities=[float(candidates[i].get("fidelity", 1.0)) for i in order]))
    results: list[dict[str, Any]] = [{}] * len(candidates)
    for i, result in zip(order, scored):
        results[i] = result
    losses = [math.nan if r.get("loss") is None else float(r["loss"]) for r in results]
    finite = [(loss, c) for loss, c in zip(losses, candidates) if math.isfinite(loss)]
    best_loss, best = min(finite, key=lambda t: t[0]) if finite else (math.nan, None)
    metrics: dict[str, Any] = {
        "valid_loss": best_loss,
        "losses": losses,
        "candidates": len(candidates),
        "failed": len(candidates) - len(finite),
        "cached": sum(bool(r.get("cached")) for r in results),
        "score_seconds": float(sum(r.get("seconds", 0.0) for r in results)),
        "fidelity": min((float(c.get("fidelity", 1.0)) for c in candidates), default=1.0),
    }
    if best is not None:  # the batch's best candidate, as one trial per candidate reported it
        metrics.update({"arch_key": best["key"], "params": int(best["params"]), "flops": int(best["flops"])})
        metrics.update({f"latency_{dev}": float(ms) for dev, ms in best["predicted_ms"].items()})
    tune.report(metrics)


def dispatch_order(candidates: list[dict[str, Any]]) -> list[int]:
    """Most FLOPs first (longest processing time first): the pool hands candidates to scorers in
    this order, so a batch ends with its cheapest candidates and the scorers that finish first
    idle least while the last ones run (a generation's barrier)."""
    return sorted(range(len(candidates)), key=lambda i: -int(candidates[i]["flops"]))
