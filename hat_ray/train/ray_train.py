"""Data-parallel training on a Ray cluster with Ray Train's TorchTrainer (the Ray edge of train/).

K workers each build the same :class:`~hat_ray.train.trainer.Trainer` from one
:class:`~hat_ray.train.spec.RunSpec` (shipped once through the object store), inside the process
group TorchTrainer sets up (gloo on CPU, nccl on GPU). Each worker asks for exactly
``cpus_per_worker`` CPUs (and one GPU with ``use_gpu``) and runs torch with that many threads.

Outputs: ``spec.out`` is a folder on the DRIVER's machine, and every file rank 0 writes
(checkpoints, logs, TensorBoard, ``summary.json``) ends up there whether or not the nodes share
a disk: a worker that cannot see the folder trains in a node-local staging folder mirrored to
the driver through a sink actor on the driver's node (:mod:`hat_ray.train.artifacts`). The
driver reads rank 0's summary from its own folder; a missing one is an error, never ``{}``.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
import torch
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from hat_ray.errors import HatRayError
from hat_ray.train.artifacts import OutputMirror, SinkInfo, start_sink, stop_sink
from hat_ray.train.comm import TorchDistComm
from hat_ray.train.spec import RunSpec, build_trainer
from hat_ray.train.state import SUMMARY

log = logging.getLogger(__name__)


def _worker_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    torch.set_num_threads(int(config["cpus"]))
    spec: RunSpec = ray.get(config["spec"])
    device = ray.train.torch.get_device() if config["use_gpu"] else torch.device("cpu")
    comm = TorchDistComm()
    mirror = OutputMirror(config["sink"], spec.out, comm.rank)
    pushed = False
    try:
        trainer = build_trainer(replace(spec, out=str(mirror.folder)), comm=comm, device=device,
                                on_save=mirror.push)
        trainer.train()  # rank 0 writes summary.json last
        mirror.push()
        pushed = True
    finally:
        mirror.close(pushed)


def train_distributed(spec: RunSpec, workers: int, cpus_per_worker: int = 1, use_gpu: bool = False,
                      address: str | None = None) -> dict[str, Any]:
    """Run ``spec`` on ``workers`` Ray Train workers; returns rank 0's summary.

    Joins the Ray cluster at ``address`` (or ``RAY_ADDRESS``, or the one already initialised),
    else starts a local instance (:func:`hat_ray.cluster.connect`), and fails up front when the
    cluster lacks the requested resources.
    """
    from hat_ray.cluster import connect

    started = connect(address)
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
    if ray.util.client.ray.is_connected():
        raise HatRayError("training with --workers needs a driver on a node of the cluster, not a ray:// client "
                          "(its outputs would land on the head): run it there, e.g. with `ray job submit`")
    out = Path(spec.out).resolve()
    summary_path = out / SUMMARY
    before = _identity(summary_path)
    sink = start_sink(out)
    # Ray Train's own storage holds nothing hat-ray uses (no checkpoint is reported to Ray Train:
    # rank 0's files above are the run's state). Ray Train V2 writes it from its controller actor,
    # which Ray 2.60 pins to the driver's node (a node-id label selector), and workers write there
    # only when checkpoints are reported: so a temp folder on the driver's node works whether or
    # not the nodes share a disk, leaves OUT free of Ray's files, and cannot make Ray Train
    # "restore" a stale snapshot from an earlier session of a resumed run.
    storage = tempfile.mkdtemp(prefix="hat-ray-train-")
    try:
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={"spec": ray.put(spec), "cpus": cpus_per_worker, "use_gpu": use_gpu, "sink": sink},
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                         resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}),
            run_config=RunConfig(name="train", storage_path=storage),
        )
        try:
            result = trainer.fit()
        except ray.train.TrainingFailedError as exc:
            raise _user_error(exc) from None
        if result.error is not None:
            raise result.error
    finally:
        stop_sink(sink)
        shutil.rmtree(storage, ignore_errors=True)
    return _summary(summary_path, before, sink)


def _user_error(exc: Exception) -> Exception:
    """A worker's HatRayError (a resume check, an unwritable output) as itself, for a one-line
    message; any other failure unchanged."""
    failures = getattr(exc, "worker_failures", None) or {}
    mine = [failures[rank] for rank in sorted(failures) if isinstance(failures[rank], HatRayError)]
    return mine[0] if mine else exc


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _summary(path: Path, before: tuple[int, int] | None, sink: SinkInfo) -> dict[str, Any]:
    """Rank 0's summary of THIS run, from the driver's folder."""
    if _identity(path) in (None, before):
        raise HatRayError(f"training ended but rank 0's {SUMMARY} of this run is not in {path.parent} on this machine "
                          f"(node {sink.node_id[:8]}): its outputs did not reach the driver; see the Ray workers' logs")
    return json.loads(path.read_text())
