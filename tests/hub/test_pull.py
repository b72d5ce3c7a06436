"""``pull`` against a real ``tunehub hub serve`` (the ``hub_server`` fixture), in process and via the CLI."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from tests.hub.test_download_helpers import FaultProxy
from tunehub.errors import IntegrityError, OfflineError
from tunehub.hub.pull import VerifiedRecords, pull


@pytest.fixture
def hub(home, hub_server, monkeypatch):
    """The server, this process's huggingface_hub pointed at it, and a repo ``alice/wan-ft``."""
    hub_server.use_in_process(monkeypatch)
    api = hub_server.api()
    api.create_repo("alice/wan-ft")
    return hub_server


def _upload(server, files: dict[str, bytes], repo: str = "alice/wan-ft") -> dict[str, str]:
    from huggingface_hub import CommitOperationAdd

    server.api().create_commit(
        repo, [CommitOperationAdd(path_in_repo=name, path_or_fileobj=data) for name, data in files.items()],
        commit_message="weights",
    )
    return {name: f"{server.url}/{repo}/resolve/main/{name}" for name, data in files.items()}


VARIANTS = (
    "wan2.1_t2v_demo_mbf16.safetensors",
    "wan2.1_t2v_demo_quanto_mbf16_int8.safetensors",
    "wan2.1_t2v_demo_quanto_mfp16_int8.safetensors",
)


def _variant_definition(home, hub, size: int = 600_000) -> tuple[dict[str, bytes], dict[str, str]]:
    payloads = {name: os.urandom(size + i) for i, name in enumerate(VARIANTS)}
    payloads["wan2.1_t2v_demo_map.json"] = b'{"blocks.0": {"weights": "qint8"}}'
    urls = _upload(hub, payloads)
    home.write_definition(
        "t2v_demo",
        {
            "name": "demo",
            "architecture": "t2v",
            "URLs": [urls[name] for name in VARIANTS],
            "preload_URLs": [urls["wan2.1_t2v_demo_map.json"]],
        },
    )
    return payloads, urls


def test_pull_fetches_the_resolved_variant_and_verifies_it(home, hub):
    payloads, _ = _variant_definition(home, hub)
    cfg = home.config()
    events = []
    result = pull(cfg, home.registry(), "t2v_demo", quantization="int8", dtype="bf16", progress=events.append)
    chosen = "wan2.1_t2v_demo_quanto_mbf16_int8.safetensors"
    assert sorted(p.name for p in home.ckpts.iterdir()) == sorted([chosen, "wan2.1_t2v_demo_map.json"])
    assert (home.ckpts / chosen).read_bytes() == payloads[chosen]
    by_name = {item.filename: item for item in result.files}
    assert by_name[chosen].status == "downloaded"
    assert by_name[chosen].sha256 == hashlib.sha256(payloads[chosen]).hexdigest()
    # the small JSON file is a regular (non-LFS) file: verified by its git blob sha1, still recorded
    assert by_name["wan2.1_t2v_demo_map.json"].status == "downloaded"
    records = VerifiedRecords(cfg.state_dir)
    assert records.lookup(home.ckpts / chosen) == by_name[chosen].sha256
    assert {e["status"] for e in events if e["file"] == chosen} >= {"checking", "verifying", "done"}

    # again: nothing fetched, nothing re-hashed (the record answers)
    again = pull(cfg, home.registry(), "t2v_demo", quantization="int8", dtype="bf16")
    assert {item.status for item in again.files} == {"present"}
    assert again.bytes_transferred == 0

    # fp16 picks the other int8 file; --all-variants fetches the rest
    fp16 = pull(cfg, home.registry(), "t2v_demo", quantization="int8", dtype="fp16")
    assert [i.filename for i in fp16.files if i.status == "downloaded"] == ["wan2.1_t2v_demo_quanto_mfp16_int8.safetensors"]
    every = pull(cfg, home.registry(), "t2v_demo", all_variants=True)
    assert [i.filename for i in every.files if i.status == "downloaded"] == ["wan2.1_t2v_demo_mbf16.safetensors"]
    for name, data in payloads.items():
        assert (home.ckpts / name).read_bytes() == data


