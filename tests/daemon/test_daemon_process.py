"""The daemon as a real process: watching, status, signals, the lock, bursts, --once, logs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.daemon.conftest import definition_in

URL = "https://hub.invalid/ns/repo/resolve/main/{}"


def _write(folder: Path, definition_id: str, urls: list[str] | None = None, **model: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {"model": {"name": definition_id, "architecture": "t2v", "URLs": urls or [f"{definition_id}_bf16.safetensors"], **model}}
    target = folder / f"{definition_id}.json"
    tmp = folder / f".{definition_id}.tmp"
    tmp.write_text(json.dumps(data, indent=4))
    os.replace(tmp, target)  # as editors and tunehub itself write: a rename into place
    return target


def _cli(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TUNEHUB_HOME"}
    return subprocess.run(
        [sys.executable, "-m", "tunehub", "--home", str(home), *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


def test_watch_status_lock_and_sigterm(home: Any, daemon_factory: Any) -> None:
    (home.ckpts / "local_ft_bf16.safetensors").write_bytes(b"x" * 16)
    dead_writer = home.ckpts / ".big_quanto_bf16_int8.safetensors.tunehub-tmp-999999999-abcd"
    dead_writer.write_bytes(b"half a file")
    live_writer = home.ckpts / f".other.safetensors.tunehub-tmp-{os.getpid()}-abcd"
    live_writer.write_bytes(b"being written")
    daemon = daemon_factory(home.root)
    # a crashed writer's temp file is removed at start; a live writer's is left alone
    assert not dead_writer.exists() and live_writer.exists()
    env = {k: v for k, v in os.environ.items() if k != "TUNEHUB_HOME"}
    follower = subprocess.Popen(
        [sys.executable, "-m", "tunehub", "--home", str(home.root), "logs", "-f", "-n", "100"],
        stdout=subprocess.PIPE, text=True, env=env,
    )

    # a definition dropped into the folder is in `tunehub status --json` within 1 s
    started = time.monotonic()
    _write(home.finetunes, "t2v_dropped", ["local_ft_bf16.safetensors"])
    daemon.wait_for(lambda s: definition_in(s, "t2v_dropped"), timeout=5, what="t2v_dropped in status")
    assert time.monotonic() - started < 1.0
    answer = _cli(home.root, "status", "--json")
    assert answer.returncode == 0, answer.stderr
    entry = definition_in(json.loads(answer.stdout), "t2v_dropped")
    assert entry is not None and entry["origin"] == "local"
    entry = daemon.wait_for(
        lambda s: (e := definition_in(s, "t2v_dropped")) and e["state"] == "ready" and e, what="t2v_dropped ready"
    )
    assert entry["files"][0]["present"] is True
    text = _cli(home.root, "status")
    assert text.returncode == 0 and "ready     t2v_dropped" in text.stdout
    # `tunehub logs -f` follows the log as events happen
    try:
        assert follower.stdout is not None
        line = ""
        while "definition.added" not in line:
            line = follower.stdout.readline()
            assert line, "logs -f ended"
        assert "definition=t2v_dropped" in line
    finally:
        follower.terminate()
        follower.wait(10)

    # edited, then deleted
    _write(home.finetunes, "t2v_dropped", ["local_ft_bf16.safetensors"], description="edited")
    daemon.wait_for(lambda s: any(e["type"] == "definition.changed" for e in daemon.client.events(0)["events"]))
    (home.finetunes / "t2v_dropped.json").unlink()
    daemon.wait_for(lambda s: definition_in(s, "t2v_dropped") is None, timeout=5, what="removal")

    # a weight file deleted by hand is noticed
    _write(home.finetunes, "t2v_local", ["local_ft_bf16.safetensors"])
    daemon.wait_for(lambda s: (e := definition_in(s, "t2v_local")) and e["state"] == "ready", what="t2v_local ready")
    (home.ckpts / "local_ft_bf16.safetensors").unlink()
    entry = daemon.wait_for(
        lambda s: (e := definition_in(s, "t2v_local")) and e["state"] == "missing" and e, timeout=5, what="missing file"
    )
    assert entry["files"][0]["present"] is False

    # the watched folder disappears and comes back: watched again
    shutil.rmtree(home.finetunes)
    daemon.wait_for(lambda s: definition_in(s, "t2v_local") is None, timeout=5, what="folder removal noticed")
    home.finetunes.mkdir()
    time.sleep(1.5)  # the re-watch happens within a second
    _write(home.finetunes, "t2v_back")
    daemon.wait_for(lambda s: definition_in(s, "t2v_back"), timeout=5, what="definition in the re-created folder")

    # a second daemon on the same home is refused, naming the holder
    second = _cli(home.root, "daemon")
    assert second.returncode == 1
    assert f"process {daemon.process.pid}" in second.stderr and "already runs" in second.stderr

    # SIGHUP reloads tunehub.toml
    home.write_config('[daemon]\npull = "none"\n')
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(lambda s: s["policy"]["pull"] == "none", timeout=10, what="reloaded policy")
    # a broken tunehub.toml on SIGHUP is reported; the daemon keeps its settings and runs on
    home.write_config('[daemon]\npull = "sometimes"\n')
    daemon.signal(signal.SIGHUP)
    error = daemon.wait_for(
        lambda s: [e for e in daemon.client.events(0)["events"] if e["type"] == "config.error"], timeout=10,
        what="config.error event",
    )
    assert "tunehub.toml" in error[0]["error"] and "pull" in error[0]["error"]
    assert daemon.client.status()["policy"]["pull"] == "none" and daemon.client.health()["ok"]

    # SIGTERM: stops within 10 s, cleanly
    stop_started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0
    assert time.monotonic() - stop_started < 10
    assert not daemon.client.socket_path.exists()
    assert _cli(home.root, "status").returncode == 3
    logs = _cli(home.root, "logs", "-n", "500", "--raw")
    events = [json.loads(line)["event"] for line in logs.stdout.splitlines()]
    assert "daemon.started" in events and "daemon.stopped" in events


def test_burst_of_500_with_malformed_ones(home: Any, daemon_factory: Any) -> None:
    daemon = daemon_factory(home.root)
    staging = home.root / "staging"
    staging.mkdir()
    malformed = set()
    for index in range(500):
        name = f"t2v_burst_{index:03d}"
        if index % 3 == 0:
            malformed.add(name)
            kind = index % 9
            text = '{"model": {"name": "x",' if kind == 0 else (
                '{"model": {"name": "x", "architecture": ""}}' if kind == 3 else '["not", "an", "object"]'
            )
            (staging / f"{name}.json").write_text(text)
        else:
            (staging / f"{name}.json").write_text(json.dumps({"model": {"name": name, "architecture": "t2v", "URLs": [f"{name}_bf16.safetensors"]}}))
    for path in staging.iterdir():  # all at once, as a copy would
        os.rename(path, home.finetunes / path.name)

    def all_there(status: dict[str, Any]) -> bool:
        ids = {e["id"] for e in status["definitions"]}
        return all(f"t2v_burst_{i:03d}" in ids for i in range(500))

    status = daemon.wait_for(lambda s: all_there(s) and s, timeout=60, what="500 definitions")
    assert daemon.client.health()["ok"]
    invalid = {e["id"] for e in status["definitions"] if e["id"].startswith("t2v_burst") and e["state"] == "invalid"}
    assert invalid == malformed
    for entry in status["definitions"]:
        if entry["id"] in malformed:
            assert entry["problems"] and str(home.finetunes) in entry["problems"][0]

    def logged() -> set[str]:
        found = set()
        for line in (home.root / ".tunehub" / "daemon.log").read_text().splitlines():
            entry = json.loads(line)
            if entry["event"] == "definition.invalid":
                found.add(entry["definition"])
        return found

    # the log lines follow the registry update by a moment
    daemon.wait_for(lambda s: malformed <= logged(), timeout=20, what="every malformed file logged")


def _not_found_server() -> Any:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading

    class NotFound(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_once_exit_codes_and_summary(home: Any, tmp_path: Path, daemon_factory: Any) -> None:
    # nothing to do: 0
    _write(home.finetunes, "t2v_have", ["have_bf16.safetensors"])
    (home.ckpts / "have_bf16.safetensors").write_bytes(b"x")
    answer = _cli(home.root, "daemon", "--once", "--quiet")
    assert answer.returncode == 0, answer.stdout + answer.stderr
    assert "0 problem(s)" in answer.stdout
    # a new definition whose file cannot be fetched: non-zero, and the summary says why
    server = _not_found_server()
    try:
        gone = f"http://127.0.0.1:{server.server_address[1]}/files/gone_bf16.safetensors"
        _write(home.finetunes, "t2v_unreachable", [gone])
        answer = _cli(home.root, "daemon", "--once", "--quiet", timeout=120)
        # the running daemon shows the failure on the definition, and does not retry a 404 forever
        daemon = daemon_factory(home.root)
        entry = daemon.wait_for(
            lambda s: (e := definition_in(s, "t2v_unreachable")) and e["state"] == "failed" and e, what="failed state"
        )
        assert "404" in entry["error"] and entry["needs"] == ["pull"]
        daemon.stop()
    finally:
        server.shutdown()
    assert answer.returncode == 1
    assert "t2v_unreachable" in answer.stdout and "pull" in answer.stdout
    jobs = _cli(home.root, "jobs", "--json")
    recorded = json.loads(jobs.stdout)
    assert any(j["kind"] == "pull" and j["definition_id"] == "t2v_unreachable" and j["last_error"] for j in recorded)


def test_systemd_notify_protocol(home: Any, daemon_factory: Any, tmp_path: Path) -> None:
    import socket

    address = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(address)
    receiver.settimeout(30)
    try:
        env = {**os.environ, "NOTIFY_SOCKET": address}
        daemon = daemon_factory(home.root, env=env, wait=False)
        messages = [receiver.recv(4096).decode()]
        assert "READY=1" in messages[0]
        assert daemon.client.health()["ok"]  # READY is sent only once the socket answers
        daemon.signal(signal.SIGHUP)
        messages.append(receiver.recv(4096).decode())
        messages.append(receiver.recv(4096).decode())
        assert "RELOADING=1" in messages[1] and "READY=1" in messages[2]
        daemon.signal(signal.SIGTERM)
        assert "STOPPING=1" in receiver.recv(4096).decode()
        assert daemon.wait(timeout=15) == 0
    finally:
        receiver.close()


def test_once_pauses_downloads_below_min_free(home: Any) -> None:
    home.write_config('[daemon]\npull = "all"\nmin_free_gb = 1000000\n')
    _write(home.finetunes, "t2v_big", [URL.format("big_bf16.safetensors")])
    answer = _cli(home.root, "daemon", "--once", "--quiet")
    assert answer.returncode == 1
    assert "downloads paused" in answer.stdout and "min_free_gb" in answer.stdout
    assert "t2v_big: still needs pull" in answer.stdout
