"""LoRA application on a transformer: fused 16-bit, unfused adapters on int8 layers, compiled too."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunehub.demo.tiny import build_transformer, quantize_reference, to_original_layout, save_original
from tunehub.errors import InferenceError
from tunehub.inference.lora import LoraAdapted, LoraWeights, apply_to_transformer
from tunehub.inference.transformer import compile_transformer_blocks, load_transformer


def _inputs() -> dict[str, torch.Tensor | bool]:
    generator = torch.Generator().manual_seed(0)
    return dict(
        hidden_states=torch.randn(1, 16, 2, 4, 4, generator=generator).to(torch.bfloat16),
        timestep=torch.tensor([500]),
        encoder_hidden_states=torch.randn(1, 8, 32, generator=generator).to(torch.bfloat16),
        return_dict=False,
    )


def _lora(rank: int = 4) -> LoraWeights:
    generator = torch.Generator().manual_seed(3)
    modules = {}
    for block in (0, 1):
        for name, (out, inp) in {"attn1.to_q": (32, 32), "ffn.net.0.proj": (48, 32)}.items():
            modules[f"blocks.{block}.{name}"] = (
                torch.randn(rank, inp, generator=generator) * 0.3,
                torch.randn(out, rank, generator=generator) * 0.3,
                None,
            )
    return LoraWeights(Path("tiny_lora.safetensors"), modules)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("lora")
    model = build_transformer("t2v_2_2", 11)
    bf16 = save_original(to_original_layout("t2v_2_2", model.state_dict()), folder / "tiny_mbf16.safetensors")
    return {"bf16": bf16, "int8": quantize_reference(bf16, folder / "tiny_quanto_mbf16_int8.safetensors")}


def _load(path: Path) -> torch.nn.Module:
    from tunehub.demo.tiny import wan_transformer_config

    return load_transformer("WanTransformer3DModel", wan_transformer_config("t2v_2_2"), [path], "bf16", "cpu")


def test_fused_and_adapter_compute_the_same_lora(files: dict[str, Path]) -> None:
    with torch.inference_mode():
        plain = _load(files["bf16"])(**_inputs())[0].float()
        fused_model = _load(files["bf16"])
        fused = apply_to_transformer(fused_model, [_lora()], [[1.0, 1.0]])
        assert (fused.fused, fused.adapters) == (4, 0)
        fused_out = fused_model(**_inputs())[0].float()
        varying_model = _load(files["bf16"])
        varying = apply_to_transformer(varying_model, [_lora()], [[1.0, 0.0]])  # per step: an adapter
        assert (varying.fused, varying.adapters) == (0, 4) and len(varying.schedules) == 4
        assert isinstance(varying_model.blocks[0].attn1.to_q, LoraAdapted)
        adapter_out = varying_model(**_inputs())[0].float()
        effect = (fused_out - plain).abs().mean()
        assert effect > 1e-2
        assert (adapter_out - fused_out).abs().mean() < 0.05 * effect
        varying.set_step(1)  # strength 0 at step 1: the base model
        assert torch.allclose(varying_model(**_inputs())[0].float(), plain, atol=1e-2)


def test_int8_adapters_survive_regional_compilation(files: dict[str, Path]) -> None:
    with torch.inference_mode():
        base = _load(files["int8"])
        plain = base(**_inputs())[0].float()
        model = _load(files["int8"])
        applied = apply_to_transformer(model, [_lora()], [[1.0]])
        assert (applied.fused, applied.adapters) == (0, 4), "int8 layers stay int8"
        eager = model(**_inputs())[0].float()
        compile_transformer_blocks(model)
        compiled = model(**_inputs())[0].float()
    effect = (eager - plain).abs().mean()
    assert effect > 1e-2
    assert (compiled - eager).abs().mean() < 0.1 * effect, "the compiled blocks run the adapters"


def test_lora_of_another_size_is_refused(files: dict[str, Path]) -> None:
    model = _load(files["bf16"])
    wrong = LoraWeights(Path("big.safetensors"), {"blocks.0.attn1.to_q": (torch.zeros(4, 64), torch.zeros(64, 4), None)})
    with pytest.raises(InferenceError, match="another model size"):
        apply_to_transformer(model, [wrong], [[1.0]])
    other = LoraWeights(Path("other.safetensors"), {"double_blocks.0.x": (torch.zeros(4, 8), torch.zeros(8, 4), None)})
    with pytest.raises(InferenceError, match="none of its 1 layers"):
        apply_to_transformer(model, [other], [[1.0]])
