"""`tunehub hub token|org|import`, run as the user runs them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from huggingface_hub import snapshot_download

from tests.fixtures.hub_server import HubServer
from tunehub.hub.server.validation import git_blob_sha1


def tunehub(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tunehub", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def whoami_status(server: HubServer, token: str) -> int:
    return httpx.get(f"{server.url}/api/whoami-v2", headers={"Authorization": f"Bearer {token}"}).status_code


def test_token_add_list_revoke(hub_server: HubServer) -> None:
    root = str(hub_server.root)
    added = tunehub("hub", "token", "add", "carol", "--write", "--root", root)
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert added.stdout == token + "\n" and token.startswith("hf_")  # the token alone, once
    assert whoami_status(hub_server, token) == 200

    listing = tunehub("hub", "token", "list", "--root", root)
    assert listing.returncode == 0
    assert "carol" in listing.stdout and "write" in listing.stdout
    for secret in (token, hub_server.write_token, hub_server.read_token):
        assert secret not in listing.stdout + listing.stderr
    carol_id = next(line.split()[0] for line in listing.stdout.splitlines() if "carol" in line)

    revoked = tunehub("hub", "token", "revoke", carol_id, "--root", root)
    assert revoked.returncode == 0, revoked.stderr
    assert whoami_status(hub_server, token) == 401
    again = tunehub("hub", "token", "revoke", carol_id, "--root", root)
    assert again.returncode == 1 and "No active token" in again.stderr


def test_org_and_user_errors(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    assert tunehub("hub", "org", "add", "studio", "--member", "alice", "--root", root).returncode == 0
    clash = tunehub("hub", "token", "add", "studio", "--root", root)
    assert clash.returncode == 1 and "organisation" in clash.stderr
    bad_name = tunehub("hub", "token", "add", "bad name", "--root", root)
    assert bad_name.returncode == 1 and "bad name" in bad_name.stderr
    no_root = tunehub("hub", "token", "add", "alice", env={"TUNEHUB_HUB_ROOT": ""})
    assert no_root.returncode == 1 and "--root" in no_root.stderr
    busy = HubServer(tmp_path / "busy").start()
    try:
        taken = tunehub("hub", "serve", "--root", str(tmp_path / "other"), "--port", str(busy.port))
        assert taken.returncode == 1 and f"{busy.port}" in taken.stderr
        # Two servers on one root would clean each other's uploads: the second one refuses.
        same_root = tunehub("hub", "serve", "--root", str(busy.root), "--port", "0")
        assert same_root.returncode == 1 and "already being served" in same_root.stderr
    finally:
        busy.stop()


def blob_count(root: Path) -> int:
    return sum(1 for p in (root / "blobs").rglob("*") if p.is_file())


def test_import_folder_and_cache(hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "wan-finetune"
    (source / "transformer").mkdir(parents=True)
    (source / ".git").mkdir()
    (source / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (source / ".cache" / "huggingface").mkdir(parents=True)
    (source / ".cache" / "huggingface" / "x.metadata").write_text("bookkeeping")
    files = {
        "model_index.json": b'{"_class_name": "WanPipeline"}',
        "transformer/config.json": b'{"num_layers": 2}',
        "transformer/diffusion_pytorch_model.safetensors": os.urandom(200_000),
    }
    for name, data in files.items():
        (source / name).write_bytes(data)

    done = tunehub("hub", "import", str(source), "--repo", "alice/imported", "--root", str(hub_server.root))
    assert done.returncode == 0, done.stderr
    assert "3 file(s)" in done.stdout
    info = hub_server.api().model_info("alice/imported", files_metadata=True)
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == {".gitattributes", *files}  # .git and .cache left out
    weights = siblings["transformer/diffusion_pytorch_model.safetensors"]
    assert weights.lfs is not None
    assert weights.lfs.sha256 == hashlib.sha256(files["transformer/diffusion_pytorch_model.safetensors"]).hexdigest()
    assert siblings["model_index.json"].lfs is None
    assert siblings["model_index.json"].blob_id == git_blob_sha1(files["model_index.json"])

    # From a huggingface_hub cache folder into a second repo: same bytes, stored once.
    hub_server.use_in_process(monkeypatch)
    snapshot_download("alice/imported")
    cache_repo = hub_server.cache_dir / "models--alice--imported"
    blobs_before = blob_count(hub_server.root)
    from_cache = tunehub("hub", "import", str(cache_repo), "--repo", "alice/mirror", "--root", str(hub_server.root))
    assert from_cache.returncode == 0, from_cache.stderr
    assert blob_count(hub_server.root) == blobs_before
    mirror = Path(snapshot_download("alice/mirror"))
    for name, data in files.items():
        assert (mirror / name).read_bytes() == data
    mirror_info = hub_server.api().model_info("alice/mirror", files_metadata=True)
    assert {s.rfilename: (s.size, s.blob_id) for s in mirror_info.siblings} == {
        name: (s.size, s.blob_id) for name, s in siblings.items()
    }

    # A file name the Hub refuses stops the import before anything is committed, naming the file.
    (source / "bad\\name.txt").write_text("x")
    head = hub_server.api().model_info("alice/imported").sha
    refused = tunehub("hub", "import", str(source), "--repo", "alice/imported", "--root", str(hub_server.root))
    assert refused.returncode == 1 and "bad\\name.txt" in refused.stderr
    assert hub_server.api().model_info("alice/imported").sha == head


def test_cli_import_does_not_load_the_server_stack() -> None:
    probe = (
        "import sys; from tunehub.cli.main import build_parser; build_parser(); "
        "heavy = [m for m in ('starlette', 'uvicorn') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_access_log_has_requests_but_no_secrets(tmp_path: Path) -> None:
    server = HubServer(tmp_path / "root", extra_args=["--access-log"]).start()
    try:
        api = server.api()
        api.create_repo("alice/logged")
        api.upload_file(path_or_fileobj=os.urandom(6 * 1024 * 1024), path_in_repo="w.bin", repo_id="alice/logged")
        bad = "hf_" + "Q" * 34
        assert httpx.get(f"{server.url}/api/whoami-v2", headers={"Authorization": f"Bearer {bad}"}).status_code == 401
    finally:
        server.stop()
    log = server.log_text()
    assert "alice POST /api/repos/create 200" in log
    assert " PUT /api/lfs-upload/models/alice/logged/" in log
    assert " GET /api/whoami-v2 401 " in log
    for secret in (server.write_token, server.read_token, server.bob_token, bad, "sig="):
        assert secret not in log


def test_import_with_link_shares_the_bytes(hub_server: HubServer, tmp_path: Path) -> None:
    source = tmp_path / "cache-like"
    source.mkdir()
    data = os.urandom(3 * 1024 * 1024)
    (source / "model.safetensors").write_bytes(data)
    done = tunehub("hub", "import", str(source), "--repo", "alice/linked", "--link", "--root", str(hub_server.root))
    assert done.returncode == 0, done.stderr
    oid = hashlib.sha256(data).hexdigest()
    blob = hub_server.root / "blobs" / "sha256" / oid[:2] / oid
    assert blob.stat().st_ino == (source / "model.safetensors").stat().st_ino  # no second copy on disk
    answer = httpx.get(f"{hub_server.url}/alice/linked/resolve/main/model.safetensors")
    assert answer.status_code == 200 and answer.content == data
