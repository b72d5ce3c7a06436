"""Remote definitions against a real Hub server and daemon: a half-finished local edit is
never overwritten, and a definition whose bytes changed in transit is never stored."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.daemon.conftest import definition_in
from tests.daemon.test_remote import REPO, _definition, _env, _upload, remote_repo  # noqa: F401 (fixture)


def test_half_finished_edit_is_kept_and_the_remote_change_applied_after(
    home: Any, remote_repo: Any, daemon_factory: Any
) -> None:
    hub_server = remote_repo
    _upload(hub_server, "t2v_mine.json", _definition("Mine v1", ["mine_bf16.safetensors"]))
    home.write_config(f'[daemon]\npull = "none"\n[[remote]]\nrepo = "{REPO}"\ninterval = "1s"\n')
    daemon = daemon_factory(home.root, env=_env(hub_server, hub_server.url))
    daemon.wait_for(lambda s: definition_in(s, "t2v_mine"), what="the remote definition")
    working = home.root / "remote" / "alice--defs" / "t2v_mine.json"
    data = json.loads(working.read_text())
    data["prompt"] = "my own prompt"  # a valid local edit ...
    half = json.dumps(data, indent=4)[:-3] + ',\n  "negative_prompt": "blur'  # ... then one half-typed
    working.write_text(half)

    _upload(hub_server, "t2v_mine.json", _definition("Mine v2", ["mine_bf16.safetensors"]), "v2")
    entry = daemon.wait_for(lambda s: (e := definition_in(s, "t2v_mine")) and e["state"] == "conflict" and e,
                            timeout=30, what="the conflict")
    assert "fix your edit" in entry["error"]
    assert working.read_text() == half  # not a byte of the user's file changed
    waiting = working.with_name("t2v_mine.json.tunehub-remote")
    assert json.loads(waiting.read_text())["model"]["name"] == "Mine v2"
    shown = home.run("status")
    assert "conflict" in shown.stdout and "fix your edit" in shown.stdout
    time.sleep(2.5)  # more polls: still left alone
    assert working.read_text() == half

    data["negative_prompt"] = "blur"
    working.write_text(json.dumps(data, indent=4) + "\n")  # the edit finished: it parses
    entry = daemon.wait_for(lambda s: (e := definition_in(s, "t2v_mine")) and e["name"] == "Mine v2"
                            and e["state"] != "conflict" and e, timeout=30, what="the remote change applied")
    merged = json.loads(working.read_text())
    assert merged["model"]["name"] == "Mine v2"
    assert merged["prompt"] == "my own prompt" and merged["negative_prompt"] == "blur"
    assert not waiting.exists()


def test_a_byte_changed_in_transit_is_refetched_never_stored(
    home: Any, remote_repo: Any, fault_proxy: Any, daemon_factory: Any
) -> None:
    hub_server = remote_repo
    original = _definition("Flip", ["flip_bf16.safetensors"])
    payload = json.dumps(original, indent=2).encode()
    _upload(hub_server, "t2v_flip.json", payload)
    # twice: the fetch and the immediate re-fetch; the check after the backoff gets the true bytes
    fault_proxy.corrupt = [["/resolve/", b"a cat", b"a bat", 2]]
    home.write_config(f'[daemon]\npull = "none"\n[[remote]]\nrepo = "{REPO}"\ninterval = "1s"\n')
    daemon = daemon_factory(home.root, env=_env(hub_server, fault_proxy.url))
    working = home.root / "remote" / "alice--defs" / "t2v_flip.json"
    remote = daemon.wait_for(lambda s: s["remotes"] and s["remotes"][0]["last_error"] and s["remotes"][0],
                             timeout=30, what="the integrity error")
    assert "blob id" in remote["last_error"]
    assert not working.exists() or working.read_bytes() == payload
    daemon.wait_for(lambda s: definition_in(s, "t2v_flip"), timeout=60, what="the true bytes stored")
    assert working.read_bytes() == payload
    assert fault_proxy.corrupt[0][3] == 0
