"""Hostile and malformed input: refused with a clear error, nothing stored, nothing leaked."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import posixpath
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fixtures.hub_server import HubServer
from tunehub.hub.server.validation import InvalidInput, check_path, check_repo_id


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> HubServer:
    base = tmp_path_factory.mktemp("hub-hostile")
    hub = HubServer(base / "root", home=base / "home").start()
    yield hub
    hub.stop()


def raw_request(server: HubServer, method: str, raw_path: str, token: str | None = None) -> tuple[int, dict, bytes]:
    """Send the path byte for byte (httpx would normalise '..' and friends)."""
    parts = urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connection.putrequest(method, raw_path, skip_accept_encoding=True)
    for key, value in headers.items():
        connection.putheader(key, value)
    connection.endheaders()
    answer = connection.getresponse()
    body = answer.read()
    connection.close()
    return answer.status, {k.lower(): v for k, v in answer.getheaders()}, body


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_repo(server: HubServer, name: str, **body: object) -> str:
    answer = httpx.post(f"{server.url}/api/repos/create", json={"name": name, **body}, headers=auth(server.write_token))
    assert answer.status_code in (200, 409), answer.text
    return f"alice/{name}"


def commit(server: HubServer, repo: str, lines: list[dict], token: str | None = None) -> httpx.Response:
    body = "\n".join(json.dumps(line) for line in lines).encode()
    return httpx.post(
        f"{server.url}/api/models/{repo}/commit/main",
        content=body,
        headers={**auth(token or server.write_token), "Content-Type": "application/x-ndjson"},
    )


def commit_raw(server: HubServer, repo: str, body: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/models/{repo}/commit/main",
        content=body.encode(),
        headers={**auth(server.write_token), "Content-Type": "application/x-ndjson"},
        timeout=60,
    )


def header(summary: str = "test") -> dict:
    return {"key": "header", "value": {"summary": summary, "description": ""}}


def head_sha(server: HubServer, repo: str) -> str:
    return server.get_json(f"/api/models/{repo}", token=server.write_token)["sha"]


def blob_files(server: HubServer) -> set[str]:
    return {p.name for p in (server.root / "blobs").rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "raw_path",
    [
        "/alice/hostile/resolve/main/%2E%2E/%2E%2E/hub.db",
        "/alice/hostile/resolve/main/a/../../secret.key",
        "/alice/hostile/resolve/main/a%5Cb.txt",
        "/alice/hostile/resolve/main/a%00b",
        "/alice/hostile/resolve/main//etc/passwd",
        "/api/models/alice/hostile/tree/main/%2E%2E",
    ],
)
def test_bad_paths_in_urls_are_400(server: HubServer, raw_path: str) -> None:
    make_repo(server, "hostile")
    status, headers, body = raw_request(server, "GET", raw_path)
    assert status == 400, (raw_path, status, body)
    assert headers["x-error-code"] == "BadRequest"
    assert "path" in json.loads(body)["error"].lower()


@pytest.mark.parametrize("bad_path", ["../escape.txt", "/abs.txt", "dir\\file.txt", "nul\x00.txt", "a/./b", ".git/config"])
def test_bad_paths_in_commits_are_refused_whole(server: HubServer, bad_path: str) -> None:
    repo = make_repo(server, "commit-paths")
    before = head_sha(server, repo)
    answer = commit(
        server,
        repo,
        [
            header(),
            {"key": "file", "value": {"path": "fine.txt", "content": base64.b64encode(b"ok").decode(), "encoding": "base64"}},
            {"key": "file", "value": {"path": bad_path, "content": base64.b64encode(b"x").decode(), "encoding": "base64"}},
        ],
    )
    assert answer.status_code == 400
    assert answer.headers["x-error-code"] == "BadRequest"
    assert head_sha(server, repo) == before  # the good line did not land either


def test_malformed_commits(server: HubServer) -> None:
    repo = make_repo(server, "commit-malformed")
    before = head_sha(server, repo)
    cases = [
        [header(), {"key": "explode", "value": {}}],
        [header(), {"key": "file", "value": {"path": "x", "content": "!!!not base64", "encoding": "base64"}}],
        [header(), {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": "0" * 64, "size": 5}}],
        [header(), {"key": "deletedFile", "value": {"path": "does-not-exist.txt"}}],
        [{"key": "file", "value": {"path": "x", "content": "", "encoding": "base64"}}],  # no header
    ]
    for lines in cases:
        answer = commit(server, repo, lines)
        assert 400 <= answer.status_code < 500, (lines, answer.status_code)
        assert answer.headers.get("x-error-code") and answer.json()["error"]
    bad_json = httpx.post(
        f"{server.url}/api/models/{repo}/commit/main",
        content=b"{not json\n",
        headers={**auth(server.write_token), "Content-Type": "application/x-ndjson"},
    )
    assert bad_json.status_code == 400
    assert head_sha(server, repo) == before


@pytest.mark.parametrize("name", ["x" * 97, "bad name", "a..b", "-lead", "ends.git", "dou--ble", "é"])
def test_invalid_repo_ids_are_refused(server: HubServer, name: str) -> None:
    answer = httpx.post(f"{server.url}/api/repos/create", json={"name": name}, headers=auth(server.write_token))
    assert answer.status_code == 400, name
    assert answer.headers["x-error-code"] == "BadRequest"
    status, _, _ = raw_request(server, "GET", f"/api/models/alice/{quote(name)}")
    assert status in (400, 404)


def test_json_bodies_are_size_limited(server: HubServer) -> None:
    repo = make_repo(server, "limits")
    huge = {"files": [{"path": "a", "sample": "", "size": 1, "padding": "x" * (11 * 1024 * 1024)}]}
    answer = httpx.post(f"{server.url}/api/models/{repo}/preupload/main", json=huge, headers=auth(server.write_token))
    assert answer.status_code == 413
    assert answer.headers["x-error-code"] == "PayloadTooLarge"
    # One commit line (an inline file) beyond 16 MiB: refused, nothing committed.
    before = head_sha(server, repo)
    line = json.dumps({"key": "file", "value": {"path": "big.txt", "content": "A" * (17 * 1024 * 1024), "encoding": "base64"}})
    try:
        answer = commit_raw(server, repo, json.dumps(header()) + "\n" + line)
        assert answer.status_code == 413
    except httpx.TransportError:
        pass  # the server may close before the client has finished sending: also a refusal
    assert head_sha(server, repo) == before


def lfs_actions(server: HubServer, repo: str, oid: str, size: int, token: str | None = None) -> dict:
    answer = httpx.post(
        f"{server.url}/{repo}.git/info/lfs/objects/batch",
        json={"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": size}]},
        headers=auth(token or server.write_token),
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["objects"][0]


def test_lfs_upload_checks_size_sha_and_signature(server: HubServer) -> None:
    repo = make_repo(server, "lfs-checks")
    data = os.urandom(300_000)
    oid = hashlib.sha256(data).hexdigest()
    before = blob_files(server)
    href = lfs_actions(server, repo, oid, len(data))["actions"]["upload"]["href"]

    wrong_bytes = httpx.put(href, content=os.urandom(len(data)))
    assert wrong_bytes.status_code == 400 and "sha256" in wrong_bytes.json()["error"]
    too_many = httpx.put(href, content=data + b"extra")
    assert too_many.status_code == 400
    too_few = httpx.put(href, content=data[:-1])
    assert too_few.status_code == 400
    tampered = httpx.put(href.replace("size=", "size=1"), content=data)
    assert tampered.status_code == 403
    other_oid = httpx.put(href.replace(oid, hashlib.sha256(b"other").hexdigest()), content=b"other")
    assert other_oid.status_code == 403
    assert blob_files(server) == before
    assert list((server.root / "tmp").iterdir()) == []

    # The client sends no Authorization with the PUT: the signed URL alone is enough.
    assert httpx.put(href, content=data).status_code == 200
    verify = httpx.post(
        f"{server.url}/api/lfs-verify/models/{repo}", json={"oid": oid, "size": len(data)}, headers=auth(server.write_token)
    )
    assert verify.status_code == 200
    assert oid in blob_files(server)
    # Asked again, the object is already there: no upload action.
    assert "actions" not in lfs_actions(server, repo, oid, len(data))


def test_expired_upload_url_is_refused(server: HubServer) -> None:
    from tunehub.hub.server.app import HubApp
    from tunehub.hub.server.storage import HubStore

    repo_id = make_repo(server, "lfs-expired")
    data = b"expired upload"
    oid = hashlib.sha256(data).hexdigest()
    store = HubStore(server.root)
    repo = store.get_repo("model", repo_id)
    assert repo is not None
    expires = int(time.time()) - 10
    token_id = store.list_tokens("alice")[0].id
    signature = HubApp(store).upload_signature(repo, oid, len(data), expires, token_id)
    store.close()
    url = f"{server.url}/api/lfs-upload/models/{repo_id}/{oid}?size={len(data)}&exp={expires}&tid={token_id}&sig={signature}"
    answer = httpx.put(url, content=data)
    assert answer.status_code == 403 and "expired" in answer.json()["error"]


def test_blob_of_another_repo_cannot_be_referenced_by_hash(server: HubServer) -> None:
    """Knowing the sha256 of someone's private file must not let you commit a pointer to it."""
    private = make_repo(server, "private-weights", private=True)
    secret = os.urandom(200_000)
    oid = hashlib.sha256(secret).hexdigest()
    href = lfs_actions(server, private, oid, len(secret))["actions"]["upload"]["href"]
    assert httpx.put(href, content=secret).status_code == 200
    assert commit(
        server, private, [header(), {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid, "size": len(secret)}}]
    ).status_code == 200

    bob_repo = "bob/thief"
    assert httpx.post(f"{server.url}/api/repos/create", json={"name": "thief"}, headers=auth(server.bob_token)).status_code == 200
    # The batch endpoint does not reveal that the blob exists: it asks bob for the bytes.
    assert "actions" in lfs_actions(server, bob_repo, oid, len(secret), token=server.bob_token)
    stolen = commit(
        server,
        bob_repo,
        [header(), {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid, "size": len(secret)}}],
        token=server.bob_token,
    )
    assert stolen.status_code == 400
    status, _, _ = raw_request(server, "GET", f"/{bob_repo}/resolve/main/w.bin", token=server.bob_token)
    assert status == 404


