"""Stage 3, predictor: fit one latency predictor per device (``latency/DEVICE.npz``), with its
error on held-out rows."""

from __future__ import annotations

from typing import Any

import numpy as np

from hat_ray.errors import DataError
from hat_ray.pipeline.config import PREDICTOR_MIN_ROWS
from hat_ray.pipeline.stages.context import Context


def run(ctx: Context, done: dict[str, Any]) -> dict[str, Any]:
    from hat_ray.latency.dataset import LatencyDataset
    from hat_ray.latency.metrics import latency_metrics
    from hat_ray.latency.predictor import LatencyPredictor

    cfg, summary = ctx.exp.latency, {}
    for p in ctx.profiles:
        data = LatencyDataset.load(ctx.latency_data(p.name)).for_device(p.name)
        if len(data) < PREDICTOR_MIN_ROWS:
            raise DataError(f"{ctx.latency_data(p.name)}: only {len(data)} rows for {p.name}; a predictor needs "
                            f"at least {PREDICTOR_MIN_ROWS} (raise latency.archs)")
        info: dict[str, Any] = {"rows": len(data)}
        n_test = int(round(cfg.holdout * len(data)))
        if n_test >= 5:  # report the error on rows the predictor did not see, then refit on all
            order = np.random.default_rng(cfg.seed).permutation(len(data))
            test, train = data.subset(np.sort(order[:n_test])), data.subset(np.sort(order[n_test:]))
            held = LatencyPredictor.fit(train, model=cfg.model, space=ctx.space, seed=cfg.seed)
            info["heldout"] = latency_metrics(*held.paired(test))
        predictor = LatencyPredictor.fit(data, model=cfg.model, space=ctx.space, seed=cfg.seed)
        predictor.save(ctx.predictor_path(p.name))
        info.update(unit=predictor.unit, reference=predictor.reference)
        summary[p.name] = info
        if "heldout" in info:
            m = info["heldout"]
            unit = " (reference units)" if predictor.unit == "ref" else ""
            ctx.say(f"  {p.name}: {len(data)} rows, held-out MAPE {m['mape']:.1f}%{unit}, "
                    f"Kendall tau {m['kendall_tau']:.2f}")
    return summary

