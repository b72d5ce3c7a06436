"""A real local Ray cluster for the fleet tests: a head and two worker nodes on this machine.

Each node is ``ray start ... --block`` in its own process group, with its own worker home
(``TUNEHUB_WORKER_HOME``), its own Hugging Face cache, and one unit of the custom resource
``tunehub_gpu`` standing in for a GPU (the head has none, so jobs land on the workers).
Ray's worker processes start their own sessions, so a node's processes are found by a
marker in their environment (``TUNEHUB_RAY_NODE``), inherited from its ``ray start``:
``kill_node`` and the teardown SIGKILL exactly those pids, and nothing outlives the module.
Kept small for a shared 2-core machine: no dashboard, 1 CPU per worker node, 100 MB object stores.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray", reason="the fleet tests need Ray: pip install 'tunehub[ray]' (CI installs it with [test])")

RESOURCE = "tunehub_gpu"
OBJECT_STORE = str(100 * 1024 * 1024)
START_TIMEOUT = 180.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


def pids_with_marker(marker: str) -> list[int]:
    """Pids whose environment holds TUNEHUB_RAY_NODE=<marker> (ours only: other users' environ is unreadable)."""
    needle = f"TUNEHUB_RAY_NODE={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle in handle.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


@dataclass
class Node:
    name: str
    marker: str
    home: Path | None
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> list[int]:
        """SIGKILL every process of this node (its ray start, raylet, agents and workers)."""
        pids = set(pids_with_marker(self.marker))
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            pass
        return sorted(pids)


@dataclass
class RayCluster:
    root: Path
    port: int
    env: dict[str, str]
    nodes: list[Node] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self, name: str, args: list[str], home: Path | None, extra_env: dict[str, str]) -> Node:
        marker = f"{self.root.name}-{name}"
        env = {**self.env, **extra_env, "TUNEHUB_RAY_NODE": marker}
        if home is not None:
            env["TUNEHUB_WORKER_HOME"] = str(home)
            env["HF_HOME"] = str(home / "hf")
            env["HF_HUB_CACHE"] = str(home / "hf" / "hub")
        log = self.root / f"{name}.log"
        common = [f"--object-store-memory={OBJECT_STORE}", "--disable-usage-stats", "--block", f"--temp-dir={self.root / 't'}"]
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [_ray_bin(), "start", *args, *common], env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.root,
            )
        node = Node(name, marker, home, process, log)
        self.nodes.append(node)
        return node

    def start_head(self) -> None:
        self._start("head", ["--head", f"--port={self.port}", "--include-dashboard=false", "--num-cpus=0"], None, {})
        self.wait_nodes(1)

    def add_worker(
        self, name: str, home: Path, extra_env: dict[str, str], tries: int = 3, node_args: list[str] | None = None
    ) -> Node:
        """Start a worker node; again when Ray's fixed 30 s start-up wait runs out on a loaded machine.
        ``node_args``: its CPUs and resources (default: 1 CPU and one ``tunehub_gpu``)."""
        before = self.alive()
        resources = node_args if node_args is not None else ["--num-cpus=1", f'--resources={{"{RESOURCE}": 1}}']
        for attempt in range(tries):
            node = self._start(name, [f"--address={self.address}", *resources], home, extra_env)
            try:
                self.wait_nodes(before + 1, node)
                return node
            except AssertionError:
                node.kill()
                self.nodes.remove(node)
                if attempt == tries - 1:
                    raise
        raise AssertionError("unreachable")

    def alive(self) -> int:
        answer = subprocess.run(
            [sys.executable, "-c", "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False, logging_level='ERROR');"
             " print(sum(1 for n in ray.nodes() if n['Alive']))", self.address],
            capture_output=True, text=True, timeout=120, env=self.env,
        )  # fmt: skip
        try:
            return int(answer.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return 0

    def wait_nodes(self, count: int, node: Node | None = None) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for started in self.nodes:
                if started.process.poll() is not None and started is node:
                    raise AssertionError(f"ray node {started.name} exited:\n{started.log.read_text(errors='replace')[-3000:]}")
            if self.alive() >= count:
                return
            time.sleep(1.0)
        raise AssertionError(f"the Ray cluster did not reach {count} nodes in {START_TIMEOUT:.0f}s")

    def stop(self) -> None:
        for node in reversed(self.nodes):
            if node.process.poll() is None:
                try:
                    os.killpg(node.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for node in self.nodes:
            try:
                node.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for node in self.nodes:
            node.kill()  # whatever is left, raylet workers included


def start_cluster(root: Path, env: dict[str, str], worker_homes: list[Path]) -> RayCluster:
    base = dict(env)
    base.update({
        "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "TUNEHUB_NO_COMPILE": "1", "PYTHONUNBUFFERED": "1",
    })  # fmt: skip
    cluster = RayCluster(root=root, port=free_port(), env=base)
    try:
        cluster.start_head()
        for index, home in enumerate(worker_homes):
            cluster.add_worker(f"w{index + 1}", home, {})
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="module")
def ray_root() -> Iterator[Path]:
    # A short path: Ray's Unix sockets live under it (108-byte limit on socket paths).
    root = Path("/tmp") / f"thray-{uuid.uuid4().hex[:8]}"
    root.mkdir()
    yield root
    subprocess.run(["rm", "-rf", str(root)], check=False)


def cluster_env(hub: Any) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TUNEHUB_HOME", None)
    env.update(hub.env(hub.read_token))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")]))
    return env
