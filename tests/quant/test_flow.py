"""``tunehub quantize ID``: WanGP's save-quantized flow on a real home, registry and definition files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.quant.tiny import TinyWan, save_model
from tunehub.errors import QuantizationError
from tunehub.quant.flow import quantize_definition
from tunehub.quant.format import read_header, read_quantization_map
from tunehub.safeio import TEMP_MARKER

SOURCE = "mywan_1.3B_mbf16.safetensors"
OUTPUT = "mywan_1.3B_quanto_mbf16_int8.safetensors"


def _definition(home, definition_id: str = "t2v_mywan", **model) -> Path:
    fields = {"name": "My Wan", "architecture": "t2v_1.3B", "URLs": [SOURCE], **model}
    # Tabs and a key order of the user's own: both must survive the rewrite.
    return home.write_definition(definition_id, fields, indent="\t", prompt="a cat", seed=-1)


def test_quantize_writes_wangp_name_and_appends_it(home) -> None:
    torch.manual_seed(30)
    save_model(TinyWan(layers=2), home.ckpts / SOURCE, torch.bfloat16)
    path = _definition(home)
    cfg, registry = home.config(), home.registry()
    outputs = quantize_definition(cfg, registry, "t2v_mywan", device="cpu")
    assert outputs == [home.ckpts / OUTPUT]
    assert read_quantization_map(outputs[0])
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["model"]["URLs"] == [SOURCE, OUTPUT]
    assert list(data) == ["prompt", "seed", "model"] and '\n\t"prompt"' in path.read_text(encoding="utf-8")
    # WanGP's rule now picks the int8 file; the registry saw the rewrite.
    assert registry.resolve("t2v_mywan", quantization="int8").transformer.filename == OUTPUT

    # Done already: not redone, not listed twice; --force redoes it.
    stamp = outputs[0].stat().st_mtime_ns
    text = path.read_text(encoding="utf-8")
    assert quantize_definition(cfg, registry, "t2v_mywan", device="cpu") == outputs
    assert outputs[0].stat().st_mtime_ns == stamp and path.read_text(encoding="utf-8") == text
    time.sleep(0.01)
    quantize_definition(cfg, registry, "t2v_mywan", device="cpu", force=True)
    assert outputs[0].stat().st_mtime_ns != stamp and path.read_text(encoding="utf-8") == text


def test_fp16_target_and_modules_are_quantized_too(home) -> None:
    torch.manual_seed(31)
    save_model(TinyWan(layers=1), home.ckpts / SOURCE, torch.bfloat16)
    vace = {f"vace_{k}": v for k, v in TinyWan(layers=1).blocks.state_dict(prefix="blocks.").items()}
    save_file(
        {k: v.to(torch.bfloat16).contiguous() for k, v in vace.items()},
        str(home.ckpts / "vace_module_bf16.safetensors"),
    )
    path = _definition(home, modules=[["vace_module_bf16.safetensors"]])
    outputs = quantize_definition(home.config(), home.registry(), "t2v_mywan", dtype="fp16", device="cpu")
    assert [p.name for p in outputs] == [
        "mywan_1.3B_quanto_mfp16_int8.safetensors",
        "vace_module_quanto_fp16_int8.safetensors",
    ]
    assert all(read_quantization_map(p) for p in outputs)
    assert {e.dtype for e in read_header(outputs[1]).tensors} == {"I8", "F16"}
    model = json.loads(path.read_text(encoding="utf-8"))["model"]
    assert model["URLs"][-1] == outputs[0].name
    assert model["modules"] == [["vace_module_bf16.safetensors", outputs[1].name]]


def test_a_list_that_offers_int8_needs_no_16bit_file(home) -> None:
    # pull fetched the module's int8 variant only: the main file is quantized, the module left alone.
    torch.manual_seed(35)
    save_model(TinyWan(layers=1), home.ckpts / SOURCE, torch.bfloat16)
    module = ["https://huggingface.co/a/b/resolve/main/mod_bf16.safetensors", "mod_quanto_bf16_int8.safetensors"]
    path = _definition(home, modules=[module])
    outputs = quantize_definition(home.config(), home.registry(), "t2v_mywan", device="cpu")
    assert outputs == [home.ckpts / OUTPUT]
    model = json.loads(path.read_text(encoding="utf-8"))["model"]
    assert model["URLs"] == [SOURCE, OUTPUT] and model["modules"] == [module]


def test_refusals_say_why_and_what_to_do(home) -> None:
    _definition(home, "t2v_base")
    home.write_definition("t2v_ref", {"name": "Ref", "architecture": "t2v_1.3B", "URLs": "t2v_base"})
    cfg, registry = home.config(), home.registry()
    with pytest.raises(QuantizationError, match="reference to definition 't2v_base'.*tunehub quantize t2v_base"):
        quantize_definition(cfg, registry, "t2v_ref")
    with pytest.raises(QuantizationError, match=f"not on disk.*{SOURCE}.*tunehub pull t2v_base"):
        quantize_definition(cfg, registry, "t2v_base")
    home.write_definition(
        "t2v_first_int8", {"name": "X", "architecture": "t2v_1.3B", "URLs": ["a_quanto_int8.safetensors", SOURCE]}
    )
    with pytest.raises(QuantizationError, match="already quantized.*listed first"):
        quantize_definition(cfg, home.registry(), "t2v_first_int8")
    home.write_definition("hy", {"name": "H", "architecture": "hunyuan", "URLs": ["h_bf16.safetensors"]})
    with pytest.raises(QuantizationError, match="bf16"):
        quantize_definition(cfg, home.registry(), "hy", dtype="fp16")


def test_builtin_definition_gets_an_override_in_the_user_folder(home) -> None:
    torch.manual_seed(32)
    registry = home.registry()
    builtin = registry.get("t2v_1.3B")
    source_name = builtin.model["URLs"][0].rsplit("/", 1)[-1]
    save_model(TinyWan(layers=1), home.ckpts / source_name, torch.bfloat16)
    before = builtin.path.read_bytes()
    outputs = quantize_definition(home.config(), registry, "t2v_1.3B", device="cpu")
    assert outputs[0].name == "wan2.1_text2video_1.3B_quanto_mbf16_int8.safetensors"
    assert builtin.path.read_bytes() == before
    override = json.loads((home.finetunes / "t2v_1.3B.json").read_text(encoding="utf-8"))
    assert override == {"model": {"URLs": [*builtin.model["URLs"], outputs[0].name]}}
    assert home.registry().resolve("t2v_1.3B", quantization="int8").transformer.filename == outputs[0].name


def test_cli_quantize_id(home) -> None:
    torch.manual_seed(33)
    save_model(TinyWan(layers=1), home.ckpts / SOURCE, torch.bfloat16)
    _definition(home)
    done = home.run("quantize", "t2v_mywan", "--device", "cpu", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["files"] == [str(home.ckpts / OUTPUT)]
    missing = home.run("quantize", "no_such_id")
    assert missing.returncode == 1 and "no_such_id" in missing.stderr and "Traceback" not in missing.stderr


def test_sigkill_midway_leaves_no_output_and_the_definition_unchanged(home) -> None:
    # ~200 MB of block linears: long enough to be killed while writing.
    generator = torch.Generator().manual_seed(34)
    tensors = {}
    for n in range(24):
        for name, shape in (("ffn.0", (2048, 1024)), ("ffn.2", (1024, 2048))):
            tensors[f"blocks.{n}.{name}.weight"] = torch.randn(shape, generator=generator).to(torch.bfloat16)
    save_file(tensors, str(home.ckpts / SOURCE))
    del tensors
    path = _definition(home)
    before = path.read_bytes()
    process = subprocess.Popen(
        [sys.executable, "-m", "tunehub", "--home", str(home.root), "quantize", "t2v_mywan", "--device", "cpu", "-q"],
        env=home.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    temporary = None
    deadline = time.monotonic() + 120
    while temporary is None and time.monotonic() < deadline and process.poll() is None:
        temporary = next((p for p in home.ckpts.iterdir() if TEMP_MARKER in p.name), None)
        time.sleep(0.002)
    assert temporary is not None, process.communicate()
    time.sleep(0.05)  # into the tensor data
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL  # killed, not finished
    assert not (home.ckpts / OUTPUT).exists()
    assert path.read_bytes() == before

    rerun = home.run("quantize", "t2v_mywan", "--device", "cpu", "-q")
    assert rerun.returncode == 0, rerun.stderr
    assert (home.ckpts / OUTPUT).is_file()
    assert [p.name for p in home.ckpts.iterdir() if TEMP_MARKER in p.name] == []  # the leftover was removed
    assert len(read_quantization_map(home.ckpts / OUTPUT)) == 48
    assert json.loads(path.read_text(encoding="utf-8"))["model"]["URLs"] == [SOURCE, OUTPUT]
    assert os.path.getsize(home.ckpts / OUTPUT) > 90e6
