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


def test_a_node_with_another_python_minor_is_refused_with_one_line(testbed):
    """The head's Ray version on Debian trixie's Python 3.13 (build.sh step 7), started like the Pi
    (chrooted, start-node.sh from the checkout): refused although its node file sets the match
    level to minor, with one line naming both Python versions, and nothing left running."""
    import testbed as tb_module

    cache = tb_module.cache_dir()
    built = json.loads((cache / "testbed.json").read_text())
    rootfs = cache / "other-python-rootfs"
    head_py = subprocess.run([str(tb_module.VENV_BIN / "python"), "-c",
                              "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    other_py = built["other_python"]
    assert other_py.split(".")[:2] != head_py.split(".")[:2]
    node_env = ROOT / "deploy" / "testbed" / "nodes" / "worker-x86.env"
    assert "RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL=minor" in node_env.read_text()
    cmd, env = testbed.chroot_node_cmd(rootfs, node_env, f"--address={testbed.address}",
                                       f"--node-ip-address={testbed.info['ip']}", "--disable-usage-stats",
                                       tmp=testbed.state / "other-python-tmp")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
        left = testbed.processes_in(rootfs)
    finally:
        for pid in testbed.processes_in(rootfs):
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 2, proc.stdout[-1500:] + proc.stderr[-1500:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("start-node.sh: error: the cluster refused this node"), proc.stderr[-1500:]
    assert f"Python {other_py}" in last and f"Python {head_py}" in last, last
    assert last.count(f"Ray {built['ray']}") == 2, last  # the same Ray on both sides: the Python is refused
    assert not left, f"the refused node left processes behind: {left}"


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


TINY_EXPERIMENT = """
name: testbed
space: demo
out: {out}
devices:
  - profile: qemu_rpi4
    limits_ms: [p60]
data: {{name: synthetic, vocab_size: 300, valid_sentences: 40, test_sentences: 20}}
supernet: {{max_updates: 6, max_tokens: 512, warmup_updates: 2, validate_every: 3, save_every: 3,
           workers: 3, cpus_per_worker: 1}}
latency: {{archs: 10, holdout: 0.0}}
search: {{algorithm: hat, scorers: 2, population: 6, parents: 2, mutations: 2, crossovers: 2, iterations: 2,
         max_tokens: 1024}}
train: {{max_updates: 2, max_tokens: 512, warmup_updates: 1, baselines: [smallest], workers: 2}}
evaluate: {{beam: 1}}
"""


def test_pipeline_submitted_as_a_job_runs_across_the_cluster(testbed):
    """Supernet on 3 Ray Train workers over head + worker-x86 (2 CPUs each, so both nodes take
    part), latency on the Pi, scorers spread over both x86 nodes, winners trained: every artifact
    ends up in the head's output folder although worker-x86 cannot see it."""
    out = testbed.runs / "pipeline"
    exp = testbed.state / "testbed_experiment.yaml"
    exp.write_text(TINY_EXPERIMENT.format(out=out))
    env = testbed.driver_env()
    job = "hat-ray-testbed-pipeline"
    submit = subprocess.run(["ray", "job", "submit", "--address", testbed.dashboard_url, "--submission-id", job,
                             "--working-dir", str(ROOT), "--no-wait", "--", "hat-ray", "pipeline", str(exp)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert submit.returncode == 0, submit.stdout[-2000:] + submit.stderr[-2000:]
    deadline, status = time.time() + 1500, "PENDING"
    while time.time() < deadline and status in ("PENDING", "RUNNING"):
        time.sleep(5)
        status = subprocess.run(["ray", "job", "status", "--address", testbed.dashboard_url, job],
                                capture_output=True, text=True, env=env, timeout=120).stdout
        status = next((s for s in ("SUCCEEDED", "FAILED", "STOPPED", "RUNNING", "PENDING") if s in status.upper()), status)
    logs = subprocess.run(["ray", "job", "logs", "--address", testbed.dashboard_url, job], capture_output=True,
                          text=True, env=env, timeout=120).stdout
    assert status == "SUCCEEDED", f"job {status}: {logs[-4000:]}"

    state = json.loads((out / "pipeline.json").read_text())
    assert all(s in state["stages"] for s in ("supernet", "latency", "predictor", "search", "train", "evaluate",
                                              "report")), state
    summary = json.loads((out / "supernet" / "summary.json").read_text())
    assert summary["update"] == 6
    assert (out / "supernet" / "checkpoint_last.pt").is_file()
    from hat_ray.latency.dataset import LatencyDataset

    rows = LatencyDataset.load(out / "latency" / "measured.parquet").frame
    assert set(rows["platform"]) == {"aarch64"} and len(rows) >= 10
    results = list((out / "search").glob("*/result.json"))
    assert results and all(json.loads(r.read_text())["evaluations"] >= 1 for r in results)
    trained = [d for d in (out / "train").iterdir() if d.is_dir()]
    assert len(trained) >= 2 and all((d / "checkpoint_last.pt").is_file() for d in trained)
    assert len(list((out / "evaluate").glob("*.json"))) == len(trained)
    assert (out / "report.md").is_file()
