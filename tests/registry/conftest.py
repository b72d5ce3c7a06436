from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.wangp_tree import write_tree


@pytest.fixture
def wangp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A WanGP-like folder (defaults/ + finetunes/) on a GPU that supports bf16, with no Hub endpoint override."""
    monkeypatch.setenv("TUNEHUB_GPU_CAPABILITY", "8.9")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    return write_tree(tmp_path / "Wan2GP")
