"""The Ray runner: a daemon generate job becomes one detached Ray actor on a node with a free GPU.

Why an actor per job, detached and named: the job must outlive the daemon that submitted
it (a restarted daemon finds it again by its name, made of this home's key, the job id
and the attempt number, all in the journal) and must not be started twice. Ray places it
(``num_gpus`` or a custom resource), keeps it on one node, and reports the node's death;
the daemon's journal stays the truth: attempts, errors and results are written there by
the daemon's job runner, as for a local job.

Lifecycle of one attempt: created (waits in Ray's queue until a GPU is free) -> the
actor's thread pulls and renders (:func:`tunehub.cluster.worker.render`) while the
daemon polls its progress -> the daemon fetches the mp4 and settings, kills the actor
(frees the GPU) and only then writes the files into ``outputs/``: a crash between the
two loses the result (the job runs again), never writes it twice.

Not a plain Ray task: a task (and the worker process running it) belongs to the driver's Ray
job and ends with it, so a daemon restart would kill every render in flight. A task owned by a
detached actor shares that fate for the same reason; only a detached actor's own process
outlives the driver, so the render runs inside it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from tunehub import __version__
from tunehub.cluster.settings import ClusterSettings, actor_name, home_key
from tunehub.cluster.worker import node_home, node_inventory, render
from tunehub.config import Config
from tunehub.errors import ClusterError, ClusterJobLost, ClusterVersionError, TunehubError

__all__ = ["RayConnection", "connection", "run_generate", "actor_name", "home_key", "shutdown"]

logger = logging.getLogger("tunehub.cluster")

POLL_INTERVAL = 0.25
_INPUT_KEYS = ("image", "video", "mask")
_CONTROLLER_ONLY = ("out",)


class _RenderJob:
    """One job attempt on one node. The render runs in a thread; methods answer at once."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.state = "running"
        self.progress: dict[str, Any] = {"status": "starting"}
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.updated = 0
        self._unpolled = UnpolledEvents()
        context = ray.get_runtime_context()
        self.home = node_home(spec["worker_home"])
        resources = {k: v for k, v in context.get_assigned_resources().items() if k != "CPU"}
        self.info = {
            "node_id": context.get_node_id(),
            "node_ip": ray.util.get_node_ip_address(),
            "host": socket.gethostname(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "resources": resources,
            "worker_home": str(self.home),
            "pid": os.getpid(),
        }
        self._thread = threading.Thread(target=self._run, name="render", daemon=True)
        self._thread.start()

    def _on_progress(self, event: dict[str, Any]) -> None:
        clean = {k: v for k, v in event.items() if isinstance(v, (str, int, float, bool, type(None)))}
        self._unpolled.add(clean)
        self.progress = clean
        self.updated += 1

    def _run(self) -> None:
        from tunehub.daemon.jobs import PERMANENT_ERRORS
        from tunehub.errors import InferenceError

        try:
            self.result = render(self.spec, self._on_progress, self.home)
            self.state = "done"
        except BaseException as exc:  # reported to the daemon, which journals it
            permanent = isinstance(exc, (*PERMANENT_ERRORS, InferenceError))
            text = str(exc) if isinstance(exc, TunehubError) else f"{type(exc).__name__}: {exc}"
            self.error = {"message": text, "permanent": permanent, "trace": traceback.format_exc(limit=5)}
            self.state = "failed"

    def poll(self) -> dict[str, Any]:
        return {"state": self.state, "progress": self.progress, "events": self._unpolled.take(),
                "updated": self.updated, "error": self.error, **self.info}  # fmt: skip

    def fetch(self) -> dict[str, Any] | None:
        return self.result


class UnpolledEvents:
    """A render's progress events since the daemon's last poll, reduced to what must reach it.

    The daemon polls a few times a second and a fast phase (40 steps of a small model) can begin
    and end between two polls. As the daemon does for a local job, the event that ends a phase
    (the next has another status) and a phase's last step are kept; a step followed by another
    of the same phase gives way to it. Fed from the render thread, taken by ``poll``."""

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, event: dict[str, Any]) -> None:
        with self._lock:
            if self._events and not _milestone(self._events[-1], event):
                self._events.pop()
            self._events.append(event)

    def take(self) -> list[dict[str, Any]]:
        """The events kept since the last call, oldest first (the newest is the render's state)."""
        with self._lock:
            events, self._events = self._events, []
        return events


