"""``tunehub cluster``: the render fleet's nodes, their GPUs, cached definitions and free disk.

Ray is imported only when this command runs (and only when ``[cluster]`` is set).
"""

from __future__ import annotations

import argparse
from typing import Any

from tunehub.cli.common import config_from_args, print_json
from tunehub.errors import ConfigError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "cluster", help="the Ray render fleet of [cluster]: nodes, GPUs, cached definitions, free disk",
        description="Connect to the Ray cluster of [cluster] in tunehub.toml (checking that every node runs this "
        "tunehub and Ray version), ask each node for its worker home, free disk and the definitions whose files it "
        "holds, and print one line per node, with the jobs of this home's daemon running there.",
    )
    p.add_argument("--json", action="store_true", help="print the nodes as JSON")
    p.set_defaults(func=cmd_cluster)


def _gib(value: Any) -> str:
    return f"{value / 2**30:.1f} GiB" if isinstance(value, (int, float)) else "?"


def _accelerators(resources: dict[str, Any], resource: str) -> str:
    parts = []
    if resources.get("GPU"):
        parts.append(f"{resources['GPU']:g} GPU")
    if resource and resources.get(resource):
        parts.append(f"{resources[resource]:g} {resource}")
    if resources.get("CPU"):
        parts.append(f"{resources['CPU']:g} CPU")
    return ", ".join(parts) or "-"


def _daemon_jobs(cfg: Any) -> list[dict[str, Any]]:
    db = cfg.state_dir / "state.db"
    if not db.is_file():
        return []
    from tunehub.daemon.journal import Journal

    journal = Journal(db, readonly=True)
    try:
        return journal.jobs(states=("running",), limit=1000)
    finally:
        journal.close()


def cmd_cluster(args: argparse.Namespace) -> int:
    from tunehub.cluster.settings import cluster_settings

    cfg = config_from_args(args)
    settings = cluster_settings(cfg)
    if settings is None:
        raise ConfigError(f"no [cluster] in {cfg.home / 'tunehub.toml'}: add engine = \"ray\" and address = ... (see docs/fleet.md)")
    from tunehub.cluster.ray_runner import RayConnection

    conn = RayConnection(settings)
    conn.connect()
    running = _daemon_jobs(cfg)
    nodes = []
    for entry in conn.facts:
        jobs = [
            {"id": job["id"], "definition": job["definition_id"], **{k: (job.get("progress") or {}).get(k) for k in ("status", "completed", "total", "gpu")}}
            for job in running
            if (job.get("progress") or {}).get("node_id") and entry["node_id"].startswith(job["progress"]["node_id"])
        ]
        nodes.append({**entry, "jobs": jobs})
    if args.json:
        print_json({"address": settings.address, "dashboard": conn.dashboard_url, "nodes": nodes})
        return 0
    print(f"cluster {settings.address}: {len(nodes)} node(s), jobs ask for {settings.describe_request()}")
    if conn.dashboard_url:
        url = conn.dashboard_url if "://" in conn.dashboard_url else f"http://{conn.dashboard_url}"
        print(f"dashboard: {url}")
    print(f"{'NODE':<22} {'HOST':<16} {'ACCELERATORS':<28} {'FREE DISK':>10}  CACHED DEFINITIONS")
    for entry in nodes:
        node = f"{entry.get('node_ip')} {entry['node_id'][:6]}"
        cached = ", ".join(entry.get("cached", [])) or "-"
        print(f"{node:<22} {str(entry.get('host', '?'))[:16]:<16} {_accelerators(entry['resources'], settings.resource):<28} "
              f"{_gib(entry.get('free_bytes')):>10}  {cached}")  # fmt: skip
        if entry.get("error"):
            print(f"{'':<22} error: {entry['error']}")
        for job in entry["jobs"]:
            step = f" step {job['completed']}/{job['total']}" if job.get("total") else ""
            print(f"{'':<22} job #{job['id']} {job['definition']} on {job.get('gpu') or '-'}: {job.get('status') or 'running'}{step}")
    return 0
