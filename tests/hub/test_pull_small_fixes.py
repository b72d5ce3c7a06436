"""Small rough edges of `tunehub pull`, each through the real CLI: a file-size limit, a 503 on
the metadata request, and temp files a killed run left behind."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from typing import Any

from tests.daemon.conftest import FaultProxy
from tests.hub.test_pull import _upload

NAME = "wan2.1_t2v_small_mbf16.safetensors"


def _definition(home: Any, urls: list[str]) -> None:
    home.write_definition("t2v_small", {"name": "s", "architecture": "t2v", "URLs": urls})


def test_file_size_limit_is_one_clear_line(home: Any, hub_server: Any) -> None:
    hub_server.api().create_repo("alice/efbig")
    urls = _upload(hub_server, {NAME: os.urandom(3 << 20)}, repo="alice/efbig")
    _definition(home, list(urls.values()))

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    done = subprocess.run(
        [sys.executable, "-m", "tunehub", "--home", str(home.root), "pull", "t2v_small", "--quantization", "bf16"],
        env=home.env(**hub_server.env()), capture_output=True, text=True, timeout=120, preexec_fn=limit_file_size,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "ulimit -f" in errors[0], done.stderr


def test_503_on_the_metadata_request_is_one_line(home: Any, hub_server: Any) -> None:
    hub_server.api().create_repo("alice/busy")
    urls = _upload(hub_server, {NAME: os.urandom(1 << 16)}, repo="alice/busy")
    proxy = FaultProxy(hub_server.url)
    try:
        proxy.faults = [("/resolve/", 503, {"Retry-After": "0"})] * 50
        _definition(home, [u.replace(hub_server.url, proxy.url) for u in urls.values()])
        env = home.env(**hub_server.env())
        env["HF_ENDPOINT"] = proxy.url
        done = home.run("pull", "t2v_small", "--quantization", "bf16", env=env, timeout=180)
    finally:
        proxy.close()
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "503" in errors[0] and "try again later" in errors[0], done.stderr
    assert lines[-1] == errors[0], done.stderr  # nothing after it: not a second line of the error


def test_temp_files_of_a_killed_pull_are_removed_by_the_next(home: Any, hub_server: Any) -> None:
    hub_server.api().create_repo("alice/tmpclean")
    urls = _upload(hub_server, {NAME: os.urandom(1 << 16)}, repo="alice/tmpclean")
    _definition(home, list(urls.values()))
    home.ckpts.mkdir(parents=True, exist_ok=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = home.ckpts / f".{NAME}.tunehub-tmp-{dead.pid}-abcd1234"
    leftover.write_bytes(b"half a link")
    mine = home.ckpts / f".other.safetensors.tunehub-tmp-{os.getpid()}-abcd1234"  # a live writer's
    mine.write_bytes(b"being written")
    time.sleep(0.01)
    done = home.run("pull", "t2v_small", "--quantization", "bf16", env=home.env(**hub_server.env()))
    assert done.returncode == 0, done.stderr
    assert not leftover.exists() and mine.exists()
