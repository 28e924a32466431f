"""The Tune trainable: one trial = one candidate, scored by the shared ScorerPool.

Kept free of torch imports: trial actors only route a candidate to the pool (the scorers hold
the model), so a reused trial actor stays small.
"""

from __future__ import annotations

from typing import Any

import ray
from ray import tune


def score_trial(config: dict[str, Any]) -> None:
    """Report ``valid_loss`` (bits), predicted latency per device, params and FLOPs."""
    pool = ray.get_actor(config["pool"], namespace=config.get("namespace"))
    result = ray.get(pool.score.remote(config["arch"], trial=tune.get_context().get_trial_id(),
                                       actor=ray.get_runtime_context().get_actor_id()))
    metrics = {
        "valid_loss": float(result["loss"]),
        "score_seconds": float(result["seconds"]),
        "cached": bool(result.get("cached", False)),
        "arch_key": config["key"],
        "params": int(config["params"]),
        "flops": int(config["flops"]),
    }
    metrics.update({f"latency_{dev}": float(ms) for dev, ms in config["predicted_ms"].items()})
    tune.report(metrics)
