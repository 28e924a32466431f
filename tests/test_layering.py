"""Layering: the core modules never import Ray, and the light ones (atomic writes, token ids, the
latency dataset, the ``hat_ray.latency`` package itself) never import torch.

Each module is imported in a fresh interpreter (all started at once, so the file stays fast) and
reports which heavy packages ended up in ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The core path: search space, model, data, the train loop and local run, latency measurement
# and prediction, the evolution engine. Ray belongs only to the cluster edges.
NO_RAY = [
    "hat_ray.space",
    "hat_ray.arch",
    "hat_ray.tokens",
    "hat_ray.io",
    "hat_ray.checkpoint",
    "hat_ray.model",
    "hat_ray.model.transformer",
    "hat_ray.data",
    "hat_ray.data.corpus",
    "hat_ray.data.batching",
    "hat_ray.data.tokenizer",
    "hat_ray.data.datasets",
    "hat_ray.train.trainer",
    "hat_ray.train.spec",
    "hat_ray.train.run",
    "hat_ray.latency",
    "hat_ray.latency.measure",
    "hat_ray.latency.predictor",
    "hat_ray.latency.dataset",
    "hat_ray.latency.backends",
    "hat_ray.latency.accelerator",
    "hat_ray.latency.workload",
    "hat_ray.search.evolution",
    "hat_ray.export.folder",
    "hat_ray.export.runner",
]
# Loading a device profile reads the latency-backend registry: every backend module imports torch
# and its runtime inside methods only. A simulated device computes its latency without torch.
NO_TORCH = ["hat_ray.io", "hat_ray.tokens", "hat_ray.latency", "hat_ray.latency.dataset", "hat_ray.latency.profile",
            "hat_ray.latency.backends", "hat_ray.latency.accelerator", "hat_ray.latency.workload"]

_PROBE = ("import importlib, json, sys; importlib.import_module(sys.argv[1]); "
          "print(json.dumps({m: m in sys.modules for m in ('ray', 'torch')}))")


@pytest.fixture(scope="module")
def imports() -> Iterator[dict[str, subprocess.Popen]]:
    """One fresh interpreter per module, all started at once (see :func:`_loaded`)."""
    procs = {mod: subprocess.Popen([sys.executable, "-c", _PROBE, mod], cwd=ROOT, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for mod in dict.fromkeys(NO_RAY + NO_TORCH)}
    yield procs
    for proc in procs.values():  # the ones a -k selection did not read
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _loaded(imports: dict[str, subprocess.Popen], module: str) -> dict[str, bool]:
    """{"ray": imported?, "torch": imported?} after importing ``module`` alone."""
    proc = imports[module]
    if not hasattr(proc, "result"):
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"importing {module} failed:\n{stderr}"
        proc.result = json.loads(stdout.strip().splitlines()[-1])
    return proc.result


@pytest.mark.parametrize("module", NO_RAY)
def test_core_module_does_not_import_ray(imports, module):
    assert not _loaded(imports, module)["ray"], \
        f"importing {module} imports ray: move the Ray import into the function using it"


@pytest.mark.parametrize("module", NO_TORCH)
def test_light_module_does_not_import_torch(imports, module):
    assert not _loaded(imports, module)["torch"], f"importing {module} imports torch"
