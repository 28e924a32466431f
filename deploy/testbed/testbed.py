"""hat-ray's cluster testbed: a real three-node Ray cluster on one x86 Linux machine (root).

    python deploy/testbed/testbed.py up        # build (or reuse) and start; prints the address
    python deploy/testbed/testbed.py env       # `export ...` lines for a driver shell
    python deploy/testbed/testbed.py status    # the nodes' processes
    python deploy/testbed/testbed.py down      # stop every process it started

Nodes, each a `ray start --block` process tree started through deploy/start-node.sh:

- ``head``: x86, the checkout's ``.venv``, dashboard and Jobs API on 127.0.0.1.
- ``worker-x86``: the same ``.venv`` in its own mount namespace, with private tmpfs over the run
  folders (``STATE/runs``) and Ray's temp dirs (``STATE/ray``): it cannot see the head's outputs,
  as a second machine could not.
- ``pi``: an aarch64 Debian (bookworm, Python 3.11.2) root filesystem run through qemu-user,
  built by build.sh into the cache; joined with deploy/start-node.sh and deploy/nodes/qemu-rpi4.env
  copied to ``~/.hat-ray/node.env`` as deploy/README.md says; the checkout is mounted read-only
  at ``~/hat-ray`` (where hat-ray was installed editable).

All nodes share this machine's IP address (distinct ports) and one token (RAY_AUTH_MODE=token).
Only the standard library; stops only processes it started (by pid, and those inside its own
temp dirs or the Pi's root filesystem).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VENV_BIN = REPO / ".venv" / "bin"
NODES = ("head", "worker-x86", "pi")
PI_VENV = "/root/hat-ray-venv"


class NodeExited(RuntimeError):
    """A node's `ray start` ended while waiting for it to join."""


class TestbedUnavailable(RuntimeError):
    """This machine cannot host the testbed (not root, no binfmt_misc, build failed): the reason."""


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hat-ray-testbed"
    return Path(os.environ.get("HAT_RAY_TESTBED_CACHE", default))


def state_dir() -> Path:
    return Path(os.environ.get("HAT_RAY_TESTBED_STATE", "/tmp/hat-ray-testbed"))


