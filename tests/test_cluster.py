"""`hat-ray cluster status`, and a search submitted as a Ray job to a real `ray start --head`
cluster (what deploy/README.md tells a user to do), all in subprocesses."""

from __future__ import annotations

import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from ray_nodes import free_ports, stop_ray_start
from search_helpers import write_fake_predictor, write_supernet_checkpoint

BIN = Path(sys.executable).parent  # the venv's `ray` and `hat-ray` sit next to its python
DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
needs_deploy = pytest.mark.skipif(not DEPLOY.is_dir(), reason="deploy/ is not part of this copy (e.g. an sdist)")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "PYTHONUNBUFFERED": "1", "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", **extra}


def _cli(*argv: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hat_ray.cli.main", *argv], capture_output=True, text=True,
                          timeout=timeout, env=_env())


def test_cluster_status_json_on_a_local_instance():
    proc = _cli("cluster", "status", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = json.loads(proc.stdout)
    assert set(status) >= {"address", "nodes", "devices"} and status["address"]
    [node] = status["nodes"]
    assert node["alive"] and node["cpus"] >= 1 and node["memory_bytes"] > 0
    assert node["devices"] == {"device:cpu": 1.0, "device:cpu_int8": 1.0, "device:cpu_ort": 1.0}  # the local profiles
    assert status["devices"]["local_cpu"] == {"resource": "device:cpu", "labels": {}, "nodes": [node["node_id"]]}
    assert status["devices"]["raspberrypi4"]["resource"] == "device:rpi4"
    assert status["devices"]["raspberrypi4"]["nodes"] == []


def test_cluster_status_unreachable_address_is_one_line_exit_2():
    proc = _cli("cluster", "status", "--address", "127.0.0.1:1", timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("hat-ray: error: cannot reach a Ray cluster at 127.0.0.1:1")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


# ---- deploy/: the launcher config and the per-host node files ----
def _start_node_args(node_file: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/"), "HAT_RAY_DRY_RUN": "1",
           "HAT_RAY_NODE_ENV": str(node_file)}
    return subprocess.run(["bash", str(DEPLOY / "start-node.sh"), *argv], capture_output=True, text=True, env=env,
                          timeout=30)


@needs_deploy
@pytest.mark.parametrize("node_file, profile", [("xeon-head", "xeon_e5_2640"), ("titanxp", "titanxp"),
                                                ("rpi4", "raspberrypi4"), ("qemu-rpi4", "qemu_rpi4")])
def test_deploy_node_files_declare_their_profiles_resource_and_labels(node_file, profile):
    from hat_ray.latency.profile import DeviceProfile

    proc = _start_node_args(DEPLOY / "nodes" / f"{node_file}.env", "--address=10.0.0.1:6379")
    assert proc.returncode == 0, proc.stderr
    args = dict(a.split("=", 1) for a in proc.stdout.splitlines() if "=" in a)
    assert proc.stdout.splitlines()[0] == "start" and args["--address"] == "10.0.0.1:6379"
    p = DeviceProfile.load(profile)
    assert json.loads(args["--resources"]) == {p.ray.resource: 1}
    labels = dict(kv.split("=") for kv in args["--labels"].split(","))
    assert dict(p.ray.label).items() <= labels.items()
    # start-node.sh reads the node's own architecture and Python version (`cluster status` shows them)
    assert labels["arch"] == platform.machine() and labels["python"].count(".") == 2


@needs_deploy
def test_deploy_head_binds_the_dashboard_to_loopback_and_cluster_yaml_is_valid(tmp_path):
    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    head = _start_node_args(DEPLOY / "nodes" / "xeon-head.env", "--head")
    assert head.returncode == 0, head.stderr
    assert {"--head", "--dashboard-host=127.0.0.1", "--port=6379"} <= set(head.stdout.splitlines())
    missing = _start_node_args(tmp_path / "absent.env", "--head")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    config = yaml.safe_load((DEPLOY / "cluster.yaml").read_text())
    prepared = prepare_config(config)  # what `ray up` does: defaults, then the local provider's node type
    validate_config(prepared)
    assert prepared["provider"]["type"] == "local" and prepared["max_workers"] == len(config["provider"]["worker_ips"])
    assert any("start-node.sh --head" in c for c in config["head_start_ray_commands"])
    assert any("start-node.sh --address=$RAY_HEAD_IP:6379" in c for c in config["worker_start_ray_commands"])


# ---- a search submitted with `ray job submit` to a head started by `ray start --head --block` ----


class _Head:
    """`ray start --head --block` on free loopback ports with a private temp dir and auth token."""

    def __init__(self, tmp: Path) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="hr", dir="/tmp")  # short: Ray's unix sockets live under it
        gcs, self.dash, client, node_mgr, obj_mgr, agent = free_ports(6)
        self.token = secrets.token_hex(32)
        self.env = _env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, HAT_RAY_DASHBOARD="0")
        cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
               "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dash}",
               f"--ray-client-server-port={client}", f"--node-manager-port={node_mgr}",
               f"--object-manager-port={obj_mgr}", f"--dashboard-agent-listen-port={agent}", "--num-cpus=2",
               '--resources={"device:cpu": 1}', f"--object-store-memory={300 * 2**20}",
               f"--temp-dir={self.temp_dir}", "--disable-usage-stats"]
        self.log = (tmp / "ray_start.log").open("w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        self.url = f"http://127.0.0.1:{self.dash}"

    def api(self, path: str) -> dict:
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def wait_for_jobs_api(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, f"ray start exited: {self.tail()}"
            try:
                self.api("/api/jobs/")
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        raise AssertionError(f"the Jobs API did not answer in {timeout:.0f} s: {self.tail()}")

    def tail(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-2000:]

    def stop(self) -> None:
        """SIGTERM `ray start --block` (it drains the node and stops the Ray processes it
        started), SIGKILL its process group after a timeout, then any process of this head that
        left the group (found by its private temp dir); remove the temp dir."""
        stop_ray_start(self.proc, self.temp_dir, self.log, grace=45)


def test_search_submitted_as_a_ray_job_to_a_started_head(tmp_path):
    write_supernet_checkpoint(tmp_path / "super.pt")
    write_fake_predictor(tmp_path / "fake.pred")
    out = tmp_path / "search"
    head = _Head(tmp_path)
    try:
        head.wait_for_jobs_api(timeout=120)
        entry = [str(BIN / "hat-ray"), "search", "--supernet", str(tmp_path / "super.pt"), "--data", "synthetic",
                 "--device", "fake:30", "--predictor", f"fake:{tmp_path / 'fake.pred'}", "--out", str(out),
                 "--scorers", "1", "--valid-sentences", "20", "--seed", "1", "--budget", "8", "--population", "6",
                 "--parents", "2", "--mutations", "2", "--crossovers", "2", "--iterations", "2"]
        submit = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", head.url, "--submission-id",
                                 "hat-ray-search-test", "--no-wait", "--", *entry],
                                capture_output=True, text=True, env=head.env, timeout=120)
        assert submit.returncode == 0, submit.stdout[-2000:] + submit.stderr[-2000:]
        deadline, status = time.time() + 240, "PENDING"
        while time.time() < deadline and status in ("PENDING", "RUNNING"):
            time.sleep(2)
            status = head.api("/api/jobs/hat-ray-search-test")["status"]
        logs = subprocess.run([str(BIN / "ray"), "job", "logs", "--address", head.url, "hat-ray-search-test"],
                              capture_output=True, text=True, env=head.env, timeout=120).stdout
        assert status == "SUCCEEDED", f"job {status}: {logs[-3000:]}"
        result = json.loads((out / "result.json").read_text())
        assert 1 <= result["evaluations"] <= 8 and result["scorers"] == 1
        assert "best of" in logs  # the job's stdout: hat-ray search's summary line
    finally:
        head.stop()


def test_node_platforms_asks_nodes_without_labels_by_a_task(ray_cluster_factory):
    import platform as host

    import ray

    from hat_ray.cluster import node_platforms

    cluster = ray_cluster_factory(head_cpus=1)
    cluster.add_node(num_cpus=0, labels={"arch": "aarch64", "python": "3.11.2"})
    cluster.wait_for_nodes()
    found = node_platforms(ray.nodes(), timeout=60)
    assert sorted(found.values(), key=lambda p: p["arch"]) == [
        {"arch": "aarch64", "python": "3.11.2"},  # from its labels
        {"arch": host.machine(), "python": host.python_version()},  # the head has none: asked by a task
    ]
