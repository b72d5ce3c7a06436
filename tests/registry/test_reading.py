"""Broken definition files: each is one problem line for that file, and everything else works.

Real files, real symlinks, real CLI processes and a real daemon process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.hub.test_pull import _upload

BAD_NAMES = ("deep", "deep_parsable", "loop_a", "loop_b", "dangling", "folder", "big")


def _break_folder(folder: Path) -> None:
    """Every kind of definition file that once stopped tunehub, side by side."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "deep.json").write_text('{"model": ' + "[" * 1100 + "]" * 1100 + "}")  # 2.2 KB, RecursionError
    (folder / "deep_parsable.json").write_text('{"model": {"x": ' + "[" * 500 + "]" * 500 + "}}")
    os.symlink("loop_b.json", folder / "loop_a.json")
    os.symlink("loop_a.json", folder / "loop_b.json")
    os.symlink("nowhere.json", folder / "dangling.json")
    (folder / "folder.json").mkdir()
    (folder / "big.json").write_bytes(b'{"model": {"name": "' + b"x" * (2 << 20) + b'"}}')


def _problem_lines(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if f"{name}.json:" in line]


def test_broken_files_are_one_problem_line_each_and_the_rest_works(home: Any, hub_server: Any) -> None:
    _break_folder(home.finetunes)
    api = hub_server.api()
    api.create_repo("alice/rd")
    data = os.urandom(100_000)
    urls = _upload(hub_server, {"wan2.1_t2v_rd_mbf16.safetensors": data}, repo="alice/rd")
    home.write_definition("t2v_rd", {"name": "rd", "architecture": "t2v", "URLs": list(urls.values())})

    listed = home.run("list", "--invalid")
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr
    for name in BAD_NAMES:
        assert name in listed.stdout, listed.stdout
    validated = home.run("validate")
    assert "Traceback" not in validated.stderr + validated.stdout
    for name in BAD_NAMES:
        lines = _problem_lines(validated.stdout + validated.stderr, name)
        assert len(lines) == 1, (name, validated.stdout)
    text = validated.stdout
    assert "symbolic link loop" in _problem_lines(text, "loop_a")[0]
    assert "nowhere.json, which does not exist" in _problem_lines(text, "dangling")[0]
    assert "is a directory" in _problem_lines(text, "folder")[0]
    assert "max_definition_bytes" in _problem_lines(text, "big")[0]
    assert "nest deeper" in _problem_lines(text, "deep")[0]
    assert "nest deeper" in _problem_lines(text, "deep_parsable")[0]

    resolved = home.run("resolve", "t2v")  # a built-in
    assert resolved.returncode == 0, resolved.stderr
    pulled = home.run("pull", "t2v_rd", "--quantization", "bf16", env=home.env(**hub_server.env()))
    assert pulled.returncode == 0, pulled.stderr
    assert (home.ckpts / "wan2.1_t2v_rd_mbf16.safetensors").read_bytes() == data

    # the cap is a setting
    home.write_config("max_definition_bytes = 4194304\n")
    assert not [line for line in _problem_lines(home.run("validate").stdout, "big") if "max_definition_bytes" in line]
