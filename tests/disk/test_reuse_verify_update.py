"""Reuse of files already on disk, verify, outdated and pull --update against a real Hub server."""

from __future__ import annotations

import hashlib
import json
import os
import re

import pytest

from tests.disk.conftest import ADOPTED, BASE, COMFY, FT1_8, FT1_16, FT1_MAP, OTHER, VAE, make_disk_home, pull_all
from tests.fixtures.hub_server import HubServer
from tunehub.hub.pull import pull

_ACCESS = re.compile(r'(GET|HEAD) (\S+) (\d{3}) (\d+) ')


def _bytes_served(server: HubServer, since: int) -> int:
    """Body bytes the server sent for GETs of file contents since log offset ``since`` (its access log)."""
    text = server.log_path.read_bytes()[since:].decode(errors="replace")
    return sum(int(m.group(4)) for m in _ACCESS.finditer(text) if m.group(1) == "GET" and "/api/" not in m.group(2))


@pytest.fixture
def logged(home, tmp_path, monkeypatch):
    server = HubServer(tmp_path / "hub-root", home=tmp_path / "hf-home", extra_args=["--access-log"]).start()
    try:
        server.use_in_process(monkeypatch)
        yield make_disk_home(home, server), server
    finally:
        server.stop()


def test_pull_of_a_file_in_the_readonly_folder_moves_zero_bytes(logged):
    disk, server = logged
    comfy_file = disk.comfy / "wan" / COMFY
    untouched = comfy_file.stat()
    start = server.log_path.stat().st_size
    result = pull(disk.home.config(), disk.home.registry(), "t2v_comfy")
    item = result.files[0]
    assert item.status.startswith("linked") and item.linked_from == comfy_file and item.bytes_transferred == 0
    assert _bytes_served(server, start) == 0  # counted at the server: not one byte of content sent
    assert (disk.ckpts / COMFY).read_bytes() == disk.payloads[COMFY]
    assert comfy_file.stat().st_mtime_ns == untouched.st_mtime_ns and comfy_file.read_bytes() == disk.payloads[COMFY]
    # the counter does count: a file found nowhere is downloaded and shows up in the log
    start = server.log_path.stat().st_size
    pull(disk.home.config(), disk.home.registry(), "t2v_other")
    assert _bytes_served(server, start) >= len(disk.payloads[OTHER])


def test_adopted_folder_is_reused_by_hash_under_another_name(logged):
    disk, server = logged
    folder = disk.home.root.parent / "other-wangp" / "ckpts"
    folder.mkdir(parents=True)
    renamed = folder / "renamed_download.safetensors"
    renamed.write_bytes(disk.payloads[ADOPTED])
    (folder / "unrelated_bf16.safetensors").write_bytes(b"u" * 2048)
    adopted = disk.run("adopt", str(folder), "--json", check=True)
    assert json.loads(adopted.stdout)["files"] == 2 and json.loads(adopted.stdout)["hashed"] == 2
    again = json.loads(disk.run("adopt", str(folder), "--json", check=True).stdout)
    assert again["hashed"] == 0  # the cache answers
    start = server.log_path.stat().st_size
    result = pull(disk.home.config(), disk.home.registry(), "t2v_adopted")
    assert result.files[0].linked_from == renamed and _bytes_served(server, start) == 0
    assert (disk.ckpts / ADOPTED).read_bytes() == disk.payloads[ADOPTED]


def test_verify_finds_a_flipped_byte_and_repairs_it(disk):
    pull_all(disk, "t2v_ft1")
    first = json.loads(disk.run("verify", "t2v_ft1", "--json", check=True).stdout)["files"]
    assert {f["status"] for f in first} == {"ok"} and {f["reference"] for f in first} == {"recorded"}
    assert not any(f["read"] for f in first if f["path"].endswith(".safetensors"))  # hashed at download
    target = disk.ckpts / FT1_8
    with open(target, "r+b") as handle:
        handle.seek(123_456)
        byte = handle.read(1)
        handle.seek(123_456)
        handle.write(bytes([byte[0] ^ 0x01]))
    bad = disk.run("verify", "t2v_ft1")
    assert bad.returncode == 1 and f"CORRUPT       {target}" in bad.stdout and "1 corrupt" in bad.stdout
    fixed = disk.run("verify", "t2v_ft1", "--repair")
    assert fixed.returncode == 0 and f"repaired      {target}" in fixed.stdout  # all good now
    assert target.read_bytes() == disk.payloads[FT1_8]
    after = json.loads(disk.run("verify", "t2v_ft1", "--json", check=True).stdout)["files"]
    assert {f["status"] for f in after} == {"ok"}
    assert not any(f["read"] for f in after if f["path"].endswith(".safetensors"))


def test_verify_rehash_finds_bit_rot_that_kept_the_mtime(disk):
    pull_all(disk, "t2v_base")
    target = disk.ckpts / BASE
    stat = target.stat()
    data = bytearray(target.read_bytes())
    data[1000] ^= 0x80
    with open(target, "r+b") as handle:  # same inode and size
        handle.write(data)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert disk.run("verify", "t2v_base").returncode == 0  # the cache cannot see it
    rot = disk.run("verify", "t2v_base", "--rehash")
    assert rot.returncode == 1 and "CORRUPT" in rot.stdout and BASE in rot.stdout


