"""The jobs panel stays in step with a real daemon: 20 jobs submitted quickly through the app
end with every line final and the app's job states equal to `tunehub jobs --json`; a failed
job's line stops its bar and shows the error's whole first line.

A daemon job's final state reaches the app twice, from the job's events and from reading
the journal once the daemon has replied with the job's id, in either order; the tests below
fix each order that once left a stray or a stale line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from tests.fixtures.homes import Home
from tests.tui.conftest import make_app, screen_text, settle, wait_for
from tunehub.tui.widgets.jobs import JobLine, JobsPanel

pytestmark = pytest.mark.anyio

COUNT = 20


def _daemon_jobs(home: Home) -> dict[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "TUNEHUB_HOME"}
    done = subprocess.run([sys.executable, "-m", "tunehub", "--home", str(home.root), "jobs", "--json", "--all"],
                          capture_output=True, text=True, env=env, timeout=60, check=True)
    return {job["id"]: job["state"] for job in json.loads(done.stdout)}


def _daemon_with_quick_pulls(home: Home, definition_ids: list[str]) -> Any:
    """A running daemon for ``home`` (no pulls of its own, one attempt per job) and these
    definitions, whose one file is present: each pull is done at once."""
    from tests.daemon.conftest import DaemonProcess

    home.ckpts.mkdir(parents=True, exist_ok=True)
    (home.ckpts / "quick_bf16.safetensors").write_bytes(b"x" * 64)
    for index, definition_id in enumerate(definition_ids):
        home.write_definition(definition_id, {"name": f"q{index}", "architecture": "t2v", "URLs": ["quick_bf16.safetensors"]})
    home.write_config('quantization = "bf16"\n[daemon]\npull = "none"\nquantize = "never"\nmax_attempts = 1\n')
    daemon = DaemonProcess(home.root, env=home.env())
    daemon.start()
    return daemon


async def test_twenty_quick_jobs_end_as_the_daemon_says(home: Home) -> None:
    home.write_definition("t2v_fails", {"name": "f", "architecture": "t2v",
                                        "URLs": ["http://127.0.0.1:9/nowhere/really_long_name_of_a_file_bf16.safetensors"]})
    daemon = _daemon_with_quick_pulls(home, [f"t2v_quick{index:02d}" for index in range(COUNT)])
    try:
        app = make_app(home, use_daemon=True)
        async with app.run_test(size=(200, 60)) as pilot:
            await wait_for(pilot, lambda: "daemon: actions are daemon jobs" in screen_text(app), what="daemon mode")
            keys = [app.start_job("pull", f"t2v_quick{index:02d}", {}) for index in range(COUNT)]
            failing = app.start_job("pull", "t2v_fails", {})

            def settled() -> bool:
                return all(app.jobs[key]["state"] != "running" for key in [*keys, failing])

            await wait_for(pilot, settled, timeout=120, what="every job final in the app")
            states = _daemon_jobs(home)
            assert len(states) == COUNT + 1
            for key in keys:
                assert states[int(app.jobs[key]["daemon_job"])] == app.jobs[key]["state"] == "done", app.jobs[key]
            assert states[int(app.jobs[failing]["daemon_job"])] == app.jobs[failing]["state"] == "failed"
            await pilot.pause()
            panel = app.screen.query_one(JobsPanel)
            lines = list(panel.query(JobLine))
            assert all(line.has_class("-done") or line.has_class("-failed") for line in lines), \
                [(line.key, line._event) for line in lines]
            assert not any(line.key.startswith("daemon-") for line in lines)  # one line per job
            failed = panel.line(failing)
            assert failed is not None and failed.has_class("-failed")
            from textual.widgets import ProgressBar

            assert not failed.query_one(ProgressBar).display  # no bar left moving
            assert "failed:" in screen_text(app) and "127.0.0.1:9" in screen_text(app)
    finally:
        daemon.stop()


def _drawn_ended(panel: JobsPanel, key: str) -> bool:
    line = panel.line(key)
    return line is not None and (line.has_class("-done") or line.has_class("-failed"))


async def test_a_failed_line_stays_while_later_jobs_finish(tui_home: Home) -> None:
    """Two later successes used to push a failed job's line out of the panel: its error was
    gone from the screen once the notification timed out."""
    from tunehub.tui.messages import JobFinished

    app = make_app(tui_home)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        panel = app.screen.query_one(JobsPanel)
        jobs = [("pull-1", False, "pull failed: connection refused")] + [(f"pull-{n}", True, "pull done") for n in (2, 3, 4)]
        for key, ok, summary in jobs:  # one at a time, each line drawn before the next ends
            app.post_message(JobFinished(key, "pull", "t2v_alpha", ok, summary))
            await wait_for(pilot, lambda: _drawn_ended(panel, key), what=key)
        failed = panel.line("pull-1")
        assert failed is not None and failed.has_class("-failed"), [line.key for line in panel.query(JobLine)]
        await wait_for(pilot, lambda: panel.line("pull-2") is None, what="the oldest done line pruned")
        assert [line.key for line in panel.query(JobLine)] == ["pull-1", "pull-3", "pull-4"]


async def test_a_late_update_does_not_bring_back_a_finished_line(tui_home: Home) -> None:
    """A job's progress event handled after its end (read from the journal first) used to
    mount a new line for it once its finished line had left the panel: a bar moving forever."""
    from tunehub.tui.messages import JobFinished, JobUpdate

    app = make_app(tui_home)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        panel = app.screen.query_one(JobsPanel)
        for key in ("pull-1", "pull-2", "pull-3", "pull-4"):  # one at a time, each line drawn before the next ends
            app.post_message(JobFinished(key, "pull", "t2v_alpha", True, "pull done"))
            await wait_for(pilot, lambda: _drawn_ended(panel, key), what=key)
        await wait_for(pilot, lambda: panel.line("pull-1") is None, what="pull-1 pruned")
        app.post_message(JobUpdate("pull-1", "pull", "t2v_alpha", {"status": "started"}))
        app.post_message(JobFinished("pull-5", "pull", "t2v_alpha", True, "pull done"))
        await wait_for(pilot, lambda: _drawn_ended(panel, "pull-5"), what="pull-5")
        assert panel.line("pull-1") is None
        assert all(line.has_class("-done") for line in panel.query(JobLine)), [line.key for line in panel.query(JobLine)]


async def test_lines_that_end_in_one_burst_are_pruned(tui_home: Home) -> None:
    """Lines mounted and finished by one burst of messages have no classes until their
    children are mounted; pruning by class kept every one of them."""
    from tunehub.tui.messages import JobFinished

    app = make_app(tui_home)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        for number in range(1, 7):
            app.post_message(JobFinished(f"pull-{number}", "pull", "t2v_alpha", True, "pull done"))
        panel = app.screen.query_one(JobsPanel)
        await wait_for(pilot, lambda: panel.line("pull-6") is not None, what="the last line")
        await wait_for(pilot, lambda: [line.key for line in panel.query(JobLine)] == ["pull-5", "pull-6"],
                       timeout=5, what="the two last lines only")


def _slow_replies(app: Any, client: Any) -> Any:
    """The daemon's own client, its replies held back the way a loaded machine delays them:
    the reply to the submission comes once the job's events have been followed, and the
    follower's read of the job's result only after the app has the job's end from the journal."""
    from tunehub.daemon.client import DaemonClient

    class SlowReplies(DaemonClient):
        replied = threading.Event()
        follower_reading = threading.Event()
        follower_posted = threading.Event()

        def submit_job(self, kind: str, definition_id: str, **params: Any) -> dict[str, Any]:
            answer = super().submit_job(kind, definition_id, **params)
            self.follower_reading.wait(60)  # the job ran and its job.done event is being handled
            self.replied.set()
            return answer

        def jobs(self) -> list[dict[str, Any]]:
            if not self.replied.is_set():
                self.follower_reading.set()
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and any(job["state"] == "running" for job in app.jobs.values()):
                    time.sleep(0.05)
            return super().jobs()

        def status(self) -> dict[str, Any]:
            if self.follower_reading.is_set():
                self.follower_posted.set()  # the follower handled job.done: it re-reads /status next
            return super().status()

    return SlowReplies(client.home, timeout=client.timeout)


async def test_events_before_the_daemons_reply_leave_one_line(home: Home) -> None:
    """The job's events came before the daemon's reply with its id, so the follower took
    them for another client's job ("daemon-N"); its job.done, posted after the app had the
    end from the journal, made a second, stray line."""
    daemon = _daemon_with_quick_pulls(home, ["t2v_quick"])
    try:
        app = make_app(home, use_daemon=True)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: "daemon: actions are daemon jobs" in screen_text(app), what="daemon mode")
            client = _slow_replies(app, app.daemon_client)
            app.daemon_client = client
            key = app.start_job("pull", "t2v_quick", {})
            await wait_for(pilot, lambda: app.jobs[key]["state"] != "running", timeout=90, what="the job's end")
            await wait_for(pilot, client.follower_posted.is_set, timeout=60, what="the follower's job.done")
            await pilot.pause(0.5)
            await pilot.pause(0.5)
            panel = app.screen.query_one(JobsPanel)
            lines = [(line.key, sorted(line.classes)) for line in panel.query(JobLine)]
            assert lines == [(key, ["-done", "job-line"])], lines
            assert app.jobs[key]["state"] == "done"
    finally:
        daemon.stop()