def test_altered_bytes_raise_and_place_nothing(home, hub):
    data = os.urandom(1_500_000)
    urls = _upload(hub, {"wan2.1_t2v_bad_mbf16.safetensors": data})
    home.write_definition("t2v_bad", {"name": "bad", "architecture": "t2v", "URLs": list(urls.values())})
    # corrupt the stored blob on the server: it now serves altered bytes under the original sha256
    blob = next(p for p in (hub.root / "blobs").rglob(hashlib.sha256(data).hexdigest()))
    blob.chmod(0o644)
    altered = bytearray(data)
    altered[700_000] ^= 0xFF
    blob.write_bytes(bytes(altered))
    with pytest.raises(IntegrityError) as info:
        pull(home.config(), home.registry(), "t2v_bad", quantization="bf16")
    assert "wan2.1_t2v_bad_mbf16.safetensors" in str(info.value)
    assert list(home.ckpts.iterdir()) == []


def test_retry_after_from_the_hub_is_honoured(home, hub, monkeypatch):
    data = os.urandom(300_000)
    urls = _upload(hub, {"wan2.1_t2v_r_mbf16.safetensors": data})
    proxy = FaultProxy(hub.url)
    try:
        monkeypatch.setenv("HF_ENDPOINT", proxy.url)
        url = list(urls.values())[0].replace(hub.url, proxy.url)
        home.write_definition("t2v_r", {"name": "r", "architecture": "t2v", "URLs": [url]})
        proxy.faults.fail_statuses = [429]
        proxy.faults.retry_after = "2"
        result = pull(home.config(), home.registry(), "t2v_r", quantization="bf16")
        gets = proxy.gets()
        assert len(gets) == 2 and gets[1][3] - gets[0][3] >= 1.9
        assert result.files[0].status == "downloaded"
        assert (home.ckpts / "wan2.1_t2v_r_mbf16.safetensors").read_bytes() == data
    finally:
        proxy.close()


def test_offline_uses_present_files_and_sends_nothing(home, hub, monkeypatch):
    payloads, _ = _variant_definition(home, hub, size=1000)
    cfg = home.config()
    pull(cfg, home.registry(), "t2v_demo", quantization="int8", dtype="bf16")
    hub.stop()  # any request now fails: offline must not make one
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = pull(cfg, home.registry(), "t2v_demo", quantization="int8", dtype="bf16")
    assert {item.status for item in result.files} == {"present"}
    with pytest.raises(OfflineError) as info:
        pull(cfg, home.registry(), "t2v_demo", quantization="int8", dtype="fp16")
    assert "wan2.1_t2v_demo_quanto_mfp16_int8.safetensors" in str(info.value)
    assert "HF_HUB_OFFLINE" in str(info.value)


def test_file_in_hf_cache_is_linked_not_downloaded(home, hub):
    from huggingface_hub import hf_hub_download

    data = os.urandom(800_000)
    urls = _upload(hub, {"wan2.1_t2v_c_mbf16.safetensors": data})
    cached = hf_hub_download("alice/wan-ft", "wan2.1_t2v_c_mbf16.safetensors", endpoint=hub.url,
                             cache_dir=str(hub.cache_dir), token=hub.write_token)
    home.write_definition("t2v_c", {"name": "c", "architecture": "t2v", "URLs": list(urls.values())})
    result = pull(home.config(), home.registry(), "t2v_c", quantization="bf16")
    item = result.files[0]
    assert item.status == "linked (hardlink)" and item.bytes_transferred == 0
    target = home.ckpts / "wan2.1_t2v_c_mbf16.safetensors"
    assert target.read_bytes() == data
    assert os.stat(target).st_ino == os.stat(os.path.realpath(cached)).st_ino