def test_verify_of_a_file_tunehub_did_not_place_asks_the_hub(disk):
    (disk.ckpts / VAE).write_bytes(disk.payloads[VAE])  # put there by hand
    (disk.ckpts / BASE).write_bytes(disk.payloads[BASE][:-1] + b"\0")  # and a wrong one
    checked = {os.path.basename(f["path"]): f for f in
               json.loads(disk.run("verify", "t2v_base", "--json").stdout)["files"]}
    assert checked[VAE]["status"] == "ok" and checked[VAE]["reference"] == "hub"
    assert checked[BASE]["status"] == "corrupt" and checked[BASE]["reference"] == "hub"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_outdated_names_exactly_the_changed_files_and_update_replaces_them(disk):
    pull_all(disk, "t2v_base", "t2v_ft1")
    assert "up to date" in disk.run("outdated", check=True).stdout
    new8 = os.urandom(310_000)
    new_map = b'{"blocks.0": {"weights": "qint8"}, "v": 2}'
    disk.commit({FT1_8: new8, FT1_MAP: new_map})
    report = json.loads(disk.run("outdated", "--json", check=True).stdout)
    assert sorted(os.path.basename(f["path"]) for f in report["files"]) == sorted([FT1_8, FT1_MAP])
    assert report["requests"] == 1  # one repo revision: one request
    by_name = {os.path.basename(f["path"]): f for f in report["files"]}
    assert by_name[FT1_8]["remote_sha256"] == _sha(new8) and by_name[FT1_8]["used_by"] == ["t2v_ft1"]
    text = disk.run("outdated", check=True).stdout
    assert "t2v_ft1" in text and FT1_8 in text and FT1_16 not in text and VAE not in text
    old16 = (disk.ckpts / FT1_16).stat().st_ino
    done = disk.run("pull", "--update", "t2v_ft1", "--yes", check=True)
    assert f"updated            {disk.ckpts / FT1_8}" in done.stdout and "removed old" in done.stdout
    assert (disk.ckpts / FT1_8).read_bytes() == new8 and (disk.ckpts / FT1_MAP).read_bytes() == new_map
    assert (disk.ckpts / FT1_16).stat().st_ino == old16  # unchanged files are not touched
    assert not list(disk.ckpts.glob(".*tunehub-previous")) and not list(disk.ckpts.glob(".*tunehub-new*"))
    verified = json.loads(disk.run("verify", "t2v_ft1", "--json", check=True).stdout)["files"]
    assert {f["status"] for f in verified} == {"ok"}
    assert "up to date" in disk.run("outdated", check=True).stdout
    # keep_previous: the old version stays (and prune offers it) until the next update is verified
    newer = os.urandom(320_000)
    disk.commit({FT1_8: newer})
    disk.run("pull", "--update", "--all", "--keep-previous", check=True)
    previous = disk.ckpts / f".{FT1_8}.tunehub-previous"
    assert previous.read_bytes() == new8 and (disk.ckpts / FT1_8).read_bytes() == newer
    pruned = json.loads(disk.run("prune", "--dry-run", "--json", check=True).stdout)
    assert [o["path"] for o in pruned["orphans"]] == [str(previous)]


def test_update_without_yes_on_no_terminal_keeps_the_old_version(disk):
    pull_all(disk, "t2v_base")
    disk.commit({VAE: os.urandom(200_100)})
    refused = disk.run("pull", "--update", "t2v_base")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    # the new version is in place and verified; the old one was not deleted without consent
    assert (disk.ckpts / VAE).read_bytes() == disk.payloads[VAE]
    assert (disk.ckpts / f".{VAE}.tunehub-previous").exists()


def test_outdated_falls_back_to_one_head_per_file_when_the_repo_api_is_refused(disk, monkeypatch):
    from tests.daemon.conftest import FaultProxy
    from tunehub.disk.update import check_outdated

    pull_all(disk, "t2v_base")
    disk.commit({BASE: os.urandom(700_100)})
    proxy = FaultProxy(disk.hub.url)
    try:
        proxy.faults = [("/api/models/", 404, {})] * 5
        cfg = disk.home.config()
        cfg.endpoint = proxy.url
        for name in ("t2v_base",):
            text = (disk.home.finetunes / f"{name}.json").read_text().replace(disk.hub.url, proxy.url)
            (disk.home.finetunes / f"{name}.json").write_text(text)
        monkeypatch.setenv("HF_ENDPOINT", proxy.url)
        from tunehub.registry import Registry

        report = check_outdated(cfg, Registry.load(cfg), ["t2v_base"])
        assert [os.path.basename(f.path) for f in report.files] == [BASE]
        assert report.requests == 3  # the refused repo_info, then one HEAD per file (BASE, VAE)
        heads = [r for r in proxy.requests if r[0] == "HEAD" and "/resolve/" in r[1]]
        assert len(heads) == 2
    finally:
        proxy.close()
