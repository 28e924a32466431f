"""Latency backends (hat_ray.latency.backends): every registered runtime measures an Arch with the
shared protocol (sequential and reference), records carry their runtime, profiles validate the
runtime against the registry, and datasets / predictors never mix runtimes.

Backends join the contract tests below by being registered (NAMES is read at import), as search
engines join tests/test_engine_contract.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hat_ray.cli.main import main
from hat_ray.errors import ConfigError, DataError, DeviceError
from hat_ray.latency import DeviceProfile, LatencyDataset, LatencyPredictor
from hat_ray.latency.backends import BACKENDS, Backend, Work, backend_for, register
from hat_ray.latency.dataset import COLUMNS
from hat_ray.latency.measure import ReferenceBench, measure, measure_many, reference_arch
from hat_ray.space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
NAMES = list(BACKENDS)  # collected at import: a newly registered backend is tested automatically
SPACE = SearchSpace.load("demo")
FAST = dict(warmup=1, runs=3, max_runs=3, tgt_len=3, vocab=64, min_cpu_share=0.0, max_attempts=1)


def profile(runtime: str, name: str | None = None, **protocol) -> DeviceProfile:
    """local_cpu with ``runtime`` and a fast protocol (sequential unless told)."""
    data = DeviceProfile.load("local_cpu").to_dict()
    data.update(name=name or f"test_{runtime}", runtime=runtime)
    data["protocol"].update({**FAST, "mode": "sequential", **protocol})
    return DeviceProfile.from_dict(data)


def skip_if_missing(runtime: str) -> None:
    missing = BACKENDS[runtime].missing()
    if missing:
        pytest.skip(f"runtime {runtime} needs {', '.join(missing)}")


@pytest.mark.parametrize("runtime", NAMES)
def test_every_backend_measures_an_arch_with_the_shared_protocol(runtime):
    skip_if_missing(runtime)
    arch = SPACE.latency_space().sample(np.random.default_rng(0))
    rec = measure(arch, profile(runtime), SPACE)
    assert set(rec) == set(COLUMNS)
    assert rec["runtime"] == runtime and rec["runtime_version"] and rec["setup_s"] > 0
    assert rec["encoder_ms"] > 0 and rec["decoder_ms"] > 0
    assert rec["latency_ms"] == pytest.approx(rec["encoder_ms"] + rec["decoder_ms"])
    assert rec["encoder_runs"] == rec["decoder_runs"] == 3 and rec["threads"] == 1
    assert rec["device"] == f"test_{runtime}" and rec["arch_key"] == arch.key() and rec["latency_ref"] is None


@pytest.mark.parametrize("runtime", NAMES)
def test_reference_protocol_with_every_backend(runtime, monkeypatch):
    skip_if_missing(runtime)
    bench = ReferenceBench(profile(runtime, mode="reference", rounds=3, max_rounds=3, vocab=256), SPACE)
    built = []
    workloads = bench.backend.workloads
    monkeypatch.setattr(bench.backend, "workloads", lambda space, arch, *a: built.append(arch) or workloads(space, arch, *a))
    small, large = SPACE.smallest(), SPACE.largest()
    recs = bench.measure([small, large])
    recs += bench.measure([small])
    ref = reference_arch(SPACE)
    assert built == [ref, small, large, small]  # the reference's workloads built once per bench
    for rec in recs:
        assert set(rec) == set(COLUMNS) and rec["runtime"] == runtime and rec["reference_key"] == ref.key()
        assert rec["latency_ref"] > 0 and rec["reference_ms"] > 0 and rec["setup_s"] > 0
        assert len(json.loads(rec["reference_ms_rounds"])) == 3
    assert recs[0]["latency_ref"] < recs[1]["latency_ref"]  # the smallest Arch is faster than the largest
    assert measure_many([small], profile(runtime, mode="reference", rounds=2, max_rounds=2), SPACE)[0]["runtime"] == runtime


def test_int8_quantizes_every_projection():
    import torch
    from torch import nn

    from hat_ray.latency.backends.torch_eager import static_model
    from hat_ray.latency.backends.torch_int8 import quantize
    from hat_ray.model.layers import ElasticLinear

    arch = SPACE.latency_space().sample(np.random.default_rng(2))
    src, prev = torch.randint(4, 300, (2, 9)), torch.randint(4, 300, (2, 5))
    with torch.no_grad():
        fp32 = static_model(SPACE, arch, 300, 0)(src, prev)
        model = quantize(static_model(SPACE, arch, 300, 0))
        int8 = model(src, prev)
    dynamic = [m for m in model.modules() if type(m) is torch.ao.nn.quantized.dynamic.Linear]
    # per encoder layer: Q/K/V, attention out, fc1, fc2; per decoder layer also cross Q, K|V and out; the output
    assert len(dynamic) == 4 * arch.encoder_layers + 7 * arch.decoder_layers + 1
    assert not [m for m in model.modules() if type(m) in (nn.Linear, ElasticLinear)]
    assert np.corrcoef(fp32.flatten(), int8.flatten())[0, 1] > 0.99  # the same model, int8 weights
    assert int8.shape == fp32.shape


def test_onnxruntime_decoder_computes_what_torch_computes():
    skip_if_missing("onnxruntime")
    arch = SPACE.latency_space().sample(np.random.default_rng(4))
    results = {}
    for runtime in ("torch", "onnxruntime"):
        backend = backend_for(profile(runtime, tgt_len=4, vocab=128))
        with backend.running():
            work = backend.workloads(SPACE, arch, 128, 0)
            logits, encoded = work.decode(), work.encode()
        results[runtime] = np.asarray(logits).reshape(5, 128)  # beam rows of the last step
    assert len(encoded) == 1 + 2 * arch.decoder_layers  # src_pad and every decoder layer's cross K and V
    np.testing.assert_allclose(results["onnxruntime"], results["torch"], rtol=1e-3, atol=1e-3)


# ---- profiles ----
def test_bundled_runtime_profiles():
    for name, runtime, resource in (("local_cpu_ort", "onnxruntime", "device:cpu_ort"),
                                    ("local_cpu_int8", "torch-int8", "device:cpu_int8")):
        p, cpu = DeviceProfile.load(name), DeviceProfile.load("local_cpu")
        assert (p.name, p.runtime, p.ray.resource, p.ray.local) == (name, runtime, resource, True)
        assert p.protocol == cpu.protocol and p.threads == cpu.threads == 1  # local_cpu's reference protocol
        assert DeviceProfile.from_dict(p.to_dict()) == p
    assert DeviceProfile.load("local_cpu").runtime == "torch"  # the default


def test_runtime_validation_names_the_choices():
    data = DeviceProfile.load("local_cpu").to_dict()
    with pytest.raises(ConfigError) as info:
        DeviceProfile.from_dict({**data, "runtime": "tensorrt"})
    assert info.value.problems == [f"runtime must be one of {[*NAMES, 'simulated']}, got 'tensorrt'"]  # simulated: hat_ray.latency.accelerator
    with pytest.raises(ConfigError, match="runtime must be one of"):
        DeviceProfile.from_dict({**data, "runtime": ["torch"]})
    for runtime in ("onnxruntime", "torch-int8"):
        with pytest.raises(ConfigError, match=f"runtime {runtime} measures on device cpu only, not 'cuda'"):
            DeviceProfile.from_dict({**data, "runtime": runtime, "device": "cuda"})
    with pytest.raises(ConfigError, match="runtime torch-int8 measures dtype float32 only, not 'float16'"):
        DeviceProfile.from_dict({**data, "runtime": "torch-int8", "dtype": "float16"})
    assert DeviceProfile.from_dict({**data, "runtime": "torch", "device": "cuda", "dtype": "float16"}).runtime == "torch"


def test_missing_runtime_package_is_a_clear_device_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    p = profile("onnxruntime")  # loading the profile needs no runtime: only measuring does
    with pytest.raises(DeviceError, match=r"runtime onnxruntime needs the Python package onnxruntime, not installed "
                                          r"here: `pip install hat-ray\[runtimes\]`"):
        measure(SPACE.smallest(), p, SPACE)
    code = main(["latency", "measure", "--device", "local_cpu_ort", "--space", "demo", "-n", "1"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1 and "pip install hat-ray[runtimes]" in err, err


@pytest.fixture
def throwaway():
    """A backend registered by a test: a fixed 2 ms encoder and 3 ms decoder (sleeps)."""

    class Sleepy(Backend):
        name = "sleepy-test"
        description = "sleeps instead of computing"

        def version(self) -> str:
            return "0"

        def workloads(self, space, arch, vocab, seed):
            return Work(lambda: time.sleep(0.002), lambda: time.sleep(0.003), 0.0)

    register(Sleepy)
    yield Sleepy
    BACKENDS.pop(Sleepy.name)


def test_a_registered_backend_is_a_runtime_without_touching_the_protocol(throwaway):
    with pytest.raises(ValueError, match="already registered"):
        register(throwaway)
    with pytest.raises(ConfigError, match="sleepy-test"):  # the choices come from the registry
        profile("nope")
    with pytest.raises(ConfigError, match="runtime sleepy-test measures on device cpu only"):
        DeviceProfile.from_dict({**profile("sleepy-test").to_dict(), "device": "cuda"})
    rec = measure(SPACE.smallest(), profile("sleepy-test"), SPACE)
    assert rec["runtime"] == "sleepy-test" and 1.9 < rec["encoder_ms"] < 20 and 2.9 < rec["decoder_ms"] < 20
    ref = measure(SPACE.smallest(), profile("sleepy-test", mode="reference", rounds=3, max_rounds=3), SPACE)
    assert ref["latency_ref"] == pytest.approx(1.0, rel=0.5)  # the same sleeps as the reference's


# ---- datasets and predictors keep runtimes apart ----
def rows(device: str, runtime: str | None, n: int = 12, seed: int = 0) -> pd.DataFrame:
    """``n`` fake records of demo Archs (latency grows with FLOPs-like features)."""
    from hat_ray.arch import FEATURE_NAMES

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        arch = SPACE.latency_space().sample(rng)
        rec = {"space": "demo", "device": device, "arch_key": arch.key(), "arch": json.dumps(arch.to_dict()),
               "runtime": runtime, **dict(zip(FEATURE_NAMES, arch.features(), strict=True))}
        rec["latency_ms"] = rec["encoder_ms"] = 1 + sum(arch.features()) / 500
        rec["decoder_ms"] = 0.0
        out.append(rec)
    return pd.DataFrame(out)


def test_collect_refuses_to_mix_runtimes_under_one_device(tmp_path):
    from hat_ray.latency.probe import existing_keys

    out = tmp_path / "lat.parquet"
    LatencyDataset(rows("local_cpu", None), source="old").save(out)  # written before runtimes were recorded
    assert LatencyDataset.load(out).runtimes() == ["torch"]
    seq = [profile("torch", name="local_cpu"), profile("onnxruntime", name="local_cpu")]
    assert len(existing_keys(out, "demo", [seq[0]])) == 12  # torch rows extend torch rows
    with pytest.raises(ConfigError, match="holds local_cpu rows measured with runtime torch, and this profile uses "
                                          "runtime onnxruntime"):
        existing_keys(out, "demo", [seq[1]])
    assert len(existing_keys(out, "demo", [profile("onnxruntime", name="local_cpu_ort")])) == 12  # another device


def test_a_predictor_is_for_one_runtime(tmp_path):
    mixed = LatencyDataset(pd.concat([rows("cpu", "torch", seed=1), rows("cpu", "onnxruntime", seed=2)]), source="mixed")
    with pytest.raises(DataError, match="several runtimes"):
        LatencyPredictor.fit(mixed, space=SPACE)
    ort = LatencyPredictor.fit(LatencyDataset(rows("cpu", "onnxruntime", seed=3), source="ort"), space=SPACE)
    assert ort.runtime == "onnxruntime"
    ort.save(tmp_path / "ort.npz")
    assert LatencyPredictor.load(tmp_path / "ort.npz").runtime == "onnxruntime"
    with pytest.raises(DataError, match="measured with runtime torch but the predictor is for cpu with runtime "
                                        "onnxruntime"):
        ort.paired(LatencyDataset(rows("cpu", None, seed=4), source="torch rows"))
    assert LatencyPredictor.fit(LatencyDataset(rows("cpu", None), source="old"), space=SPACE).runtime == "torch"


# ---- CLI ----
def test_cli_measure_contract_local_cpu_ort(capsys):
    skip_if_missing("onnxruntime")
    code = main(["latency", "measure", "--device", "local_cpu_ort", "--space", "demo", "-n", "2", "--seed", "1", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    recs = json.loads(out)
    rng = np.random.default_rng(1)
    assert [r["arch_key"] for r in recs] == [SPACE.latency_space().sample(rng).key() for _ in range(2)]
    for rec in recs:
        assert set(rec) == set(COLUMNS) and rec["device"] == "local_cpu_ort" and rec["runtime"] == "onnxruntime"
        assert rec["latency_ms"] > 0 and rec["latency_ref"] > 0 and rec["setup_s"] > 0


def test_cli_collect_and_fit_with_onnxruntime(tmp_path):
    """`latency collect` starts local Ray with the profile's own resource (device:cpu_ort) and the
    probe measures with ONNX Runtime; `latency fit` fits the rows (reference units)."""
    skip_if_missing("onnxruntime")
    data = DeviceProfile.load("local_cpu_ort").to_dict()
    data["protocol"].update(warmup=0, runs=2, max_runs=2, tgt_len=2, vocab=64, min_cpu_share=0.0, rounds=2,
                            max_rounds=2)
    path = tmp_path / "local_cpu_ort.yaml"
    path.write_text(yaml.safe_dump(data))
    out, pred = tmp_path / "ort.parquet", tmp_path / "ort.npz"
    env = {**os.environ, "HAT_RAY_DASHBOARD": "0", "RAY_DEDUP_LOGS": "0"}
    hat_ray = [sys.executable, "-m", "hat_ray.cli.main"]
    collected = subprocess.run([*hat_ray, "latency", "collect", "--space", "demo", "--device", str(path), "-n", "4",
                                "--out", str(out), "--json"], capture_output=True, text=True, timeout=240, env=env)
    assert collected.returncode == 0, collected.stderr
    assert json.loads(collected.stdout)["measured"] == {"local_cpu_ort": 4}
    frame = LatencyDataset.load(out).frame
    assert set(frame["runtime"]) == {"onnxruntime"} and frame["node_id"].notna().all()
    fitted = subprocess.run([*hat_ray, "latency", "fit", "--data", str(out), "--out", str(pred), "--json"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert fitted.returncode == 0, fitted.stderr
    info = json.loads(fitted.stdout)
    assert info["device"] == "local_cpu_ort" and info["runtime"] == "onnxruntime" and info["unit"] == "ref"
