"""`q` while `tunehub tui` itself runs a pull quits at once; the partial download stays for the
next pull (the real command in a real terminal (tmux), a real slow HTTP server on loopback)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import pytest

from tests.fixtures.homes import Home
from tests.hub.test_download_helpers import RangeServer
from tests.tui.test_tmux import Tmux
from tunehub.hub.download import part_paths

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (CI installs it)")

NAME = "wan2.1_t2v_slowtui_mbf16.safetensors"


def test_q_during_a_pull_quits_within_seconds_and_keeps_the_partial(home: Home) -> None:
    server = RangeServer()
    env = home.env(TERM="xterm-256color")
    env.pop("TMUX", None)
    tmux = Tmux(env)
    tmux.session = "tui-quit"
    try:
        url = server.add(f"/{NAME}", os.urandom(24 << 20))
        server.faults.delay_per_mb = 1.0  # 24 s for the file at one connection: far from done at q
        home.write_definition("t2v_slowtui", {"name": "Slow One", "architecture": "t2v", "URLs": [url]})
        home.write_config('quantization = "bf16"\n')
        part, record = part_paths(home.ckpts / NAME)

        def recorded() -> int:
            try:
                return sum(json.loads(record.read_text())["done"])
            except (OSError, ValueError, KeyError):
                return 0

        command = f"{sys.executable} -m tunehub --home {home.root} tui --no-daemon"
        tmux.run("new-session", "-d", "-s", tmux.session, "-x", "160", "-y", "40", command)
        tmux.wait_for("local: actions run in this app")
        for _attempt in range(3):  # on a busy machine the first keys can come before the focus moved
            tmux.send("/")
            time.sleep(1.5)
            tmux.send("-l", "slowtui")
            try:
                tmux.wait_for("Definitions 1/", timeout=10)
                break
            except AssertionError:
                tmux.send("Escape")
                time.sleep(0.5)
        else:
            raise AssertionError(f"could not filter the list:\n{tmux.capture()}")
        tmux.send("Enter")
        time.sleep(0.5)
        tmux.send("p")
        deadline = time.monotonic() + 60
        while recorded() == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert recorded() > 0, tmux.capture()
        pressed = time.monotonic()
        tmux.send("q")
        while tmux.alive() and time.monotonic() - pressed < 30:
            time.sleep(0.05)
        took = time.monotonic() - pressed
        print(f"quit {took:.2f} s after q")
        assert not tmux.alive(), "tunehub tui did not quit"
        assert took < 5.0, f"tunehub tui took {took:.1f} s to quit during a pull"
        assert not (home.ckpts / NAME).exists() and part.exists() and recorded() > 0
    finally:
        tmux.kill()
        server.close()
