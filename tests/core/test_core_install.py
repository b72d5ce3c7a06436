"""A core install (`pip install tunehub`, no extras): commands that need an extra say which,
in one line, instead of a ModuleNotFoundError traceback. The missing packages are made
unimportable in a real subprocess, as they are on a core install."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from typing import Any

import pytest

OPTIONAL = ("torch", "optimum", "diffusers", "transformers", "textual", "starlette", "uvicorn", "imageio")

RUNNER = f"""
import importlib.abc, sys
class CoreInstall(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {OPTIONAL!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, CoreInstall())
from tunehub.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (("quantize", "t2v_1.3B"), "quant"),
        (("generate", "t2v_1.3B", "--prompt", "a cat"), "inference"),
        (("hub", "serve", "--port", "0", "--root", "hubroot"), "server"),
        (("tui",), "tui"),
    ],
)
def test_a_command_needing_an_extra_names_it_in_one_line(home: Any, args: tuple[str, ...], extra: str) -> None:
    home.ckpts.mkdir(parents=True, exist_ok=True)
    header = json.dumps({"blocks.0.self_attn.q.weight": {"dtype": "BF16", "shape": [4, 4], "data_offsets": [0, 32]}})
    weights = struct.pack("<Q", len(header)) + header.encode() + b"\0" * 32  # a valid safetensors file
    (home.ckpts / "wan2.1_text2video_1.3B_mbf16.safetensors").write_bytes(weights)  # present: it gets that far
    done = subprocess.run([sys.executable, "-c", RUNNER, "--home", str(home.root), *args],
                          capture_output=True, text=True, timeout=120, env=home.env(), cwd=home.root)
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert f"pip install 'tunehub[{extra}]'" in lines[0], lines[0]
    assert "Traceback" not in done.stderr
