"""The CUDA paths (pinned buffers, device compute, loading onto the GPU), when a GPU is present."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tests.quant.tiny import DIM, TEXT_DIM, TinyWan, quanto_reference, save_model
from tunehub.quant.load import load_quantized_file
from tunehub.quant.stream import quantize_file

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cuda_quantization_is_byte_identical_to_cpu(tmp_path: Path) -> None:
    torch.manual_seed(40)
    model = TinyWan(layers=2, image=True)
    source = save_model(model, tmp_path / "m_bf16.safetensors", torch.bfloat16)
    on_cpu = quantize_file(source, tmp_path / "cpu.safetensors", device="cpu").output
    on_gpu = quantize_file(source, tmp_path / "gpu.safetensors", device="cuda").output
    assert on_gpu.read_bytes() == on_cpu.read_bytes()
    fp16 = quantize_file(source, tmp_path / "gpu16.safetensors", device="cuda", dtype="fp16").output
    assert fp16.read_bytes() == quantize_file(source, tmp_path / "cpu16.safetensors", dtype="fp16").output.read_bytes()


def test_loading_onto_the_gpu_matches_quanto_on_the_gpu(tmp_path: Path) -> None:
    torch.manual_seed(41)
    model = TinyWan(layers=2)
    source = save_model(model, tmp_path / "m_bf16.safetensors", torch.bfloat16)
    output = quantize_file(source, tmp_path / "m_int8.safetensors", device="cuda").output
    reference, _, _ = quanto_reference(copy.deepcopy(model), torch.bfloat16, ["blocks.*"])
    reference = reference.to("cuda")
    with torch.device("meta"):
        loaded = TinyWan(layers=2).to(torch.bfloat16)
    load_quantized_file(loaded, output, device="cuda")
    assert all(p.device.type == "cuda" for p in loaded.parameters())
    tokens = torch.randn(1, 6, DIM, device="cuda").to(torch.bfloat16)
    text = torch.randn(1, 4, TEXT_DIM, device="cuda").to(torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(loaded(tokens, text), reference(tokens, text))


@pytest.mark.parametrize("pin", ["off", "torch", "register"])
def test_every_cuda_pipeline_tuning_is_byte_identical(tmp_path: Path, pin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(42)
    source = save_model(TinyWan(layers=3, image=True), tmp_path / "m_bf16.safetensors", torch.bfloat16)
    on_cpu = quantize_file(source, tmp_path / "cpu.safetensors", device="cpu").output.read_bytes()
    monkeypatch.setenv("TUNEHUB_QUANT_PIN", pin)
    monkeypatch.setenv("TUNEHUB_QUANT_WORKERS", "3")
    monkeypatch.setenv("TUNEHUB_QUANT_READERS", "3")
    result = quantize_file(source, tmp_path / "gpu.safetensors", device="cuda")
    assert result.output.read_bytes() == on_cpu
    assert result.stats["tuning"]["pin"] == pin
    assert "pin_fallback" not in result.stats, result.stats  # cudaHostRegister worked