def build(quiet: bool = False) -> float:
    """Run build.sh (reusing the cache); returns seconds. TestbedUnavailable when the machine
    cannot host it (build.sh exit 2) or the build fails."""
    t0 = time.time()
    proc = subprocess.run(["bash", str(HERE / "build.sh")], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE if quiet else None, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()[-1:] if quiet else []
        raise TestbedUnavailable(tail[0] if tail else f"deploy/testbed/build.sh failed (exit {proc.returncode})")
    return time.time() - t0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _host_ip() -> str:
    """The address other nodes reach the head at (the first non-loopback address)."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    return out[0] if out else "127.0.0.1"


class Testbed:
    """Start, inspect and stop the testbed's nodes. State (pids, ports, token, logs) lives in
    ``state`` so that separate commands (``up``, then ``down``) see the same testbed."""

    def __init__(self, state: Path | None = None, cache: Path | None = None) -> None:
        self.state = state or state_dir()
        self.cache = cache or cache_dir()
        self.rootfs = self.cache / "pi-rootfs"
        self.runs = self.state / "runs"  # private on worker-x86: write run outputs here
        self.ray_tmp = self.state / "ray"
        self.info_path = self.state / "testbed.json"
        self.info: dict = json.loads(self.info_path.read_text()) if self.info_path.is_file() else {}

    # ---- addresses and the environment a driver needs
    @property
    def address(self) -> str:
        return f"{self.info['ip']}:{self.info['port']}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.info['dashboard_port']}"

    @property
    def token_path(self) -> Path:
        return self.state / "auth_token"

    def driver_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a process that joins the testbed as a driver (or runs `ray job`)."""
        env = dict(os.environ if base is None else base)
        env.pop("RAY_ADDRESS", None)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path),
                   RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL="minor", HAT_RAY_DASHBOARD="0",
                   PATH=f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}")
        env.pop("RAY_AUTH_TOKEN", None)
        return env

    def _save(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        tmp = self.info_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.info, indent=1))
        tmp.replace(self.info_path)

    # ---- starting
    def up(self, timeout: float = 300.0, say=print) -> dict[str, float]:
        """Start every node that is not running; wait until all three are alive in the GCS.
        Returns seconds per node start."""
        if not self.rootfs.joinpath(f"{PI_VENV.lstrip('/')}/bin/ray").exists():
            raise TestbedUnavailable(f"no Pi root filesystem in {self.cache}: run deploy/testbed/build.sh")
        self.state.mkdir(parents=True, exist_ok=True)
        if not self.info.get("port") or not self.running("head"):
            self.down(quiet=True)
            self.state.mkdir(parents=True, exist_ok=True)
            self.token_path.write_text(secrets.token_hex(32))
            self.token_path.chmod(0o600)
            self.info = {"ip": _host_ip(), "port": _free_port(), "dashboard_port": _free_port(), "pids": {}}
            self._save()
        times = {}
        for name in NODES:
            if self.running(name):
                continue
            t0 = time.time()
            if name != "head":
                self._wait_stopped_gone(timeout=90)
            for attempt in range(1, 5):
                self.start(name)
                try:
                    nodes = self.wait_nodes([n for n in NODES[:NODES.index(name) + 1]], timeout)
                    self.info.setdefault("node_ids", {})[name] = self.node_of(nodes, name)["id"]
                    self._save()
                    break
                except NodeExited as exc:
                    # `ray start` gives a joining raylet 30 s to register (hard-coded in Ray);
                    # under emulation on a busy machine that can be too short: try again
                    self.stop(name)
                    if attempt == 4:
                        raise RuntimeError(str(exc)) from None
                    say(f"testbed: {name} did not join (attempt {attempt}); retrying")
            times[name] = round(time.time() - t0, 1)
            say(f"testbed: {name} joined in {times[name]:.1f} s")
        return times

    def _wait_stopped_gone(self, timeout: float) -> None:
        """Wait until the GCS no longer lists a node this testbed stopped as alive: a node that
        joins from the same address while the GCS still counts the old one may time out."""
        stopped = set(self.info.get("stopped_ids", ()))
        deadline = time.time() + timeout
        while stopped and time.time() < deadline:
            try:
                if not stopped & {n["id"] for n in self.alive_nodes()}:
                    return
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            time.sleep(3)

    def start(self, name: str) -> None:
        """Launch one node (no waiting)."""
        log = (self.state / f"{name}.log").open("a")
        cmd, env = getattr(self, f"_cmd_{name.replace('-', '_')}")()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                cwd=str(REPO))
        self.info["pids"][name] = proc.pid
        self._save()

    def _node_env_file(self, name: str, extra: dict[str, str]) -> Path:
        text = (HERE / "nodes" / f"{name}.env").read_text()
        text += "".join(f"{k}={v}\n" for k, v in extra.items())
        path = self.state / f"{name}.env"
        path.write_text(text)
        return path

    def _base_env(self, node_env: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(HAT_RAY_NODE_ENV=str(node_env), RAY_AUTH_TOKEN_PATH=str(self.token_path),
                   PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        return env

    def _agent_args(self) -> list[str]:
        return [f"--node-ip-address={self.info['ip']}", f"--dashboard-agent-listen-port={_free_port()}",
                "--disable-usage-stats", "--block"]

    def _cmd_head(self) -> tuple[list[str], dict[str, str]]:
        node_env = self._node_env_file("head", {
            "HAT_RAY_PORT": str(self.info["port"]), "HAT_RAY_DASHBOARD_PORT": str(self.info["dashboard_port"]),
            "HAT_RAY_TEMP_DIR": str(self.ray_tmp / "head")})
        self.runs.mkdir(parents=True, exist_ok=True)
        return (["bash", str(REPO / "deploy" / "start-node.sh"), "--head", "--include-dashboard=true",
                 f"--ray-client-server-port={_free_port()}", *self._agent_args()], self._base_env(node_env))

    def _cmd_worker_x86(self) -> tuple[list[str], dict[str, str]]:
        node_env = self._node_env_file("worker-x86", {"HAT_RAY_TEMP_DIR": str(self.ray_tmp / "worker-x86")})
        start = " ".join(["exec", "bash", str(REPO / "deploy" / "start-node.sh"), f"--address={self.address}",
                          *self._agent_args()])
        script = f"mount -t tmpfs tmpfs {self.runs} && mount -t tmpfs tmpfs {self.ray_tmp} && {start}"
        return ["unshare", "--mount", "--propagation", "private", "--", "bash", "-c", script], \
            self._base_env(node_env)

    def _cmd_pi(self) -> tuple[list[str], dict[str, str]]:
        pi_tmp = self.state / "pi-tmp"  # the Pi's /tmp (Ray's logs there stay readable from the host)
        shutil.rmtree(pi_tmp, ignore_errors=True)
        # QEMU_CPU: emulate a Pi 4's Cortex-A72 (ARMv8.0), so a wheel that needs a newer ISA fails here too
        return self.chroot_node_cmd(self.rootfs, REPO / "deploy" / "nodes" / "qemu-rpi4.env",
                                    f"--address={self.address}", *self._agent_args(), tmp=pi_tmp,
                                    env={"QEMU_CPU": "cortex-a72"})

    def chroot_node_cmd(self, rootfs: Path, node_env: Path, *args: str, tmp: Path,
                        env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
        """Command and environment that run ``deploy/start-node.sh ARGS`` on a node made of the root
        filesystem ``rootfs`` (its own OS and Python, Ray in ``~/hat-ray-venv``), as on a machine
        set up by deploy/README.md: ``node_env`` copied to ``~/.hat-ray/node.env`` and the cluster's
        token to ``~/.ray/auth_token``. It runs chrooted in its own mount namespace with /proc, /dev,
        a 1 GiB /dev/shm, ``tmp`` (created) as its /tmp, the host's resolv.conf and the checkout
        read-only at ``~/hat-ray``. ``env``: more variables for the node (e.g. QEMU_CPU)."""
        r = rootfs
        (r / "root" / ".hat-ray").mkdir(parents=True, exist_ok=True)
        shutil.copy(node_env, r / "root" / ".hat-ray" / "node.env")
        (r / "root" / ".ray").mkdir(parents=True, exist_ok=True)
        shutil.copy(self.token_path, r / "root" / ".ray" / "auth_token")
        inner = ["HOME=/root", *(f"{k}={v}" for k, v in (env or {}).items()), f"PATH={PI_VENV}/bin:/usr/bin:/bin",
                 "LANG=C.UTF-8"]
        start = "exec " + shlex.join(["chroot", str(r), "/usr/bin/env", "-i", *inner, "bash",
                                      "/root/hat-ray/deploy/start-node.sh", *args])
        q = shlex.quote
        script = "; ".join([
            "set -e", f"r={q(str(r))}", 'mount -t proc proc "$r/proc"', 'mount --rbind /dev "$r/dev"',
            'mount -t tmpfs -o size=1g tmpfs "$r/dev/shm"', f'mkdir -p {q(str(tmp))}',
            f'mount --bind {q(str(tmp))} "$r/tmp"', 'mkdir -p "$r/root/hat-ray"',
            f'mount --bind -o ro {q(str(REPO))} "$r/root/hat-ray"', 'cp /etc/resolv.conf "$r/etc/resolv.conf"', start])
        return (["unshare", "--mount", "--propagation", "private", "--", "bash", "-c", script],
                {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})

    # ---- inspecting
    def running(self, name: str) -> bool:
        pid = self.info.get("pids", {}).get(name)
        if not pid:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"

    def alive_nodes(self) -> list[dict]:
        """``ray.nodes()`` of the testbed, read by a short-lived driver (alive ones)."""
        code = ("import json, sys, ray; ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False); "
                "print('NODES', json.dumps([{'id': n['NodeID'], 'labels': n.get('Labels', {}), "
                "'resources': n['Resources']} for n in ray.nodes() if n['Alive']]))")
        proc = subprocess.run([str(VENV_BIN / "python"), "-c", code, self.address], capture_output=True, text=True,
                              env=self.driver_env(), timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"cannot read the testbed's nodes: {proc.stderr.strip()[-500:]}")
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("NODES ")]
        if not lines:
            raise RuntimeError(f"cannot read the testbed's nodes: {proc.stdout.strip()[-500:]}")
        return json.loads(lines[-1][len("NODES "):])

    def node_of(self, nodes: list[dict], name: str) -> dict | None:
        """Which of ``nodes`` is testbed node ``name`` (by its device resource / the head flag);
        a node this testbed stopped is skipped while the GCS still lists it as alive."""
        for n in nodes:
            if n["id"] in self.info.get("stopped_ids", ()):
                continue
            res = n["resources"]
            if name == "pi" and "device:qemu_rpi4" in res:
                return n
            is_head = any(k.startswith("node:__internal_head__") for k in res)
            if name == "head" and is_head or name == "worker-x86" and "device:cpu" in res and not is_head:
                return n
        return None

    def wait_nodes(self, names: list[str], timeout: float) -> list[dict]:
        deadline = time.time() + timeout
        while True:
            for name in names:
                if not self.running(name):
                    raise NodeExited(f"testbed node {name} exited: {self.log_tail(name)}")
            try:
                nodes = self.alive_nodes()
                if all(self.node_of(nodes, n) for n in names):
                    return nodes
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            if time.time() > deadline:
                raise RuntimeError(f"testbed nodes {names} not all alive after {timeout:.0f} s: "
                                   + " | ".join(self.log_tail(n, 300) for n in names))
            time.sleep(2)

    def log_tail(self, name: str, chars: int = 1500) -> str:
        path = self.state / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.is_file() else "(no log)"

    def processes(self, name: str) -> list[int]:
        """Pids of node ``name``: its launcher and every descendant, plus orphans (a crash, or
        Ray's agents outliving their raylet): processes inside its temp dir or with its node file
        in their environment (agents retitle themselves `ray::...`) or, for the Pi, inside its
        root filesystem."""
        pid = self.info.get("pids", {}).get(name)
        found = set(_descendants(pid)) if pid else set()
        if name == "pi":
            found.update(self.processes_in(self.rootfs))
        else:
            marker = str(self.ray_tmp / name).encode()
            node_env = f"HAT_RAY_NODE_ENV={self.state / f'{name}.env'}".encode()
            for p in Path("/proc").iterdir():
                try:
                    if p.name.isdigit() and (marker in (p / "cmdline").read_bytes()
                                             or node_env in (p / "environ").read_bytes().split(b"\0")):
                        found.add(int(p.name))
                except OSError:
                    continue
        found.discard(os.getpid())
        return sorted(found)

    @staticmethod
    def processes_in(rootfs: Path) -> list[int]:
        """Pids of the processes chrooted into ``rootfs`` (a node started by chroot_node_cmd)."""
        found = []
        for p in Path("/proc").iterdir():
            try:
                if p.name.isdigit() and os.readlink(p / "root") == str(rootfs):
                    found.append(int(p.name))
            except OSError:
                continue
        return sorted(found)

    def raylet_pid(self, name: str) -> int:
        for pid in self.processes(name):
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a.endswith(b"/raylet") for a in args):
                return pid
        raise RuntimeError(f"no raylet process found for testbed node {name}")

    # ---- stopping
    def stop(self, name: str, grace: float = 20.0) -> None:
        """SIGTERM the node's `ray start --block` (it stops what it started), then SIGKILL
        whatever of the node is left."""
        pid = self.info.get("pids", {}).get(name)
        if pid and self.running(name):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.time() + grace
            while time.time() < deadline and self.running(name):
                time.sleep(0.5)
        for p in self.processes(name):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if pid:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        self.info.get("pids", {}).pop(name, None)
        node_id = self.info.get("node_ids", {}).pop(name, None)
        if node_id:
            self.info.setdefault("stopped_ids", []).append(node_id)
        if self.info:
            self._save()

    def down(self, quiet: bool = False) -> None:
        for name in reversed(NODES):
            if self.info.get("pids", {}).get(name) or self.processes(name):
                self.stop(name)
                if not quiet:
                    print(f"testbed: {name} stopped")
        shutil.rmtree(self.ray_tmp, ignore_errors=True)
        shutil.rmtree(self.state / "pi-tmp", ignore_errors=True)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(p.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="testbed.py", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["build", "up", "down", "status", "env"])
    args = p.parse_args(argv)
    tb = Testbed()
    try:
        if args.action in ("build", "up"):
            print(f"testbed: build {build():.0f} s", file=sys.stderr)
        if args.action == "up":
            tb.up(say=lambda s: print(s, file=sys.stderr))
            print(f"testbed: address {tb.address}, dashboard {tb.dashboard_url}, runs in {tb.runs} "
                  f"(private on worker-x86); `eval $(python {sys.argv[0]} env)` for a driver shell")
        elif args.action == "down":
            tb.down()
        elif args.action == "status":
            for name in NODES:
                print(f"{name:11} {'running' if tb.running(name) else 'stopped':8} pids {tb.processes(name)}")
        elif args.action == "env":
            env = tb.driver_env({})
            for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL"):
                print(f"export {k}={env[k]}")
            print(f"export RAY_ADDRESS={tb.address}")
    except (TestbedUnavailable, RuntimeError) as exc:
        print(f"testbed: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