def _milestone(event: dict[str, Any], following: dict[str, Any]) -> bool:
    total = event.get("total")
    return event.get("status") != following.get("status") or (total is not None and event.get("completed") == total)


_actor_class: Any = None


def _render_actor() -> Any:
    global _actor_class
    if _actor_class is None:
        _actor_class = ray.remote(_RenderJob)
    return _actor_class


@ray.remote(num_cpus=0)
def _node_facts(worker_home: str) -> dict[str, Any]:
    facts = node_inventory(worker_home)
    facts["ray"] = ray.__version__
    facts["node_id"] = ray.get_runtime_context().get_node_id()
    return facts


class RayConnection:
    """This process's connection to the cluster, checked once: same tunehub and Ray on every node."""

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self.dashboard_url: str | None = None
        # definition id -> nodes that rendered it (its files are in their cache): placement hints
        self.nodes_with: dict[str, set[str]] = {}
        self.facts: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def connect(self) -> None:
        settings = self.settings
        try:
            context = ray.init(
                address=settings.address, namespace=settings.namespace, runtime_env=settings.runtime_env or None,
                log_to_driver=False, logging_level=logging.WARNING, ignore_reinit_error=True,
            )
        except Exception as exc:
            raise ClusterError(f"cannot connect to the Ray cluster at {settings.address!r}: {type(exc).__name__}: {exc}") from None
        self.dashboard_url = getattr(context, "dashboard_url", None) or None
        self.facts = self.node_facts()
        check_versions(self.facts)

    def alive_nodes(self) -> list[dict[str, Any]]:
        return [node for node in ray.nodes() if node.get("Alive")]

    def node_facts(self, timeout: float = 120.0) -> list[dict[str, Any]]:
        """One zero-resource task pinned to each alive node: versions, home, free disk, cached definitions."""
        nodes = self.alive_nodes()
        refs = [
            _node_facts.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
                self.settings.worker_home
            )
            for node in nodes
        ]
        facts: list[dict[str, Any]] = []
        for node, ref in zip(nodes, refs):
            try:
                entry = ray.get(ref, timeout=timeout)
            except Exception as exc:
                entry = {"error": f"{type(exc).__name__}: {exc}"}
            entry["node_id"] = node["NodeID"]
            entry["node_ip"] = node.get("NodeManagerAddress")
            entry["resources"] = dict(node.get("Resources") or {})
            facts.append(entry)
            for definition_id in entry.get("cached", []):
                self.nodes_with.setdefault(definition_id, set()).add(node["NodeID"])
        return facts

    def placement(self, definition_id: str) -> Any:
        """Prefer a node that already holds the definition's files; spill elsewhere when it is busy."""
        alive = {node["NodeID"] for node in self.alive_nodes()}
        with self._lock:
            candidates = sorted(self.nodes_with.get(definition_id, set()) & alive)
        if not candidates:
            return "DEFAULT"
        return NodeAffinitySchedulingStrategy(candidates[0], soft=True, _spill_on_unavailable=True)

    def remember(self, definition_id: str, node_id: str) -> None:
        with self._lock:
            self.nodes_with.setdefault(definition_id, set()).add(node_id)


