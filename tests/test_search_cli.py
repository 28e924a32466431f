"""`hat-ray search` end to end in a subprocess: a full run with 2 scorers, bad input, and a
driver SIGKILLed mid-search then --resume'd with no lost or duplicated evaluations."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from search_helpers import write_fake_predictor, write_supernet_checkpoint

from hat_ray.search.pool import read_journal
from hat_ray.search.searcher import read_log

EVO = ["--population", "10", "--parents", "4", "--mutations", "4", "--crossovers", "2", "--iterations", "6"]
EXPECTED = 10 + 5 * 6  # generation 0 + 5 generations of 6 new children (parents never re-scored)


def _cmd(inputs: dict, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hat_ray.cli.main", "search", "--supernet", str(inputs["ckpt"]), "--data",
            "synthetic", "--device", "fake:30", "--predictor", f"fake:{inputs['pred']}", "--out", str(out),
            "--scorers", "2", "--valid-sentences", "40", "--seed", "3", *EVO, *extra]


def _env() -> dict:
    return {**os.environ, "HAT_RAY_DASHBOARD": "0", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("search_cli")
    write_supernet_checkpoint(root / "super.pt")
    write_fake_predictor(root / "fake.pred")
    return {"root": root, "ckpt": root / "super.pt", "pred": root / "fake.pred"}


@pytest.fixture(scope="module")
def full_run(inputs):
    out = inputs["root"] / "full"
    proc = subprocess.run(_cmd(inputs, out, "--json"), capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Configuration for experiment" not in proc.stderr  # no Tune banner: hat-ray reports progress itself
    return out, json.loads(proc.stdout)


def test_full_search_with_two_scorers(full_run):
    out, result = full_run
    assert result["evaluations"] == EXPECTED and result["scorers"] == 2
    entries = read_log(out / "evaluations.jsonl")
    assert len(entries) == EXPECTED and len({e["key"] for e in entries}) == EXPECTED
    trials = pd.read_parquet(out / "trials.parquet")
    assert (trials["latency_fake"] <= 30).all()
    assert result["best"]["valid_loss"] == pytest.approx(trials["valid_loss"].min())
    for name in ("best_arch.yaml", "best_arch_hat.yaml", "pareto.png", "result.json"):
        assert (out / name).exists()


def test_killed_driver_resumes_without_lost_or_duplicated_evaluations(inputs, full_run):
    out = inputs["root"] / "killed"
    log = out / "evaluations.jsonl"
    proc = subprocess.Popen(_cmd(inputs, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(),
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and (not log.exists() or len(read_log(log)) < 15):
            assert proc.poll() is None, "search ended before it could be killed"
            time.sleep(0.2)
        assert len(read_log(log)) >= 15
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait()
    done_before = len(read_log(log))
    assert done_before < EXPECTED
    _settled(out / "scored.jsonl")  # Ray workers outside the process group die a moment later
    journaled = read_journal(out / "scored.jsonl")  # scored by the pool, logged or not
    assert len(journaled) >= done_before
    resumed = subprocess.run(_cmd(inputs, out, "--resume", "--json"), capture_output=True, text=True, env=_env(),
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    entries = read_log(log)
    keys = [e["key"] for e in entries]
    assert len(keys) == len(set(keys)) == EXPECTED  # nothing lost, nothing evaluated twice
    # nothing scored twice either: the resumed run scored exactly what the journal did not hold
    assert json.loads(resumed.stdout)["scored"] + len(journaled) == EXPECTED
    # the generational engine retraces the interrupted run: same Archs, same best as undisturbed
    full_out, full_result = full_run
    assert set(keys) == {e["key"] for e in read_log(full_out / "evaluations.jsonl")}
    assert json.loads(resumed.stdout)["best"]["key"] == full_result["best"]["key"]


def _settled(path: Path, quiet_s: float = 3.0, limit_s: float = 60.0) -> None:
    """Wait until ``path`` has not grown for ``quiet_s`` (a killed run's last writers are gone)."""
    deadline, size, since = time.time() + limit_s, -1, time.time()
    while time.time() < deadline:
        now = path.stat().st_size if path.exists() else 0
        if now != size:
            size, since = now, time.time()
        elif time.time() - since >= quiet_s:
            return
        time.sleep(0.2)


@pytest.mark.parametrize("args, needle", [
    (["--device", "fake:-5"], "limit must be a positive"),
    (["--device", "fake:abc"], "is not a latency in ms"),
    (["--device", "fake:1.2ref"], "the predictor for fake is in ms"),
    (["--device", "fake:0ref"], "limit must be a positive"),
    (["--mutation-prob", "7"], "--mutation-prob must be in [0, 1], got 7.0"),
    (["--fidelity", "0"], "--fidelity must be in (0, 1] (1: no slice), got 0.0"),
    (["--promote", "1.5"], "--promote must be in (0, 1], got 1.5"),
    (["--algorithm", "steady", "--fidelity", "0.1"],
     "--fidelity is set but --algorithm steady does not use it (it takes --population, --parents, --mutation-prob)"),
    (["--device", "other:30"], "no latency predictor for device(s) other"),
    (["--predictor", "nocolon"], "expected DEVICE:PATH"),
    (["--scorers", "0"], "--scorers must be at least 1"),
    (["--scorer-slots", "0"], "--scorer-slots must be at least 1"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--address", "127.0.0.1:9"], "cannot reach a Ray cluster"),
])
def test_bad_search_input_one_line_exit_2(inputs, tmp_path, args, needle):
    cmd = [sys.executable, "-m", "hat_ray.cli.main", "search", "--supernet", str(inputs["ckpt"]), "--data",
           "synthetic", "--out", str(tmp_path / "o"), "--predictor", f"fake:{inputs['pred']}"]
    if not any(a == "--device" for a in args):
        cmd += ["--device", "fake:30"]
    proc = subprocess.run(cmd + args, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hat-ray: error")]
    assert len(errors) == 1 and needle in errors[0] and "Traceback" not in proc.stderr


def test_resume_refuses_other_options_and_fresh_run_refuses_existing(inputs, full_run, tmp_path):
    out, _ = full_run
    proc = subprocess.run(_cmd(inputs, out), capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 2 and "pass --resume" in proc.stderr
    before = (out / "evaluations.jsonl").read_text()
    changed = [a if a != "3" else "4" for a in _cmd(inputs, out, "--resume", "--max-tokens", "512")]
    proc = subprocess.run(changed, capture_output=True, text=True, env=_env(), timeout=300)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hat-ray: error")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert "--seed was 3, now 4" in errors[0] and "--max-tokens (the scoring batch) was 4096, now 512" in errors[0]
    assert (out / "evaluations.jsonl").read_text() == before  # nothing destroyed
    # fewer scorers and another thread count only change the speed: a resume with them is accepted
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    proc = subprocess.run(_cmd(inputs, copy, "--resume", "--json", "--scorers", "1"), capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["evaluations"] == EXPECTED and read_log(copy / "evaluations.jsonl") == \
        read_log(out / "evaluations.jsonl")  # nothing re-scored
