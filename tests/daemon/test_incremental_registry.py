"""The daemon reloads only what changed: jobs work on its registry, not on a fresh load of every
folder (a real daemon over 2,000 definitions, real jobs, real file events)."""

from __future__ import annotations

import json
from typing import Any

from tests.daemon.conftest import definition_in

COUNT = 2000


def test_jobs_and_edits_do_not_reload_the_whole_registry(home: Any, daemon_factory: Any) -> None:
    home.ckpts.mkdir(parents=True, exist_ok=True)
    (home.ckpts / "shared_bf16.safetensors").write_bytes(b"x" * 64)
    home.finetunes.mkdir(parents=True, exist_ok=True)
    for index in range(COUNT):
        data = {"model": {"name": f"ft {index}", "architecture": "t2v", "URLs": ["shared_bf16.safetensors"]}}
        (home.finetunes / f"t2v_n{index:04d}.json").write_text(json.dumps(data))
    home.write_config('quantization = "bf16"\n[daemon]\npull = "none"\n')
    daemon = daemon_factory(home.root)
    loads_at_start = daemon.client.status()["registry_loads"]
    jobs = [daemon.client.submit_job("pull", f"t2v_n{index:04d}") for index in range(20)]
    edited = home.finetunes / "t2v_n0007.json"
    edited.write_text(json.dumps({"model": {"name": "edited", "architecture": "t2v", "URLs": ["shared_bf16.safetensors"]}}))
    daemon.wait_for(lambda s: (definition_in(s, "t2v_n0007") or {}).get("name") == "edited", timeout=30,
                    what="the edit seen")
    done_ids = {job["id"] for job in jobs}
    daemon.wait_for(lambda s: all(j["state"] == "done" for j in daemon.client.jobs() if j["id"] in done_ids),
                    timeout=120, what="20 jobs done")
    assert daemon.client.status()["registry_loads"] == loads_at_start  # no job and no edit reloaded every folder
