"""A home with several weights folders, shared files, a reference chain, a hard link, a symlink out,
a read-only "ComfyUI" folder, all pulled from a real `tunehub hub serve` over loopback."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = "alice/wan-ft"
BASE = "wan2.1_base_mbf16.safetensors"
FT1_16 = "wan2.1_ft1_mbf16.safetensors"
FT1_8 = "wan2.1_ft1_quanto_mbf16_int8.safetensors"
FT1_MAP = "wan2.1_ft1_map.json"
VAE = "wan2.1_vae.safetensors"
COMFY = "wan2.1_comfy_mbf16.safetensors"
ADOPTED = "wan2.1_adopted_mbf16.safetensors"
OTHER = "wan2.1_other_mbf16.safetensors"

SIZES = {BASE: 700_000, FT1_16: 500_001, FT1_8: 300_002, VAE: 200_003, COMFY: 400_004, ADOPTED: 350_005,
         OTHER: 150_006}


@dataclass
class DiskHome:
    home: Any
    hub: Any
    payloads: dict[str, bytes]
    urls: dict[str, str]
    outside: Path
    comfy: Path
    comfy_loras: Path
    more: Path
    extra: dict[str, Path] = field(default_factory=dict)

    @property
    def ckpts(self) -> Path:
        return self.home.ckpts

    def env(self) -> dict[str, str]:
        return self.home.env(**self.hub.env())

    def run(self, *args: str, check: bool = False) -> Any:
        return self.home.run(*args, env=self.env(), check=check)

    def commit(self, files: dict[str, bytes]) -> None:
        upload(self.hub, files)
        self.payloads.update(files)


def upload(server: Any, files: dict[str, bytes], repo: str = REPO) -> dict[str, str]:
    from huggingface_hub import CommitOperationAdd

    server.api().create_commit(
        repo, [CommitOperationAdd(path_in_repo=name, path_or_fileobj=data) for name, data in files.items()],
        commit_message="weights",
    )
    return {name: f"{server.url}/{repo}/resolve/main/{name}" for name in files}


def tree_digest(folder: Path) -> dict[str, tuple[int, str]]:
    """Every entry below ``folder`` (symlinks as links) with its size and hash: to prove nothing changed."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            if path.is_symlink():
                found[str(path)] = (0, "link:" + os.readlink(path))
            elif path.is_file():
                found[str(path)] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def make_disk_home(home: Any, hub: Any) -> DiskHome:
    rng = __import__("random").Random(16)
    payloads = {name: rng.randbytes(size) for name, size in SIZES.items()}
    payloads[FT1_MAP] = b'{"blocks.0": {"weights": "qint8"}}'
    hub.api().create_repo(REPO, exist_ok=True)
    urls = upload(hub, payloads)
    root = home.root
    outside = root.parent / "outside"
    outside.mkdir()
    comfy = root.parent / "ComfyUI" / "models" / "diffusion_models"
    comfy.mkdir(parents=True)
    (comfy / "wan").mkdir()
    (comfy / "wan" / COMFY).write_bytes(payloads[COMFY])  # same name and bytes as the Hub's
    comfy_loras = root.parent / "ComfyUI" / "models" / "loras"
    comfy_loras.mkdir(parents=True)
    (comfy_loras / "someone_else_lora.safetensors").write_bytes(b"l" * 1000)
    more = root / "more"
    more.mkdir()
    home.write_config(
        f'weights_dirs = ["ckpts", "more", "{comfy_loras}"]\n'
        f'readonly_weights_dirs = ["{comfy}", "{comfy_loras}"]\n'
    )
    define = home.write_definition
    define("t2v_base", {"name": "base", "architecture": "t2v", "URLs": [urls[BASE]], "preload_URLs": [urls[VAE]]})
    define("t2v_ft1", {"name": "ft1", "architecture": "t2v", "URLs": [urls[FT1_16], urls[FT1_8]],
                       "preload_URLs": [urls[VAE], urls[FT1_MAP]]})
    define("t2v_ft2", {"name": "ft2", "architecture": "t2v", "URLs": "t2v_base", "preload_URLs": "t2v_base"})
    define("t2v_ft3", {"name": "ft3 (reference chain)", "architecture": "t2v", "URLs": "t2v_ft2"})
    # a hard-linked file under two names, each named by one definition
    hl_a = home.ckpts / "hl_a_mbf16.safetensors"
    hl_a.write_bytes(rng.randbytes(123_457))
    os.link(hl_a, more / "hl_b_mbf16.safetensors")
    define("t2v_hl", {"name": "hl", "architecture": "t2v", "URLs": ["hl_a_mbf16.safetensors"]})
    define("t2v_hl2", {"name": "hl2", "architecture": "t2v", "URLs": ["hl_b_mbf16.safetensors"]})
    # a symlink in the weights folder pointing out of it
    real = outside / "real_mbf16.safetensors"
    real.write_bytes(rng.randbytes(99_999))
    os.symlink(real, home.ckpts / "linked_mbf16.safetensors")
    define("t2v_link", {"name": "link", "architecture": "t2v", "URLs": ["linked_mbf16.safetensors"]})
    # a local file outside every weights folder
    mine = outside / "my_own_mbf16.safetensors"
    mine.write_bytes(b"m" * 5000)
    define("t2v_outside", {"name": "outside", "architecture": "t2v", "URLs": [str(mine)]})
    define("t2v_comfy", {"name": "comfy", "architecture": "t2v", "URLs": [urls[COMFY]]})
    define("t2v_adopted", {"name": "adopted", "architecture": "t2v", "URLs": [urls[ADOPTED]]})
    define("t2v_other", {"name": "other", "architecture": "t2v", "URLs": [urls[OTHER]]})
    return DiskHome(home, hub, payloads, urls, outside, comfy, comfy_loras, more)


def pull_all(disk: DiskHome, *ids: str) -> None:
    from tunehub.hub.pull import pull

    cfg = disk.home.config()
    for definition_id in ids:
        pull(cfg, disk.home.registry(), definition_id, all_variants=True)


@pytest.fixture
def disk(home: Any, hub_server: Any, monkeypatch: pytest.MonkeyPatch) -> DiskHome:
    hub_server.use_in_process(monkeypatch)
    return make_disk_home(home, hub_server)
