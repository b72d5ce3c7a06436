"""A real daemon beside broken definition files: it starts, reports each, and pulls the rest."""

from __future__ import annotations

import json
import os
from typing import Any

from tests.daemon.conftest import definition_in
from tests.hub.test_pull import _upload
from tests.registry.test_reading import BAD_NAMES, _break_folder


def test_daemon_starts_and_pulls_beside_broken_files(home: Any, hub_server: Any, daemon_factory: Any) -> None:
    _break_folder(home.finetunes)
    api = hub_server.api()
    api.create_repo("alice/rdd")
    data = os.urandom(100_000)
    urls = _upload(hub_server, {"wan2.1_t2v_rdd_mbf16.safetensors": data}, repo="alice/rdd")
    home.write_config("quantization = \"bf16\"\n")
    env = {**os.environ, **hub_server.env()}
    daemon = daemon_factory(home.root, env=env)
    status = daemon.client.status()
    for name in BAD_NAMES:
        entry = definition_in(status, name)
        assert entry is not None and entry["state"] == "invalid", (name, entry)
    # a loop made while it runs is reported too, not taken for a removal
    os.symlink("loop_d.json", home.finetunes / "loop_c.json")
    os.symlink("loop_c.json", home.finetunes / "loop_d.json")
    daemon.wait_for(lambda s: (definition_in(s, "loop_c") or {}).get("state") == "invalid", timeout=20,
                    what="loop_c reported invalid")
    home.write_definition("t2v_rdd", {"name": "rdd", "architecture": "t2v", "URLs": list(urls.values())})
    daemon.wait_for(lambda s: (definition_in(s, "t2v_rdd") or {}).get("state") == "ready", timeout=60,
                    what="t2v_rdd pulled")
    assert (home.ckpts / "wan2.1_t2v_rdd_mbf16.safetensors").read_bytes() == data
    jobs = daemon.client.jobs()
    assert jobs and all(job["state"] == "done" for job in jobs), json.dumps(jobs)[:2000]
