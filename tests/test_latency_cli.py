"""`hat-ray latency measure|collect|fit|eval`: outputs, and bad input as one line + exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from hat_ray.cli.main import main
from hat_ray.latency import DeviceProfile
from hat_ray.latency.dataset import HAT_COLUMNS
from hat_ray.space import SearchSpace

METRIC_KEYS = {"rmse_ms", "mape", "within_5", "within_10", "kendall_tau", "n", "unit"}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, out, err, needle):
    assert code == 2 and out == "", (code, out, err)
    assert err.count("\n") == 1 and err.startswith("hat-ray: error:") and "Traceback" not in err, err
    assert needle in err, err


@pytest.fixture
def tiny_profile(tmp_path):
    data = DeviceProfile.load("local_cpu").to_dict()
    data["name"] = "tiny_cpu"
    data["ray"] = {"resource": "device:tinycpu", "num_cpus": 1, "local": True, "label": {}}
    data["protocol"].update(warmup=0, runs=2, max_runs=2, tgt_len=2, vocab=64, min_cpu_share=0.0, max_attempts=1)
    path = tmp_path / "tiny_cpu.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_measure_arch_and_random(capsys, tmp_path, tiny_profile):
    arch = SearchSpace.load("demo").smallest()
    arch_path = tmp_path / "arch.yaml"
    arch_path.write_text(yaml.safe_dump(arch.to_hat()))
    code, out, err = run(capsys, "latency", "measure", "--device", tiny_profile, "--space", "demo", "--arch", arch_path, "--json")
    assert code == 0, err
    records = json.loads(out)
    assert len(records) == 1 and records[0]["arch_key"] == arch.key() and records[0]["device"] == "tiny_cpu"
    code, out, err = run(capsys, "latency", "measure", "--device", tiny_profile, "--space", "demo", "-n", 2, "--seed", 3)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 3 and " ms " in out and " x ref " in lines[0]
    assert lines[2].startswith("reference Arch ")  # the profile's reference protocol states its reference
    code, out, err = run(capsys, "latency", "measure", "--device", tiny_profile, "--space", "demo", "-n", 2,
                         "--protocol", "sequential")
    assert code == 0 and len(out.strip().splitlines()) == 2 and " x ref " not in out


def test_fit_eval_and_few_shot_on_hat_csv(capsys, tmp_path, shared_data):
    folder = shared_data / "hat_latency"
    xeon, pi = folder / "wmt14ende_cpu_xeon.csv.gz", folder / "wmt14ende_cpu_raspberrypi.csv.gz"
    pred = tmp_path / "xeon.npz"
    code, out, err = run(capsys, "latency", "fit", "--data", xeon, "--rows", "0:1800", "--out", pred, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["device"] == "xeon_e5_2640" and info["space"] == "wmt14_en_de" and info["n_train"] == 1800
    code, out, err = run(capsys, "latency", "eval", "--predictor", pred, "--data", xeon, "--rows", "1800:2000", "--json")
    metrics = json.loads(out)
    assert code == 0 and set(metrics) == METRIC_KEYS and metrics["n"] == 200 and metrics["mape"] < 4.5
    adapted = tmp_path / "pi.npz"
    code, out, err = run(capsys, "latency", "fit", "--base", pred, "--data", pi, "--rows", "0:1800", "--sample", 50,
                         "--seed", 1, "--out", adapted)
    assert code == 0 and "adapted from xeon_e5_2640" in out, err
    code, out, err = run(capsys, "latency", "eval", "--predictor", adapted, "--data", pi, "--rows", "1800:2000", "--json")
    assert code == 0 and json.loads(out)["mape"] < 5.0
    # rows the predictor was fit on, or another device's rows: refused
    code, out, err = run(capsys, "latency", "eval", "--predictor", pred, "--data", xeon, "--rows", "1000:2000", "--json")
    assert_one_line_error(code, out, err, "were used to fit the predictor")
    code, out, err = run(capsys, "latency", "eval", "--predictor", pred, "--data", pi, "--rows", "1800:2000")
    assert_one_line_error(code, out, err, "is for device xeon_e5_2640")


def hat_csv(path, mutate=None):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({c: rng.uniform(1, 5, 6) for c in HAT_COLUMNS})
    (mutate(frame) if mutate else frame).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("mutate, needle", [
    (lambda f: f.drop(columns=["latency_mean_decoder"]), "missing column 'latency_mean_decoder'"),
    (lambda f: f.assign(latency_mean_encoder=np.nan), "has missing or non-numeric values"),
    (lambda f: f.assign(latency_mean_decoder=-f["latency_mean_decoder"]), "'latency_mean_decoder' must be positive"),
])
def test_bad_hat_csv_leaves_existing_output_alone(capsys, tmp_path, mutate, needle):
    data = hat_csv(tmp_path / "bad.csv", mutate)
    out_file = tmp_path / "pred.npz"
    out_file.write_bytes(b"previous predictor")
    code, out, err = run(capsys, "latency", "fit", "--data", data, "--device", "x", "--space", "demo", "--out", out_file)
    assert_one_line_error(code, out, err, needle)
    assert out_file.read_bytes() == b"previous predictor"


def test_unknown_device_and_bad_arguments(capsys, tmp_path):
    code, out, err = run(capsys, "latency", "measure", "--device", "nope", "--space", "demo", "-n", 1)
    assert_one_line_error(code, out, err, "unknown device profile 'nope'")
    code, out, err = run(capsys, "latency", "measure", "--device", "local_cpu", "--space", "demo", "-n", 0)
    assert_one_line_error(code, out, err, "-n must be a positive integer")
    code, out, err = run(capsys, "latency", "eval", "--predictor", tmp_path / "none.npz", "--data", tmp_path / "d.csv")
    assert_one_line_error(code, out, err, "does not exist")
    code, out, err = run(capsys, "latency", "collect", "--space", "demo", "--device", "local_cpu", "-n", 2,
                         "--out", tmp_path / "x.csv")
    assert_one_line_error(code, out, err, "--out must be a .parquet dataset")


def test_predictor_for_another_space(capsys, tmp_path, shared_data):
    from tests.test_latency_predictor import as_dataset, synthetic

    archs, y = synthetic(60, seed=0)
    demo_data = tmp_path / "demo.parquet"
    as_dataset(archs, y).save(demo_data)
    pred = tmp_path / "demo.npz"
    code, out, err = run(capsys, "latency", "fit", "--data", demo_data, "--out", pred)
    assert code == 0, err
    hat_file = shared_data / "hat_latency" / "wmt14ende_gpu_titanxp.csv.gz"
    code, out, err = run(capsys, "latency", "eval", "--predictor", pred, "--data", hat_file, "--rows", "0:100")
    assert_one_line_error(code, out, err, "rows are from search space wmt14_en_de but the predictor is for space demo")
    renamed = tmp_path / "latency.csv"  # a CSV whose name says nothing: caught by its feature values
    renamed.write_bytes(pd.read_csv(hat_file).head(50).to_csv(index=False).encode())
    code, out, err = run(capsys, "latency", "eval", "--predictor", pred, "--data", renamed, "--device", "sim")
    assert_one_line_error(code, out, err, "outside the predictor's space demo")


def cli(*argv, env=None):
    return subprocess.run([sys.executable, "-m", "hat_ray.cli.main", *map(str, argv)], capture_output=True, text=True,
                          timeout=240, env={**os.environ, "RAY_DEDUP_LOGS": "0", **(env or {})})


def test_collect_starts_local_ray_and_fails_fast(capsys, tmp_path, tiny_profile):
    out = tmp_path / "local.parquet"
    first = cli("latency", "collect", "--space", "demo", "--device", tiny_profile, "-n", 3, "--out", out, "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)  # re-runs skipping done rows: test_latency_cluster.py
    assert summary["measured"] == {"tiny_cpu": 3} and summary["skipped"] == {"tiny_cpu": 0} and summary["rows"] == 3
    before = out.read_bytes()
    # a device this machine does not have: refused at once (no Ray started, nothing written)
    code, stdout, err = run(capsys, "latency", "collect", "--space", "demo", "--device", tiny_profile,
                            "--device", "raspberrypi4", "-n", 5, "--out", out)
    assert_one_line_error(code, stdout, err, "raspberrypi4 (resource device:rpi4")
    assert out.read_bytes() == before
