"""CLI manners, through the real command: typos, config warnings, status on a large home,
and the foreground daemon's lines on a terminal (a real pty) and off one."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def test_a_mistyped_command_suggests_the_nearest(home: Any) -> None:
    done = home.run("lst")
    assert done.returncode == 2
    assert "did you mean 'list'?" in done.stderr
    sub = home.run("hub", "serv")
    assert sub.returncode == 2 and "did you mean 'serve'?" in sub.stderr


def test_an_unknown_toml_key_is_one_warning_line(home: Any) -> None:
    home.write_config("quantization = \"int8\"\nquantisation = \"bf16\"\n")
    done = home.run("list")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [f"warning: {home.root / 'tunehub.toml'}: unknown key(s) ignored: quantisation"], done.stderr


def _write_many(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        data = {"model": {"name": f"ft {index}", "architecture": "t2v", "URLs": [f"ft{index}_bf16.safetensors"]}}
        (folder / f"t2v_many{index:03d}.json").write_text(json.dumps(data))
    (folder / "t2v_broken.json").write_text("{nope")


def test_status_on_a_large_home_is_a_summary_unless_all(home: Any, daemon_factory: Any) -> None:
    _write_many(home.finetunes, 60)
    home.write_config('[daemon]\npull = "none"\n')
    daemon_factory(home.root)
    env = {k: v for k, v in os.environ.items() if k != "TUNEHUB_HOME"}

    def status(*extra: str) -> str:
        done = subprocess.run([sys.executable, "-m", "tunehub", "--home", str(home.root), "status", *extra],
                              capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    short = status()
    assert len(short.splitlines()) < 30, short
    assert "t2v_broken" in short  # what needs attention is listed
    assert "tunehub status --all" in short and "60 more" in short
    everything = status("--all")
    assert all(f"t2v_many{index:03d}" in everything for index in range(60))


def _read_for(fd: int, seconds: float) -> str:
    chunks = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunks.append(os.read(fd, 65536).decode(errors="replace"))
            except OSError:
                break
            if "daemon.started" in "".join(chunks) or "started" in "".join(chunks):
                time.sleep(0.5)
    return "".join(chunks)


def _daemon_stderr(home: Path, on_tty: bool, *extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TUNEHUB_HOME"}
    command = [sys.executable, "-m", "tunehub", "--home", str(home), "daemon", *extra]
    if on_tty:
        leader, follower = pty.openpty()
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower, env=env)
        os.close(follower)
        text = _read_for(leader, 8.0)
    else:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, env=env, text=True)
        time.sleep(6.0)
    process.send_signal(signal.SIGTERM)
    if on_tty:
        process.wait(30)
        text += _read_for(leader, 1.0)
        os.close(leader)
        return text
    _, err = process.communicate(timeout=30)
    return err


def test_foreground_daemon_is_readable_on_a_terminal_and_json_otherwise(home: Any) -> None:
    lines = [line for line in _daemon_stderr(home.root, True).splitlines() if line.strip()]
    assert lines, "the daemon printed nothing on its terminal"
    assert not any(line.lstrip().startswith("{") for line in lines), lines
    assert any("daemon.started" in line or "started" in line for line in lines), lines
    as_json = [line for line in _daemon_stderr(home.root, True, "--log-format", "json").splitlines() if line.strip()]
    assert as_json and all(json.loads(line)["event"] for line in as_json), as_json
    piped = [line for line in _daemon_stderr(home.root, False).splitlines() if line.strip()]
    assert piped and all(json.loads(line)["event"] for line in piped), piped
