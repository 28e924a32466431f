"""hat-ray on a real heterogeneous cluster: the testbed's x86 head, an x86 worker that cannot see
the head's files, and an emulated aarch64 Raspberry Pi with its own Python (see conftest.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HAT_RAY = ROOT / ".venv" / "bin" / "hat-ray"


def hat_ray(testbed, *args: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(HAT_RAY), *args], capture_output=True, text=True, env=testbed.driver_env(),
                          timeout=timeout, cwd=str(ROOT), **kw)


def test_cluster_status_lists_three_nodes_with_arch_python_and_devices(testbed):
    proc = hat_ray(testbed, "cluster", "status", "--address", testbed.address, "--json", timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = json.loads(proc.stdout)
    alive = [n for n in status["nodes"] if n["alive"]]
    assert len(alive) == 3
    by_device = {tuple(sorted(n["devices"])): n for n in alive}
    pi = by_device[("device:qemu_rpi4",)]
    x86 = [n for n in alive if n is not pi]
    assert pi["arch"] == "aarch64" and pi["python"].startswith("3.11.") and not pi["head"]
    assert {n["arch"] for n in x86} == {"x86_64"} and all(n["devices"] == {"device:cpu": 1.0} for n in x86)
    assert sum(n["head"] for n in x86) == 1
    assert pi["python"] != x86[0]["python"]  # Debian's 3.11.2 next to the head's build: match level minor
    assert status["devices"]["qemu_rpi4"]["nodes"] == [pi["node_id"]]
    assert sorted(status["devices"]["local_cpu"]["nodes"]) == sorted(n["node_id"] for n in x86)


def test_latency_on_the_emulated_pi_survives_losing_its_raylet(testbed):
    out = testbed.runs / "pi_latency.parquet"
    args = ("latency", "collect", "--space", "demo", "--device", "qemu_rpi4", "-n", "4", "--seed", "3",
            "--out", str(out), "--address", testbed.address)
    proc = subprocess.Popen([str(HAT_RAY), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=testbed.driver_env(), cwd=str(ROOT))
    try:
        deadline = time.time() + 420
        while time.time() < deadline and proc.poll() is None and not _journal_rows(out):
            time.sleep(2)
        assert proc.poll() is None, f"collection ended before the node was killed: {proc.communicate()[1][-2000:]}"
        assert _journal_rows(out) >= 1, "no row measured on the Pi in 7 minutes"
        os.kill(testbed.raylet_pid("pi"), signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, err[-2000:]
    lines = err.strip().splitlines()
    assert lines[-1].startswith("hat-ray: error:") and "qemu_rpi4" in lines[-1] and "Traceback" not in err
    kept = _journal_rows(out)
    assert 1 <= kept < 4

    # the Pi comes back (a new node id); the re-run measures only what is missing
    testbed.stop("pi")
    testbed.up()
    done = hat_ray(testbed, *args, "--json", timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    from hat_ray.latency.dataset import LatencyDataset

    frame = LatencyDataset.load(out).frame
    assert len(frame) == 4 and frame["arch_key"].is_unique
    assert set(frame["platform"]) == {"aarch64"} and set(frame["device"]) == {"qemu_rpi4"}
    assert frame["python_version"].str.startswith("3.11.").all()
    assert frame["node_id"].nunique() == 2  # rows from before and after the restart, none measured twice


def _journal_rows(out: Path) -> int:
    """Rows written so far (the dataset's journal while collecting, else the dataset)."""
    from hat_ray.latency.dataset import LatencyDataset

    try:
        return len(LatencyDataset.load(out).frame)
    except Exception:  # noqa: BLE001 - nothing written yet
        return 0


def test_a_node_with_another_ray_version_is_refused_with_one_line(testbed):
    import testbed as tb_module

    other = tb_module.cache_dir() / "other-ray-venv" / "bin"
    node_env = testbed.state / "other.env"
    node_env.write_text((ROOT / "deploy" / "testbed" / "nodes" / "worker-x86.env").read_text())
    env = testbed.driver_env()
    env.update(PATH=f"{other}:/usr/bin:/bin", HAT_RAY_NODE_ENV=str(node_env))
    proc = subprocess.run(["bash", str(ROOT / "deploy" / "start-node.sh"), f"--address={testbed.address}",
                           f"--temp-dir={testbed.state / 'ray' / 'other'}", "--disable-usage-stats"],
                          capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 2, proc.stdout[-1500:] + proc.stderr[-1500:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("start-node.sh: error: the cluster refused this node")
    assert "2.60.0" in last and "Ray 2.59" in last


def _wait_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.is_file() and len(path.read_text().splitlines()) >= n:
            break
        time.sleep(0.5)
    return len(path.read_text().splitlines()) if path.is_file() else 0


def test_search_survives_losing_the_x86_worker_without_scoring_twice(testbed):
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from search_helpers import write_fake_predictor, write_supernet_checkpoint

    work = testbed.runs / "search_loss"
    work.mkdir(parents=True, exist_ok=True)
    write_supernet_checkpoint(work / "super.pt")
    write_fake_predictor(work / "fake.pred")
    out = work / "search"
    args = ["search", "--supernet", str(work / "super.pt"), "--data", "synthetic", "--device", "fake:30",
            "--predictor", f"fake:{work / 'fake.pred'}", "--out", str(out), "--scorers", "2",
            "--valid-sentences", "200", "--seed", "1", "--budget", "60", "--population", "12", "--parents", "4",
            "--mutations", "4", "--crossovers", "4", "--iterations", "5", "--address", testbed.address, "--json"]
    proc = subprocess.Popen([str(HAT_RAY), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=testbed.driver_env(), cwd=str(ROOT))
    try:
        seen = _wait_lines(out / "evaluations.jsonl", 8, proc, timeout=300)
        assert proc.poll() is None and seen >= 8, f"search ended or stalled before the kill: {seen} evaluations"
        testbed.stop("worker-x86", grace=0)  # SIGTERM + SIGKILL of every process of that node
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
        testbed.up()  # the next tests get their three nodes back
    assert proc.returncode == 0, stderr[-3000:]
    result = json.loads(stdout)
    keys = [json.loads(line)["key"] for line in (out / "evaluations.jsonl").read_text().splitlines() if line.strip()]
    assert len(keys) == len(set(keys)) == result["evaluations"] >= seen  # nothing scored twice
