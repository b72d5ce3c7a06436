"""The daemon's parts on their own: settings, overlay, remote validation, journal, events, redaction, API."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from tunehub.config import load_config
from tunehub.daemon.api import ApiServer
from tunehub.daemon.client import DaemonClient, DaemonNotRunningError
from tunehub.daemon.events import EventBus
from tunehub.daemon.journal import Journal
from tunehub.daemon.lock import HomeLock
from tunehub.daemon.logs import add_secret, redact
from tunehub.daemon.overlay import rebase
from tunehub.daemon.policy import parse_duration, settings_from_config
from tunehub.daemon.poller import validate_remote_definition
from tunehub.errors import ConfigError, DaemonError, DaemonLockedError


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("250ms", 0.25), (12, 12.0), ("2", 2.0)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5 minutes", "-1s", "0s", True, [], "m"])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="duration|more than zero"):
        parse_duration(bad)


def test_daemon_settings_from_toml(tmp_path: Path) -> None:
    (tmp_path / "tunehub.toml").write_text(
        '[daemon]\npull = "all"\nquantize = "never"\npublish = "me/mine"\nmin_free_gb = 5\n'
        '[[remote]]\nrepo = "ns/one"\npath = "finetunes/"\ninterval = "30s"\n'
        '[[remote]]\nrepo = "ns/two"\n'
    )
    settings = settings_from_config(load_config(tmp_path))
    assert (settings.pull, settings.quantize, settings.publish, settings.min_free_gb) == ("all", "never", "me/mine", 5.0)
    assert [(r.repo, r.path, r.revision, r.interval) for r in settings.remotes] == [
        ("ns/one", "finetunes", "main", 30.0), ("ns/two", "", "main", 300.0),
    ]


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        ('[daemon]\npull = "some"\n', "pull"),
        ('[daemon]\npublish = "no-slash"\n', "publish"),
        ('[daemon]\npul = "all"\n', "pul"),
        ('[[remote]]\nrepo = "ns/a"\ninterval = "soon"\n', "interval"),
        ('[[remote]]\nrepo = "ns/a"\npath = "../x"\n', "path"),
    ],
)
def test_bad_daemon_settings_name_the_file_and_key(tmp_path: Path, toml: str, names: str) -> None:
    (tmp_path / "tunehub.toml").write_text(toml)
    with pytest.raises(ConfigError) as info:
        settings_from_config(load_config(tmp_path))
    assert "tunehub.toml" in str(info.value) and names in str(info.value)


def test_lock_names_the_holder(tmp_path: Path) -> None:
    first = HomeLock(tmp_path / "daemon.lock")
    first.acquire()
    try:
        with pytest.raises(DaemonLockedError, match=f"process {os.getpid()}"):
            HomeLock(tmp_path / "daemon.lock").acquire()
    finally:
        first.release()
    HomeLock(tmp_path / "daemon.lock").acquire()  # free again once released


# --- overlay -----------------------------------------------------------------------------

BF16 = "https://hub.example/ns/repo/resolve/main/ft_bf16.safetensors"
BF16_V2 = "https://hub.example/ns/repo/resolve/main/ft_v2_bf16.safetensors"
INT8_LOCAL = "ft_quanto_bf16_int8.safetensors"
INT8_URL = "https://hub.example/me/mine/resolve/main/ft_quanto_bf16_int8.safetensors"


def _definition(urls: list[str], name: str = "FT", **settings: object) -> dict[str, object]:
    return {**settings, "model": {"name": name, "architecture": "t2v", "URLs": urls, "auto_quantize": True}}


def test_overlay_survives_a_remote_edit() -> None:
    old = _definition([BF16], seed=1)
    working = _definition([BF16, INT8_URL], seed=1)
    new = _definition([BF16], name="FT v1.1", seed=7)
    merged = rebase(old, working, new)
    assert merged["model"]["URLs"] == [BF16, INT8_URL]  # kept
    assert merged["model"]["name"] == "FT v1.1" and merged["seed"] == 7  # the remote's changes taken


def test_overlay_drops_quantized_files_made_from_a_replaced_source() -> None:
    old = _definition([BF16])
    working = _definition([BF16, INT8_LOCAL])
    merged = rebase(old, working, _definition([BF16_V2]))
    assert merged["model"]["URLs"] == [BF16_V2]  # not left stale: the int8 of the old file is dropped


def test_overlay_keeps_user_edits_of_other_keys() -> None:
    old = _definition([BF16], prompt="a cat")
    working = _definition([BF16], prompt="a dog, by me")
    merged = rebase(old, working, _definition([BF16], prompt="a cat", steps=30))
    assert merged["prompt"] == "a dog, by me" and merged["steps"] == 30


def test_no_overlay_means_the_remote_content() -> None:
    new = _definition([BF16_V2])
    assert rebase(_definition([BF16]), _definition([BF16]), new) == new
    assert rebase(None, None, new) == new


# --- remote validation --------------------------------------------------------------------

@pytest.mark.parametrize(
    "entry", ["/etc/passwd", "../../secret.safetensors", "sub/../../x_bf16.safetensors", "C:\\models\\x.safetensors"]
)
def test_remote_definitions_may_not_escape_the_weights_folder(entry: str) -> None:
    raw = json.dumps(_definition([BF16, entry])).encode()
    data, problem = validate_remote_definition("t2v_ft.json", raw)
    assert data is None and entry in (problem or "") and "refused" in (problem or "")


def test_remote_definition_checks() -> None:
    assert validate_remote_definition("t2v_ft.json", json.dumps(_definition([BF16, INT8_LOCAL])).encode())[1] is None
    assert "JSON" in (validate_remote_definition("x.json", b"{nope")[1] or "")
    assert "model" in (validate_remote_definition("x.json", b'{"prompt": "x"}')[1] or "")
    assert "name" in (validate_remote_definition(".hidden.json", b"{}")[1] or "")


# --- journal and events ---------------------------------------------------------------------

def test_journal_requeues_jobs_left_running(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state.db")
    job = journal.add_job("pull", "t2v_ft")
    claimed = journal.next_runnable("pull", time.time())
    assert claimed is not None and claimed["state"] == "running" and claimed["attempts"] == 1
    journal.close()
    # a new process after a crash
    journal = Journal(tmp_path / "state.db")
    assert journal.requeue_interrupted() == [job["id"]]
    again = journal.get_job(job["id"])
    assert again is not None and again["state"] == "queued" and again["attempts"] == 0
    assert "interrupted" in again["last_error"]
    reader = Journal(tmp_path / "state.db", readonly=True)
    assert [j["id"] for j in reader.jobs()] == [job["id"]]


def test_events_long_poll_and_missed(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state.db")
    bus = EventBus(journal)
    first = bus.publish("a", n=1)
    assert bus.since(0)["events"] == [first]
    threading.Timer(0.2, lambda: bus.publish("b", n=2)).start()
    started = time.monotonic()
    answer = bus.since(first["id"], timeout=5)
    assert [e["type"] for e in answer["events"]] == ["b"] and time.monotonic() - started < 4
    assert bus.since(answer["last_id"], timeout=0.05)["events"] == []
    # ids keep increasing across a restart
    bus2 = EventBus(Journal(tmp_path / "state.db"))
    assert bus2.publish("c")["id"] == answer["last_id"] + 1


def test_redaction() -> None:
    add_secret("s3cr3t-t0ken-value")
    text = redact("GET with Authorization: Bearer abc.def and hf_abcdefghijklmnop and s3cr3t-t0ken-value token=xyz")
    assert "abc.def" not in text and "hf_abcdefghijklmnop" not in text and "s3cr3t" not in text and "xyz" not in text


# --- API over the Unix socket ---------------------------------------------------------------

class _App:
    def api_health(self) -> dict[str, object]:
        return {"ok": True}

    def api_status(self) -> dict[str, object]:
        return {"definitions": []}

    def api_events(self, since: int, timeout: float) -> dict[str, object]:
        return {"events": [], "since": since, "timeout": timeout}

    def api_jobs(self) -> dict[str, object]:
        return {"jobs": []}

    def api_submit(self, body: dict[str, object]) -> dict[str, object]:
        if body.get("kind") != "pull":
            from tunehub.daemon.api import ApiError

            raise ApiError(400, "bad kind")
        return {"id": 1, **body}

    def api_cancel(self, job_id: int) -> dict[str, object]:
        return {"id": job_id, "state": "cancelled"}


def test_socket_api_mode_and_client(tmp_path: Path) -> None:
    # A deep home: the socket path is longer than AF_UNIX allows, and must still work.
    home = tmp_path / ("deep-folder-name-" * 6) / "home"
    client = DaemonClient(home)
    with pytest.raises(DaemonNotRunningError):
        client.health()
    assert not DaemonClient.is_running(home)
    server = ApiServer(home / ".tunehub" / "daemon.sock", _App())
    server.start()
    try:
        assert len(str(client.socket_path)) > 108
        assert stat.S_IMODE(client.socket_path.stat().st_mode) == 0o600
        assert DaemonClient.is_running(home)
        assert client.events(since=5, timeout=1.5) == {"events": [], "since": 5, "timeout": 1.5}
        assert client.submit_job("pull", "t2v_ft", quantization="int8")["params"] == {"quantization": "int8"}
        with pytest.raises(DaemonError, match="bad kind"):
            client.submit_job("explode", "t2v_ft")
        assert client.cancel_job(3) == {"id": 3, "state": "cancelled"}
    finally:
        server.stop()
    assert not client.socket_path.exists()


def test_a_user_edit_during_the_daemons_rewrite_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user saves the working copy of a remote definition while the daemon merges a new
    remote version into it: the daemon notices, re-reads, and both changes survive."""
    from tunehub.daemon import poller as poller_module
    from tunehub.daemon.policy import RemoteSpec
    from tunehub.daemon.poller import RemotePoller

    cfg = load_config(tmp_path)
    journal = Journal(tmp_path / ".tunehub" / "state.db")
    poller = RemotePoller(cfg, [], journal, EventBus(journal), lambda result: None)
    spec = RemoteSpec(repo="ns/defs")
    first = _definition([BF16], prompt="a cat")
    poller._store(spec, "t2v_ft.json", json.dumps(first, indent=2).encode(), first)
    working = cfg.remote_dir / "ns--defs" / "t2v_ft.json"
    assert json.loads(working.read_text()) == first

    real_rebase = poller_module.rebase
    edits = []

    def rebase_while_the_user_saves(old: object, current: object, new: dict[str, object]) -> dict[str, object]:
        merged = real_rebase(old, current, new)  # type: ignore[arg-type]
        if not edits:  # the user's editor saves right now, between the daemon's read and write
            edited = json.loads(working.read_text())
            edited["prompt"] = "a dog, by me"
            working.write_text(json.dumps(edited, indent=2))
            edits.append(edited)
        return merged

    monkeypatch.setattr(poller_module, "rebase", rebase_while_the_user_saves)
    second = _definition([BF16], name="FT v2", prompt="a cat")
    poller._store(spec, "t2v_ft.json", json.dumps(second, indent=2).encode(), second)
    final = json.loads(working.read_text())
    assert final["prompt"] == "a dog, by me"  # the user's edit
    assert final["model"]["name"] == "FT v2"  # and the remote's change
