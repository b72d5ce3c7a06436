"""A pull SIGKILLed half-way and run again continues where it stopped (real processes, real server)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

from tests.hub.test_download_helpers import FaultProxy
from tunehub.hub.download import part_paths

SIZE = 200 * 1024 * 1024
NAME = "wan2.1_t2v_big_mbf16.safetensors"


def test_sigkilled_pull_resumes_and_transfers_at_most_60_percent(home, hub_server, tmp_path):
    source = tmp_path / NAME
    with open(source, "wb") as handle:
        for _ in range(SIZE // (8 << 20)):
            handle.write(os.urandom(8 << 20))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    api = hub_server.api()
    api.create_repo("alice/big")
    import huggingface_hub.constants

    previous = huggingface_hub.constants.HF_HUB_DISABLE_XET
    huggingface_hub.constants.HF_HUB_DISABLE_XET = True
    try:
        api.upload_file(path_or_fileobj=str(source), path_in_repo=NAME, repo_id="alice/big")
    finally:
        huggingface_hub.constants.HF_HUB_DISABLE_XET = previous
    source.unlink()

    proxy = FaultProxy(hub_server.url)
    try:
        proxy.rate_bytes_per_s = 40e6  # about 5 s in all: time to kill it half-way
        home.write_definition("t2v_big", {"name": "big", "architecture": "t2v",
                                          "URLs": [f"{proxy.url}/alice/big/resolve/main/{NAME}"]})
        env = home.env(**hub_server.env())
        env["HF_ENDPOINT"] = proxy.url
        command = [sys.executable, "-m", "tunehub", "--home", str(home.root), "pull", "t2v_big",
                   "--quantization", "bf16", "--json"]
        first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        target = home.ckpts / NAME
        part, record = part_paths(target)
        recorded = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None:
            try:
                recorded = sum(json.loads(record.read_text())["done"])
            except (OSError, ValueError, KeyError):
                recorded = 0
            if recorded >= SIZE // 2:
                break
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.communicate()
        assert recorded >= SIZE // 2, "the first pull never got half-way"
        assert not target.exists() and part.exists()

        proxy.rate_bytes_per_s = 0
        proxy.wait_idle()  # the killed client's streams end once their sockets fail
        proxy.bytes_sent = 0
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr
        result = json.loads(second.stdout)
        assert result["files"][0]["status"] == "downloaded"
        assert proxy.bytes_sent <= 0.6 * SIZE
        assert result["bytes_transferred"] == proxy.bytes_sent
        assert hashlib.sha256(target.read_bytes()).hexdigest() == digest
        assert not part.exists() and not record.exists()
    finally:
        proxy.close()