def test_tokens_never_in_logs_or_answers(server: HubServer) -> None:
    bad = "hf_" + "Z" * 34
    answer = httpx.get(f"{server.url}/api/whoami-v2", headers=auth(bad))
    assert answer.status_code == 401 and bad not in answer.text
    log = server.log_text()
    for token in (server.write_token, server.read_token, server.bob_token, bad):
        assert token not in log
    db = (server.root / "hub.db").read_bytes() + b"".join(
        p.read_bytes() for p in server.root.glob("hub.db-*") if p.is_file()
    )
    for token in (server.write_token, server.read_token, server.bob_token):
        assert token.encode() not in db  # stored hashed


@given(st.text(alphabet=st.sampled_from(list("ab./\\\x00-_~ ")), max_size=20))
@settings(max_examples=300, deadline=None)
def test_accepted_paths_never_escape(path: str) -> None:
    try:
        checked = check_path(path)
    except InvalidInput:
        return
    assert posixpath.normpath(checked) == checked
    assert not checked.startswith("/") and "\\" not in checked and "\x00" not in checked
    assert all(segment not in ("", ".", "..") for segment in checked.split("/"))
    root = Path("/srv/root")
    assert (root / checked).resolve().is_relative_to(root)


def test_repo_id_rules() -> None:
    assert check_repo_id("alice/Wan2.1-T2V_1.3B") == ("alice", "Wan2.1-T2V_1.3B")
    for bad in ["alice", "a/b/c", "alice/", "/name", "alice/x" + "y" * 95, "al ice/x", "alice/x..y"]:
        with pytest.raises(InvalidInput):
            check_repo_id(bad)