def check_versions(facts: list[dict[str, Any]], local_tunehub: str = __version__, local_ray: str = ray.__version__) -> None:
    """Every node must run this home's tunehub and Ray; the error names both versions."""
    for entry in facts:
        where = f"node {entry.get('node_ip')} ({entry['node_id'][:8]})"
        if "error" in entry and "tunehub" not in entry:
            raise ClusterError(f"{where} cannot run tunehub: {entry['error']}; set [cluster] runtime_env so the workers have tunehub {local_tunehub}")
        if entry.get("tunehub") != local_tunehub:
            raise ClusterVersionError(
                f"{where} runs tunehub {entry.get('tunehub')}, this home runs tunehub {local_tunehub}: "
                f"install tunehub {local_tunehub} on the workers (or set [cluster] runtime_env, e.g. "
                f"{{ pip = [\"tunehub=={local_tunehub}\"] }})"
            )
        if entry.get("ray") != local_ray:
            raise ClusterVersionError(f"{where} runs Ray {entry.get('ray')}, this home runs Ray {local_ray}: use one Ray version")


_connection: RayConnection | None = None
_connection_lock = threading.Lock()


def connection(settings: ClusterSettings) -> RayConnection:
    """The process-wide connection (made, and version-checked, on first use)."""
    global _connection
    with _connection_lock:
        if _connection is None or _connection.settings != settings:
            conn = RayConnection(settings)
            conn.connect()
            _connection = conn
        return _connection


def shutdown() -> None:
    global _connection
    with _connection_lock:
        _connection = None
        if ray.is_initialized():
            ray.shutdown()


def _referenced(registry: Any, definition_id: str, seen: set[str]) -> None:
    """The definition and every non-built-in definition its model references by id."""
    if definition_id in seen or definition_id not in registry.definitions:
        return
    seen.add(definition_id)

    def walk(value: Any) -> None:
        if isinstance(value, str):
            if value in registry.definitions and registry.definitions[value].origin.value != "builtin":
                _referenced(registry, value, seen)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(registry.definitions[definition_id].data.get("model", {}))


def build_spec(cfg: Config, registry: Any, job: dict[str, Any], settings: ClusterSettings) -> dict[str, Any]:
    definition_id = job["definition_id"]
    definition = registry.get(definition_id)
    ids: set[str] = set()
    if definition.origin.value != "builtin":
        _referenced(registry, definition_id, ids)
    params = {k: v for k, v in job["params"].items() if k not in _CONTROLLER_ONLY}
    inputs: dict[str, tuple[str, bytes]] = {}
    for key in _INPUT_KEYS:
        if params.get(key):
            path = Path(params.pop(key)).expanduser()
            if not path.is_file():
                raise ClusterError(f"--{key} {path}: no such file", permanent=True)
            inputs[key] = (path.name, path.read_bytes())
    return {
        "job_id": job["id"],
        "attempt": job["attempts"],
        "controller": home_key(cfg.home),
        "definition_id": definition_id,
        "definitions": {i: registry.definitions[i].data for i in sorted(ids)},
        "params": params,
        "inputs": inputs,
        "endpoint": settings.endpoint or cfg.endpoint,
        "base_repos": dict(cfg.base_repos),
        "quantization": cfg.quantization,
        "dtype": cfg.dtype,
        "worker_home": settings.worker_home,
    }


def _where(poll: dict[str, Any]) -> dict[str, Any]:
    gpu = ",".join(poll.get("gpu_ids") or []) or ",".join(f"{k}:{v:g}" for k, v in (poll.get("resources") or {}).items())
    return {"node": poll.get("node_ip"), "host": poll.get("host"), "node_id": (poll.get("node_id") or "")[:12], "gpu": gpu or "cpu"}


def _write_outputs(cfg: Config, job: dict[str, Any], result: dict[str, Any]) -> tuple[Path, Path]:
    from tunehub.inference.settings import reserve_output, write_settings
    from tunehub.safeio import atomic_write_bytes

    out = job["params"].get("out")
    if out:
        video = Path(out).expanduser()
        video = video if video.is_absolute() else cfg.home / video
        video.parent.mkdir(parents=True, exist_ok=True)
    else:
        video = reserve_output(cfg.outputs_dir, job["definition_id"], int(result["seed"]))
    atomic_write_bytes(video, result["video"])
    return video, write_settings(video, result["settings"])


