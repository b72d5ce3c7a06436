"""The jobs panel stays in step with a real daemon: 20 jobs submitted quickly through the app
end with every line final and the app's job states equal to `tunehub jobs --json`; a failed
job's line stops its bar and shows the error's whole first line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.fixtures.homes import Home
from tests.tui.conftest import make_app, screen_text, wait_for
from tunehub.tui.widgets.jobs import JobLine, JobsPanel

pytestmark = pytest.mark.anyio

COUNT = 20


def _daemon_jobs(home: Home) -> dict[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "TUNEHUB_HOME"}
    done = subprocess.run([sys.executable, "-m", "tunehub", "--home", str(home.root), "jobs", "--json", "--all"],
                          capture_output=True, text=True, env=env, timeout=60, check=True)
    return {job["id"]: job["state"] for job in json.loads(done.stdout)}


@pytest.mark.xfail(strict=False, reason="timing-dependent: failed once in a fresh-clone CI run on the 2-core machine, passed in others; under investigation")
async def test_twenty_quick_jobs_end_as_the_daemon_says(home: Home) -> None:
    from tests.daemon.conftest import DaemonProcess

    home.ckpts.mkdir(parents=True, exist_ok=True)
    (home.ckpts / "quick_bf16.safetensors").write_bytes(b"x" * 64)  # present: each pull is done at once
    for index in range(COUNT):
        home.write_definition(f"t2v_quick{index:02d}", {"name": f"q{index}", "architecture": "t2v",
                                                       "URLs": ["quick_bf16.safetensors"]})
    home.write_definition("t2v_fails", {"name": "f", "architecture": "t2v",
                                        "URLs": ["http://127.0.0.1:9/nowhere/really_long_name_of_a_file_bf16.safetensors"]})
    home.write_config('quantization = "bf16"\n[daemon]\npull = "none"\nquantize = "never"\nmax_attempts = 1\n')
    daemon = DaemonProcess(home.root, env=home.env())
    daemon.start()
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
