"""Search outputs: result.json, trials.parquet, best Arch YAML (both formats), Pareto plot."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from hat_ray.arch import Arch
from hat_ray.checkpoint import atomic_write
from hat_ray.model.accounting import count_flops, count_params
from hat_ray.search.constraints import Constraints
from hat_ray.search.evolution import Engine
from hat_ray.space import SearchSpace


def candidate(arch: Arch, loss: float, space: SearchSpace, constraints: Constraints) -> dict[str, Any]:
    q, t = space.super.qkv_dim, space.super.seq_len
    return {"arch": arch.to_dict(), "key": arch.key(), "valid_loss": loss,
            "predicted_ms": constraints.latencies(arch), "params": count_params(arch, q),
            "flops": count_flops(arch, q, t)}


def trials_frame(engine: Engine, space: SearchSpace, constraints: Constraints) -> pd.DataFrame:
    """One row per evaluated Arch, in the order results arrived."""
    rows = []
    for n, (arch, loss) in enumerate(engine.scores.items(), start=1):
        c = candidate(arch, loss if math.isfinite(loss) else float("nan"), space, constraints)
        row = {"n": n, "key": c["key"], "valid_loss": c["valid_loss"], "failed": not math.isfinite(loss),
               "params": c["params"], "flops": c["flops"], "arch": json.dumps(c["arch"])}
        row.update({f"latency_{d}": ms for d, ms in c["predicted_ms"].items()})
        rows.append(row)
    return pd.DataFrame(rows)


def write_outputs(out: Path, space: SearchSpace, engine: Engine, constraints: Constraints,
                  info: dict[str, Any]) -> dict[str, Any]:
    best_arch, best_loss = engine.best()
    best = candidate(best_arch, best_loss, space, constraints)
    front = [candidate(a, loss, space, constraints) for a, loss, _ in engine.pareto_front()]
    result = {
        "space": space.name, "algorithm": engine.name, "evaluations": len(engine.scores),
        "failed": sum(1 for s in engine.scores.values() if not math.isfinite(s)),
        "constraints": [{"device": c.device, "limit_ms": c.limit_ms if math.isfinite(c.limit_ms) else None,
                         "margin": c.margin} for c in constraints.items],
        "best": best, "pareto": front, **info,
    }
    frame = trials_frame(engine, space, constraints)
    atomic_write(out / "trials.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    for name, data in (("best_arch.yaml", best_arch.to_dict()), ("best_arch_hat.yaml", best_arch.to_hat())):
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
        atomic_write(out / name, lambda tmp, text=text: Path(tmp).write_text(text))
    atomic_write(out / "pareto.png", lambda tmp: Path(tmp).write_bytes(pareto_png(frame, front, constraints)))
    text = json.dumps(result, indent=2)
    atomic_write(out / "result.json", lambda tmp: Path(tmp).write_text(text))
    return result


def pareto_png(frame: pd.DataFrame, front: list[dict[str, Any]], constraints: Constraints) -> bytes:
    """Validation loss vs predicted latency (first constrained device), front highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ok = frame[~frame["failed"]]
    if constraints.items:
        dev = constraints.items[0].device
        x, fx, xlabel = ok[f"latency_{dev}"], [c["predicted_ms"][dev] for c in front], f"predicted latency on {dev} (ms)"
        if math.isfinite(constraints.items[0].limit_ms):
            ax.axvline(constraints.items[0].limit_ms, color="grey", ls="--", lw=1, label="limit")
    else:
        x, fx, xlabel = ok["flops"] / 1e9, [c["flops"] / 1e9 for c in front], "GFLOPs"
    ax.scatter(x, ok["valid_loss"], s=8, alpha=0.4, label="evaluated")
    pts = sorted(zip(fx, [c["valid_loss"] for c in front]))
    if pts:
        ax.plot(*zip(*pts), "o-", color="C3", ms=4, label="Pareto front")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation loss (bits/token)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