def run_generate(ctx: Any, settings: ClusterSettings) -> dict[str, Any]:
    """The daemon's generate executor when ``[cluster]`` is set (see the module docstring)."""
    from tunehub.daemon.jobs import JobCancelled

    job = ctx.job
    conn = connection(settings)
    attempt = int(job["attempts"])
    name = actor_name(ctx.cfg.home, job["id"], attempt)
    try:
        actor = ray.get_actor(name, namespace=settings.namespace)
        ctx.progress({"status": "reattached", "ray_actor": name, "attempt": attempt})
    except ValueError:
        spec = build_spec(ctx.cfg, ctx.registry(), job, settings)
        options = dict(settings.actor_resources())
        actor = _render_actor().options(
            name=name, namespace=settings.namespace, lifetime="detached", max_restarts=0, max_task_retries=0,
            scheduling_strategy=conn.placement(job["definition_id"]), **options,
        ).remote(spec)
        ctx.progress({"status": "waiting for a node", "ray_actor": name, "attempt": attempt, "request": settings.describe_request()})
    where: dict[str, Any] = {}
    last_update = -1
    try:
        while True:
            if ctx.cancel.is_set():
                raise JobCancelled(ctx.cancel_reason or "cancelled")
            pending = actor.poll.remote()
            while True:
                ready, _ = ray.wait([pending], timeout=POLL_INTERVAL)
                if ready:
                    break
                if ctx.cancel.is_set():
                    raise JobCancelled(ctx.cancel_reason or "cancelled")
            try:
                poll = ray.get(pending)
            except ray.exceptions.ActorUnavailableError:
                time.sleep(POLL_INTERVAL)
                continue
            except ray.exceptions.RayActorError as exc:
                _lost(job, attempt, settings, where, exc)
            where = _where(poll)
            if poll["updated"] != last_update:
                last_update = poll["updated"]
                for event in poll["events"] or [poll["progress"]]:
                    ctx.progress({**event, **where, "ray_actor": name, "attempt": attempt})
            if poll["state"] == "failed":
                ray.kill(actor)
                error = poll["error"] or {}
                raise ClusterError(
                    f"on node {where.get('node')} ({where.get('host')}): {error.get('message', 'failed')}",
                    permanent=bool(error.get("permanent")),
                )
            if poll["state"] == "done":
                try:
                    result = ray.get(actor.fetch.remote())
                except ray.exceptions.RayActorError as exc:
                    _lost(job, attempt, settings, where, exc)
                ray.kill(actor)  # frees the GPU; from here on a crash loses the result, never doubles it
                conn.remember(job["definition_id"], poll["node_id"])
                video, settings_file = _write_outputs(ctx.cfg, job, result)
                summary = {k: v for k, v in result.items() if k not in ("video", "settings")}
                summary.update(video=str(video), settings_file=str(settings_file), attempt=attempt, ray_actor=name, **where)
                return summary
            time.sleep(POLL_INTERVAL)
    except JobCancelled as exc:
        if exc.reason != "shutdown":  # at shutdown the actor keeps rendering; the next daemon reattaches
            ray.kill(actor)
        raise


def _lost(job: dict[str, Any], attempt: int, settings: ClusterSettings, where: dict[str, Any], exc: BaseException) -> None:
    place = f"node {where['node']} ({where['host']}, {where['node_id']})" if where else "its node (before it reported)"
    reason = type(exc).__name__ + (": " + str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "")
    if attempt >= settings.max_attempts:
        raise ClusterError(
            f"attempt {attempt} lost on {place}: {reason}; gave up after {attempt} attempt(s) ([cluster] max_attempts = {settings.max_attempts})",
            permanent=True,
        )
    raise ClusterJobLost(f"attempt {attempt} lost on {place}: {reason}; retrying on another node")
