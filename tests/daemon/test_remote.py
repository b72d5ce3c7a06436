"""Remote repos through the real huggingface_hub client against `tunehub hub serve`,
with a fault-injecting proxy in between; and a download killed with SIGKILL mid-way."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import time
from typing import Any

import pytest

from tests.daemon.conftest import definition_in
from tunehub.safeio import update_definition

REPO = "alice/defs"


def _upload(hub_server: Any, path: str, data: Any, message: str = "update") -> None:
    api = hub_server.api()
    payload = data if isinstance(data, bytes) else json.dumps(data, indent=2).encode()
    api.upload_file(path_or_fileobj=io.BytesIO(payload), path_in_repo=path, repo_id=REPO, commit_message=message)


def _delete(hub_server: Any, path: str) -> None:
    hub_server.api().delete_file(path_in_repo=path, repo_id=REPO, commit_message=f"remove {path}")


def _definition(name: str, urls: list[str], **model: Any) -> dict[str, Any]:
    return {"prompt": "a cat", "model": {"name": name, "architecture": "t2v", "URLs": urls, **model}}


def _env(hub_server: Any, endpoint: str) -> dict[str, str]:
    env = {**os.environ, **hub_server.env()}
    env["HF_ENDPOINT"] = endpoint
    return env


def _events(daemon: Any, kind: str) -> list[dict[str, Any]]:
    return [e for e in daemon.client.events(0)["events"] if e["type"] == kind]


@pytest.fixture
def remote_repo(hub_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    hub_server.use_in_process(monkeypatch)
    hub_server.api().create_repo(REPO)
    _upload(hub_server, "README.md", b"# definitions\n", "init")
    return hub_server


def test_remote_definitions_overlay_refusals_removal(home: Any, remote_repo: Any, fault_proxy: Any, daemon_factory: Any) -> None:
    hub_server = remote_repo
    bf16 = f"{hub_server.url}/alice/weights/resolve/main/remote_ft_bf16.safetensors"
    _upload(hub_server, "finetunes/t2v_remote.json", _definition("Remote FT", [bf16]))
    _upload(hub_server, "finetunes/t2v_evil.json", _definition("Evil", [bf16, "/etc/passwd"]))
    _upload(hub_server, "other/t2v_elsewhere.json", _definition("Not under path", [bf16]))
    home.write_config(f'[daemon]\npull = "none"\n[[remote]]\nrepo = "{REPO}"\npath = "finetunes/"\ninterval = "1s"\n')
    token = hub_server.write_token
    daemon = daemon_factory(home.root, env=_env(hub_server, fault_proxy.url))

    entry = daemon.wait_for(lambda s: definition_in(s, "t2v_remote"), what="remote definition")
    assert entry["origin"] == "remote"
    working = home.root / "remote" / "alice--defs" / "t2v_remote.json"
    assert working.is_file()
    status = daemon.client.status()
    assert definition_in(status, "t2v_evil") is None and definition_in(status, "t2v_elsewhere") is None
    remote = status["remotes"][0]
    assert remote["state"] == "ok" and remote["sha"]
    assert [r["file"] for r in remote["refused"]] == ["finetunes/t2v_evil.json"]
    assert "/etc/passwd" in remote["refused"][0]["problem"]

    # nothing changed upstream: one HTTP request per poll (the revision's info), nothing else
    before_proxy = len(fault_proxy.requests)
    time.sleep(3.5)
    window = fault_proxy.requests[before_proxy:]
    assert 2 <= len(window) <= 5  # a 1 s interval over 3.5 s
    assert all(m == "GET" and p.startswith(f"/api/models/{REPO}/revision/main") for m, p, _ in window), window

    # what this machine adds (a quantized file) survives the remote's next edit
    def add_local(data: dict[str, Any]) -> None:
        data["model"]["URLs"].append("remote_ft_quanto_mbf16_int8.safetensors")

    update_definition(working, add_local)
    _upload(hub_server, "finetunes/t2v_remote.json", _definition("Remote FT v2", [bf16]), "rename")
    daemon.wait_for(lambda s: (e := definition_in(s, "t2v_remote")) and e["name"] == "Remote FT v2", what="the remote edit")
    merged = json.loads(working.read_text())
    assert merged["model"]["name"] == "Remote FT v2"
    assert merged["model"]["URLs"] == [bf16, "remote_ft_quanto_mbf16_int8.safetensors"]

    # a definition removed upstream is marked, not deleted
    _delete(hub_server, "finetunes/t2v_remote.json")
    entry = daemon.wait_for(
        lambda s: (e := definition_in(s, "t2v_remote")) and e.get("remote", {}).get("upstream") == "gone" and e,
        what="removal marked",
    )
    assert working.is_file() and entry["state"] != "invalid"
    assert daemon.client.status()["remotes"][0]["removed"] == ["finetunes/t2v_remote.json"]
    assert token not in (home.root / ".tunehub" / "daemon.log").read_text()


def test_remote_429_then_500_backs_off_and_says_so(home: Any, remote_repo: Any, fault_proxy: Any, daemon_factory: Any) -> None:
    hub_server = remote_repo
    _upload(hub_server, "t2v_flaky.json", _definition("Flaky", ["flaky_bf16.safetensors"]))
    fault_proxy.faults = [
        (f"/api/models/{REPO}", 429, {"Retry-After": "2"}),
        (f"/api/models/{REPO}", 500, {}),
    ]
    home.write_config(f'[daemon]\npull = "none"\n[[remote]]\nrepo = "{REPO}"\ninterval = "1s"\n')
    daemon = daemon_factory(home.root, env=_env(hub_server, fault_proxy.url))
    remote = daemon.wait_for(
        lambda s: s["remotes"][0]["state"] == "backoff" and s["remotes"][0], timeout=10, what="backoff state"
    )
    assert remote["failures"] >= 1 and "HTTP 429" in remote["last_error"]
    daemon.wait_for(lambda s: definition_in(s, "t2v_flaky"), timeout=30, what="the definition after recovery")
    errors = _events(daemon, "remote.error")
    assert [e["status"] for e in errors] == [429, 500]
    assert errors[0]["retry_after"] == 2.0 and errors[0]["retry_in"] >= 2.0
    assert errors[1]["failures"] == 2
    assert _events(daemon, "remote.ok")
    api_calls = [(m, p) for m, p, _ in fault_proxy.requests if p.startswith(f"/api/models/{REPO}")]
    assert len(api_calls) >= 3  # the two failures were retried
    assert daemon.client.status()["remotes"][0]["state"] == "ok"

    # offline: the remote shows as unreachable and what was fetched stays in service
    hub_server.kill()
    remote = daemon.wait_for(
        lambda s: s["remotes"][0]["state"] == "unreachable" and s["remotes"][0], timeout=15, what="unreachable"
    )
    assert "cannot reach" in remote["last_error"]
    assert definition_in(daemon.client.status(), "t2v_flaky")["state"] != "invalid"


def test_sigkill_during_download_then_resume(home: Any, remote_repo: Any, fault_proxy: Any, daemon_factory: Any) -> None:
    hub_server = remote_repo
    payload = os.urandom(12 * 1024 * 1024)
    api = hub_server.api()
    api.create_repo("alice/weights")
    api.upload_file(path_or_fileobj=io.BytesIO(payload), path_in_repo="big_bf16.safetensors", repo_id="alice/weights")
    url = f"{fault_proxy.url}/alice/weights/resolve/main/big_bf16.safetensors"
    (home.finetunes / "t2v_big.json").write_text(json.dumps(_definition("Big", [url])))
    home.write_config('[daemon]\npull = "all"\nquantize = "never"\n')
    fault_proxy.throttle = 5e5  # per connection (4 of them): about 6 s for the whole file
    env = _env(hub_server, fault_proxy.url)
    daemon = daemon_factory(home.root, env=env)
    record = home.ckpts / ".big_bf16.safetensors.tunehub-part.json"

    def quarter_done(status: dict[str, Any]) -> bool:
        return any(
            (j["progress"] or {}).get("completed", 0) > len(payload) // 4 for j in status["jobs"] if j["kind"] == "pull"
        )

    daemon.wait_for(quarter_done, timeout=60, what="a quarter of the download")
    assert record.exists()
    time.sleep(0.6)  # let the progress record catch up with the bytes
    daemon.kill()
    assert not (home.ckpts / "big_bf16.safetensors").exists()
    job = next(j for j in _jobs(home) if j["kind"] == "pull")
    assert job["state"] == "running"  # as the crash left it

    first_run_requests = len(fault_proxy.requests)
    fault_proxy.throttle = None
    restarted = daemon_factory(home.root, env=env)
    restarted.wait_for(lambda s: (e := definition_in(s, "t2v_big")) and e["state"] == "ready", timeout=60, what="pull done")
    final = home.ckpts / "big_bf16.safetensors"
    assert hashlib.sha256(final.read_bytes()).digest() == hashlib.sha256(payload).digest()
    ranges = [r for m, p, r in fault_proxy.requests[first_run_requests:] if m == "GET" and "big_bf16" in p]
    assert ranges and all(r and not r.startswith("bytes=0-") for r in ranges), ranges  # resumed, not restarted
    jobs = [j for j in _jobs(home) if j["kind"] == "pull"]
    assert len(jobs) == 1 and jobs[0]["state"] == "done"
    assert any(e["type"] == "jobs.requeued" for e in restarted.client.events(0)["events"])


def _downloading(status: dict[str, Any], job_id: int) -> bool:
    for job in status["jobs"]:
        progress = job["progress"] or {}
        if job["id"] == job_id and progress.get("status") in ("downloading", "resuming"):
            return True
    return False


def _jobs(home: Any) -> list[dict[str, Any]]:
    from tunehub.daemon.journal import Journal

    journal = Journal(home.root / ".tunehub" / "state.db", readonly=True)
    try:
        return journal.jobs()
    finally:
        journal.close()


def test_submit_and_cancel_a_running_job(home: Any, remote_repo: Any, fault_proxy: Any, daemon_factory: Any) -> None:
    hub_server = remote_repo
    api = hub_server.api()
    api.create_repo("alice/weights")
    api.upload_file(path_or_fileobj=io.BytesIO(os.urandom(32 * 1024 * 1024)), path_in_repo="slow_bf16.safetensors", repo_id="alice/weights")
    url = f"{fault_proxy.url}/alice/weights/resolve/main/slow_bf16.safetensors"
    (home.finetunes / "t2v_slow.json").write_text(json.dumps(_definition("Slow", [url])))
    home.write_config('[daemon]\npull = "none"\n')
    fault_proxy.throttle = 1.5e6  # per connection: 32 MB take about 5 s, long enough to stop half-way
    daemon = daemon_factory(home.root, env=_env(hub_server, fault_proxy.url))
    from tests.daemon.test_daemon_process import _cli

    submitted = _cli(home.root, "jobs", "--submit", "pull", "t2v_slow")
    assert submitted.returncode == 0, submitted.stderr
    job_id = int(submitted.stdout.split("#")[1].split(":")[0])
    daemon.wait_for(lambda s: _downloading(s, job_id), what="the job downloading")
    time.sleep(1.0)
    cancelled = _cli(home.root, "jobs", "--cancel", str(job_id))
    assert cancelled.returncode == 0 and "cancelling" in cancelled.stdout
    daemon.wait_for(lambda s: any(j["id"] == job_id and j["state"] == "cancelled" for j in s["jobs"]), what="cancelled")
    assert not (home.ckpts / "slow_bf16.safetensors").exists()
    assert daemon.client.health()["ok"]
    # unknown definition and kind are refused with a clear message
    refused = _cli(home.root, "jobs", "--submit", "pull", "t2v_nope")
    assert refused.returncode == 1 and "unknown definition 't2v_nope'" in refused.stderr

    # SIGTERM while a download runs: out within 10 s, progress saved, the job back in the queue
    again = _cli(home.root, "jobs", "--submit", "pull", "t2v_slow")
    job_id = int(again.stdout.split("#")[1].split(":")[0])
    part = home.ckpts / ".slow_bf16.safetensors.tunehub-part"
    daemon.wait_for(lambda s: _downloading(s, job_id), what="bytes arriving")
    time.sleep(0.5)
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0
    assert time.monotonic() - started < 10
    job = next(j for j in _jobs(home) if j["id"] == job_id)
    assert job["state"] == "queued" and "interrupted" in job["last_error"]
    assert part.exists() and (home.ckpts / ".slow_bf16.safetensors.tunehub-part.json").exists(), (sorted(p.name for p in home.ckpts.iterdir()), daemon.stderr_text()[-3000:])
