"""The job runner with the real journal: retries with backoff, permanent failures, missing capabilities."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tunehub.config import load_config
from tunehub.daemon import jobs as jobs_module
from tunehub.daemon.events import EventBus
from tunehub.daemon.jobs import JobRunner
from tunehub.daemon.journal import Journal
from tunehub.daemon.policy import DaemonSettings
from tunehub.errors import HubError, HubNotFoundError


def _runner(tmp_path: Path, settings: DaemonSettings) -> tuple[JobRunner, Journal, EventBus, list[tuple[int, str]]]:
    journal = Journal(tmp_path / "state.db")
    events = EventBus(journal)
    finished: list[tuple[int, str]] = []
    cfg = load_config(tmp_path)
    runner = JobRunner(journal, events, lambda: (cfg, settings), lambda job, outcome: finished.append((job["id"], outcome)))
    return runner, journal, events, finished


def _wait(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_transient_failures_retry_with_backoff_then_succeed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []

    def flaky_pull(ctx: Any) -> dict[str, str]:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise HubError(f"connection reset while fetching (call {len(calls)})")
        ctx.progress({"file": "x", "total": 1, "completed": 1, "status": "done"})
        return {"ok": "yes"}

    monkeypatch.setitem(jobs_module.EXECUTORS, "pull", flaky_pull)
    settings = DaemonSettings(retry_base=0.3, max_attempts=5)
    runner, journal, events, finished = _runner(tmp_path, settings)
    job = journal.add_job("pull", "t2v_ft", max_attempts=5)
    runner.start()
    try:
        _wait(lambda: (j := journal.get_job(job["id"])) is not None and j["state"] == "done")
    finally:
        runner.stop(5)
    done = journal.get_job(job["id"])
    assert done is not None and done["attempts"] == 3 and done["result"] == {"ok": "yes"}
    assert "call 2" in done["last_error"]  # the last failure stays visible
    assert calls[1] - calls[0] >= 0.3 * 0.8 and calls[2] - calls[1] >= 0.6 * 0.8  # doubling backoff
    retries = [e for e in events.since(0)["events"] if e["type"] == "job.retry"]
    assert [e["attempt"] for e in retries] == [1, 2]
    assert [outcome for _, outcome in finished] == ["queued", "queued", "done"]


def test_permanent_failure_is_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(ctx: Any) -> None:
        raise HubNotFoundError("https://hub.example/ns/r/resolve/main/x.safetensors: 404 (definition 't2v_ft')")

    monkeypatch.setitem(jobs_module.EXECUTORS, "pull", missing)
    runner, journal, events, finished = _runner(tmp_path, DaemonSettings(retry_base=0.1))
    job = journal.add_job("pull", "t2v_ft")
    claimed = journal.next_runnable("pull", time.time())
    assert claimed is not None
    assert runner.run_job(claimed) == "failed"
    failed = journal.get_job(job["id"])
    assert failed is not None and failed["state"] == "failed" and failed["attempts"] == 1
    assert "404" in failed["last_error"] and "x.safetensors" in failed["last_error"]


def test_a_missing_capability_fails_with_a_message_not_a_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        jobs_module.EXECUTORS, "generate",
        lambda ctx: jobs_module._capability("tunehub.inference.not_built", "generate", "generation"),
    )
    runner, journal, _events, _finished = _runner(tmp_path, DaemonSettings())
    job = journal.add_job("generate", "t2v_ft")
    claimed = journal.next_runnable("generate", time.time())
    assert claimed is not None and runner.run_job(claimed) == "failed"
    failed = journal.get_job(job["id"])
    assert failed is not None and "not available" in failed["last_error"] and "tunehub.inference.not_built" in failed["last_error"]
