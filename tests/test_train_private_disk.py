"""`hat-ray train supernet --workers 2 --address ...` on a 2-node cluster whose worker node has a
private disk (like /work/shared/repro/private_disk_node.sh): a Ray head started here with no
CPUs, and a second `ray start` node with 2 CPUs run under `unshare --mount` with a private tmpfs
over the output folder's parent, so both Ray Train workers (rank 0 included) run where the
driver's output folder is invisible. Every output must still land in the driver's folder, and
`--resume` must continue from it. Ray processes are started and stopped by pid (never
`ray stop`), on free loopback ports with private temp dirs."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from ray_nodes import free_ports, stop_ray_start

from hat_ray.train.state import LAST, PREV, SUMMARY

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _private_mount_works(folder: Path) -> str | None:
    """None when this machine lets us mount a private tmpfs in a new mount namespace, else why not."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    folder.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            f"mount -t tmpfs none '{folder}'"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"`unshare --mount` + tmpfs not permitted here: {probe.stderr.strip()[:200]}"
    return None


class _Node:
    """One `ray start --block` (optionally inside a private mount namespace), stopped by pid."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path,
                 private_tmpfs: Path | None = None) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="hr", dir="/tmp")  # short: Ray's unix sockets live under it
        agent, node_mgr, obj_mgr = free_ports(3)
        cmd = [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", f"--node-manager-port={node_mgr}",
               f"--object-manager-port={obj_mgr}", f"--dashboard-agent-listen-port={agent}",
               f"--object-store-memory={400 * 2**20}", f"--temp-dir={self.temp_dir}", "--disable-usage-stats", *args]
        if private_tmpfs is not None:
            quoted = " ".join(f"'{c}'" for c in cmd)
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   f"mount -t tmpfs none '{private_tmpfs}' && exec {quoted}"]
        self.log = (log_dir / f"{name}.log").open("w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def tail(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-2000:]

    def stop(self) -> None:
        """SIGTERM `ray start --block` (it stops the Ray processes it started), SIGKILL its
        process group after a timeout, then any process of this node left (found by its temp dir)."""
        stop_ray_start(self.proc, self.temp_dir, self.log, grace=15)


def _wait_for_cpus(address: str, cpus: int, env: dict[str, str], nodes: list[_Node], timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for node in nodes:
            assert node.proc.poll() is None, f"ray start exited: {node.tail()}"
        status = subprocess.run([str(BIN / "ray"), "status", "--address", address], capture_output=True, text=True,
                                env=env, timeout=60)
        if f"/{cpus}.0 CPU" in status.stdout:
            return
        time.sleep(2)
    raise AssertionError(f"the cluster did not reach {cpus} CPUs in {timeout:.0f} s: {nodes[-1].tail()}")


def _train(address: str, out: Path, env: dict[str, str], *extra: str) -> dict:
    cmd = [sys.executable, "-m", "hat_ray.cli.main", "train", "supernet", "--space", "demo", "--data", "synthetic",
           "--workers", "2", "--cpus-per-worker", "1", "--address", address, "--out", str(out), "--save-every", "2",
           "--no-progress", "--json", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(done.stdout)


def _updates(path: Path) -> list[int]:
    return [json.loads(line)["update"] for line in path.read_text().splitlines()]


def test_outputs_of_workers_on_a_private_disk_node_land_on_the_driver(tmp_path):
    xnode = tmp_path / "xnode"  # the worker node mounts its own empty tmpfs here
    reason = _private_mount_works(xnode)
    if reason:
        pytest.skip(reason)
    stage = tmp_path / "stage"  # the worker node's TMPDIR: its staging folders
    stage.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), HAT_RAY_DASHBOARD="0",
               PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    gcs, client = free_ports(2)
    address = f"127.0.0.1:{gcs}"
    nodes: list[_Node] = []
    try:
        nodes.append(_Node("head", ["--head", f"--port={gcs}", f"--ray-client-server-port={client}", "--num-cpus=0",
                                    "--include-dashboard=false"], env, tmp_path))
        nodes.append(_Node("private", [f"--address={address}", "--num-cpus=2"], {**env, "TMPDIR": str(stage)},
                           tmp_path, private_tmpfs=xnode))
        _wait_for_cpus(address, 2, env, nodes, timeout=120)
        out = xnode / "out"
        summary = _train(address, out, env, "--max-updates", "4")
        assert summary["update"] == 4
        assert json.loads((out / SUMMARY).read_text())["update"] == 4
        ckpt = torch.load(out / LAST, weights_only=True)
        assert ckpt["progress"]["update"] == 4 and ckpt["progress"]["world"] == 2
        assert (out / LAST).stat().st_size > 100 * 2**20  # the demo's full checkpoint: transferred in chunks
        assert _updates(out / "train_log.jsonl") == [1, 2, 3, 4]

        summary = _train(address, out, env, "--max-updates", "6", "--keep-last", "1", "--resume")
        assert summary["update"] == 6
        assert json.loads((out / SUMMARY).read_text())["update"] == 6
        assert torch.load(out / LAST, weights_only=True)["progress"]["update"] == 6
        assert torch.load(out / PREV, weights_only=True)["progress"]["update"] == 4
        assert sorted(p.name for p in out.glob("checkpoint_u*.pt")) == ["checkpoint_u0000006.pt"]  # rotated there too
        assert _updates(out / "train_log.jsonl") == [1, 2, 3, 4, 5, 6]
        assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temp file, no marker
        assert not list(out.glob("ray*"))
        # the worker node really could not see the driver's folder, and nothing was left there
        private_view = Path(f"/proc/{nodes[1].proc.pid}/root") / xnode.relative_to("/")
        assert private_view.is_dir() and not list(private_view.iterdir())
        assert not list(stage.glob("hat-ray-*"))  # staging folders removed once pushed
    finally:
        for node in reversed(nodes):
            node.stop()
