"""FP8 attention: the quantization scheme (on CPU, in plain torch), the Wan self-attention
processor, and the clean fallback where FP8 attention cannot run (CPU, no cuDNN frontend)."""

from __future__ import annotations

import pytest
import torch

from tunehub.inference.attention import (
    Fp8SelfAttention,
    quantize_qkv,
    reference_fp8_attention,
    set_attention,
    unavailable_reason,
)


def _exact(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    out = torch.nn.functional.scaled_dot_product_attention(*(t.double().transpose(1, 2) for t in (query, key, value)))
    return out.transpose(1, 2)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _naive_fp8(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Per-tensor e4m3 without the mean smoothing: what the smoothing is measured against."""
    rounded = []
    for tensor in (query, key, value):
        scale = 448.0 / tensor.abs().amax().float()
        rounded.append((tensor.float() * scale).to(torch.float8_e4m3fn).float() / scale)
    return _exact(*rounded)


def test_quantized_values_fit_e4m3_and_scales_are_powers_of_two() -> None:
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 64, 2, 32, generator=generator).to(torch.bfloat16) * 30 for _ in range(3))
    q8, k8, v8, dq, dk, dv, v_mean = quantize_qkv(q, k, v)
    assert all(t.dtype == torch.float8_e4m3fn and t.shape == q.shape for t in (q8, k8, v8))
    for descale in (dq, dk, dv):
        assert descale.shape == (1, 1, 1, 1)
        exponent = torch.log2(descale)
        assert torch.equal(exponent, exponent.round())
    assert v_mean.shape == (1, 1, 2, 32)
    # K smoothed by its mean over tokens: the quantized K has (nearly) zero mean per channel
    assert (k8.float() * dk).mean(dim=1).abs().max() < 0.05 * k.float().abs().mean()


def test_fp8_scheme_error_is_bounded_and_smoothing_removes_common_components() -> None:
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 256, 2, 64, generator=generator).to(torch.bfloat16) for _ in range(3))
    exact = _exact(q, k, v)
    plain = _rel(reference_fp8_attention(q, k, v), exact)
    assert plain < 0.06  # q/k/v rounded to e4m3 (3 mantissa bits): a few percent, no more
    # a common offset on K: softmax ignores it, but unsmoothed it is what e4m3 rounds
    k_shifted = k + 8
    exact_k = _exact(q, k_shifted, v)
    smoothed, naive = _rel(reference_fp8_attention(q, k_shifted, v), exact_k), _rel(_naive_fp8(q, k_shifted, v), exact_k)
    assert smoothed < 0.06 and smoothed < naive / 3
    # a common offset on V: the rows of P sum to one, so it is added back exactly; measured on
    # what the attention adds to that mean (float32 in and out: a bf16 output would round the
    # mean itself more coarsely than e4m3 rounds the rest)
    q, k, v_shifted = q.float(), k.float(), v.float() + 8
    mean = v_shifted.double().mean(dim=1, keepdim=True)
    exact_v = _exact(q, k, v_shifted) - mean
    smoothed = _rel(reference_fp8_attention(q, k, v_shifted) - mean, exact_v)
    naive = _rel(_naive_fp8(q, k, v_shifted) - mean, exact_v)
    assert smoothed < 0.08 and smoothed < naive / 3


def _tiny_wan(dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    from tunehub.demo.tiny import build_transformer

    return build_transformer("t2v", seed=3).to(dtype)


def _forward(model: torch.nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(4)
    inputs = dict(
        hidden_states=torch.randn(1, 16, 2, 8, 8, generator=generator),
        timestep=torch.tensor([500]),
        encoder_hidden_states=torch.randn(1, 12, 32, generator=generator),
        return_dict=False,
    )
    with torch.no_grad():
        return model(**inputs)[0]


def test_self_attention_processor_computes_the_stock_model() -> None:
    """The processor's projections, q/k norms and rotary embedding are the model's: with an
    exact attention in its place the transformer's output is the stock output."""
    model = _tiny_wan()
    stock = _forward(model)
    for block in model.blocks:
        block.attn1.set_processor(Fp8SelfAttention(block.attn1.processor, attention=lambda q, k, v: _exact(q, k, v).to(q.dtype)))
    assert torch.allclose(_forward(model), stock, atol=1e-5, rtol=1e-4)
    # and with the FP8 scheme (plain torch) the output stays close
    for block in model.blocks:
        block.attn1.set_processor(Fp8SelfAttention(block.attn1.processor.stock, attention=reference_fp8_attention))
    assert _rel(_forward(model), stock) < 0.05
    # cross-attention keeps the stock processor
    assert all(not isinstance(block.attn2.processor, Fp8SelfAttention) for block in model.blocks)


def test_fp8_falls_back_on_cpu_with_one_line_note() -> None:
    model = _tiny_wan(torch.bfloat16)
    processors = [block.attn1.processor for block in model.blocks]
    used, note = set_attention(model, "fp8", "cpu")
    assert used == "sdpa"
    assert note is not None and "\n" not in note and note.startswith("fp8 attention needs a CUDA GPU")
    assert [block.attn1.processor for block in model.blocks] == processors
    assert unavailable_reason("cpu") == "needs a CUDA GPU (device is cpu)"
    assert set_attention(model, "sdpa", "cpu") == ("sdpa", None)
    assert set_attention(model, "int8", "cpu") == ("sdpa", "int8 attention needs a CUDA GPU (device is cpu): using sdpa")
    assert [block.attn1.processor for block in model.blocks] == processors
    with pytest.raises(ValueError, match="choose one of sdpa, fp8, int8, fp8-cudnn"):
        set_attention(model, "sage", "cpu")


def test_fp8_on_a_non_wan_transformer_says_so() -> None:
    used, note = set_attention(torch.nn.Linear(2, 2), "fp8", "cpu")
    assert used == "sdpa" and note == "fp8 attention made for Wan transformers, not Linear: using sdpa"


def test_generate_table_in_tunehub_toml(tmp_path) -> None:
    from tunehub.config import load_config
    from tunehub.errors import ConfigError

    # every --attention choice is a [generate] value (README.md's table says so)
    for attention in ("sdpa", "fp8", "int8", "fp8-cudnn"):
        (tmp_path / "tunehub.toml").write_text(f'[generate]\nattention = "{attention}"\n', encoding="utf-8")
        assert load_config(tmp_path).generate == {"attention": attention}
    (tmp_path / "tunehub.toml").write_text('[generate]\nattention = "sage"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"tunehub.toml: \[generate\] attention must be one of sdpa, fp8, int8, fp8-cudnn; got 'sage'"):
        load_config(tmp_path)
    (tmp_path / "tunehub.toml").write_text('[generate]\nsteps = 4\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[generate\] unknown key 'steps'"):
        load_config(tmp_path)
    (tmp_path / "tunehub.toml").write_text("", encoding="utf-8")
    assert load_config(tmp_path).generate == {}


def _ulysses_rank(rank: int, world: int, channel: object, init_method: str) -> dict[str, object]:
    """One of two gloo ranks: the tiny Wan model, stock, then with the self-attention
    processor under diffusers' Ulysses context parallelism (exact attention in place of FP8,
    which needs a GPU). Returns the largest difference and the shapes the attention saw."""
    from tunehub.inference.parallel import ParallelPlan, enable_context_parallel, init_rank

    ctx = init_rank(rank, ParallelPlan(world=2, context=2, attention="ulysses", device_type="cpu"), init_method)
    model = _tiny_wan()
    stock = _forward(model)
    seen: list[list[int]] = []

    def exact(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        seen.append(list(query.shape))
        return _exact(query, key, value).to(query.dtype)

    for block in model.blocks:
        block.attn1.set_processor(Fp8SelfAttention(block.attn1.processor, attention=exact))
    enable_context_parallel(model, ctx)
    parallel = _forward(model)
    return {"difference": float((parallel - stock).abs().max()), "scale": float(stock.abs().max()), "seen": seen}


def test_self_attention_processor_under_ulysses_context_parallelism(tmp_path) -> None:
    """The processor's attention runs inside diffusers' all-to-all: each rank sees the whole
    sequence (32 tokens) and half of the heads, and the two-process output is the stock one."""
    from tunehub.inference.parallel import launch

    result = launch(_ulysses_rank, ((tmp_path / "rendezvous").as_uri(),), 2)
    assert result["seen"] == [[1, 32, 1, 16]] * 2  # two blocks: [batch, tokens, heads / 2, head dim]
    assert result["difference"] <= 1e-4 * result["scale"]
