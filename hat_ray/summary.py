"""One Arch's summary, the same in a search's trials and result, the pipeline's evaluation and
its report: the Arch, its key, parameters, FLOPs, and the predicted latency on each device."""

from __future__ import annotations

from typing import Any

from hat_ray.arch import Arch
from hat_ray.model.accounting import count_flops, count_params
from hat_ray.space import SearchSpace


def arch_summary(arch: Arch, space: SearchSpace, constraints: Any = None) -> dict[str, Any]:
    """``arch``, ``key``, ``params``, ``flops`` (at the space's sequence length) and
    ``predicted_ms`` per device of ``constraints`` (a hat_ray.search.constraints.Constraints:
    its predictors, cached); devices whose predictor is fit in reference units also get
    ``predicted_ref`` (multiples of the reference Arch's latency)."""
    q, t = space.super.qkv_dim, space.super.seq_len
    items = constraints.items if constraints is not None else []
    out: dict[str, Any] = {"arch": arch.to_dict(), "key": arch.key(), "params": count_params(arch, q),
                           "flops": count_flops(arch, q, t),
                           "predicted_ms": constraints.latencies(arch) if items else {}}
    ref = {c.device: float(c.predictor.predict_native([arch])[0]) for c in items
           if getattr(c.predictor, "unit", "ms") == "ref"}
    if ref:
        out["predicted_ref"] = ref
    return out
