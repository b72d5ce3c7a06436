"""What runs on a cluster node: one generate job in that node's own home.

The node's home (``[cluster] worker_home``, or ``$TUNEHUB_WORKER_HOME`` set where the node
was started) holds that node's weights cache. A job brings the definition (as the
submitting home sees it, merged), the settings and any input files; the node writes the
definition into its home's ``finetunes/``, pulls the files it lacks through tunehub's own
pull (verified, resumable, one download per file per node), generates, and hands back the
mp4 and its settings. Nothing here imports Ray: the actor in :mod:`tunehub.cluster.ray_runner`
wraps it, and the tests can run it in-process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunehub import __version__
from tunehub.config import Config, load_config
from tunehub.safeio import atomic_write_bytes, atomic_write_text

__all__ = ["render", "node_home", "node_inventory", "RUNS_LOG", "WORKER_HOME_ENV"]

WORKER_HOME_ENV = "TUNEHUB_WORKER_HOME"
RUNS_LOG = "cluster-runs.jsonl"  # in <worker home>/.tunehub/: one line per render started here

Progress = Callable[[dict[str, Any]], None]


def node_home(configured: str) -> Path:
    """This node's home: ``$TUNEHUB_WORKER_HOME`` where the node was started, else ``[cluster] worker_home``."""
    return Path(os.environ.get(WORKER_HOME_ENV) or configured or "~/.tunehub-worker").expanduser().resolve()


def _worker_config(home: Path, spec: dict[str, Any]) -> Config:
    home.mkdir(parents=True, exist_ok=True)
    (home / "finetunes").mkdir(exist_ok=True)
    cfg = load_config(home)
    # The submitting home's choices, not the node's own tunehub.toml, decide what is rendered.
    cfg.endpoint = spec["endpoint"]
    cfg.base_repos = dict(spec.get("base_repos") or {})
    cfg.quantization = spec.get("quantization") or cfg.quantization
    cfg.dtype = spec.get("dtype") or cfg.dtype
    return cfg


def _place_definitions(cfg: Config, definitions: dict[str, dict[str, Any]]) -> None:
    for definition_id, data in definitions.items():
        target = cfg.home / "finetunes" / f"{definition_id}.json"
        text = json.dumps(data, indent=4, ensure_ascii=False) + "\n"
        try:
            if target.read_text(encoding="utf-8") == text:
                continue
        except OSError:
            pass
        atomic_write_text(target, text)


def _log_run(cfg: Config, spec: dict[str, Any]) -> None:
    line = {
        "time": time.time(), "job": spec["job_id"], "attempt": spec["attempt"], "controller": spec["controller"],
        "definition": spec["definition_id"], "pid": os.getpid(), "host": socket.gethostname(),
    }
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    with open(cfg.state_dir / RUNS_LOG, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")


def render(spec: dict[str, Any], progress: Progress, home: Path) -> dict[str, Any]:
    """Pull what the job's definition needs into ``home``, generate, return the video and its settings."""
    from tunehub.flows import pull_definition
    from tunehub.inference import generate
    from tunehub.registry import Registry

    started = time.perf_counter()
    cfg = _worker_config(home, spec)
    _log_run(cfg, spec)
    _place_definitions(cfg, spec["definitions"])
    definition_id = spec["definition_id"]
    params = dict(spec["params"])
    scratch = cfg.state_dir / "cluster-jobs" / f"{spec['controller']}-{spec['job_id']}-{spec['attempt']}"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        for key, (name, data) in (spec.get("inputs") or {}).items():
            path = scratch / Path(name).name
            atomic_write_bytes(path, data)
            params[key] = str(path)
        progress({"status": "pulling"})
        pull_definition(
            cfg, Registry.load(cfg), definition_id, quantize=False,
            quantization=params.get("quantization"), dtype=params.get("dtype"), progress=progress,
        )
        pulled = time.perf_counter()
        out = scratch / "video.mp4"
        params["out"] = str(out)
        result = generate(cfg, Registry.load(cfg), definition_id, progress=progress, **params)
        return {
            "video": out.read_bytes(),
            "settings": result.settings,
            "seed": result.seed,
            "frames": result.frames,
            "width": result.width,
            "height": result.height,
            "device": result.device,
            "pull_seconds": round(pulled - started, 3),
            "load_seconds": round(result.load_seconds, 3),
            "denoise_seconds": round(result.denoise_seconds, 3),
            "render_seconds": round(time.perf_counter() - started, 3),
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # the node keeps weights, not videos


def node_inventory(configured_home: str) -> dict[str, Any]:
    """For ``tunehub cluster``: this node's home, free disk, and the definitions whose files it holds."""
    home = node_home(configured_home)
    entry: dict[str, Any] = {"home": str(home), "tunehub": __version__, "host": socket.gethostname(), "cached": []}
    folder = home
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    usage = shutil.disk_usage(folder)
    entry["free_bytes"] = usage.free
    entry["total_bytes"] = usage.total
    if not (home / "finetunes").is_dir():
        return entry
    try:
        from tunehub.registry import Registry

        cfg = load_config(home)
        registry = Registry.load(cfg)
        for path in sorted((home / "finetunes").glob("*.json")):
            try:
                files = registry.resolve(path.stem).all_files()
            except Exception:
                continue
            if files and all(choice.present for choice in files):
                entry["cached"].append(path.stem)
    except Exception as exc:  # an inventory never fails the listing; it says why it is empty
        entry["error"] = f"{type(exc).__name__}: {exc}"
    return entry