def test_same_bytes_in_another_weights_folder_are_linked(home, hub):
    data = os.urandom(500_000)
    urls = _upload(hub, {"wan2.1_t2v_l_mbf16.safetensors": data})
    other = home.root / "other-weights"
    other.mkdir()
    (other / "renamed_copy.safetensors").write_bytes(data)
    home.write_config('weights_dirs = ["ckpts", "other-weights"]\nlink_mode = "copy"\n')
    home.write_definition("t2v_l", {"name": "l", "architecture": "t2v", "URLs": list(urls.values())})
    result = pull(home.config(), home.registry(), "t2v_l", quantization="bf16")
    assert result.files[0].status == "linked (copy)"
    assert result.files[0].linked_from == other / "renamed_copy.safetensors"
    assert (home.ckpts / "wan2.1_t2v_l_mbf16.safetensors").read_bytes() == data


def test_missing_file_404_names_url_and_definition(home, hub):
    url = f"{hub.url}/alice/wan-ft/resolve/main/nope_mbf16.safetensors"
    home.write_definition("t2v_404", {"name": "x", "architecture": "t2v", "URLs": [url]})
    from tunehub.errors import HubNotFoundError

    with pytest.raises(HubNotFoundError) as info:
        pull(home.config(), home.registry(), "t2v_404", quantization="bf16")
    assert url in str(info.value) and "t2v_404" in str(info.value)


def test_cli_pull_json_and_token_never_shown(home, hub):
    data = os.urandom(200_000)
    urls = _upload(hub, {"wan2.1_t2v_tok_mbf16.safetensors": data})
    home.write_definition("t2v_tok", {"name": "t", "architecture": "t2v", "URLs": list(urls.values())})
    env = home.env(**hub.env())
    done = home.run("pull", "t2v_tok", "--quantization", "bf16", env=env, check=True)
    target = home.ckpts / "wan2.1_t2v_tok_mbf16.safetensors"
    assert f"downloaded         {target}" in done.stdout and "MB downloaded" in done.stdout
    assert "wan2.1_t2v_tok_mbf16.safetensors: done" in done.stderr  # not a terminal: one line per state
    as_json = home.run("pull", "t2v_tok", "--quantization", "bf16", "--json", env=env, check=True)
    assert json.loads(as_json.stdout)["files"][0]["status"] == "present"
    # a bad token and a missing file: errors that must still not echo the token
    bad = home.env(**hub.env(token="hf_secretBadToken123456"))
    (home.ckpts / "wan2.1_t2v_tok_mbf16.safetensors").unlink()
    denied = home.run("pull", "t2v_tok", "--quantization", "bf16", env=bad)
    print(denied.stderr)
    assert denied.returncode == 1 and "log in" in denied.stderr
    home.write_definition("t2v_missing", {"name": "m", "architecture": "t2v",
                                          "URLs": [urls["wan2.1_t2v_tok_mbf16.safetensors"] + "x"]})
    missing = home.run("pull", "t2v_missing", "--quantization", "bf16", env=bad)
    assert missing.returncode == 1 and "error:" in missing.stderr
    for completed in (done, denied, missing):
        for text in (completed.stdout, completed.stderr):
            assert hub.write_token not in text and "hf_secretBadToken123456" not in text
    for path in [*home.root.rglob("*.json"), *home.root.rglob("*.log")]:
        text = path.read_text(errors="replace")
        assert hub.write_token not in text and "hf_secretBadToken123456" not in text


def test_pull_as_an_event_iterator(home, hub, monkeypatch):
    from tunehub.hub.progress import iter_events

    data = os.urandom(300_000)
    urls = _upload(hub, {"wan2.1_t2v_it_mbf16.safetensors": data})
    home.write_definition("t2v_it", {"name": "it", "architecture": "t2v", "URLs": list(urls.values())})
    events = list(iter_events(pull, home.config(), home.registry(), "t2v_it", quantization="bf16"))
    assert events[-1]["status"] == "finished"
    assert events[-1]["result"].files[0].status == "downloaded"
    assert [e["status"] for e in events[:-1]][-1] == "done"
    assert all(set(e) == {"file", "total", "completed", "status"} for e in events[:-1])
    # an error in the pull surfaces from the iterator
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (home.ckpts / "wan2.1_t2v_it_mbf16.safetensors").unlink()
    with pytest.raises(OfflineError):
        list(iter_events(pull, home.config(), home.registry(), "t2v_it", quantization="bf16"))
