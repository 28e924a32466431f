"""Stage 5, train: train the search winners and the baselines (``train/MODEL/``), each distinct
Arch once; a model with ``done.json`` is skipped, an interrupted one resumes its checkpoint."""

from __future__ import annotations

import json
from typing import Any

from hat_ray.arch import Arch
from hat_ray.pipeline.stages.context import DONE, Context, data_options, with_threads, write_json


def models_to_train(ctx: Context, searched: dict[str, Any]) -> list[dict[str, Any]]:
    """Search winners (one per target) and the baselines, each distinct Arch once."""
    from hat_ray.pipeline.baselines import baselines

    models: list[dict[str, Any]] = []
    seen: dict[Arch, dict[str, Any]] = {}
    candidates = [(f"hat-{name}", "searched", Arch.from_dict(r["arch"]), name) for name, r in searched.items()]
    candidates += [(f"baseline-{name}", "baseline", arch, None)
                   for name, arch in baselines(ctx.space, ctx.exp.train.baselines).items()]
    for name, role, arch, target in candidates:
        if arch in seen:  # the same network found twice: train it once, keep every label
            seen[arch]["also"].append(name)
            if target:
                seen[arch]["targets"].append(target)
            continue
        entry = {"name": name, "role": role, "arch": arch.to_dict(), "targets": [target] if target else [],
                 "also": []}
        seen[arch] = entry
        models.append(entry)
    return models


def run(ctx: Context, done: dict[str, Any]) -> dict[str, Any]:
    """Train every model of :func:`models_to_train` (the search stage's summary is ``done["search"]``)."""
    from hat_ray.train.config import TrainConfig
    from hat_ray.train.run import make_spec
    from hat_ray.train.run import run as train
    from hat_ray.train.state import LAST

    t = ctx.exp.train
    cfg = TrainConfig(mode="subnet", max_updates=t.max_updates, max_minutes=t.max_minutes, max_tokens=t.max_tokens,
                      lr=t.lr, warmup_updates=t.warmup_updates, dropout=t.dropout, seed=t.seed, validate_every=0,
                      save_every=0, keep_last=1)
    models = models_to_train(ctx, done["search"])
    if t.workers > 1:
        ctx.connect()  # the experiment's cluster (run() would otherwise start a local instance)
    for i, m in enumerate(models, 1):
        out = ctx.out / "train" / m["name"]
        if (out / DONE).is_file():
            m["summary"] = json.loads((out / DONE).read_text())
            ctx.say(f"  train {i}/{len(models)} {m['name']}: already trained")
            continue
        ctx.say(f"  train {i}/{len(models)} {m['name']} ({m['role']})")
        arch = Arch.from_dict(m["arch"])
        init = ctx.supernet_ckpt if t.init == "supernet" else None
        spec = make_spec(ctx.space, cfg, data_options(ctx.exp), out, resume=(out / LAST).exists(), arch=arch,
                         init_from=init)
        m["summary"] = with_threads(t.threads if t.workers == 1 else None,
                                    lambda spec=spec: train(spec, t.workers, t.cpus_per_worker, t.gpu))
        write_json(out / DONE, m["summary"])
    write_json(ctx.out / "train" / "models.json", models)
    return {"models": models}

