"""End to end: a definition committed to a watched remote ends pulled, quantized, published
and rewritten to URLs, with no other action (daemon and Hub server as real processes)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.conftest import definition_in

REPO = "alice/ft"


def test_remote_definition_is_pulled_quantized_published_and_rewritten(
    home: Any, hub_server: Any, tiny_models: Any, daemon_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import CommitOperationAdd
    from safetensors import safe_open

    hub_server.use_in_process(monkeypatch)
    api = hub_server.api()
    api.create_repo(REPO)
    api.upload_file(path_or_fileobj=b"# shared finetunes\n", path_in_repo="README.md", repo_id=REPO)
    # there before the daemon first looked: the baseline, not "new", so pull = "new" leaves it alone
    old_definition = {"model": {"name": "Old FT", "architecture": "t2v", "URLs": [f"{hub_server.url}/{REPO}/resolve/main/old_bf16.safetensors"]}}
    api.upload_file(
        path_or_fileobj=json.dumps(old_definition).encode(), path_in_repo="finetunes/t2v_old_ft.json", repo_id=REPO
    )
    home.write_config(
        f'[daemon]\npublish = "{REPO}"\n'
        f'[[remote]]\nrepo = "{REPO}"\npath = "finetunes"\ninterval = "1s"\n'
    )
    env = {**os.environ, **hub_server.env()}
    daemon = daemon_factory(home.root, env=env)
    daemon.wait_for(lambda s: s["remotes"][0]["state"] == "ok", what="first check of the remote")

    # someone commits a new finetune: its definition and only its 16-bit file
    source = tiny_models.finetune("t2v")["transformer"]
    bf16_url = f"{hub_server.url}/{REPO}/resolve/main/{source.name}"
    definition = {
        "prompt": "a tiny cat",
        "model": {"name": "Tiny FT", "architecture": "t2v", "URLs": [bf16_url], "auto_quantize": True},
    }
    api.create_commit(
        repo_id=REPO,
        operations=[
            CommitOperationAdd(path_in_repo=source.name, path_or_fileobj=str(source)),
            CommitOperationAdd(path_in_repo="finetunes/t2v_tiny_ft.json", path_or_fileobj=json.dumps(definition, indent=2).encode()),
        ],
        commit_message="add Tiny FT",
    )

    def finished(status: dict[str, Any]) -> Any:
        entry = definition_in(status, "t2v_tiny_ft")
        if entry and entry["state"] == "failed":
            raise AssertionError(f"the daemon gave up: {entry}\n{daemon.stderr_text()}")
        return entry if entry and entry["state"] == "ready" and entry.get("needs") == [] else None

    entry = daemon.wait_for(finished, timeout=180, what="t2v_tiny_ft synced")
    int8_name = source.name.replace("_mbf16", "_quanto_mbf16_int8")

    # pulled and verified
    pulled = home.ckpts / source.name
    assert hashlib.sha256(pulled.read_bytes()).hexdigest() == hashlib.sha256(source.read_bytes()).hexdigest()
    # the int8 file made, in quanto's format
    made = home.ckpts / int8_name
    with safe_open(str(made), "pt") as handle:
        assert (handle.metadata() or {}).get("quantization_format") == "quanto"
        assert any(key.endswith(".weight._data") for key in handle.keys())
    # both published
    repo_files = set(api.list_repo_files(REPO))
    assert {source.name, int8_name} <= repo_files
    # the local entries rewritten to URLs (in the working copy of the remote definition)
    working = json.loads((home.root / "remote" / "alice--ft" / "t2v_tiny_ft.json").read_text())
    urls = working["model"]["URLs"]
    assert urls[0] == bf16_url
    assert urls[1:] == [f"{hub_server.url}/{REPO}/resolve/main/{int8_name}"]
    assert working["prompt"] == "a tiny cat"
    # the chosen file is now the int8 one, present
    assert entry["files"][0]["filename"] == int8_name and entry["files"][0]["present"]
    jobs = [(j["kind"], j["definition_id"], j["state"]) for j in reversed(daemon.client.jobs())]
    assert jobs == [("pull", "t2v_tiny_ft", "done"), ("quantize", "t2v_tiny_ft", "done"), ("publish", "t2v_tiny_ft", "done")]
    old_entry = definition_in(daemon.client.status(), "t2v_old_ft")
    assert old_entry["origin"] == "remote" and old_entry["state"] == "missing" and old_entry["needs"] == []
    assert hub_server.write_token not in Path(home.root / ".tunehub" / "daemon.log").read_text()
