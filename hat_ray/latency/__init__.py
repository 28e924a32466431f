"""Latency: device profiles, measurement, datasets and predictors.

The modules here are pure Python + torch (no Ray) except ``probe`` (Ray actors + collection),
which callers import explicitly. The public names below are imported lazily (PEP 562), so
``import hat_ray.latency`` alone pulls in neither torch nor Ray. Measuring is
``hat_ray.latency.measure.measure`` (the submodule and the function share a name, so the package
does not re-export the function).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hat_ray.latency.dataset import LatencyDataset
    from hat_ray.latency.metrics import latency_metrics
    from hat_ray.latency.predictor import LatencyPredictor
    from hat_ray.latency.profile import DeviceProfile

__all__ = ["DeviceProfile", "LatencyDataset", "LatencyPredictor", "latency_metrics"]

_SOURCES = {
    "DeviceProfile": "hat_ray.latency.profile",
    "LatencyDataset": "hat_ray.latency.dataset",
    "LatencyPredictor": "hat_ray.latency.predictor",
    "latency_metrics": "hat_ray.latency.metrics",
}


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
