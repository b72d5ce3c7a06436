"""kill -9 during uploads and commits, then restart: the last complete commit, every file intact, no leftovers."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from huggingface_hub import hf_hub_download

from tests.fixtures.hub_server import HubServer
from tunehub.hub.server.validation import git_blob_sha1

FILES_PER_COMMIT = 60


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def check_repo_intact(server: HubServer, repo: str, expected: dict[str, bytes] | None, cache: Path) -> dict:
    """Every listed file downloads with the sha256 and size the server lists; no temp leftovers."""
    info = server.api().model_info(repo, files_metadata=True)
    with httpx.Client(headers=auth(server.write_token), timeout=30) as client:
        for sibling in info.siblings:
            if sibling.lfs is not None:  # LFS files through the client itself (it checks the sha256 ETag)
                path = hf_hub_download(repo, sibling.rfilename, endpoint=server.url, token=server.write_token, cache_dir=cache)
                data = Path(path).read_bytes()
                assert hashlib.sha256(data).hexdigest() == sibling.lfs.sha256
            else:
                answer = client.get(f"{server.url}/{repo}/resolve/{info.sha}/{sibling.rfilename}")
                assert answer.status_code == 200
                data = answer.content
                assert git_blob_sha1(data) == sibling.blob_id
            assert len(data) == sibling.size
            if expected is not None and sibling.rfilename in expected:
                assert data == expected[sibling.rfilename]
    assert list((server.root / "tmp").iterdir()) == []
    with sqlite3.connect(server.root / "hub.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    return {s.rfilename: s for s in info.siblings}


def test_kill_during_lfs_upload(hub_server: HubServer, tmp_path: Path) -> None:
    repo = "alice/crash-upload"
    api = hub_server.api()
    api.create_repo(repo)
    v1 = os.urandom(2 * 1024 * 1024)
    api.upload_file(path_or_fileobj=v1, path_in_repo="w.safetensors", repo_id=repo)
    head = api.model_info(repo).sha

    # Start a 64 MiB upload and kill the server while its bytes are arriving.
    chunk = os.urandom(1024 * 1024)
    size = 64 * len(chunk)
    digest = hashlib.sha256()
    for _ in range(64):
        digest.update(chunk)
    oid = digest.hexdigest()
    batch = httpx.post(
        f"{hub_server.url}/{repo}.git/info/lfs/objects/batch",
        json={"operation": "upload", "objects": [{"oid": oid, "size": size}]},
        headers=auth(hub_server.write_token),
    ).json()
    href = batch["objects"][0]["actions"]["upload"]["href"]
    halfway = threading.Event()

    def body() -> Iterator[bytes]:
        for index in range(64):
            if index == 20:
                halfway.set()
                time.sleep(3)  # the kill lands here
            yield chunk

    outcome: list[object] = []

    def upload() -> None:
        try:
            outcome.append(httpx.put(href, content=body(), headers={"Content-Length": str(size)}, timeout=30).status_code)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    uploader = threading.Thread(target=upload)
    uploader.start()
    assert halfway.wait(30)
    deadline = time.monotonic() + 10
    while not any((hub_server.root / "tmp").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any((hub_server.root / "tmp").iterdir()), "the upload should be in progress"
    hub_server.kill()
    uploader.join(30)
    assert outcome and isinstance(outcome[0], httpx.HTTPError)

    hub_server.start()
    files = check_repo_intact(hub_server, repo, {"w.safetensors": v1}, tmp_path / "cache")
    assert api.model_info(repo).sha == head
    assert set(files) == {".gitattributes", "w.safetensors"}
    assert not (hub_server.root / "blobs" / "sha256" / oid[:2] / oid).exists()
    # The interrupted object is asked for again, and can now be uploaded whole.
    again = httpx.post(
        f"{hub_server.url}/{repo}.git/info/lfs/objects/batch",
        json={"operation": "upload", "objects": [{"oid": oid, "size": size}]},
        headers=auth(hub_server.write_token),
    ).json()
    assert "actions" in again["objects"][0]


def commit_lines(batch: int) -> tuple[bytes, dict[str, bytes]]:
    files = {f"batch-{batch:03d}/file-{i:03d}.txt": f"batch {batch} file {i} {os.urandom(8).hex()}\n".encode() for i in range(FILES_PER_COMMIT)}
    lines = [{"key": "header", "value": {"summary": f"batch {batch}", "description": ""}}]
    lines += [
        {"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}}
        for path, data in files.items()
    ]
    return "\n".join(json.dumps(line) for line in lines).encode(), files


def test_kill_during_commits(hub_server: HubServer, tmp_path: Path) -> None:
    """Commits of many files race a kill -9: each batch folder is there whole or not at all."""
    repo = "alice/crash-commit"
    hub_server.api().create_repo(repo)
    written: dict[str, bytes] = {}
    acknowledged: list[str] = []
    rng = random.Random(1234)
    batch = 0
    for round_index in range(3):
        stop = threading.Event()

        def committer() -> None:
            nonlocal batch
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    body, files = commit_lines(batch)
                    written.update(files)
                    batch += 1
                    try:
                        answer = client.post(
                            f"{hub_server.url}/api/models/{repo}/commit/main",
                            content=body,
                            headers={**auth(hub_server.write_token), "Content-Type": "application/x-ndjson"},
                        )
                    except httpx.HTTPError:
                        return
                    if answer.status_code == 200:
                        acknowledged.append(answer.json()["commitOid"])

        worker = threading.Thread(target=committer)
        worker.start()
        time.sleep(0.4 + rng.random() * 0.8)
        hub_server.kill()
        stop.set()
        worker.join(30)
        hub_server.start()
        print(f"round {round_index}: {len(acknowledged)} commits acknowledged so far")

        files = check_repo_intact(hub_server, repo, written, tmp_path / f"cache-{round_index}")
        folders: dict[str, int] = {}
        for name in files:
            if name.startswith("batch-"):
                folders[name.split("/")[0]] = folders.get(name.split("/")[0], 0) + 1
        assert all(count == FILES_PER_COMMIT for count in folders.values()), folders
        # Every acknowledged commit survived: the head is the last one or the one in flight.
        commits = [c.commit_id for c in hub_server.api().list_repo_commits(repo)]
        if acknowledged:
            assert acknowledged[-1] in commits
        # Each kill can cut off at most one answer (one request in flight per round), so a
        # commit may have landed unacknowledged in this round or in an earlier one.
        assert len(acknowledged) <= len(folders) <= len(acknowledged) + round_index + 1


def test_kill_while_commit_body_arrives(hub_server: HubServer, tmp_path: Path) -> None:
    repo = "alice/crash-body"
    api = hub_server.api()
    api.create_repo(repo)
    api.upload_file(path_or_fileobj=b"v1", path_in_repo="a.txt", repo_id=repo)
    head = api.model_info(repo).sha
    body, _ = commit_lines(0)
    lines = body.split(b"\n")
    sent_half = threading.Event()

    def slow_body() -> Iterator[bytes]:
        for index, line in enumerate(lines):
            if index == len(lines) // 2:
                sent_half.set()
                time.sleep(3)
            yield line + b"\n"

    def post() -> None:
        try:
            httpx.post(
                f"{hub_server.url}/api/models/{repo}/commit/main",
                content=slow_body(),
                headers={**auth(hub_server.write_token), "Content-Type": "application/x-ndjson"},
                timeout=30,
            )
        except httpx.HTTPError:
            pass

    poster = threading.Thread(target=post)
    poster.start()
    assert sent_half.wait(30)
    time.sleep(0.3)
    hub_server.kill()
    poster.join(30)
    hub_server.start()
    files = check_repo_intact(hub_server, repo, {"a.txt": b"v1"}, tmp_path / "cache")
    assert set(files) == {".gitattributes", "a.txt"}
    assert api.model_info(repo).sha == head


def test_clean_stop_on_sigterm_and_sigint(hub_server: HubServer) -> None:
    import signal

    assert hub_server.stop() == 0
    hub_server.start()
    assert hub_server.process is not None
    hub_server.process.send_signal(signal.SIGINT)
    assert hub_server.process.wait(20) == 0
    hub_server._reap()
    assert "Hub server stopped" in hub_server.log_text()
    hub_server.start()
    assert hub_server.api().whoami()["name"] == "alice"
