"""The quantize disk-full message adds up (a real small tmpfs in a private mount namespace)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.hub.test_download_diskfull import _unshare_works

CHILD = textwrap.dedent(
    r"""
    import sys
    sys.path.insert(0, sys.argv[3])
    from pathlib import Path
    from tunehub.errors import DiskFullError
    from tunehub.quant.stream import quantize_file
    try:
        quantize_file(Path(sys.argv[1]), Path(sys.argv[2]) / "out_quanto_mbf16_int8.safetensors")
        print("no error")
    except DiskFullError as exc:
        print(exc)
    """
)


@pytest.mark.skipif(not _unshare_works(), reason="needs unprivileged mount namespaces (unshare -rm) for a real full disk")
def test_quantize_disk_full_message_does_not_contradict_itself(tmp_path: Path) -> None:
    import torch

    from tests.quant.tiny import TinyWan, save_model
    import tunehub

    torch.manual_seed(20)
    source = save_model(TinyWan(layers=2), tmp_path / "tiny_wan_mbf16.safetensors", torch.bfloat16)
    folder = tmp_path / "small-disk"
    folder.mkdir()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    repo_root = str(Path(tunehub.__file__).resolve().parents[1])
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c",
         f'mount -t tmpfs -o size=32m tmpfs "{folder}" && exec "{sys.executable}" "{script}" "{source}" "{folder}" "{repo_root}"'],
        capture_output=True, text=True, timeout=300,
    )
    message = done.stdout.strip()
    assert "GB free" in message, done.stdout + done.stderr
    numbers = dict(re.findall(r"([\d.]+) GB (free|of headroom)", message)[::-1])
    free = float(re.search(r"([\d.]+) GB free", message).group(1))
    total = float(re.search(r"\(([\d.]+) GB\)", message).group(1))
    assert total > free, message  # what it needs is more than what is free: no contradiction
    assert numbers
