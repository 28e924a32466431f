"""Stage 4, search: one search per device and limit (``search/TARGET/``, TARGET = DEVICE-LIMIT).
The search owns its folder (hat_ray.search.result.SearchFolder): a finished one is loaded, an
interrupted one resumed."""

from __future__ import annotations

from typing import Any

import numpy as np

from hat_ray.errors import DataError
from hat_ray.pipeline.config import Experiment, parse_limit
from hat_ray.pipeline.stages.context import Context


def search_targets(ctx: Context) -> list[dict[str, Any]]:
    """One search per (device, limit): name, device, limit as written, limit in ms."""
    from hat_ray.latency.dataset import LatencyDataset
    from hat_ray.latency.predictor import LatencyPredictor

    targets = []
    for entry in ctx.exp.devices:
        device = ctx.profile(entry.profile).name
        for limit in entry.limits_ms:
            kind, value = parse_limit(limit)  # type: ignore[misc]  # validated by Experiment.check
            # percentile and reference limits are read in the predictor's unit, then calibrated to ms
            predictor = LatencyPredictor.load(ctx.predictor_path(device)) if kind != "ms" else None
            if predictor is None:
                ms, label = value, f"{value:g}ms"
            elif kind == "percentile":
                data = LatencyDataset.load(ctx.latency_data(device)).for_device(device)
                ms, label = predictor.to_ms(np.percentile(data.latency(predictor.unit), value)), f"p{value:g}"
            else:
                if predictor.unit != "ref":
                    raise DataError(f"limit {limit!r} on {device} is in reference units, but its latency data was "
                                    "measured with the sequential protocol (ms): set the profile's protocol.mode "
                                    "to reference, or give the limit in ms or as a percentile")
                ms, label = predictor.to_ms(value), f"{value:g}ref"
            targets.append({"name": f"{device}-{label}", "device": device, "limit": limit, "limit_ms": ms})
    return targets


def search_options(exp: Experiment) -> Any:
    """The SearchOptions of the experiment's search section (engine, scorers and their resources)."""
    from hat_ray.search.run import SearchOptions

    s = exp.search
    return SearchOptions(algorithm=s.algorithm, budget=s.budget, scorers=s.scorers, seed=s.seed,
                         threads_per_scorer=s.cpus_per_scorer, scorer_cpus=float(s.cpus_per_scorer),
                         scorer_slots=s.scorer_slots, use_gpu=s.gpu, engine_kwargs=s.engine().kwargs(s.algorithm))


def run(ctx: Context, done: dict[str, Any]) -> dict[str, Any]:
    from hat_ray.latency.predictor import LatencyPredictor
    from hat_ray.search.constraints import Constraint, Constraints
    from hat_ray.search.inputs import load_supernet, validation_batches
    from hat_ray.search.result import SearchFolder
    from hat_ray.search.run import run_search
    from hat_ray.search.scorer import pack_batches, pack_weights

    s, d = ctx.exp.search, ctx.exp.data
    model, space, ckpt = load_supernet(ctx.supernet_ckpt)
    batches = validation_batches(ckpt, d.name, d.data_dir, space.super.max_positions, s.max_tokens,
                                 d.valid_sentences, source=str(ctx.supernet_ckpt))
    options = search_options(ctx.exp)
    weights, packed = pack_weights(model), pack_batches(batches)
    summary: dict[str, Any] = {}
    targets = search_targets(ctx)
    for i, t in enumerate(targets, 1):
        folder = SearchFolder(ctx.out / "search" / t["name"])
        if folder.finished:
            result = folder.load()
            ctx.say(f"  search {i}/{len(targets)} {t['name']}: already finished")
        else:
            ctx.say(f"  search {i}/{len(targets)} {t['name']}: limit {t['limit_ms']:.1f} ms"
                    + (" (resuming)" if folder.started else ""))
            predictor = LatencyPredictor.load(ctx.predictor_path(t["device"]))
            constraints = Constraints([Constraint(t["device"], t["limit_ms"], predictor, s.margin)])
            info = {"supernet": str(ctx.supernet_ckpt), "devices": [[t["device"], t["limit_ms"]]], "data": d.name,
                    "valid_sentences": d.valid_sentences, "max_tokens": s.max_tokens,
                    "valid_batches": len(batches), "target": t["name"]}
            ctx.connect()
            result = run_search(space, weights, packed, constraints, folder.out, options, resume=folder.started,
                                run_info=info)
        best = result.best
        summary[t["name"]] = {**t, "valid_loss": best.valid_loss, "predicted_ms": best.predicted_ms,
                              "arch": best.arch.to_dict(), "evaluations": result.evaluations}
        ctx.say(f"    best: valid loss {best.valid_loss:.3f} bits, predicted "
                f"{best.predicted_ms[t['device']]:.1f} ms, {result.evaluations} evaluations")
    return summary
