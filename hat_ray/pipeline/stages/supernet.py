"""Stage 1, supernet: train the SuperTransformer (``supernet/``; resumes its checkpoint)."""

from __future__ import annotations

from typing import Any

from hat_ray.pipeline.stages.context import Context, data_options, with_threads


def run(ctx: Context, done: dict[str, Any]) -> dict[str, Any]:
    from hat_ray.train.config import TrainConfig
    from hat_ray.train.run import make_spec
    from hat_ray.train.run import run as train

    s = ctx.exp.supernet
    cfg = TrainConfig(mode="supernet", max_updates=s.max_updates, max_minutes=s.max_minutes, max_tokens=s.max_tokens,
                      lr=s.lr, warmup_updates=s.warmup_updates, schedule=s.schedule, dropout=s.dropout, seed=s.seed,
                      sandwich=s.sandwich, largest_prob=s.largest_prob, largest_first=s.largest_first,
                      largest_first_minutes=s.largest_first_minutes,
                      validate_every=s.validate_every, save_every=s.save_every)
    out = ctx.supernet_ckpt.parent
    spec = make_spec(ctx.space, cfg, data_options(ctx.exp), out, resume=ctx.supernet_ckpt.exists())
    if s.workers > 1:
        ctx.connect()
    return with_threads(s.threads if s.workers == 1 else None,
                        lambda: train(spec, s.workers, s.cpus_per_worker, s.gpu))
