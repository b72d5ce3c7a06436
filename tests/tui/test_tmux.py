"""The real ``tunehub tui`` in a real terminal (tmux): start, filter, open, edit, quit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.fixtures.homes import Home

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (CI installs it)")

EDITOR_SCRIPT = """\
import json, sys
path = sys.argv[1]
data = json.load(open(path))
data["model"]["name"] = "Alpha Renamed In Editor"
with open(path, "w") as f:
    json.dump(data, f, indent=4)
"""


class Tmux:
    def __init__(self, env: dict[str, str]) -> None:
        self.socket = f"tunehub-test-{uuid.uuid4().hex[:8]}"
        self.session = "tui"
        self.env = env

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.socket, "-f", os.devnull, *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=30,
        )

    def capture(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session, check=False).stdout

    def send(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.session, *keys)

    def alive(self) -> bool:
        return self.run("has-session", "-t", self.session, check=False).returncode == 0

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.capture()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared on screen; last screen:\n{screen}")

    def kill(self) -> None:
        self.run("kill-server", check=False)


def test_tunehub_tui_in_a_real_terminal(tui_home: Home, tmp_path: Path) -> None:
    editor = tmp_path / "editor.py"
    editor.write_text(EDITOR_SCRIPT)
    env = tui_home.env(EDITOR=f"{sys.executable} {editor}", TERM="xterm-256color")
    env.pop("TMUX", None)
    tmux = Tmux(env)
    command = f"{sys.executable} -m tunehub --home {tui_home.root} tui --no-daemon"
    try:
        tmux.run("new-session", "-d", "-s", tmux.session, "-x", "120", "-y", "36", command)
        tmux.wait_for("t2v_gamma")
        screen = tmux.wait_for("local: actions run in this app")
        assert "Definitions" in screen and "broken" in screen
        tmux.send("/")
        time.sleep(1.0)  # focus moves on the next event-loop turn; type as a person would, after it
        tmux.send("-l", "alpha mot")
        screen = tmux.wait_for("Definitions 1/")
        assert "t2v_alpha" in screen and "t2v_gamma" not in screen
        tmux.send("Enter")  # leave the filter box
        time.sleep(0.5)
        tmux.send("Enter")  # open the definition
        screen = tmux.wait_for("A fast motion finetune for testing.")
        assert "alpha_quanto_bf16_int8.safetensors" in screen and "Variants" in screen
        tmux.send("Escape")
        time.sleep(0.5)
        tmux.send("e")  # $EDITOR runs in the suspended terminal, then the change shows
        tmux.wait_for("Alpha Renamed In Editor")
        assert '"Alpha Renamed In Editor"' in (tui_home.finetunes / "t2v_alpha.json").read_text()
        tmux.send("q")
        deadline = time.monotonic() + 30
        while tmux.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not tmux.alive(), "tunehub tui did not quit on q"
    finally:
        tmux.kill()
