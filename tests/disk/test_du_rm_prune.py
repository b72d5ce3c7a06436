"""du, rm and prune on real files in several weights folders (pulled from a real Hub server)."""

from __future__ import annotations

import json
import os
import subprocess
import time

from tests.disk.conftest import BASE, FT1_8, FT1_16, FT1_MAP, VAE, pull_all, tree_digest


def _du_sb(paths: list[str]) -> int:
    """`du -sbc` of the files: GNU du counts a hard-linked file once, a symlink as the link."""
    out = subprocess.run(["du", "-sbc", *paths], capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1].split()[0])


def test_du_totals_equal_du_sb_of_the_files_counted_once(disk):
    pull_all(disk, "t2v_base", "t2v_ft1", "t2v_ft2")
    done = disk.run("du", "--json", check=True)
    usage = json.loads(done.stdout)
    named = {f["path"] for d in usage["definitions"] for f in d["files"]}
    # every name of every file the definitions use (the hard link's two names included)
    every_name = sorted(named | {str(disk.more / "hl_b_mbf16.safetensors")})
    assert usage["total_bytes"] == _du_sb(every_name)
    assert usage["total_files"] == len(every_name) - 1  # the hard-linked file once
    assert usage["outside_bytes"] == 5000  # t2v_outside's own file
    assert sum(f["bytes"] for f in usage["folders"]) + usage["outside_bytes"] == usage["total_bytes"]
    by_id = {d["id"]: d for d in usage["definitions"]}
    sizes = {name: len(data) for name, data in disk.payloads.items()}
    ft1 = by_id["t2v_ft1"]
    assert ft1["own_bytes"] == sizes[FT1_16] + sizes[FT1_8] + sizes[FT1_MAP]
    assert ft1["shared_bytes"] == sizes[VAE]
    base = by_id["t2v_base"]
    assert base["own_bytes"] == 0 and base["shared_bytes"] == sizes[BASE] + sizes[VAE]
    vae = next(f for f in base["files"] if f["path"].endswith(VAE))
    assert vae["used_by"] == ["t2v_base", "t2v_ft1", "t2v_ft2"]
    base_file = next(f for f in base["files"] if f["path"].endswith(BASE))
    assert base_file["used_by"] == ["t2v_base", "t2v_ft2", "t2v_ft3"]  # ft3 through the reference chain
    assert by_id["t2v_ft3"]["shared_bytes"] == sizes[BASE] and by_id["t2v_ft3"]["own_bytes"] == 0
    assert by_id["t2v_hl"]["shared_bytes"] == by_id["t2v_hl2"]["shared_bytes"] == 123_457
    # largest first
    assert [d["bytes"] for d in usage["definitions"]] == sorted((d["bytes"] for d in usage["definitions"]), reverse=True)
    assert usage["folders"][0]["free"] > 0
    text = disk.run("du", check=True).stdout
    assert "t2v_ft1" in text and "total:" in text and "MB" in text and "t2v_base, t2v_ft2" in text


def test_rm_keeps_every_file_another_definition_needs(disk):
    pull_all(disk, "t2v_base", "t2v_ft1", "t2v_ft2")
    untouched = {p: tree_digest(p) for p in (disk.outside, disk.comfy.parent.parent, disk.hub.root)}
    dry = disk.run("rm", "t2v_ft1", "--dry-run", check=True)
    assert f"delete ckpts/{FT1_16}" in dry.stdout and f"delete ckpts/{FT1_8}" in dry.stdout
    assert f"keep   ckpts/{VAE}  (also used by t2v_base, t2v_ft2)" in dry.stdout
    assert (disk.ckpts / FT1_16).exists()
    # no terminal and no --yes: refused, nothing deleted
    refused = disk.run("rm", "t2v_ft1")
    assert refused.returncode == 1 and "--yes" in refused.stderr and (disk.ckpts / FT1_8).exists()
    # only the int8 variant
    disk.run("rm", "t2v_ft1", "--variant", "int8", "--yes", check=True)
    assert not (disk.ckpts / FT1_8).exists() and (disk.ckpts / FT1_16).exists()
    done = disk.run("rm", "t2v_ft1", "--yes", check=True)
    assert "marked removed" in done.stdout
    for name in (FT1_16, FT1_8, FT1_MAP):
        assert not (disk.ckpts / name).exists()
    for name in (VAE, BASE):
        assert (disk.ckpts / name).exists()
    # every file another definition resolves to is still there
    registry = disk.home.registry()
    for other in ("t2v_base", "t2v_ft2", "t2v_ft3"):
        assert all(c.present for c in registry.resolve(other).all_files())
    # ft3 only shares: nothing to delete
    shared = disk.run("rm", "t2v_ft3", "--yes", check=True)
    assert "no local files to delete" in shared.stdout and "also used by" in shared.stdout
    assert {p: tree_digest(p) for p in untouched} == untouched


