"""Stage 2, latency: import each device's latency data file, or measure random Archs of the
latency space on the devices' nodes (``latency/``; the collection resumes its journal)."""

from __future__ import annotations

from typing import Any

import numpy as np

from hat_ray.pipeline.stages.context import Bar, Context


def run(ctx: Context, done: dict[str, Any]) -> dict[str, Any]:
    from hat_ray.latency.dataset import LatencyDataset
    from hat_ray.latency.probe import collect

    (ctx.out / "latency").mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    for entry in ctx.exp.devices:
        if entry.latency_data:
            name = ctx.profile(entry.profile).name
            data = LatencyDataset.load_device(entry.latency_data, name, ctx.space.name)
            data.save(ctx.latency_data(name))
            summary[name] = {"source": entry.latency_data, "rows": len(data)}
    measured = [ctx.profile(d.profile) for d in ctx.exp.devices if not d.latency_data]
    if measured:
        rng = np.random.default_rng(ctx.exp.latency.seed)
        latency_space = ctx.space.latency_space()
        archs = [latency_space.sample(rng) for _ in range(ctx.exp.latency.archs)]
        ctx.connect()
        bar = Bar("latency", len(archs) * len(measured))
        done: dict[str, int] = {}

        def progress(device: str, n: int, total: int) -> None:
            done[device] = n
            bar.update(sum(done.values()))

        try:
            result = collect(archs, measured, ctx.space, ctx.out / "latency" / "measured.parquet",
                             vocab=ctx.vocab(), progress=progress)
        finally:
            bar.close()
        data = LatencyDataset.load(ctx.out / "latency" / "measured.parquet")
        for p in measured:
            rows = data.for_device(p.name)
            summary[p.name] = {"source": "measured", "rows": len(rows), "measured_now": result.measured.get(p.name, 0),
                               "median_ms": float(np.median(rows.latency())), "failed": len(result.failed.get(p.name, []))}
    return summary
