"""Data-parallel training on a Ray cluster with Ray Train's TorchTrainer (the Ray edge of train/).

K workers each build the same :class:`~hat_ray.train.trainer.Trainer` from one
:class:`~hat_ray.train.run.RunSpec` (shipped once through the object store), inside the process
group TorchTrainer sets up (gloo on CPU, nccl on GPU). Rank 0 writes checkpoints and logs into
``spec.out`` - on a multi-node cluster that path must be on storage rank 0's node can write (a
shared filesystem, as Ray Train needs for multi-node runs anyway). Each worker asks for exactly
``cpus_per_worker`` CPUs (and one GPU with ``use_gpu``) and runs torch with that many threads.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import ray
import torch
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from hat_ray.errors import HatRayError
from hat_ray.train.comm import TorchDistComm
from hat_ray.train.run import RunSpec, build_trainer
from hat_ray.train.state import SUMMARY

log = logging.getLogger(__name__)


def _worker_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    torch.set_num_threads(int(config["cpus"]))
    spec: RunSpec = ray.get(config["spec"])
    device = ray.train.torch.get_device() if config["use_gpu"] else torch.device("cpu")
    build_trainer(spec, comm=TorchDistComm(), device=device).train()  # rank 0 writes OUT/summary.json


def train_distributed(spec: RunSpec, workers: int, cpus_per_worker: int = 1, use_gpu: bool = False) -> dict[str, Any]:
    """Run ``spec`` on ``workers`` Ray Train workers; returns rank 0's summary.

    Connects to the Ray cluster in ``RAY_ADDRESS`` (or an already initialised one), else starts
    a local instance, and fails up front when the cluster lacks the requested resources.
    """
    started = not ray.is_initialized()
    if started:
        ray.init(configure_logging=False)
    try:
        return _fit(spec, workers, cpus_per_worker, use_gpu)
    finally:
        if started:
            ray.shutdown()


def _fit(spec: RunSpec, workers: int, cpus_per_worker: int, use_gpu: bool) -> dict[str, Any]:
    need_cpu = workers * cpus_per_worker
    have = ray.cluster_resources()
    if have.get("CPU", 0) < need_cpu or (use_gpu and have.get("GPU", 0) < workers):
        raise HatRayError(f"--workers {workers} needs {need_cpu} CPUs{f' and {workers} GPUs' if use_gpu else ''}; "
                          f"the Ray cluster has {have.get('CPU', 0):g} CPUs and {have.get('GPU', 0):g} GPUs")
    out = Path(spec.out).resolve()
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"spec": ray.put(spec), "cpus": cpus_per_worker, "use_gpu": use_gpu},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}),
        run_config=RunConfig(name="train", storage_path=str(out / "ray")),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    # Ray Train V2 keeps metrics only with reported checkpoints; rank 0 wrote its summary instead.
    summary_path = out / SUMMARY
    return json.loads(summary_path.read_text()) if summary_path.is_file() else {}
