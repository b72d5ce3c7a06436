"""A daemon whose weights folder is full says so in `tunehub status` (a real small tmpfs in a
private mount namespace, a real daemon process, a real Hub server)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.daemon.test_daemon_process import _cli
from tests.hub.test_download_diskfull import _unshare_works
from tests.hub.test_pull import _upload


@pytest.mark.skipif(not _unshare_works(), reason="needs unprivileged mount namespaces (unshare -rm) for a real full disk")
def test_status_shows_why_downloads_wait(home: Any, hub_server: Any) -> None:
    hub_server.api().create_repo("alice/full")
    urls = _upload(hub_server, {"wan2.1_t2v_full_mbf16.safetensors": os.urandom(3 << 20)}, repo="alice/full")
    home.write_definition("t2v_full", {"name": "f", "architecture": "t2v", "URLs": list(urls.values())})
    home.write_config('quantization = "bf16"\n[daemon]\npull = "all"\n')
    home.ckpts.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "TUNEHUB_HOME"}
    env.update(hub_server.env())
    stderr = open(home.root / "daemon-stderr.log", "wb")
    daemon = subprocess.Popen(
        ["unshare", "-rm", "sh", "-c",
         f'mount -t tmpfs -o size=1m tmpfs "{home.ckpts}" && exec "{sys.executable}" -m tunehub --home "{home.root}" daemon'],
        env=env, stdout=subprocess.DEVNULL, stderr=stderr,
    )
    try:
        status: dict[str, Any] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            answer = _cli(home.root, "status", "--json")
            if answer.returncode == 0:
                status = json.loads(answer.stdout)
                if status.get("downloads_paused"):
                    break
            time.sleep(0.3)
        assert status.get("downloads_paused"), (status, (home.root / "daemon-stderr.log").read_text()[-3000:])
        assert "free" in status["downloads_paused"]
        shown = _cli(home.root, "status")
        assert "downloads paused" in shown.stdout and "free" in shown.stdout, shown.stdout
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        stderr.close()
