"""``publish`` against a real ``tunehub hub serve``: one commit, dedupe, rewrite, concurrent edit, dry run."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from tunehub.errors import DefinitionError, HubAuthError
from tunehub.hub.publish import publish
from tunehub.hub.pull import pull

FILES = ("wan2.1_t2v_mine_mbf16.safetensors", "wan2.1_t2v_mine_quanto_mbf16_int8.safetensors")


@pytest.fixture
def hub(home, hub_server, monkeypatch):
    hub_server.use_in_process(monkeypatch)
    return hub_server


def _local_definition(home, sizes=(700_000, 400_000)) -> dict[str, bytes]:
    payloads = {name: os.urandom(size) for name, size in zip(FILES, sizes)}
    for name, data in payloads.items():
        (home.ckpts / name).write_bytes(data)
    # tabs, an unknown key and a settings block: all must survive the rewrite
    home.write_definition(
        "t2v_mine",
        {"name": "mine", "architecture": "t2v", "URLs": list(FILES), "x_custom": {"keep": True}},
        indent="\t",
        prompt="a cat",
        num_inference_steps=8,
    )
    return payloads


def _commits(hub, repo: str) -> list:
    return list(hub.api().list_repo_commits(repo))


def test_publish_uploads_in_one_commit_and_rewrites_entries(home, hub):
    payloads = _local_definition(home)
    path = home.finetunes / "t2v_mine.json"
    registry = home.registry()
    result = publish(home.config(), registry, "t2v_mine", "alice/mine")
    assert result.committed and result.repo_created
    assert registry.get("t2v_mine").model["URLs"][0].startswith(f"{hub.url}/alice/mine/resolve/main/")
    assert [f.status for f in result.files] == ["upload", "upload"]
    commits = _commits(hub, "alice/mine")
    assert [c.title for c in commits].count("tunehub publish t2v_mine") == 1
    info = hub.api().model_info("alice/mine", files_metadata=True)
    remote = {s.rfilename: s.lfs.sha256 for s in info.siblings if s.lfs}
    assert remote == {name: hashlib.sha256(data).hexdigest() for name, data in payloads.items()}

    text = path.read_text()
    data = json.loads(text)
    assert data["model"]["URLs"] == [f"{hub.url}/alice/mine/resolve/main/{name}" for name in FILES]
    assert list(data) == ["prompt", "num_inference_steps", "model"]
    assert data["model"]["x_custom"] == {"keep": True}
    assert text.startswith("{\n\t")

    # the rewritten definition pulls back the same files (present, verified by publish's hashing)
    pulled = pull(home.config(), home.registry(), "t2v_mine", quantization="int8", dtype="bf16")
    assert pulled.bytes_transferred == 0

    # second publish: nothing local left, nothing sent, no commit
    again = publish(home.config(), home.registry(), "t2v_mine", "alice/mine")
    assert not again.committed and again.bytes_uploaded == 0 and again.files == []
    assert len(_commits(hub, "alice/mine")) == len(commits)


def test_second_publish_of_same_bytes_sends_nothing(home, hub):
    _local_definition(home)
    first = publish(home.config(), home.registry(), "t2v_mine", "alice/mine")
    commits = len(_commits(hub, "alice/mine"))
    # another definition naming the same local files: all already in the repo
    home.write_definition("t2v_mine2", {"name": "again", "architecture": "t2v", "URLs": list(FILES)})
    second = publish(home.config(), home.registry(), "t2v_mine2", "alice/mine")
    assert first.bytes_uploaded > 0
    assert [f.status for f in second.files] == ["already there", "already there"]
    assert second.bytes_uploaded == 0 and not second.committed
    assert len(_commits(hub, "alice/mine")) == commits
    data = json.loads((home.finetunes / "t2v_mine2.json").read_text())
    assert all(u.startswith(f"{hub.url}/alice/mine/resolve/main/") for u in data["model"]["URLs"])


def test_edit_made_during_publish_survives(home, hub):
    _local_definition(home)
    path = home.finetunes / "t2v_mine.json"

    def edit_while_uploading(event):
        if event["status"] == "uploading" and event["file"] == FILES[0]:
            data = json.loads(path.read_text())
            data["prompt"] = "a dog, edited during publish"
            data["model"]["description"] = "added by the user"
            path.write_text(json.dumps(data, indent="\t") + "\n")

    publish(home.config(), home.registry(), "t2v_mine", "alice/mine", progress=edit_while_uploading)
    data = json.loads(path.read_text())
    assert data["prompt"] == "a dog, edited during publish"
    assert data["model"]["description"] == "added by the user"
    assert all(u.startswith(hub.url) for u in data["model"]["URLs"])


def test_dry_run_changes_nothing(home, hub):
    _local_definition(home)
    path = home.finetunes / "t2v_mine.json"
    before = path.read_bytes()
    result = publish(home.config(), home.registry(), "t2v_mine", "alice/mine", dry_run=True, include_definition=True)
    assert [f.status for f in result.files] == ["upload", "upload", "definition"]
    assert result.definition["model"]["URLs"][0] == f"{hub.url}/alice/mine/resolve/main/{FILES[0]}"
    assert path.read_bytes() == before
    assert not hub.api().repo_exists("alice/mine")


def test_include_definition_uploads_rewritten_definition(home, hub):
    _local_definition(home)
    publish(home.config(), home.registry(), "t2v_mine", "alice/mine", include_definition=True)
    assert [c.title for c in _commits(hub, "alice/mine")].count("tunehub publish t2v_mine") == 1
    from huggingface_hub import hf_hub_download

    shared = hf_hub_download("alice/mine", "finetunes/t2v_mine.json", endpoint=hub.url, cache_dir=str(hub.cache_dir))
    with open(shared, encoding="utf-8") as handle:
        uploaded = json.load(handle)
    assert uploaded == json.loads((home.finetunes / "t2v_mine.json").read_text())
    assert uploaded["model"]["URLs"][1].endswith(FILES[1])
    # again: the same definition is already there: no commit
    commits = len(_commits(hub, "alice/mine"))
    again = publish(home.config(), home.registry(), "t2v_mine", "alice/mine", include_definition=True)
    assert not again.committed and len(_commits(hub, "alice/mine")) == commits


def test_missing_local_file_is_named(home, hub):
    home.write_definition("t2v_gone", {"name": "g", "architecture": "t2v", "URLs": ["gone_mbf16.safetensors"]})
    with pytest.raises(DefinitionError, match="gone_mbf16.safetensors"):
        publish(home.config(), home.registry(), "t2v_gone", "alice/mine")


def test_read_only_token_is_refused_clearly(home, hub, monkeypatch):
    _local_definition(home)
    hub.use_in_process(monkeypatch, token=hub.read_token)
    path = home.finetunes / "t2v_mine.json"
    before = path.read_bytes()
    with pytest.raises(HubAuthError) as info:
        publish(home.config(), home.registry(), "t2v_mine", "alice/mine")
    assert "alice/mine" in str(info.value) and hub.read_token not in str(info.value)
    assert path.read_bytes() == before


def test_cli_publish_never_shows_the_token(home, hub):
    _local_definition(home)
    env = home.env(**hub.env())
    dry = home.run("publish", "t2v_mine", "--repo", "alice/mine", "--dry-run", env=env, check=True)
    assert "would upload" in dry.stdout and FILES[0] in dry.stdout
    done = home.run("publish", "t2v_mine", "--repo", "alice/mine", "--include-definition", env=env, check=True)
    assert "commit" in done.stdout
    again = home.run("publish", "t2v_mine", "--repo", "alice/mine", env=env, check=True)
    assert "no commit" in again.stdout and "rewrote" not in again.stdout
    home.write_definition("t2v_mine2", {"name": "again", "architecture": "t2v", "URLs": list(FILES)})
    bob = home.run("publish", "t2v_mine2", "--repo", "alice/other", env=home.env(**hub.env(token=hub.bob_token)))
    assert bob.returncode == 1 and "alice/other" in bob.stderr
    for completed in (dry, done, again, bob):
        for text in (completed.stdout, completed.stderr):
            for token in (hub.write_token, hub.bob_token):
                assert token not in text
    for path in home.root.rglob("*"):
        if path.is_file() and path.stat().st_size < 1_000_000:
            text = path.read_text(errors="replace")
            assert hub.write_token not in text and hub.bob_token not in text


def test_publish_to_a_branch_names_it_in_the_urls(home, hub):
    payloads = _local_definition(home)
    result = publish(home.config(), home.registry(), "t2v_mine", "alice/mine", revision="dev", private=True)
    assert result.committed
    data = json.loads((home.finetunes / "t2v_mine.json").read_text())
    assert data["model"]["URLs"][0] == f"{hub.url}/alice/mine/resolve/dev/{FILES[0]}"
    api = hub.api()
    assert api.model_info("alice/mine").private is True
    on_dev = {s.rfilename for s in api.model_info("alice/mine", revision="dev").siblings}
    assert set(payloads) <= on_dev
    # pulling it back from the branch works (private repo: the user's token is sent to the endpoint)
    for name in FILES:
        (home.ckpts / name).unlink()
    pulled = pull(home.config(), home.registry(), "t2v_mine", quantization="bf16")
    assert [i.status for i in pulled.files] == ["downloaded"]
    assert (home.ckpts / FILES[0]).read_bytes() == payloads[FILES[0]]


def test_upload_reuses_the_known_sha256_without_reading_the_file_again(tmp_path):
    from huggingface_hub import CommitOperationAdd

    from tunehub.hub.publish import _operation

    path = tmp_path / "w.safetensors"
    path.write_bytes(os.urandom(4096))
    known = hashlib.sha256(path.read_bytes()).hexdigest()
    operation = _operation(CommitOperationAdd, "w.safetensors", path, {str(path): known})
    path.write_bytes(b"changed after hashing")  # a re-read would now give another digest
    assert operation.upload_info.sha256.hex() == known


def test_publish_reports_upload_progress_per_byte(home, hub):
    """An upload shows its bytes as they go (not 0 of the size, then all of it at once)."""
    big = 6 * 1024 * 1024
    _local_definition(home, sizes=(big, 300_000))
    events = []
    publish(home.config(), home.registry(), "t2v_mine", "alice/mine", progress=events.append)
    big_events = [e for e in events if e["file"] == FILES[0]]
    middle = [e["completed"] for e in big_events if e["status"] == "uploading" and 0 < e["completed"] < big]
    assert len(middle) >= 3, big_events
    assert middle == sorted(middle)
    assert big_events[-1]["completed"] == big and big_events[-1]["status"] == "uploaded"
