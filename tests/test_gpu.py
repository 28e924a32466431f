"""CUDA paths, skipped where torch sees no GPU (CI has none; run on a GPU machine with
`python -m pytest tests/test_gpu.py`): supernet training on the GPU and its checkpoint read on a
CPU-only host, resume across devices, Ray Train with nccl, latency measured with CUDA events, and
search scorers on the GPU scoring what CPU scorers score."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml
from search_helpers import write_fake_predictor, write_supernet_checkpoint
from test_train_cli import run as cli
from test_train_cli import supernet
from tiny_space import tiny_space_dict, write_tiny_run_inputs

from hat_ray.checkpoint import load_checkpoint
from hat_ray.latency import DeviceProfile
from hat_ray.search.searcher import read_log
from hat_ray.space import SearchSpace
from hat_ray.train.config import TrainConfig
from hat_ray.train.run import DataOptions, make_spec

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TINY = tiny_space_dict()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return write_tiny_run_inputs(tmp_path_factory.mktemp("gpu"))


def losses(out):
    return {r["update"]: r["loss"] for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())}


def test_supernet_trains_on_the_gpu_and_its_checkpoint_evaluates_without_one(env, capsys):
    out = env / "gpu_super"
    code, stdout, err = cli(capsys, *supernet(env, out, "--max-updates", "4", "--gpu", "--json"))
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["update"] == 4 and math.isfinite(summary["valid_loss_largest"])
    raw = torch.load(out / "checkpoint_last.pt", weights_only=True)  # no map_location: where it was saved from
    assert all(t.device.type == "cpu" for t in raw["model"].values())
    # a CPU-only host (no visible GPU) evaluates it
    proc = subprocess.run([sys.executable, "-m", "hat_ray.cli.main", "evaluate", "--checkpoint",
                           str(out / "checkpoint_last.pt"), "--data", str(env / "data"), "--split", "test",
                           "--beam", "1", "--json"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert math.isfinite(json.loads(proc.stdout)["valid_loss"])


def test_resume_moves_between_cpu_and_gpu(env, capsys):
    cpu, gpu = env / "resume_cpu", env / "resume_gpu"
    for out, flags in ((cpu, []), (gpu, ["--gpu"])):
        code, _, err = cli(capsys, *supernet(env, out, "--max-updates", "2", *flags))
        assert code == 0, err
    code, _, err = cli(capsys, *supernet(env, cpu, "--max-updates", "4", "--resume", "--gpu"))  # CPU run -> GPU
    assert code == 0, err
    code, _, err = cli(capsys, *supernet(env, gpu, "--max-updates", "4", "--resume"))  # GPU run -> CPU
    assert code == 0, err
    a, b = losses(cpu), losses(gpu)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    # same seed, same batches, same Archs: the two devices agree to float rounding
    # (dropout masks come from each device's own generator, hence the loose tolerance)
    assert all(abs(a[u] - b[u]) < 0.05 * abs(a[u]) for u in a), (a, b)


def test_ray_train_worker_trains_on_the_gpu_with_nccl(ray_local, env):
    from hat_ray.train.ray_train import train_distributed

    if ray_local.cluster_resources().get("GPU", 0) < 1:
        pytest.skip("the local Ray instance sees no GPU")
    cfg = TrainConfig(max_updates=3, max_tokens=300, warmup_updates=1, validate_every=3, save_every=3, log_every=1,
                      progress=False, tensorboard=False, trace=True)
    out = env / "ray_gpu"
    summary = train_distributed(make_spec(SearchSpace.from_dict(TINY), cfg,
                                          DataOptions(str(env / "data"), vocab_size=350), out), 1, 1, use_gpu=True)
    assert summary["update"] == 3 and math.isfinite(summary["valid_loss_largest"])
    # one rank on one GPU: the nccl group is real (parameter broadcast, validation sums moved to the GPU
    # and back); gradients need no all-reduce with one rank (tests/test_train_ray.py checks two, on gloo)
    rows = [json.loads(x) for x in (out / "trace" / "rank0.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == [1, 2, 3]
    assert load_checkpoint(out / "checkpoint_last.pt")["progress"]["update"] == 3


@pytest.fixture(scope="module")
def gpu_profile(env):
    profile = DeviceProfile.load("cuda_gpu").to_dict()
    profile["protocol"].update(warmup=2, runs=5, max_runs=5, max_attempts=1)
    path = env / "gpu_profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def test_latency_is_measured_on_the_gpu(env, capsys, gpu_profile):
    space = SearchSpace.load("demo")
    arch_paths = []
    for name, arch in (("small", space.smallest()), ("large", space.largest())):
        arch_paths.append(env / f"{name}.yaml")
        arch_paths[-1].write_text(yaml.safe_dump(arch.to_hat()))
    ms = []
    for arch_path in arch_paths:
        code, out, err = cli(capsys, "latency", "measure", "--device", gpu_profile, "--space", "demo", "--arch", arch_path,
                             "--json")
        assert code == 0, err
        (record,) = json.loads(out)
        assert record["device"] == "cuda_gpu"
        ms.append(record["latency_ms"])
    assert 0 < ms[0] < ms[1] < 10_000, ms  # the larger Arch has more layers to run: slower


def test_latency_collect_runs_a_gpu_actor_on_the_local_ray(env, gpu_profile):
    out = env / "gpu.parquet"
    proc = subprocess.run([sys.executable, "-m", "hat_ray.cli.main", "latency", "collect", "--space", "demo",
                           "--device", str(gpu_profile), "-n", "3", "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HAT_RAY_DASHBOARD": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["measured"] == {"cuda_gpu": 3} and summary["rows"] == 3
    rows = pd.read_parquet(out)
    assert (rows["device"] == "cuda_gpu").all() and (rows["latency_ms"] > 0).all()


def _search(ckpt, pred, out, *extra):
    cmd = [sys.executable, "-m", "hat_ray.cli.main", "search", "--supernet", str(ckpt), "--data", "synthetic",
           "--device", "fake:30", "--predictor", f"fake:{pred}", "--out", str(out), "--scorers", "1",
           "--valid-sentences", "40", "--seed", "3", "--population", "8", "--parents", "3", "--mutations", "3",
           "--crossovers", "2", "--iterations", "2", "--json", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HAT_RAY_DASHBOARD": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {e["key"]: e["valid_loss"] for e in read_log(out / "evaluations.jsonl")}


def test_gpu_scorers_score_what_cpu_scorers_score(tmp_path):
    write_supernet_checkpoint(tmp_path / "super.pt")
    write_fake_predictor(tmp_path / "fake.pred")
    cpu = _search(tmp_path / "super.pt", tmp_path / "fake.pred", tmp_path / "cpu")
    gpu = _search(tmp_path / "super.pt", tmp_path / "fake.pred", tmp_path / "gpu", "--gpu")
    common = set(cpu) & set(gpu)
    assert len(common) >= 8  # at least the random first generation (same seed)
    assert all(abs(cpu[k] - gpu[k]) < 1e-3 for k in common), [(cpu[k], gpu[k]) for k in common]
