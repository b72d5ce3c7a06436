"""`tunehub hub serve` under hostile clients, over real loopback sockets (issue 19).

Each test drives a real server subprocess: idle and slow sockets, downloaders that never
read, heavy and malformed requests, uploads cut off halfway, forged Host headers, and a
`hub import --link` racing the server's start-up clean-up. Load tests are bounded (a few
hundred sockets at most) and end by themselves within seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.hub_server import HubServer
from tunehub.errors import ServerError
from tunehub.hub.server.importer import import_folder
from tunehub.hub.server.storage import HubStore

# Loopback is a /8 on Linux: binding a client socket to 127.0.0.N gives the server another address.
OTHER_CLIENT = "127.0.0.2"
THIRD_CLIENT = "127.0.0.3"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def tunehub(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tunehub", *args], capture_output=True, text=True, timeout=120)


def connect(server: HubServer, source: str = "127.0.0.1", rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.port))
    return sock


def request_bytes(path: str, method: str = "GET", headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP answer from a raw socket: status, headers, body (Content-Length bodies only)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            raise ConnectionError(f"closed before the headers ended: {data[:200]!r}")
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    return status, headers, body


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True if the server closes the connection (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while True:
            if not sock.recv(1 << 20):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def health_seconds(server: HubServer) -> float:
    started = time.monotonic()
    answer = httpx.get(f"{server.url}/api/health", timeout=30)
    assert answer.status_code == 200
    return time.monotonic() - started


def log_lines_after(server: HubServer, offset: int) -> list[str]:
    text = server.log_path.read_text(errors="replace")[offset:]
    return [line for line in text.splitlines() if line.strip()]


def log_offset(server: HubServer) -> int:
    return len(server.log_path.read_text(errors="replace")) if server.log_path.exists() else 0


def wait_for_log(server: HubServer, offset: int, needle: str, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = log_lines_after(server, offset)
        if any(needle in line for line in lines):
            time.sleep(0.3)  # let any further line of the same event arrive
            return log_lines_after(server, offset)
        time.sleep(0.05)
    return log_lines_after(server, offset)


def server_rss(server: HubServer) -> int:
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def open_fds(server: HubServer) -> int:
    assert server.process is not None
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[HubServer]:
    """A server with small limits, so that hostile clients reach them in a fraction of a second."""
    server = HubServer(
        tmp_path / "root",
        home=tmp_path / "home",
        extra_args=[
            "--header-timeout", "1",
            "--idle-timeout", "1",
            "--send-timeout", "2",
            "--max-connections", "60",
            "--max-connections-per-client", "20",
            "--request-timeout", "2",
            "--login-failures", "5",
        ],
    ).start()
    try:
        yield server
    finally:
        server.stop()


def make_repo(server: HubServer, name: str, **body: object) -> str:
    answer = httpx.post(f"{server.url}/api/repos/create", json={"name": name, **body}, headers=auth(server.write_token))
    assert answer.status_code in (200, 409), answer.text
    return f"alice/{name}"


# --- 1. import --link against the start-up clean-up ------------------------------------------


def test_import_link_survives_a_server_starting_during_it(tmp_path: Path) -> None:
    source = tmp_path / "cache-like"
    contents: dict[str, bytes] = {}
    two_hours_ago = time.time() - 7200
    for index in range(3000):
        relative = f"d{index % 30:02d}/f{index:04d}.json"
        data = os.urandom(64) + str(index).encode()
        path = source / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (two_hours_ago, two_hours_ago))  # old, as files in a hub cache are
        contents[relative] = data
    root = tmp_path / "root"
    HubStore(root).close()
    importer = subprocess.Popen(
        [sys.executable, "-m", "tunehub", "hub", "import", str(source), "--link", "--repo", "alice/linked", "--root", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    blob_dir = root / "blobs" / "sha256"
    deadline = time.monotonic() + 60
    while sum(1 for _ in blob_dir.rglob("*") if _.is_file()) < 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    server = HubServer(root, home=tmp_path / "home").start()  # its clean-up runs while the import links
    try:
        out, err = importer.communicate(timeout=120)
        assert importer.returncode == 0, err
        store = HubStore(root)
        repo = store.get_repo("model", "alice/linked")
        assert repo is not None
        sha = store.resolve_revision(repo, "main")
        assert sha is not None
        files = {entry.path: entry for entry in store.files(sha)}
        missing = [path for path, entry in files.items() if not store.has_blob(entry.sha256)]
        store.close()
        assert missing == [], f"{len(missing)} of {len(files)} committed files lost their blob"
        with httpx.Client(timeout=30) as client:
            for relative in list(contents)[::100]:
                answer = client.get(f"{server.url}/alice/linked/resolve/main/{relative}")
                assert answer.status_code == 200 and answer.content == contents[relative], relative
    finally:
        server.stop()
        if importer.poll() is None:
            importer.kill()
            importer.wait()


def test_import_checks_every_committed_blob(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.json").write_bytes(b"{}")
    (source / "b.bin").write_bytes(os.urandom(1000))
    root = tmp_path / "root"
    result = import_folder(root, source, "alice/checked")
    store = HubStore(root)
    try:
        assert store.missing_blobs(result.commit) == []
        entry = store.get_file(result.commit, "b.bin")
        assert entry is not None
        store.blob_path(entry.sha256).unlink()  # a blob gone behind the store's back
        assert store.missing_blobs(result.commit) == ["b.bin"]
    finally:
        store.close()


def test_clean_up_waits_for_no_writer_instead_of_guessing_from_mtimes(hub_server: HubServer) -> None:
    blob_dir = hub_server.root / "blobs" / "sha256"
    orphan = blob_dir / "ab" / ("ab" + "3" * 62)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"linked by a writer, not committed yet")
    old = time.time() - 7200
    os.utime(orphan, (old, old))
    writer = HubStore(hub_server.root)
    lease = writer.writer_lease()
    try:
        hub_server.kill()
        hub_server.start()
        assert orphan.exists()  # a live writer holds the store: nothing unreferenced is collected
    finally:
        lease.close()
        writer.close()
    hub_server.kill()
    hub_server.start()
    assert not orphan.exists()  # no writer left: an unreferenced blob is garbage, whatever its age


# --- 2. idle and slow connections, connection caps --------------------------------------------


def test_idle_and_slowloris_sockets_are_closed_and_capped(limited: HubServer) -> None:
    idle = [connect(limited, OTHER_CLIENT) for _ in range(20)]  # the per-client cap
    try:
        # Over its cap, that client is told to come back later; others are served as usual.
        extra = connect(limited, OTHER_CLIENT)
        extra.sendall(request_bytes("/api/health"))
        status, headers, body = read_answer(extra)
        assert status == 503, body
        assert int(headers["retry-after"]) >= 1 and json.loads(body)["error"]
        extra.close()
        assert health_seconds(limited) < 5.0

        slow = connect(limited, THIRD_CLIENT)
        slow.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        closed_slow = False
        while time.monotonic() - started < 6:
            try:
                slow.sendall(b"X")  # one header byte at a time, forever
            except (BrokenPipeError, ConnectionResetError):
                closed_slow = True
                break
            slow.settimeout(0.3)
            try:
                if slow.recv(65536) == b"":
                    closed_slow = True
                    break
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed_slow = True
                break
        assert closed_slow and time.monotonic() - started < 4.0, "a header sent byte by byte kept its socket open"

        # Sockets that never sent a byte are closed after the header timeout.
        assert all(closed_by_server(sock, within=4.0) for sock in idle)
        assert health_seconds(limited) < 5.0
    finally:
        for sock in idle:
            sock.close()


def test_three_hundred_idle_sockets_do_not_take_the_server_down(limited: HubServer) -> None:
    sockets = []
    try:
        for index in range(300):
            try:
                sockets.append(connect(limited, f"127.0.1.{index % 50 + 1}"))
            except OSError:
                break
        assert len(sockets) == 300
        started = time.monotonic()
        answer = httpx.get(f"{limited.url}/api/health", timeout=10)
        # Either served or told when to retry: never a hang or a refused connection.
        assert answer.status_code in (200, 503)
        if answer.status_code == 503:
            assert "retry-after" in answer.headers
        assert time.monotonic() - started < 3.0
        time.sleep(2.5)  # past the header timeout: the idle sockets are gone
        assert health_seconds(limited) < 5.0
        assert open_fds(limited) < 100
    finally:
        for sock in sockets:
            sock.close()


def test_a_request_body_that_stops_arriving_is_timed_out(limited: HubServer) -> None:
    repo = make_repo(limited, "stalled-body")
    sock = connect(limited)
    body_start = b'{"files": ['
    sock.sendall(
        request_bytes(
            f"/api/models/{repo}/preupload/main",
            "POST",
            {"Authorization": f"Bearer {limited.write_token}", "Content-Type": "application/json", "Content-Length": "1000"},
        ).replace(b"Content-Length: 0\r\n", b"")
        + body_start
    )
    assert closed_by_server(sock, within=5.0)
    sock.close()


# --- 3. downloaders that never read -------------------------------------------------------


def test_downloaders_that_never_read_hold_little_memory_and_are_dropped(limited: HubServer, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    size = 48 * 1024 * 1024
    (source / "w.safetensors").write_bytes(os.urandom(size))
    import_folder(limited.root, source, "alice/stuck")
    url = "/alice/stuck/resolve/main/w.safetensors"
    assert httpx.get(limited.url + url, headers={"Range": "bytes=0-9"}).status_code == 206  # warm the path
    before = server_rss(limited)
    readers = []
    for index in range(30):
        sock = connect(limited, f"127.0.2.{index + 1}", rcvbuf=4096)
        sock.sendall(request_bytes(url))
        readers.append(sock)
    time.sleep(1.5)
    growth = server_rss(limited) - before
    per_connection = growth / len(readers)
    assert per_connection < 3.5 * 1024 * 1024, f"{per_connection / 2**20:.1f} MiB of server memory per stuck downloader"
    time.sleep(2.5)  # past the send timeout
    try:
        for sock in readers:
            received = 0
            sock.settimeout(5)
            try:
                while piece := sock.recv(1 << 20):
                    received += len(piece)
            except (ConnectionResetError, TimeoutError):
                pass
            assert received < size, "a downloader that read nothing was never dropped"
    finally:
        for sock in readers:
            sock.close()
    assert health_seconds(limited) < 5.0


def test_a_slow_reader_is_not_dropped(limited: HubServer, tmp_path: Path) -> None:
    """The send timeout is for a client that takes nothing, not for one that reads slowly."""
    source = tmp_path / "src"
    source.mkdir()
    data = os.urandom(12 * 1024 * 1024)
    (source / "w.safetensors").write_bytes(data)
    import_folder(limited.root, source, "alice/slow-reader")
    sock = connect(limited, rcvbuf=4096)
    sock.sendall(request_bytes("/alice/slow-reader/resolve/main/w.safetensors"))
    received = bytearray()
    slow_until = time.monotonic() + 6.0  # three send timeouts of reading ~300 KB/s
    try:
        while time.monotonic() < slow_until:
            received += sock.recv(32 * 1024)
            time.sleep(0.1)
        while piece := sock.recv(1 << 20):
            received += piece
            if len(received) >= len(data) + 200:
                break
    finally:
        sock.close()
    body = bytes(received).partition(b"\r\n\r\n")[2]
    assert len(body) == len(data) and hashlib.sha256(body).digest() == hashlib.sha256(data).digest()


# --- 4. storage work off the event loop, path caps, time bounds -------------------------------


def test_paths_info_does_not_block_other_requests(limited: HubServer, tmp_path: Path) -> None:
    source = tmp_path / "src"
    for index in range(2000):
        path = source / "d" / f"{index:04d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(index))
    import_folder(limited.root, source, "alice/many-paths")
    url = f"{limited.url}/api/models/alice/many-paths/paths-info/main"

    too_many = httpx.post(url, data={"paths": [f"p{i}" for i in range(1001)]}, timeout=30)
    assert too_many.status_code == 413 and "1000" in too_many.json()["error"]

    import threading

    timings: list[float] = []
    heavy_status: list[int] = []

    def heavy() -> None:
        answer = httpx.post(url, data={"paths": ["d"] * 1000}, timeout=60)
        heavy_status.append(answer.status_code)

    workers = [threading.Thread(target=heavy) for _ in range(3)]
    for worker in workers:
        worker.start()
    time.sleep(0.2)
    while any(worker.is_alive() for worker in workers):
        timings.append(health_seconds(limited))
        time.sleep(0.05)
    for worker in workers:
        worker.join()
    assert heavy_status == [200, 200, 200]
    assert max(timings, default=0.0) < 5.0, f"health waited {max(timings):.2f}s behind paths-info"


def test_a_write_stuck_behind_a_database_lock_is_answered_in_time(limited: HubServer) -> None:
    holder = sqlite3.connect(limited.root / "hub.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # e.g. a long import committing
    try:
        started = time.monotonic()
        answer = httpx.post(
            f"{limited.url}/api/repos/create", json={"name": "behind-lock"}, headers=auth(limited.write_token), timeout=60
        )
        took = time.monotonic() - started
        assert answer.status_code == 503, answer.text
        assert "retry-after" in answer.headers and took < 6.0
        assert health_seconds(limited) < 5.0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert make_repo(limited, "behind-lock") == "alice/behind-lock"


# --- 5. malformed input -------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    base = tmp_path_factory.mktemp("hub-hostile-clients")
    server = HubServer(base / "root", home=base / "home").start()
    try:
        make_repo(server, "target")
        yield server
    finally:
        server.stop()


DEEP = ("[" * 100_000 + "]" * 100_000).encode()


@pytest.mark.parametrize(
    ("method", "path", "content_type", "body"),
    [
        ("POST", "/api/models/alice/target/preupload/main", "application/json", DEEP),
        ("POST", "/api/repos/create", "application/json", DEEP),
        ("POST", "/alice/target.git/info/lfs/objects/batch", "application/json", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
        ("POST", "/api/models/alice/target/commit/main", "application/x-ndjson", DEEP),
        ("POST", "/api/models/alice/target/paths-info/main", "application/json", b'["a", "b"]'),
        ("POST", "/api/models/alice/target/preupload/main", "application/json", b'{"files": [{"path": "a.txt", "sample": 5, "size": 1}]}'),
        ("POST", "/api/repos/create", "application/json", b'{"name": "x", "type": ["model"]}'),
        ("GET", "/api/models/alice/target/revision/ma%00in", "", b""),
        ("GET", "/api/models/alice/target/revision/ma%0Bin", "", b""),
        ("GET", "/alice/target/resolve/ma%00in/.gitattributes", "", b""),
        ("HEAD", "/alice/target/resolve/ma%0Bin/.gitattributes", "", b""),
        ("GET", "/api/models/alice/target/tree/x%0By", "", b""),
        ("POST", "/api/models/alice/target/commit/ma%00in", "application/x-ndjson", b'{"key":"header","value":{}}'),
    ],
    ids=[
        "deep-preupload", "deep-create", "deep-lfs-batch", "deep-commit", "paths-info-list", "sample-not-string",
        "type-not-string", "nul-revision", "vt-revision", "nul-resolve", "vt-resolve-head", "vt-tree", "nul-commit",
    ],
)
def test_malformed_input_is_a_400_with_a_json_body_and_one_log_line(
    shared: HubServer, method: str, path: str, content_type: str, body: bytes
) -> None:
    offset = log_offset(shared)
    parts = urlsplit(shared.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        headers = {"Authorization": f"Bearer {shared.write_token}"}
        if content_type:
            headers["Content-Type"] = content_type
        sock.sendall(request_bytes(path, method, headers, body))
        status, answer_headers, answer_body = read_answer(sock)
    assert status == 400, (status, answer_body[:300])
    assert answer_headers["x-error-code"] == "BadRequest"
    if method != "HEAD":
        assert json.loads(answer_body)["error"]
    lines = wait_for_log(shared, offset, "400")
    assert len(lines) == 1, lines
    assert "Traceback" not in shared.log_text()


ENDPOINTS = [
    ("POST", "/api/repos/create"),
    ("DELETE", "/api/repos/delete"),
    ("POST", "/api/validate-yaml"),
    ("POST", "/api/models/alice/target/preupload/main"),
    ("POST", "/api/models/alice/target/paths-info/main"),
    ("POST", "/api/models/alice/target/commit/main"),
    ("POST", "/api/models/alice/target/branch/fuzz"),
    ("POST", "/api/models/alice/target/tag/main"),
    ("PUT", "/api/models/alice/target/settings"),
    ("POST", "/alice/target.git/info/lfs/objects/batch"),
    ("POST", "/api/lfs-verify/models/alice/target"),
    ("GET", "/api/models/alice/target/tree/main"),
    ("GET", "/alice/target/resolve/main/.gitattributes"),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
known_keys = st.sampled_from(
    ["name", "type", "organization", "private", "visibility", "files", "path", "sample", "size", "paths", "expand",
     "operation", "objects", "oid", "tag", "startingPoint", "key", "value", "summary", "parentCommit", "content",
     "encoding", "algo"]
)
shaped = st.dictionaries(known_keys, json_values, max_size=6)
ndjson = st.lists(
    st.fixed_dictionaries({"key": st.sampled_from(["header", "file", "lfsFile", "deletedFile", "deletedFolder", "x"]), "value": json_values | shaped}),
    max_size=4,
).map(lambda lines: "\n".join(json.dumps(line) for line in lines).encode())
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda value: json.dumps(value).encode()),
    shaped.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries({"files": st.lists(shaped, max_size=3)}).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"objects": st.lists(shaped, max_size=3), "operation": st.just("upload")}).map(lambda v: json.dumps(v).encode()),
    ndjson,
)


@given(
    endpoint=st.sampled_from(ENDPOINTS),
    body=bodies,
    content_type=st.sampled_from(["application/json", "application/x-ndjson", "application/x-www-form-urlencoded", "text/plain"]),
    revision=st.sampled_from(["", "main", "a%00b", "x%0Bz", "%FF", "..%2F..", "0" * 40]),
)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_random_bodies_never_get_a_5xx(shared: HubServer, endpoint: tuple[str, str], body: bytes, content_type: str, revision: str) -> None:
    method, path = endpoint
    if revision:
        path = path.replace("/main", f"/{revision}")
    status = _raw_status(shared, method, path, content_type, body)
    assert status < 500, (method, path, body[:200], status)


def _raw_status(server: HubServer, method: str, path: str, content_type: str, body: bytes) -> int:
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        headers = {"Authorization": f"Bearer {server.write_token}", "Content-Type": content_type}
        sock.sendall(request_bytes(path, method, headers, body))
        status, _, _ = read_answer(sock)
    return status


def test_fuzzing_left_no_traceback(shared: HubServer) -> None:
    assert "Traceback" not in shared.log_text()


# --- 6. import safety ---------------------------------------------------------------------


def test_import_refuses_symlinks_out_of_the_source(tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "hostname"
    secret.parent.mkdir()
    secret.write_text("secret host\n")
    source = tmp_path / "src"
    source.mkdir()
    (source / "ok.txt").write_text("fine")
    (source / "leak.txt").symlink_to(secret)
    root = tmp_path / "root"
    for follow in (False, True):
        with pytest.raises(ServerError, match="leak.txt"):
            import_folder(root, source, "alice/leaky", follow_symlinks=follow)
    store = HubStore(root)
    assert store.get_repo("model", "alice/leaky") is None
    store.close()
    cli = tunehub("hub", "import", str(source), "--repo", "alice/leaky", "--root", str(root), "--follow-symlinks")
    assert cli.returncode == 1 and "outside" in cli.stderr and "Traceback" not in cli.stderr

    # A link that stays inside the folder is followed only when asked to.
    (source / "leak.txt").unlink()
    (source / "alias.txt").symlink_to(source / "ok.txt")
    with pytest.raises(ServerError, match="--follow-symlinks"):
        import_folder(root, source, "alice/inside")
    result = import_folder(root, source, "alice/inside", follow_symlinks=True)
    assert result.files == 2
    linked_dir = source / "sub"
    linked_dir.symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(ServerError, match="sub"):
        import_folder(root, source, "alice/inside", follow_symlinks=True)


def make_cache_repo(base: Path, refs_main: str) -> Path:
    repo = base / "models--org--name"
    sha = "a" * 40
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / "deadbeef").write_text("{}")
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").symlink_to(Path("../../blobs/deadbeef"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(refs_main)
    return repo


def test_import_of_a_cache_follows_its_own_links_but_not_an_escaping_ref(tmp_path: Path) -> None:
    good = make_cache_repo(tmp_path / "good", "a" * 40)
    result = import_folder(tmp_path / "root", good, "alice/cached")
    assert result.files == 1
    outside = tmp_path / "elsewhere"
    (outside / "etc").mkdir(parents=True)
    (outside / "etc" / "passwd").write_text("root:x:0:0")
    bad = make_cache_repo(tmp_path / "bad", "../../../elsewhere/etc")
    with pytest.raises(ServerError, match="refs/main"):
        import_folder(tmp_path / "root", bad, "alice/escaped")
    with pytest.raises(ServerError, match="revision"):
        import_folder(tmp_path / "root", good, "alice/escaped", source_revision="../../../elsewhere")


@pytest.mark.parametrize("revision", ["bad\nname", "../x", "0123456789abcdef0123456789abcdef01234567", ".x", "a..b"])
def test_import_revision_names_follow_the_http_rules(tmp_path: Path, revision: str) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("a")
    root = tmp_path / "root"
    cli = tunehub("hub", "import", str(source), "--repo", "alice/revs", "--revision", revision, "--root", str(root))
    assert cli.returncode == 1 and "branch name" in cli.stderr, cli.stderr
    store = HubStore(root)
    assert store.get_repo("model", "alice/revs") is None
    store.close()


# --- 7. file modes --------------------------------------------------------------------------


def test_root_and_files_are_private_to_the_server_account(hub_server: HubServer) -> None:
    api = hub_server.api()
    api.create_repo("alice/modes", private=True)
    api.upload_file(path_or_fileobj=os.urandom(10_000), path_in_repo="w.safetensors", repo_id="alice/modes")
    api.upload_file(path_or_fileobj=b"hello", path_in_repo="a.txt", repo_id="alice/modes")
    root = hub_server.root
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    checked = 0
    for path in root.rglob("*"):
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_dir():
            assert mode & 0o077 == 0, (path, oct(mode))
        else:
            assert mode & 0o077 == 0, (path, oct(mode))
            checked += 1
    assert checked >= 5  # hub.db, its WAL, blobs, secret.key, the lock files


# --- 8. signed URLs, org and user removal, login limiter, Range, Host -------------------------


def lfs_href(server: HubServer, repo: str, data: bytes, token: str) -> str:
    answer = httpx.post(
        f"{server.url}/{repo}.git/info/lfs/objects/batch",
        json={"operation": "upload", "objects": [{"oid": hashlib.sha256(data).hexdigest(), "size": len(data)}]},
        headers=auth(token),
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["objects"][0]["actions"]["upload"]["href"]


def test_revoking_a_token_stops_its_upload_urls(hub_server: HubServer) -> None:
    token = hub_server.add_token("alice", write=True)
    repo = make_repo(hub_server, "revoked-urls")
    data = os.urandom(50_000)
    href = lfs_href(hub_server, repo, data, token)
    store = HubStore(hub_server.root)
    token_id = max(record.id for record in store.list_tokens("alice"))
    store.close()
    assert tunehub("hub", "token", "revoke", str(token_id), "--root", str(hub_server.root)).returncode == 0
    answer = httpx.put(href, content=data)
    assert answer.status_code == 403, answer.text
    assert not (hub_server.root / "blobs" / "sha256" / hashlib.sha256(data).hexdigest()[:2] / hashlib.sha256(data).hexdigest()).exists()
    fresh = lfs_href(hub_server, repo, data, hub_server.write_token)
    assert httpx.put(fresh, content=data).status_code == 200


def test_org_member_removal_and_user_deletion(hub_server: HubServer) -> None:
    root = str(hub_server.root)
    carol = hub_server.add_token("carol", write=True)
    hub_server.add_org("studio", "alice", "carol")
    create = httpx.post(f"{hub_server.url}/api/repos/create", json={"name": "shared", "organization": "studio"}, headers=auth(carol))
    assert create.status_code == 200, create.text

    removed = tunehub("hub", "org", "remove", "studio", "--member", "carol", "--root", root)
    assert removed.returncode == 0, removed.stderr
    refused = httpx.post(
        f"{hub_server.url}/api/models/studio/shared/preupload/main", json={"files": []}, headers=auth(carol)
    )
    assert refused.status_code == 403
    again = tunehub("hub", "org", "remove", "studio", "--member", "carol", "--root", root)
    assert again.returncode == 1 and "not a member" in again.stderr

    deleted = tunehub("hub", "user", "rm", "carol", "--root", root)
    assert deleted.returncode == 0, deleted.stderr
    assert httpx.get(f"{hub_server.url}/api/whoami-v2", headers=auth(carol)).status_code == 401
    assert "carol" not in tunehub("hub", "token", "list", "--root", root).stdout
    missing = tunehub("hub", "user", "rm", "carol", "--root", root)
    assert missing.returncode == 1 and "No user" in missing.stderr


def test_failed_logins_are_rate_limited_per_address(limited: HubServer) -> None:
    bad = {"Authorization": "Bearer hf_" + "W" * 34}
    statuses = []
    for _ in range(8):
        sock = connect(limited, OTHER_CLIENT)
        sock.sendall(request_bytes("/api/whoami-v2", headers=bad))
        status, headers, _ = read_answer(sock)
        statuses.append((status, headers.get("retry-after")))
        sock.close()
    assert [s for s, _ in statuses[:5]] == [401] * 5
    assert all(s == 429 and retry and int(retry) >= 1 for s, retry in statuses[5:]), statuses
    # Another address, and the right token, are not held back.
    assert httpx.get(f"{limited.url}/api/whoami-v2", headers=auth(limited.write_token)).status_code == 200


def test_an_inverted_range_is_ignored(shared: HubServer) -> None:
    # a repo of its own: the fuzzer above commits random (valid) operations to alice/target with
    # the write token, and once left main without this file (404 in a fresh-clone run)
    repo = make_repo(shared, "inverted-range")
    url = f"{shared.url}/{repo}/resolve/main/.gitattributes"
    full = httpx.get(url).content
    answer = httpx.get(url, headers={"Range": "bytes=5-2"})
    assert answer.status_code == 200 and answer.content == full
    assert httpx.get(url, headers={"Range": f"bytes={len(full)}-"}).status_code == 416


def test_links_do_not_echo_a_forged_host(shared: HubServer, tmp_path: Path) -> None:
    forged = 'evil.example/"><script>'
    with socket.create_connection(("127.0.0.1", shared.port), timeout=30) as sock:
        body = json.dumps({"name": "host-check"}).encode()
        sock.sendall(
            f"POST /api/repos/create HTTP/1.1\r\nHost: {forged}\r\nAuthorization: Bearer {shared.write_token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status, _, answer = read_answer(sock)
    assert status in (200, 409)
    url = json.loads(answer)["url"]
    assert "evil" not in url and url.startswith(shared.url)
    # A valid Host is used (a client that reached us by another name gets links it can follow).
    valid = httpx.post(f"{shared.url}/api/repos/create", json={"name": "host-check"}, headers={**auth(shared.write_token), "Host": "hub.lan:1234"})
    assert valid.json()["url"].startswith("http://hub.lan:1234/")

    public = HubServer(tmp_path / "root", home=tmp_path / "home", extra_args=["--public-url", "https://hub.studio.example/"]).start()
    try:
        answer = httpx.post(
            f"{public.url}/api/repos/create", json={"name": "x"}, headers={**auth(public.write_token), "Host": "other.example"}
        )
        assert answer.json()["url"] == "https://hub.studio.example/alice/x"
    finally:
        public.stop()


# --- 9. disconnects mid-upload --------------------------------------------------------------


def test_a_client_hanging_up_mid_upload_is_one_log_line(shared: HubServer) -> None:
    repo = make_repo(shared, "hangup-upload")
    data = os.urandom(8 * 1024 * 1024)
    oid = hashlib.sha256(data).hexdigest()
    href = lfs_href(shared, repo, data, shared.write_token)
    target = urlsplit(href)
    offset = log_offset(shared)
    sock = connect(shared)
    sock.sendall(
        f"PUT {target.path}?{target.query} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data[: 1024 * 1024]
    )
    time.sleep(0.3)
    sock.close()
    lines = wait_for_log(shared, offset, "disconnect")
    assert len(lines) == 1 and "disconnect" in lines[0], lines
    assert "Traceback" not in shared.log_text()
    time.sleep(0.2)
    assert list((shared.root / "tmp").iterdir()) == []
    assert not shared.root.joinpath("blobs", "sha256", oid[:2], oid).exists()

    # The same for a commit whose inline file stops halfway.
    offset = log_offset(shared)
    sock = connect(shared)
    line = json.dumps({"key": "header", "value": {"summary": "x"}}) + "\n"
    line += '{"key": "file", "value": {"path": "a.txt", "encoding": "base64", "content": "' + "A" * 100_000
    sock.sendall(
        f"POST /api/models/{repo}/commit/main HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {shared.write_token}\r\n"
        f"Content-Type: application/x-ndjson\r\nContent-Length: {len(line) + 10_000_000}\r\n\r\n{line}".encode()
    )
    time.sleep(0.3)
    sock.close()
    lines = wait_for_log(shared, offset, "disconnect")
    assert len(lines) == 1 and "disconnect" in lines[0], lines
    assert list((shared.root / "tmp").iterdir()) == []
