"""The render fleet: N tiny generate jobs through the daemon on 1 vs 2 local Ray worker nodes.

    python benchmarks/fleet.py            # 12 jobs (the issue's measure)
    python benchmarks/fleet.py --jobs 4   # quicker

Everything is real and local: a ``tunehub hub serve`` with a tiny Wan 1.3B-shaped base repo
and finetune, a Ray head plus worker nodes started with ``ray start`` (one ``tunehub_gpu``
each, 1 CPU), the daemon of a fresh home submitting the jobs. The anchor is the same jobs
in a daemon without ``[cluster]`` (one generate at a time, in its own process).

Printed: wall time per run, the 2-worker / 1-worker speed ratio, and the scheduling overhead
per job on the cluster: wall time of the 1-worker run divided by the jobs (they run one after
another) minus the mean time the worker itself spent (pull + load + denoise + write), i.e.
what Ray placement, the actor's process start, progress polling and bringing the mp4 back cost.
On a shared 2-core machine both workers share the same two cores: the ratio says how much
of the fleet's win survives CPU contention, not what two GPU machines give.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.cluster.conftest import RESOURCE, cluster_env, start_cluster  # noqa: E402
from tests.daemon.conftest import DaemonProcess  # noqa: E402
from tests.fixtures.hub_server import HubServer  # noqa: E402
from tunehub.demo.tiny import TinyModels, base_repo_id, publish_base_repo  # noqa: E402

ARCH = "t2v_1.3B"
DEFINITION = "tiny_fleet"


def write_home(root: Path, hub: str, base: str, finetune_url: str, address: str | None) -> Path:
    (root / "finetunes").mkdir(parents=True)
    toml = [f'endpoint = "{hub}"', "[base_repos]", f'"{ARCH}" = "{base}"', "[daemon]", 'pull = "all"', 'quantize = "never"']
    if address:
        toml = [t for t in toml if t != 'pull = "all"'] + ['pull = "none"']
        toml += ["[cluster]", f'address = "{address}"', f'resource = "{RESOURCE}"', "max_jobs = 4", f'namespace = "b{uuid.uuid4().hex[:6]}"']
    (root / "tunehub.toml").write_text("\n".join(toml) + "\n")
    definition = {"prompt": "a red cat dances", "resolution": "32x32", "video_length": 5, "num_inference_steps": 4,
                  "seed": 1, "model": {"name": "Tiny fleet", "architecture": ARCH, "URLs": [finetune_url]}}  # fmt: skip
    (root / "finetunes" / f"{DEFINITION}.json").write_text(json.dumps(definition, indent=4))
    return root


def run_jobs(root: Path, env: dict[str, str], jobs: int, warm: bool) -> dict[str, Any]:
    daemon = DaemonProcess(root, env).start()
    try:
        if warm:  # the local anchor: the daemon pulls the file first (pull = "all"); not timed
            deadline = time.monotonic() + 600
            while not list((root / "ckpts").glob("*.safetensors")) and time.monotonic() < deadline:
                time.sleep(0.5)
        started = time.perf_counter()
        ids = [daemon.client.submit_job("generate", DEFINITION, seed=100 + i, device="cpu")["id"] for i in range(jobs)]
        while True:
            found = [j for j in daemon.client.jobs() if j["id"] in ids]
            if all(j["state"] in ("done", "failed", "cancelled") for j in found):
                break
            time.sleep(0.2)
        wall = time.perf_counter() - started
    finally:
        daemon.stop()
    failed = [j for j in found if j["state"] != "done"]
    if failed:
        raise SystemExit(f"jobs failed: {[(j['id'], j['last_error']) for j in failed]}")
    results = [j["result"] or {} for j in found]
    return {
        "wall": wall,
        "render": [r.get("render_seconds") for r in results if r.get("render_seconds") is not None],
        "nodes": sorted({r.get("node_id") for r in results if r.get("node_id")}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--skip-local", action="store_true", help="leave out the local anchor")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="thfleet-", dir="/tmp"))
    server = HubServer(work / "hub-root", home=work / "hf-home").start()
    cluster = None
    try:
        tiny = TinyModels(root=work / "tiny")
        base = publish_base_repo(server, tiny.base_repo(ARCH), base_repo_id(ARCH, tag="-bench"))
        finetune = tiny.finetune(ARCH)["transformer"]
        api = server.api()
        api.create_repo("alice/fleet-bench")
        api.upload_file(path_or_fileobj=str(finetune), path_in_repo=finetune.name, repo_id="alice/fleet-bench")
        url = f"{server.url}/alice/fleet-bench/resolve/main/{finetune.name}"
        env = cluster_env(server)
        env["TUNEHUB_NO_COMPILE"] = "1"
        rows: list[tuple[str, dict[str, Any]]] = []
        if not args.skip_local:
            local = run_jobs(write_home(work / "local", server.url, base, url, None), env, args.jobs, warm=True)
            rows.append(("local daemon (anchor)", local))
        (work / "ray").mkdir()
        cluster = start_cluster(work / "ray", env, [work / "ray" / "w1"])
        warmup = run_jobs(write_home(work / "warm", server.url, base, url, cluster.address), cluster.env, 1, warm=False)
        one = run_jobs(write_home(work / "one", server.url, base, url, cluster.address), cluster.env, args.jobs, warm=False)
        rows.append(("Ray, 1 worker node", one))
        cluster.add_worker("w2", work / "ray" / "w2", {})
        two = run_jobs(write_home(work / "two", server.url, base, url, cluster.address), cluster.env, args.jobs, warm=False)
        rows.append(("Ray, 2 worker nodes", two))
        print(f"\n{args.jobs} tiny generate jobs (Wan 1.3B-shaped random weights, 32x32x5, 4 steps, CPU) through the daemon")
        print(f"{'run':<24} {'wall s':>8} {'per job s':>10} {'worker time/job s':>18}  nodes")
        for label, row in rows:
            mean_render = statistics.fmean(row["render"]) if row["render"] else float("nan")
            print(f"{label:<24} {row['wall']:>8.1f} {row['wall'] / args.jobs:>10.2f} {mean_render:>18.2f}  {len(row['nodes'])}")
        print(f"\n2 workers / 1 worker: {one['wall'] / two['wall']:.2f}x the throughput")
        overhead = one["wall"] / args.jobs - statistics.fmean(one["render"])
        print(f"scheduling overhead per job (1 worker: wall/jobs - worker time): {overhead * 1000:.0f} ms")
        print(f"first job on a fresh node (warm-up, not counted): {warmup['wall']:.1f} s")
        if not args.skip_local:
            print(f"1 Ray worker vs the local daemon: {one['wall'] / rows[0][1]['wall']:.2f}x the wall time")
    finally:
        if cluster is not None:
            cluster.stop()
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
