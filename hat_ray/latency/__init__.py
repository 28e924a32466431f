"""Latency: device profiles, measurement, datasets and predictors.

The modules here are pure Python + torch (no Ray) except ``probe`` (Ray actors + collection),
which callers import explicitly.
"""

from __future__ import annotations

from hat_ray.latency.dataset import LatencyDataset
from hat_ray.latency.measure import measure
from hat_ray.latency.metrics import latency_metrics
from hat_ray.latency.predictor import LatencyPredictor
from hat_ray.latency.profile import DeviceProfile

__all__ = ["DeviceProfile", "LatencyDataset", "LatencyPredictor", "latency_metrics", "measure"]
