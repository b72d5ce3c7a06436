"""Acceptance for the render fleet: a real local Ray cluster, the real daemon, tiny models.

One module-scoped cluster (a head plus two worker nodes started with ``ray start
--address``, each with its own worker home and one ``tunehub_gpu``) serves every test
here: starting Ray costs most of a minute on this machine. The test that kills a node
comes last. The finetune and the base repo are on a real ``tunehub hub serve``; the
workers pull them into their own homes; the daemon's home never holds the weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.conftest import RESOURCE, RayCluster, cluster_env, start_cluster
from tests.daemon.conftest import DaemonProcess
from tests.fixtures.tiny_models import TinyModels, base_repo_id, publish_base_repo
from tunehub.cli.main import main as tunehub_main
from tunehub.cluster.settings import home_key

ARCH = "t2v_1.3B"
DEFINITION = "tiny_fleet"
SETTINGS = {"prompt": "a red cat dances", "resolution": "32x32", "video_length": 5, "num_inference_steps": 2, "seed": 7}
JOB_TIMEOUT = 400.0
# The first test also pays for the module's cluster (a minute or three on a loaded 2-core machine).
pytestmark = pytest.mark.timeout(1200)


@dataclass
class Fleet:
    cluster: RayCluster
    server: Any
    base_repo: str
    finetune_url: str
    env: dict[str, str]
    worker_homes: list[Path]

    def write_home(self, root: Path, *, cluster: bool = True, max_jobs: int = 4, extra: str = "") -> Path:
        (root / "finetunes").mkdir(parents=True, exist_ok=True)
        (root / "ckpts").mkdir(exist_ok=True)
        toml = [
            f'endpoint = "{self.server.url}"',
            "[base_repos]", f'"{ARCH}" = "{self.base_repo}"',
            "[daemon]", 'pull = "none"', 'quantize = "never"', "retry_base = 1",
        ]  # fmt: skip
        if cluster:
            toml += [
                "[cluster]", 'engine = "ray"', f'address = "{self.cluster.address}"', f'resource = "{RESOURCE}"',
                "gpus_per_job = 1", "max_attempts = 3", f"max_jobs = {max_jobs}", f'namespace = "t{uuid.uuid4().hex[:6]}"',
            ]  # fmt: skip
        (root / "tunehub.toml").write_text("\n".join(toml) + "\n" + extra, encoding="utf-8")
        definition = {**SETTINGS, "model": {"name": "Tiny fleet", "architecture": ARCH, "URLs": [self.finetune_url]}}
        (root / "finetunes" / f"{DEFINITION}.json").write_text(json.dumps(definition, indent=4), encoding="utf-8")
        return root

    def daemon(self, root: Path) -> DaemonProcess:
        return DaemonProcess(root, self.env).start()

    def runs(self) -> list[dict[str, Any]]:
        """Every render started on a worker node (each node's cluster-runs.jsonl)."""
        lines = []
        for home in self.worker_homes:
            log = home / ".tunehub" / "cluster-runs.jsonl"
            if log.exists():
                lines += [json.loads(line) | {"worker": home.name} for line in log.read_text().splitlines() if line]
        return lines


@pytest.fixture(scope="module")
def fleet(tiny_models: TinyModels, hub_server_session: Any, ray_root: Path) -> Iterator[Fleet]:
    server = hub_server_session
    tag = "-" + uuid.uuid4().hex[:6]
    base = publish_base_repo(server, tiny_models.base_repo(ARCH), base_repo_id(ARCH, tag=tag))
    finetune = tiny_models.finetune(ARCH)["transformer"]
    repo = f"alice/fleet-finetune{tag}"
    api = server.api()
    api.create_repo(repo)
    api.upload_file(path_or_fileobj=str(finetune), path_in_repo=finetune.name, repo_id=repo)
    env = cluster_env(server)
    homes = [ray_root / "w1", ray_root / "w2"]
    cluster = start_cluster(ray_root, env, homes)
    try:
        yield Fleet(cluster, server, base, f"{server.url}/{repo}/resolve/main/{finetune.name}", cluster.env, homes)
    finally:
        cluster.stop()


def _wait_jobs(daemon: DaemonProcess, ids: list[int], states: tuple[str, ...] = ("done", "failed", "cancelled"),
               timeout: float = JOB_TIMEOUT) -> dict[int, dict[str, Any]]:  # fmt: skip
    deadline = time.monotonic() + timeout
    jobs: dict[int, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        jobs = {job["id"]: job for job in daemon.client.jobs() if job["id"] in ids}
        if all(jobs.get(i, {}).get("state") in states for i in ids):
            return jobs
        time.sleep(0.5)
    raise AssertionError(f"jobs not finished in {timeout}s: {jobs}\n{daemon.stderr_text()}")


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _outputs(root: Path) -> list[Path]:
    return sorted((root / "outputs").glob("*.mp4")) if (root / "outputs").is_dir() else []


def test_six_jobs_spread_over_both_workers_match_local_runs(fleet: Fleet, tmp_path: Path) -> None:
    root = fleet.write_home(tmp_path / "controller")
    daemon = fleet.daemon(root)
    seeds = [11, 12, 13, 14, 15, 16]
    try:
        ids = [daemon.client.submit_job("generate", DEFINITION, seed=seed, device="cpu")["id"] for seed in seeds]
        jobs = _wait_jobs(daemon, ids)
    finally:
        daemon.stop()
    assert all(job["state"] == "done" for job in jobs.values()), jobs
    nodes = {job["result"]["node_id"] for job in jobs.values()}
    assert len(nodes) == 2, f"all jobs on one node: {[job['result'] for job in jobs.values()]}"
    videos = _outputs(root)
    assert len(videos) == 6
    assert not list((root / "ckpts").iterdir()), "the controller home pulled weights itself"

    # The same jobs run locally (same seeds): byte-identical videos, identical settings files.
    local = fleet.write_home(tmp_path / "local", cluster=False)
    with pytest.MonkeyPatch.context() as monkeypatch:
        fleet.server.use_in_process(monkeypatch, fleet.server.read_token)
        monkeypatch.setenv("TUNEHUB_NO_COMPILE", "1")
        assert tunehub_main(["--home", str(local), "pull", DEFINITION]) == 0
        for job in jobs.values():
            seed = job["params"]["seed"]
            out = local / "local-videos" / f"seed{seed}.mp4"
            argv = ["--home", str(local), "generate", DEFINITION, "--device", "cpu", "--seed", str(seed), "--out", str(out)]
            assert tunehub_main(argv) == 0
            fleet_video = Path(job["result"]["video"])
            assert fleet_video.parent == root / "outputs" and f"seed{seed}" in fleet_video.name
            assert fleet_video.read_bytes() == out.read_bytes(), f"seed {seed}: the fleet's video differs from the local one"
            assert json.loads(fleet_video.with_suffix(".json").read_text()) == json.loads(out.with_suffix(".json").read_text())


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[-1][:1] not in ("Z", "X")
    except OSError:
        return False


def test_cancel_a_queued_and_a_running_job(fleet: Fleet, tmp_path: Path) -> None:
    root = fleet.write_home(tmp_path / "controller", max_jobs=1)
    daemon = fleet.daemon(root)
    try:
        slow = {"num_inference_steps": 400, "device": "cpu"}
        running_id, queued_id = (daemon.client.submit_job("generate", DEFINITION, seed=20 + i, **slow)["id"] for i in range(2))
        # max_jobs = 1: the second job waits in the journal while the first renders on a worker
        _wait(
            lambda: next((j for j in daemon.client.jobs() if j["id"] == running_id and (j.get("progress") or {}).get("status") == "denoising"), None),
            JOB_TIMEOUT, "the first job denoising on a worker",
        )  # fmt: skip
        assert next(j for j in daemon.client.jobs() if j["id"] == queued_id)["state"] == "queued"
        assert daemon.client.cancel_job(queued_id)["state"] == "cancelled"
        assert daemon.client.cancel_job(running_id)["state"] == "cancelling"
        jobs = _wait_jobs(daemon, [running_id, queued_id], timeout=60)
        assert jobs[running_id]["state"] == "cancelled" and jobs[queued_id]["state"] == "cancelled", jobs
        key = home_key(root.resolve())
        renders = [r for r in fleet.runs() if r["controller"] == key]
        assert [r["job"] for r in renders] == [running_id], "the job cancelled while queued reached a worker"
        # the Ray task is cancelled for real: its worker process is gone, the GPU free
        _wait(lambda: not _pid_alive(renders[0]["pid"]), 60, "the cancelled render's process to end")
    finally:
        daemon.stop()
    assert _outputs(root) == []


def test_daemon_restart_mid_run_loses_none_and_runs_none_twice(fleet: Fleet, tmp_path: Path) -> None:
    root = fleet.write_home(tmp_path / "controller")
    daemon = fleet.daemon(root)
    params = {"num_inference_steps": 2, "device": "cpu"}
    ids = [daemon.client.submit_job("generate", DEFINITION, seed=30 + i, **params)["id"] for i in range(2)]
    _wait(lambda: sum(1 for j in daemon.client.jobs() if j["id"] in ids and (j.get("progress") or {}).get("node")) >= 2,
          JOB_TIMEOUT, "two jobs on worker nodes")  # fmt: skip
    daemon.kill()  # kill -9: no goodbye
    daemon = fleet.daemon(root)
    try:
        jobs = _wait_jobs(daemon, ids)
    finally:
        daemon.stop()
    assert all(job["state"] == "done" for job in jobs.values()), jobs
    assert len(_outputs(root)) == 2
    key = home_key(root.resolve())
    runs = [r for r in fleet.runs() if r["controller"] == key]
    assert sorted(r["job"] for r in runs) == sorted(ids), f"a job rendered twice or never: {runs}"
    assert any(e.get("status") == "reattached" for e in _progress_events(root)), "no job was reattached"


def _progress_events(root: Path) -> list[dict[str, Any]]:
    from tunehub.daemon.journal import Journal

    journal = Journal(root / ".tunehub" / "state.db", readonly=True)
    try:
        return [e for e in journal.recent_events(100000) if e["type"] == "job.progress"]
    finally:
        journal.close()


def test_cluster_command_lists_nodes_gpus_cached_definitions_and_disk(fleet: Fleet, tmp_path: Path) -> None:
    root = fleet.write_home(tmp_path / "controller")
    completed = subprocess.run(
        [sys.executable, "-m", "tunehub", "--home", str(root), "cluster", "--json"], env=fleet.env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    nodes = json.loads(completed.stdout)["nodes"]
    workers = [n for n in nodes if n["resources"].get(RESOURCE)]
    assert len(workers) == 2
    assert all(DEFINITION in n["cached"] for n in workers), nodes  # the earlier tests rendered on both
    assert all(n["free_bytes"] > 0 for n in workers)
    text = subprocess.run(
        [sys.executable, "-m", "tunehub", "--home", str(root), "cluster"], env=fleet.env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert text.returncode == 0 and DEFINITION in text.stdout and RESOURCE in text.stdout, text.stdout + text.stderr


def test_generate_cluster_waits_for_the_video_with_progress_lines(fleet: Fleet, tmp_path: Path) -> None:
    root = fleet.write_home(tmp_path / "controller")
    daemon = fleet.daemon(root)
    out = tmp_path / "clips" / "fleet.mp4"
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "tunehub", "--home", str(root), "generate", DEFINITION, "--cluster", "--device", "cpu",
             "--seed", "5", "--steps", "40", "--out", str(out)], env=fleet.env, capture_output=True, text=True, timeout=JOB_TIMEOUT,
        )  # fmt: skip
    finally:
        daemon.stop()
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == str(out)
    assert out.stat().st_size > 0 and json.loads(out.with_suffix(".json").read_text())["seed"] == 5
    assert "queued job #1 on the cluster" in completed.stderr and "on node " in completed.stderr
    # the daemon passes on at most two progress events a second: 40 steps make some step lines certain
    assert "step " in completed.stderr, completed.stderr
    assert _outputs(root) == []  # --out, not outputs/


def test_a_node_killed_mid_job_every_job_completes_exactly_once(fleet: Fleet, tmp_path: Path) -> None:
    root = fleet.write_home(tmp_path / "controller")
    key = home_key(root.resolve())
    daemon = fleet.daemon(root)
    try:
        # A tiny model's step takes about a millisecond on a fast machine and tens on a loaded one:
        # one job measures the pace here, and the jobs get steps for about 12 s each.
        calibration = daemon.client.submit_job("generate", DEFINITION, seed=39, num_inference_steps=100, device="cpu")["id"]
        assert _wait_jobs(daemon, [calibration])[calibration]["state"] == "done"
        last_step = [e for e in _progress_events(root) if e.get("job") == calibration and e.get("status") == "denoising"
                     and e.get("completed") == e.get("total")]  # fmt: skip
        assert last_step, "the calibration job's last step did not reach the journal"
        step_s = max(float(last_step[-1]["elapsed"]) / 100, 1e-4)
        params = {"num_inference_steps": int(min(20000, max(200, 12 / step_s))), "device": "cpu"}
        ids = [daemon.client.submit_job("generate", DEFINITION, seed=40 + i, **params)["id"] for i in range(3)]

        def on_victim() -> Any:
            for job in daemon.client.jobs():
                progress = job.get("progress") or {}
                completed, total = progress.get("completed") or 0, progress.get("total") or 0
                # the kill must land before the job ends: at least 4 s of steps left at its pace
                left_s = (progress.get("elapsed") or 0) / max(completed, 1) * (total - completed)
                if job["id"] in ids and progress.get("status") == "denoising" and completed and left_s >= 4:
                    # this home's runs only: earlier tests' homes used the same job ids on these nodes
                    mine = [r for r in fleet.runs() if r["controller"] == key and r["job"] == job["id"]]
                    runs = [r for r in mine if r["worker"] == "w1"]
                    if runs:
                        return job
            return None

        victim_job = _wait(on_victim, JOB_TIMEOUT, "a job denoising on node w1")
        killed = fleet.cluster.nodes[1].kill()
        assert killed
        jobs = _wait_jobs(daemon, ids)
    finally:
        daemon.stop()
    assert all(job["state"] == "done" for job in jobs.values()), jobs
    assert len(_outputs(root)) == 4, "each job exactly once in outputs/ (the three and the calibration job)"
    retried = jobs[victim_job["id"]]
    assert retried["attempts"] == 2 and "lost on node" in (retried["last_error"] or "")
    assert retried["result"]["attempt"] == 2 and retried["result"]["node_id"] != victim_job["progress"]["node_id"]
    listing = subprocess.run(
        [sys.executable, "-m", "tunehub", "--home", str(root), "jobs"], env=fleet.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "lost on node" in listing.stdout, listing.stdout
