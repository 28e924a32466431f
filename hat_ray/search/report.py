"""Search outputs: result.json, trials.parquet, best Arch YAML (both formats), Pareto plot;
the final top-K candidates and their predicted vs re-measured latency (``--measure-top``)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from hat_ray.arch import Arch
from hat_ray.io import atomic_write
from hat_ray.search.constraints import Constraints
from hat_ray.search.evolution import Engine
from hat_ray.search.result import SearchFolder, SearchResult
from hat_ray.space import SearchSpace
from hat_ray.summary import arch_summary


def candidate(arch: Arch, loss: float, space: SearchSpace, constraints: Constraints) -> dict[str, Any]:
    """The Arch's summary (hat_ray.summary.arch_summary) with its validation loss."""
    return {**arch_summary(arch, space, constraints), "valid_loss": loss}


def top_candidates(engine: Engine, k: int, pareto: bool = False) -> list[tuple[Arch, float]]:
    """The final top ``k`` (Arch, loss): the ``k`` best scored Archs by validation loss (every
    scored Arch met the constraints when it was asked for); for a Pareto search the front, and
    when it has more than ``k`` members, ``k`` of them spread evenly along it (both ends kept)."""
    if k <= 0:
        return []
    if pareto:
        front = [(a, loss) for a, loss, _ in engine.pareto_front()]
        if len(front) <= k:
            return front
        if k == 1:
            return front[:1]
        picks = sorted({round(i * (len(front) - 1) / (k - 1)) for i in range(k)})
        return [front[i] for i in picks]
    scored = sorted(((a, s) for a, s in engine.full_scores().items() if math.isfinite(s)),
                    key=lambda t: (t[1], t[0].key()))
    return scored[:k]


def measured_summary(top: list[dict[str, Any]], constraints: Constraints) -> dict[str, Any]:
    """Predicted vs measured latency over the re-measured candidates, per device: MAPE (%, of the
    measured value), max and mean signed error (ms, predicted - measured), and how many exceed
    the device's limit when measured."""
    per_device: dict[str, Any] = {}
    for c in constraints.items:
        pairs = [(t["predicted_ms"][c.device], t["measured_ms"][c.device]) for t in top
                 if c.device in t.get("measured_ms", {})]
        if not pairs:
            per_device[c.device] = {"n": 0}
            continue
        pred, meas = np.array(pairs).T
        err = pred - meas
        per_device[c.device] = {
            "n": len(pairs), "mape": round(float(100 * np.mean(np.abs(err) / meas)), 3),
            "max_abs_err_ms": round(float(np.max(np.abs(err))), 4), "mean_err_ms": round(float(np.mean(err)), 4),
            "limit_ms": c.limit_ms if math.isfinite(c.limit_ms) else None,
            "over_limit": int(np.sum(meas > c.limit_ms)),
        }
    return {"k": len(top), "per_device": per_device}


def trials_frame(engine: Engine, space: SearchSpace, constraints: Constraints,
                 measured: dict[str, dict[str, float]] | None = None) -> pd.DataFrame:
    """One row per evaluated Arch, in the order results arrived, its loss at the highest fidelity it
    was scored at (``fidelity``: the share of the validation set; 1 unless a successive-halving
    search left it on the slice); ``measured_DEVICE`` columns
    (NaN where not re-measured) when ``measured`` ({arch key: {device: ms}}) is given."""
    rows = []
    for n, (arch, loss) in enumerate(engine.scores.items(), start=1):
        c = candidate(arch, loss if math.isfinite(loss) else float("nan"), space, constraints)
        row = {"n": n, "key": c["key"], "valid_loss": c["valid_loss"], "fidelity": engine.scored_at(arch),
               "failed": not math.isfinite(loss),
               "params": c["params"], "flops": c["flops"], "arch": json.dumps(c["arch"])}
        row.update({f"latency_{d}": ms for d, ms in c["predicted_ms"].items()})
        if measured is not None:
            row.update({f"measured_{d}": measured.get(c["key"], {}).get(d, float("nan")) for d in constraints.devices})
        rows.append(row)
    return pd.DataFrame(rows)


def write_outputs(out: Path, space: SearchSpace, engine: Engine, constraints: Constraints,
                  info: dict[str, Any], top: list[tuple[Arch, float]] | None = None,
                  measured: dict[str, dict[str, float]] | None = None) -> SearchResult:
    """Write every output; with ``top`` (the re-measured candidates) and ``measured`` ({arch
    key: {device: ms}}), result.json also holds ``top`` (each with ``measured_ms``), the
    ``measured`` summary, and ``measured_ms`` on the best / Pareto entries that were measured."""
    best_arch, best_loss = engine.best()
    best = candidate(best_arch, best_loss, space, constraints)
    front = [candidate(a, loss, space, constraints) for a, loss, _ in engine.pareto_front()]
    extra: dict[str, Any] = {}
    if top is not None and measured is not None:
        for c in (best, *front):
            if c["key"] in measured:
                c["measured_ms"] = dict(measured[c["key"]])
        ranked = [{**candidate(a, loss, space, constraints), "measured_ms": dict(measured.get(a.key(), {}))}
                  for a, loss in top]
        extra = {"top": ranked, "measured": measured_summary(ranked, constraints)}
    result = {
        "space": space.name, "algorithm": engine.name, "evaluations": len(engine.scores),
        "failed": sum(1 for s in engine.scores.values() if not math.isfinite(s)),
        "constraints": [{"device": c.device, "limit_ms": c.limit_ms if math.isfinite(c.limit_ms) else None,
                         "margin": c.margin} for c in constraints.items],
        "best": best, "pareto": front, **extra, **info,
    }
    frame = trials_frame(engine, space, constraints, measured)
    atomic_write(out / "trials.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    for name, data in (("best_arch.yaml", best_arch.to_dict()), ("best_arch_hat.yaml", best_arch.to_hat())):
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
        atomic_write(out / name, lambda tmp, text=text: Path(tmp).write_text(text))
    atomic_write(out / "pareto.png", lambda tmp: Path(tmp).write_bytes(pareto_png(frame, front, constraints)))
    return SearchFolder(out).write_result(result)  # last: a result.json means every output is there


def pareto_png(frame: pd.DataFrame, front: list[dict[str, Any]], constraints: Constraints) -> bytes:
    """Validation loss vs predicted latency (first constrained device), front highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ok = frame[~frame["failed"] & (frame["fidelity"] >= 1.0)]  # a slice's loss is on another scale
    if constraints.items:
        dev = constraints.items[0].device
        x, fx, xlabel = ok[f"latency_{dev}"], [c["predicted_ms"][dev] for c in front], f"latency on {dev} (ms; predicted unless marked measured)"
        if math.isfinite(constraints.items[0].limit_ms):
            ax.axvline(constraints.items[0].limit_ms, color="grey", ls="--", lw=1, label="limit")
    else:
        x, fx, xlabel = ok["flops"] / 1e9, [c["flops"] / 1e9 for c in front], "GFLOPs"
    ax.scatter(x, ok["valid_loss"], s=8, alpha=0.4, label="evaluated")
    pts = sorted(zip(fx, [c["valid_loss"] for c in front]))
    if pts:
        ax.plot(*zip(*pts), "o-", color="C3", ms=4, label="Pareto front")
    if constraints.items and f"measured_{dev}" in ok:
        m = ok[ok[f"measured_{dev}"].notna()]
        ax.scatter(m[f"measured_{dev}"], m["valid_loss"], marker="x", color="k", s=30, label="measured (top-k)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation loss (bits/token)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
