"""A server that goes silent or trickles mid-body: the connection is retried, then a clear error."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.hub.test_download_helpers import range_server  # noqa: F401 (fixture)
from tunehub.errors import HubError
from tunehub.hub.download import download_file, part_paths


def test_a_silent_server_is_retried_then_a_clear_error(range_server: Any, tmp_path: Path) -> None:
    url = range_server.add("/silent.bin", os.urandom(4 << 20))
    range_server.faults.stall_after = [1 << 20] * 10
    events: list[dict[str, Any]] = []
    started = time.monotonic()
    with pytest.raises(HubError) as caught:
        download_file(url, tmp_path / "silent.bin", connections=1, part_size=4 << 20, timeout=1.0,
                      max_retries=2, backoff_s=0.05, progress=events.append)
    took = time.monotonic() - started
    message = str(caught.value)
    assert "sent nothing for 1 s" in message and "run the same command again to resume" in message
    assert "\n" not in message
    assert took < 20, took  # three 1 s timeouts and two short waits, not minutes
    retries = [e for e in events if e["status"] == "retrying"]
    assert len(retries) == 2 and "retry 1 of 2" in retries[0]["error"]
    part, record = part_paths(tmp_path / "silent.bin")
    assert part.exists() and record.exists() and not (tmp_path / "silent.bin").exists()


def test_a_trickling_connection_is_taken_as_stalled_and_retried(range_server: Any, tmp_path: Path) -> None:
    data = os.urandom(4 << 20)
    url = range_server.add("/trickle.bin", data)
    range_server.faults.trickle_after = [1 << 20]  # then 1 byte every 0.3 s: never silent for 1 s
    events: list[dict[str, Any]] = []
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(download_file(url, tmp_path / "trickle.bin", connections=1, part_size=4 << 20,
                                         timeout=1.0, max_retries=3, backoff_s=0.05, progress=events.append))
        except BaseException as exc:  # reported below
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "a trickling connection held the download"
    assert not isinstance(outcome[0], BaseException), outcome[0]
    assert (tmp_path / "trickle.bin").read_bytes() == data
    assert any(e["status"] == "retrying" and "stalled" in e["error"] for e in events), events


def test_cli_pull_says_it_retries_a_stall_and_finishes(home: Any, range_server: Any) -> None:
    data = os.urandom(3 << 20)
    url = range_server.add("/wan2.1_t2v_stall_mbf16.safetensors", data)
    range_server.faults.stall_after = [512 << 10]
    home.write_definition("t2v_stall", {"name": "s", "architecture": "t2v", "URLs": [url]})
    done = home.run("pull", "t2v_stall", "--quantization", "bf16", "--timeout", "1", "--connections", "1", timeout=120)
    assert done.returncode == 0, done.stderr
    assert "retrying" in done.stderr and "sent nothing for 1 s" in done.stderr
    assert (home.ckpts / "wan2.1_t2v_stall_mbf16.safetensors").read_bytes() == data
