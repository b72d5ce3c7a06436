"""Tiny random transformers in each key layout, and optimum-quanto references for them."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from optimum.quanto import freeze, qint8, quantization_map, quantize
from safetensors.torch import save_file
from torch import nn

DIM = 32
TEXT_DIM = 24
FFN = 48
HEADS = 2


class WanAttention(nn.Module):
    """Wan's original attention key names: q, k, v, o, norm_q, norm_k (+ k_img, v_img for i2v)."""

    def __init__(self, dim: int, image: bool = False) -> None:
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = nn.RMSNorm(dim)
        self.norm_k = nn.RMSNorm(dim)
        if image:
            self.k_img = nn.Linear(dim, dim)
            self.v_img = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q = self.norm_q(self.q(x)).view(batch, length, HEADS, -1).transpose(1, 2)
        k = self.norm_k(self.k(context)).view(batch, context.shape[1], HEADS, -1).transpose(1, 2)
        v = self.v(context).view(batch, context.shape[1], HEADS, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, length, dim)
        if hasattr(self, "k_img"):
            out = out + self.v_img(context).mean(1, keepdim=True) * self.k_img(x).sigmoid()
        return self.o(out)


class WanBlock(nn.Module):
    def __init__(self, dim: int, ffn: int, image: bool) -> None:
        super().__init__()
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)
        self.self_attn = WanAttention(dim)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=True)
        self.cross_attn = WanAttention(dim, image=image)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(approximate="tanh"), nn.Linear(ffn, dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation[:, 0], self.modulation[:, 1]
        x = x + self.self_attn(x * (1 + scale) + shift, x * (1 + scale) + shift)
        x = x + self.cross_attn(self.norm3(x), context)
        return x + self.ffn(x)


class WanHead(nn.Module):
    def __init__(self, dim: int, out: int) -> None:
        super().__init__()
        self.head = nn.Linear(dim, out)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)


class TinyWan(nn.Module):
    """The original Wan 2.1 layout: blocks.N.self_attn.q, blocks.N.ffn.0, head.head, ..."""

    def __init__(self, layers: int = 2, image: bool = False) -> None:
        super().__init__()
        self.patch_embedding = nn.Conv3d(4, DIM, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.text_embedding = nn.Sequential(nn.Linear(TEXT_DIM, DIM), nn.GELU(approximate="tanh"), nn.Linear(DIM, DIM))
        self.time_embedding = nn.Sequential(nn.Linear(8, DIM), nn.SiLU(), nn.Linear(DIM, DIM))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(DIM, DIM * 6))
        self.blocks = nn.ModuleList(WanBlock(DIM, FFN, image) for _ in range(layers))
        self.head = WanHead(DIM, 16)

    def forward(self, tokens: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        context = self.text_embedding(text)
        x = tokens
        for block in self.blocks:
            x = block(x, context)
        return self.head.head(x * (1 + self.head.modulation[:, 0]))


def tiny_wan_diffusers(layers: int = 2):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        text_dim=TEXT_DIM,
        freq_dim=8,
        ffn_dim=FFN,
        num_layers=layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )


def tiny_hunyuan_diffusers():
    from diffusers import HunyuanVideoTransformer3DModel

    return HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        num_single_layers=2,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=1,
        patch_size_t=1,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(2, 2, 4),
    )


class _Node(nn.Module):
    pass


def tree_from_shapes(shapes: dict[str, tuple[int, ...]], linear: set[str]) -> nn.Module:
    """A module tree with these parameter names: nn.Linear for ``linear`` modules, bare params elsewhere."""
    root = _Node()

    def node(path: str) -> nn.Module:
        module = root
        for part in path.split(".") if path else []:
            if not hasattr(module, part):
                module.add_module(part, _Node())
            module = getattr(module, part)
        return module

    for module_name in sorted(linear):
        out_features, in_features = shapes[f"{module_name}.weight"]
        parent, _, leaf = module_name.rpartition(".")
        node(parent).add_module(leaf, nn.Linear(in_features, out_features, bias=f"{module_name}.bias" in shapes))
    for key, shape in shapes.items():
        module_name, _, leaf = key.rpartition(".")
        if module_name in linear:
            continue
        node(module_name).register_parameter(leaf, nn.Parameter(torch.randn(shape)))
    return root


def hunyuan_original_shapes(double: int = 1, single: int = 1, dim: int = 16, mlp: int = 32) -> dict[str, tuple]:
    """HunyuanVideo's original key layout (as in WanGP's hunyuan files)."""
    shapes: dict[str, tuple] = {
        "img_in.proj.weight": (dim, 4, 1, 2, 2),
        "img_in.proj.bias": (dim,),
        "txt_in.input_embedder.weight": (dim, 16),
        "final_layer.linear.weight": (16, dim),
        "final_layer.adaLN_modulation.1.weight": (2 * dim, dim),
    }
    for n in range(double):
        p = f"double_blocks.{n}."
        for side in ("img", "txt"):
            shapes[p + f"{side}_mod.linear.weight"] = (6 * dim, dim)
            shapes[p + f"{side}_mod.linear.bias"] = (6 * dim,)
            shapes[p + f"{side}_attn_qkv.weight"] = (3 * dim, dim)
            shapes[p + f"{side}_attn_qkv.bias"] = (3 * dim,)
            shapes[p + f"{side}_attn_q_norm.weight"] = (dim // 2,)
            shapes[p + f"{side}_attn_k_norm.weight"] = (dim // 2,)
            shapes[p + f"{side}_attn_proj.weight"] = (dim, dim)
            shapes[p + f"{side}_mlp.fc1.weight"] = (mlp, dim)
            shapes[p + f"{side}_mlp.fc2.weight"] = (dim, mlp)
    for n in range(single):
        p = f"single_blocks.{n}."
        shapes[p + "linear1.weight"] = (3 * dim + mlp, dim)
        shapes[p + "linear1.bias"] = (3 * dim + mlp,)
        shapes[p + "linear2.weight"] = (dim, dim + mlp)
        shapes[p + "q_norm.weight"] = (dim // 2,)
        shapes[p + "modulation.linear.weight"] = (3 * dim, dim)
    return shapes


def linear_modules(model: nn.Module, prefixes: tuple[str, ...]) -> set[str]:
    return {
        name for name, module in model.named_modules() if isinstance(module, nn.Linear) and name.startswith(prefixes)
    }


def save_model(model: nn.Module, path: Path, dtype: torch.dtype) -> Path:
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt"})
    return path


def quanto_reference(model: nn.Module, dtype: torch.dtype, include: list[str]):
    """WanGP's path: the model in ``dtype``, quanto quantize(weights=qint8) + freeze; its state_dict and map."""
    model = model.to(dtype)
    quantize(model, weights=qint8, include=include)
    freeze(model)
    return model, dict(model.state_dict()), quantization_map(model)