def test_rm_never_follows_a_symlink_out_nor_leaves_the_weights_folders(disk):
    real = disk.outside / "real_mbf16.safetensors"
    before = tree_digest(disk.outside)
    plan = json.loads(disk.run("rm", "t2v_link", "--dry-run", "--json", check=True).stdout)
    assert [d["path"] for d in plan["delete"]] == [str(disk.ckpts / "linked_mbf16.safetensors")]
    assert plan["bytes_freed"] == 0  # removing a link frees nothing
    disk.run("rm", "t2v_link", "--yes", check=True)
    assert not os.path.lexists(disk.ckpts / "linked_mbf16.safetensors")
    assert real.is_file() and tree_digest(disk.outside) == before
    # a local file outside the weights folders is refused, and says why
    outside = json.loads(disk.run("rm", "t2v_outside", "--json", "--yes", check=True).stdout)
    assert outside["delete"] == [] and outside["refused"][0]["why"] == "outside the weights folders"
    assert (disk.outside / "my_own_mbf16.safetensors").exists()
    # a hard link: this name goes, the bytes stay under the other name (and nothing is "freed")
    hl = json.loads(disk.run("rm", "t2v_hl", "--json", "--yes", check=True).stdout)
    assert hl["freed"] == 0 and not (disk.ckpts / "hl_a_mbf16.safetensors").exists()
    assert (disk.more / "hl_b_mbf16.safetensors").stat().st_size == 123_457


def test_prune_dry_run_lists_exactly_the_orphans(disk):
    pull_all(disk, "t2v_base", "t2v_ft1")
    ckpts = disk.ckpts
    day_ago = time.time() - 2 * 86400
    orphans = {
        ckpts / "old_quanto_mbf16_int8.safetensors": b"o" * 4000,  # a quantized file whose definition is gone
        ckpts / "old_quanto_mbf16_int8_map.json": b"{}",  # its sidecar
        ckpts / "sub" / "stray_bf16.gguf": b"g" * 3000,
        ckpts / ".wan2.1_gone_mbf16.safetensors.tunehub-part": b"p" * 2000,  # partial, two days old
        ckpts / ".wan2.1_gone_mbf16.safetensors.tunehub-part.json": b"{}",
    }
    keep = {
        ckpts / ".wan2.1_fresh_mbf16.safetensors.tunehub-part": b"f" * 100,  # being downloaded
        ckpts / "notes.txt": b"my notes",  # not a model file
        ckpts / "umt5-xxl" / "config.json": b"{}",  # another tool's model folder
        ckpts / "umt5-xxl" / "model.safetensors": b"t" * 100,
        disk.outside / "loose_bf16.safetensors": b"x" * 100,  # outside the weights folders
    }
    for path, data in {**orphans, **keep}.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for path in orphans:
        if "tunehub-part" in path.name:
            os.utime(path, (day_ago, day_ago))
    os.symlink(disk.outside, ckpts / "linked_folder")  # a symlinked folder is not entered
    untouched = {p: tree_digest(p) for p in (disk.outside, disk.comfy.parent.parent)}
    listed = json.loads(disk.run("prune", "--dry-run", "--json", check=True).stdout)
    assert {o["path"] for o in listed["orphans"]} == {str(p) for p in orphans}
    assert listed["bytes"] == sum(len(d) for d in orphans.values())
    text = disk.run("prune", "--dry-run", check=True).stdout
    assert "no definition names it" in text and "sidecar of old_quanto_mbf16_int8.safetensors" in text
    assert all(p.exists() for p in orphans)
    disk.run("prune", "--yes", check=True)
    assert not any(p.exists() for p in orphans)
    assert all(p.exists() for p in keep)
    assert {p: tree_digest(p) for p in untouched} == untouched
    registry = disk.home.registry()
    assert all(c.present for d in ("t2v_base", "t2v_ft1") for c in registry.resolve(d).all_files())
    assert "nothing to prune" in disk.run("prune", "--dry-run", check=True).stdout


def test_loras_are_counted_kept_by_rm_and_never_pruned(disk):
    disk.home.write_definition("t2v_lora", {"name": "lora", "architecture": "t2v", "URLs": "t2v_base",
                                            "loras": ["style_lora.safetensors"]})
    registry = disk.home.registry()
    folder = registry.lora_folder(registry.get("t2v_lora"))
    folder.mkdir(parents=True)
    (folder / "style_lora.safetensors").write_bytes(b"s" * 7777)
    (folder / "someone_elses_lora.safetensors").write_bytes(b"e" * 100)  # named by no definition
    usage = json.loads(disk.run("du", "t2v_lora", "--json", check=True).stdout)
    files = usage["definitions"][0]["files"]
    assert [(os.path.basename(f["path"]), f["size"], f["role"]) for f in files] == [("style_lora.safetensors", 7777, "lora")]
    plan = json.loads(disk.run("rm", "t2v_lora", "--dry-run", "--json", check=True).stdout)
    assert plan["delete"] == [] and "a LoRA" in plan["refused"][0]["why"]
    orphans = json.loads(disk.run("prune", "--dry-run", "--json", check=True).stdout)["orphans"]
    assert not [o for o in orphans if "lora" in o["path"]]
