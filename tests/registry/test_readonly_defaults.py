"""Never write into WanGP's defaults/: quantize, publish and the daemon's jobs write the smallest
override into finetunes/, which WanGP's merge turns into the intended definition; a second run
writes nothing. And pull with LoRAs places them verified in the family's LoRA folder."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.fixtures.wangp_tree import W21, snapshot, wangp_models
from tests.fixtures.wangp_tree import load_registry as _registry
from tunehub.config import load_config

SOURCE_URL = W21 + "wan2.1_text2video_1.3B_mbf16.safetensors"
INT8 = "wan2.1_text2video_1.3B_quanto_mbf16_int8.safetensors"


def _tiny_source(root: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("optimum.quanto", reason="quantize needs the quant extra (installed on CI)")
    from tests.quant.tiny import TinyWan, save_model

    torch.manual_seed(13)
    save_model(TinyWan(layers=2), root / "ckpts" / "wan2.1_text2video_1.3B_mbf16.safetensors", torch.bfloat16)


def test_quantize_a_defaults_definition_writes_an_override(wangp: Path) -> None:
    from tunehub.quant.flow import quantize_definition

    _tiny_source(wangp)
    before = snapshot(wangp / "defaults")
    cfg = load_config(wangp)
    outputs = quantize_definition(cfg, _registry(wangp), "t2v_1.3B", device="cpu")
    assert outputs == [wangp / "ckpts" / INT8]
    assert snapshot(wangp / "defaults") == before
    override = wangp / "finetunes" / "t2v_1.3B.json"
    assert json.loads(override.read_text()) == {"model": {"URLs": [SOURCE_URL, INT8]}}
    # WanGP's merge of defaults/ + finetunes/ is the intended definition
    merged = wangp_models(wangp)["t2v_1.3B"]
    assert merged["URLs"] == [SOURCE_URL, INT8] and merged["name"] == "Wan2.1 text2video 1.3B"
    assert _registry(wangp).resolve("t2v_1.3B", "int8").transformer.filename == INT8
    # a second run writes nothing
    stamp = override.stat().st_mtime_ns, override.read_bytes()
    quantize_definition(cfg, _registry(wangp), "t2v_1.3B", device="cpu")
    assert (override.stat().st_mtime_ns, override.read_bytes()) == stamp
    assert snapshot(wangp / "defaults") == before


def test_the_daemons_quantize_job_writes_the_same_override(wangp: Path) -> None:
    from tunehub.daemon.jobs import JobContext, run_quantize
    from tunehub.daemon.policy import settings_from_config

    _tiny_source(wangp)
    before = snapshot(wangp / "defaults")
    cfg = load_config(wangp)
    job = {"id": 1, "kind": "quantize", "definition_id": "t2v_1.3B", "params": {"device": "cpu"}, "attempts": 1}
    for _ in range(2):
        run_quantize(JobContext(job=job, cfg=cfg, settings=settings_from_config(cfg)))
        assert json.loads((wangp / "finetunes" / "t2v_1.3B.json").read_text()) == {"model": {"URLs": [SOURCE_URL, INT8]}}
    assert snapshot(wangp / "defaults") == before


def test_readonly_dirs_protect_any_folder_the_config_names(tmp_path: Path) -> None:
    from tunehub.registry.writer import record_change

    root = tmp_path / "home"
    (root / "shared").mkdir(parents=True)
    (root / "shared" / "x.json").write_text(json.dumps({"model": {"name": "x", "architecture": "t2v", "URLs": ["a_bf16.safetensors"]}}))
    (root / "tunehub.toml").write_text('readonly_dirs = ["shared"]\ndefinition_dirs = ["shared"]\n')
    registry = _registry(root)
    before = (root / "shared" / "x.json").read_bytes()

    def pin(data: dict) -> None:
        data["model"]["revision"] = "abc123"

    change = record_change(registry, "x", pin)
    assert change.override and change.written and (root / "shared" / "x.json").read_bytes() == before
    assert json.loads(change.path.read_text()) == {"model": {"revision": "abc123"}}
    assert registry.get("x").model["revision"] == "abc123" and registry.get("x").name == "x"
    assert not record_change(registry, "x", pin).written  # same change again: no write


@pytest.fixture
def hub(hub_server, monkeypatch):
    hub_server.use_in_process(monkeypatch)
    return hub_server


def test_publish_a_defaults_definition_with_local_loras_writes_an_override(wangp: Path, hub) -> None:
    from tunehub.hub.publish import publish

    weights = os.urandom(300_000)
    lora = os.urandom(50_000)
    (wangp / "ckpts" / "local_t2v_mbf16.safetensors").write_bytes(weights)
    (wangp / "loras" / "wan").mkdir(parents=True, exist_ok=True)
    (wangp / "loras" / "wan" / "my_lora.safetensors").write_bytes(lora)
    (wangp / "defaults" / "t2v_local.json").write_text(json.dumps(
        {"model": {"name": "local", "architecture": "t2v", "URLs": ["local_t2v_mbf16.safetensors"],
                   "loras": ["my_lora.safetensors"], "loras_multipliers": [0.8]}}, indent=4))
    before = snapshot(wangp / "defaults")
    cfg = load_config(wangp)
    result = publish(cfg, _registry(wangp), "t2v_local", "alice/local")
    assert result.committed and result.override and result.rewritten
    assert snapshot(wangp / "defaults") == before
    base = f"{hub.url}/alice/local/resolve/main/"
    override = json.loads((wangp / "finetunes" / "t2v_local.json").read_text())
    assert override == {"model": {"URLs": [base + "local_t2v_mbf16.safetensors"], "loras": [base + "my_lora.safetensors"]}}
    info = hub.api().model_info("alice/local", files_metadata=True)
    assert {s.rfilename: s.lfs.sha256 for s in info.siblings if s.lfs} == {
        "local_t2v_mbf16.safetensors": hashlib.sha256(weights).hexdigest(),
        "my_lora.safetensors": hashlib.sha256(lora).hexdigest(),
    }
    again = publish(cfg, _registry(wangp), "t2v_local", "alice/local")
    assert not again.committed and not again.rewritten
    assert json.loads((wangp / "finetunes" / "t2v_local.json").read_text()) == override


def test_pull_places_loras_verified_in_the_familys_folder(home, hub) -> None:
    from tunehub.flows import pull_definition

    weights, lora = os.urandom(200_000), os.urandom(40_000)
    api = hub.api()
    api.create_repo("alice/styled")
    api.upload_file(path_or_fileobj=weights, path_in_repo="styled_i2v_mbf16.safetensors", repo_id="alice/styled")
    api.upload_file(path_or_fileobj=lora, path_in_repo="style_lora.safetensors", repo_id="alice/styled")
    base = f"{hub.url}/alice/styled/resolve/main/"
    home.write_definition("i2v_styled", {"name": "styled", "architecture": "i2v",
                                         "URLs": [base + "styled_i2v_mbf16.safetensors"],
                                         "loras": [base + "style_lora.safetensors"]})
    skipped = pull_definition(home.config(), home.registry(), "i2v_styled", loras=False)
    assert [f.role for f in skipped.files] == ["transformer"]
    result = pull_definition(home.config(), home.registry(), "i2v_styled")
    by_role = {f.role: f for f in result.files}
    placed = home.root / "loras" / "wan_i2v" / "style_lora.safetensors"
    assert by_role["lora"].path == placed and placed.read_bytes() == lora
    assert by_role["lora"].sha256 == hashlib.sha256(lora).hexdigest()
    again = pull_definition(home.config(), home.registry(), "i2v_styled")
    assert again.bytes_transferred == 0
    assert home.registry().resolve("i2v_styled").loras[0].present
