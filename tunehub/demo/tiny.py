"""Tiny randomly initialised models for every architecture tunehub generates with.

For each architecture id this builds the real diffusers / transformers classes with tiny
configs and saves

- a *base repo* folder in diffusers layout (``model_index.json``, ``vae/``,
  ``text_encoder/``, ``tokenizer/``, ``scheduler/``, ``transformer/config.json`` and its
  weights, plus image encoders where the pipeline has them), as the official diffusers
  repos are laid out;
- a *finetune* transformer file in the ORIGINAL (Wan / HunyuanVideo) key layout, 16-bit,
  as WanGP users share them; for ``vace_14B`` the t2v-shaped transformer file plus the
  VACE module file (``vace_blocks.*``, ``vace_patch_embedding.*``).

The original layout is produced by inverting diffusers' converter
(``tunehub.inference.convert.wan_diffusers_to_original`` for Wan, :func:`hunyuan_to_original`
here); ``tests/inference/test_convert.py`` checks the round trip through diffusers' own
conversion, so the inverse cannot silently drift.

Deterministic: the same seed gives the same tensors, and safetensors files are written
with sorted keys, so the same bytes (the demo publishes them and content-addressed Hubs
deduplicate them). Used by ``tunehub demo`` (:mod:`tunehub.demo.run`) and by the test
suite (``tests/fixtures/tiny_models.py``). Needs torch, diffusers and transformers
(``pip install 'tunehub[inference]'``); imported only when used.

:class:`TinyModels` builds and caches per architecture under one folder;
:func:`publish_base_repo` uploads a base repo folder with a server object that has
``.api()`` (the test fixture's ``HubServer``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ARCHS = ("t2v", "t2v_1.3B", "i2v", "i2v_720p", "vace_14B", "hunyuan", "hunyuan_i2v")
# Wan 2.2 (two experts: high-noise transformer + low-noise transformer_2; the 5B with its own
# 48-channel VAE) and VACE 1.3B.
ARCHS_2_2 = ("t2v_2_2", "i2v_2_2", "ti2v_2_2", "vace_1.3B")
ALL_ARCHS = ARCHS + ARCHS_2_2
TWO_EXPERTS = {"t2v_2_2": 0.875, "i2v_2_2": 0.9}  # architecture -> diffusers' boundary_ratio



def base_repo_id(arch: str, owner: str = "alice", tag: str = "") -> str:
    """Repo id under which a tiny base repo is published to a test Hub."""
    return f"{owner}/tiny-{arch.replace('.', '_').replace('_', '-')}-diffusers{tag}"

_WORDS = (
    "a the of and to in on with cat dog monkey dance runs walks city night day red blue green "
    "video camera light style background main content theme color shape size texture quantity "
    "text spatial relationships objects actions events behaviors temporal physical movement "
    "changes environment atmosphere angles movements transitions used describe detailing "
    "following aspects according reference image system user assistant"
).split()
SPECIAL_TOKENS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<image>", "<|begin_of_text|>"]


def make_tokenizer() -> Any:
    """A word-level fast tokenizer built in memory (nothing downloaded)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "</s>", "<unk>", "<s>", "\n", "\n\n", *_WORDS, *[f"w{i}" for i in range(40)], *list(".,:;!?0123456789")]
    vocab = {word: index for index, word in enumerate(dict.fromkeys(words))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    # Newlines are tokens and a BOS is added, as Llama's tokenizer does: HunyuanVideo's
    # prompt template crops a fixed number of leading tokens (95 / 103), and a tokenizer
    # that makes far fewer would crop the user's prompt away (all-masked attention: NaN).
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\n+"), behavior="isolated"),
            pre_tokenizers.Split(Regex(r"[ \t]+"), behavior="removed"),
            pre_tokenizers.Punctuation(),
        ]
    )
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", bos_token="<s>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    return tokenizer


# ---------------------------------------------------------------- transformers


def wan_transformer_config(arch: str) -> dict[str, Any]:
    config: dict[str, Any] = dict(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=32,
        ffn_dim=48,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=32,
    )
    if arch == "t2v_1.3B":
        config.update(num_layers=1, ffn_dim=32)
    if arch in ("i2v", "i2v_720p"):
        config.update(in_channels=36, image_dim=16, added_kv_proj_dim=32)
    if arch == "vace_14B":
        config.update(vace_layers=[0, 1], vace_in_channels=96)
    if arch == "vace_1.3B":
        config.update(num_layers=1, ffn_dim=32, vace_layers=[0], vace_in_channels=96)
    if arch == "i2v_2_2":
        config.update(in_channels=36)  # image latents concatenated; no CLIP image branch in 2.2
    if arch == "ti2v_2_2":
        config.update(in_channels=48, out_channels=48, num_layers=1)
    return config


def hunyuan_transformer_config(arch: str) -> dict[str, Any]:
    config: dict[str, Any] = dict(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=1,
        patch_size_t=1,
        qk_norm="rms_norm",
        guidance_embeds=True,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_theta=256.0,
        rope_axes_dim=(4, 6, 6),
    )
    if arch == "hunyuan_i2v":
        config.update(in_channels=9, guidance_embeds=False, image_condition_type="latent_concat")
    return config


def transformer_class_name(arch: str) -> str:
    if arch.startswith("vace_"):
        return "WanVACETransformer3DModel"
    if arch.startswith("hunyuan"):
        return "HunyuanVideoTransformer3DModel"
    return "WanTransformer3DModel"


def build_transformer(arch: str, seed: int) -> Any:
    import diffusers
    import torch

    torch.manual_seed(seed)
    cls = getattr(diffusers, transformer_class_name(arch))
    config = hunyuan_transformer_config(arch) if arch.startswith("hunyuan") else wan_transformer_config(arch)
    model = cls(**config).eval()
    # Random init leaves some layers at zero (Wan's norms, HunyuanVideo's refiner gates);
    # fill every tensor so that the output depends on every weight.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() <= 1 and ("norm" in name or name.endswith("bias")):
                param.copy_(1.0 + 0.1 * torch.randn_like(param) if "norm" in name else 0.05 * torch.randn_like(param))
            elif param.abs().max() == 0:
                param.copy_(0.05 * torch.randn_like(param))
    return model


# ------------------------------------------------- diffusers -> original layout

def wan_to_original(state: dict[str, Any]) -> dict[str, Any]:
    from tunehub.inference.convert import wan_diffusers_to_original

    return wan_diffusers_to_original(state)


_HUNYUAN_INVERSE = [
    ("time_text_embed.timestep_embedder.linear_1", "time_in.mlp.0"),
    ("time_text_embed.timestep_embedder.linear_2", "time_in.mlp.2"),
    ("time_text_embed.guidance_embedder.linear_1", "guidance_in.mlp.0"),
    ("time_text_embed.guidance_embedder.linear_2", "guidance_in.mlp.2"),
    ("time_text_embed.text_embedder.linear_1", "vector_in.in_layer"),
    ("time_text_embed.text_embedder.linear_2", "vector_in.out_layer"),
    ("x_embedder", "img_in"),
    ("norm_out.norm", "final_layer.norm_final"),
]
_HUNYUAN_DOUBLE = [
    ("attn.norm_q", "img_attn_q_norm"),
    ("attn.norm_k", "img_attn_k_norm"),
    ("attn.to_out.0", "img_attn_proj"),
    ("attn.norm_added_q", "txt_attn_q_norm"),
    ("attn.norm_added_k", "txt_attn_k_norm"),
    ("attn.to_add_out", "txt_attn_proj"),
    ("norm1.linear", "img_mod.linear"),
    ("norm1_context.linear", "txt_mod.linear"),
    ("ff.net.0.proj", "img_mlp.fc1"),
    ("ff.net.2", "img_mlp.fc2"),
    ("ff_context.net.0.proj", "txt_mlp.fc1"),
    ("ff_context.net.2", "txt_mlp.fc2"),
]
_HUNYUAN_REFINER = [
    ("norm_out.linear", "adaLN_modulation.1"),
    ("attn.to_out.0", "self_attn_proj"),
    ("ff.net.0.proj", "mlp.fc1"),
    ("ff.net.2", "mlp.fc2"),
]


def hunyuan_to_original(state: dict[str, Any]) -> dict[str, Any]:
    import torch

    state = dict(state)
    out: dict[str, Any] = {}

    def fuse(prefix: str, parts: list[str], target: str) -> None:
        for kind in ("weight", "bias"):
            keys = [f"{prefix}.{part}.{kind}" for part in parts]
            if all(key in state for key in keys):
                out[f"{target}.{kind}"] = torch.cat([state.pop(key) for key in keys], dim=0)

    blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("transformer_blocks.")})
    for n in blocks:
        p = f"transformer_blocks.{n}"
        fuse(p, ["attn.to_q", "attn.to_k", "attn.to_v"], f"double_blocks.{n}.img_attn_qkv")
        fuse(p, ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"], f"double_blocks.{n}.txt_attn_qkv")
        for key in [k for k in state if k.startswith(p + ".")]:
            rest = key[len(p) + 1 :]
            for diffusers_part, original_part in _HUNYUAN_DOUBLE:
                if rest.startswith(diffusers_part + "."):
                    rest = original_part + rest[len(diffusers_part) :]
                    break
            out[f"double_blocks.{n}.{rest}"] = state.pop(key)
    singles = sorted({int(k.split(".")[1]) for k in state if k.startswith("single_transformer_blocks.")})
    for n in singles:
        p = f"single_transformer_blocks.{n}"
        fuse(p, ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"], f"single_blocks.{n}.linear1")
        for key in [k for k in state if k.startswith(p + ".")]:
            rest = key[len(p) + 1 :]
            rest = rest.replace("proj_out", "linear2").replace("attn.norm_q", "q_norm").replace("attn.norm_k", "k_norm")
            rest = rest.replace("norm.linear", "modulation.linear")
            out[f"single_blocks.{n}.{rest}"] = state.pop(key)
    refiners = sorted({int(k.split(".")[3]) for k in state if k.startswith("context_embedder.token_refiner.refiner_blocks.")})
    for n in refiners:
        p = f"context_embedder.token_refiner.refiner_blocks.{n}"
        target = f"txt_in.individual_token_refiner.blocks.{n}"
        fuse(p, ["attn.to_q", "attn.to_k", "attn.to_v"], f"{target}.self_attn_qkv")
        for key in [k for k in state if k.startswith(p + ".")]:
            rest = key[len(p) + 1 :]
            for diffusers_part, original_part in _HUNYUAN_REFINER:
                if rest.startswith(diffusers_part + "."):
                    rest = original_part + rest[len(diffusers_part) :]
                    break
            out[f"{target}.{rest}"] = state.pop(key)
    for key in list(state):
        if key.startswith("context_embedder."):
            rest = key[len("context_embedder.") :]
            rest = rest.replace("time_text_embed.timestep_embedder.linear_1", "t_embedder.mlp.0")
            rest = rest.replace("time_text_embed.timestep_embedder.linear_2", "t_embedder.mlp.2")
            rest = rest.replace("time_text_embed.text_embedder", "c_embedder")
            rest = rest.replace("proj_in", "input_embedder")
            out[f"txt_in.{rest}"] = state.pop(key)
    if "norm_out.linear.weight" in state:
        for kind in ("weight", "bias"):
            scale, shift = state.pop(f"norm_out.linear.{kind}").chunk(2, dim=0)
            out[f"final_layer.adaLN_modulation.1.{kind}"] = torch.cat([shift, scale], dim=0)
    for key in list(state):
        new = key
        for diffusers_part, original_part in _HUNYUAN_INVERSE:
            new = new.replace(diffusers_part, original_part)
        new = re.sub(r"^proj_out\.", "final_layer.linear.", new)
        out[new] = state.pop(key)
    return out


def to_original_layout(arch: str, state: dict[str, Any]) -> dict[str, Any]:
    return hunyuan_to_original(state) if arch.startswith("hunyuan") else wan_to_original(state)


# ------------------------------------------------------------ other components


def _wan_components(arch: str) -> dict[str, Any]:
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    torch.manual_seed(1)
    if arch == "ti2v_2_2":
        # Wan 2.2's own VAE: 48 latent channels, 2x2 patches, 16x spatial compression
        vae = AutoencoderKLWan(
            base_dim=8, z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
            dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
            scale_factor_spatial=16, scale_factor_temporal=4, latents_mean=[0.0] * 48, latents_std=[1.0] * 48,
        )  # fmt: skip
    else:
        vae = AutoencoderKLWan(
            base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
        )
    torch.manual_seed(2)
    tokenizer = make_tokenizer()
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
            relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        )
    ).eval()  # fmt: skip
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
        flow_shift=5.0 if arch == "i2v_720p" else 3.0,
    )  # fmt: skip
    components: dict[str, Any] = dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
    if arch in ("i2v", "i2v_720p"):
        torch.manual_seed(3)
        components["image_encoder"] = CLIPVisionModel(
            CLIPVisionConfig(
                hidden_size=16, intermediate_size=32, projection_dim=16, num_attention_heads=2,
                num_hidden_layers=2, image_size=32, patch_size=8,
            )
        ).eval()  # fmt: skip
        components["image_processor"] = CLIPImageProcessor(crop_size=32, size={"shortest_edge": 32})
    return components


def _hunyuan_components(arch: str) -> dict[str, Any]:
    import torch
    from diffusers import AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPVisionConfig,
        LlamaConfig,
        LlamaModel,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    torch.manual_seed(1)
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("HunyuanVideoDownBlock3D",) * 4, up_block_types=("HunyuanVideoUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8), layers_per_block=1, act_fn="silu", norm_num_groups=4,
        scaling_factor=0.476986, spatial_compression_ratio=8, temporal_compression_ratio=4,
        mid_block_add_attention=True,
    )  # fmt: skip
    tokenizer = make_tokenizer()
    vocab = len(tokenizer)
    text_config = LlamaConfig(
        hidden_size=16, intermediate_size=32, num_attention_heads=2, num_key_value_heads=2,
        num_hidden_layers=2, vocab_size=vocab, pad_token_id=0, bos_token_id=3, eos_token_id=1,
        max_position_embeddings=2048, hidden_act="silu",
    )  # fmt: skip
    torch.manual_seed(2)
    if arch == "hunyuan_i2v":
        vision = CLIPVisionConfig(
            hidden_size=8, intermediate_size=16, projection_dim=8, num_attention_heads=2,
            num_hidden_layers=2, image_size=48, patch_size=2,
        )  # fmt: skip
        # 48/2 = 24 -> 24*24 = 576 image tokens: the pipeline's default template expects 576
        text_encoder = LlavaForConditionalGeneration(
            LlavaConfig(
                vision_config=vision, text_config=text_config, pad_token_id=0,
                image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
            )
        ).eval()  # fmt: skip
    else:
        text_encoder = LlamaModel(text_config).eval()
    torch.manual_seed(3)
    text_encoder_2 = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=8, intermediate_size=16, projection_dim=8, num_attention_heads=2, num_hidden_layers=2,
            vocab_size=vocab, pad_token_id=0, bos_token_id=3, eos_token_id=1, max_position_embeddings=77,
        )
    ).eval()  # fmt: skip
    components: dict[str, Any] = dict(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=make_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
    )
    if arch == "hunyuan_i2v":
        components["image_processor"] = CLIPImageProcessor(crop_size=48, size={"shortest_edge": 48})
    return components


PIPELINES = {
    "t2v": "WanPipeline",
    "t2v_1.3B": "WanPipeline",
    "i2v": "WanImageToVideoPipeline",
    "i2v_720p": "WanImageToVideoPipeline",
    "vace_14B": "WanVACEPipeline",
    "hunyuan": "HunyuanVideoPipeline",
    "hunyuan_i2v": "HunyuanVideoImageToVideoPipeline",
    "t2v_2_2": "WanPipeline",
    "i2v_2_2": "WanImageToVideoPipeline",
    "ti2v_2_2": "WanPipeline",
    "vace_1.3B": "WanVACEPipeline",
}


def build_base_repo(arch: str, folder: Path, seed: int = 0) -> Path:
    """Save a tiny diffusers-layout base repo for ``arch`` into ``folder``."""
    import diffusers

    components = _hunyuan_components(arch) if arch.startswith("hunyuan") else _wan_components(arch)
    components["transformer"] = build_transformer(arch, seed)
    if arch in TWO_EXPERTS:
        components.update(transformer_2=build_transformer(arch, seed + 50), boundary_ratio=TWO_EXPERTS[arch])
    if arch == "i2v_2_2":
        components.update(image_encoder=None, image_processor=None)
    if arch == "ti2v_2_2":
        components["expand_timesteps"] = True
    pipeline = getattr(diffusers, PIPELINES[arch])(**components)
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder


def save_original(state: dict[str, Any], path: Path, dtype: str = "bf16") -> Path:
    import torch
    from safetensors.torch import save_file

    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float16
    tensors = {k: v.detach().to(torch_dtype).contiguous() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def write_finetune(arch: str, folder: Path, dtype: str = "bf16", seed: int = 100) -> dict[str, Path]:
    """A tiny finetune in the original layout: ``{"transformer": path}`` plus ``"module"``
    (the VACE module) for the VACE models, ``"transformer2"`` (the low-noise expert) for
    the two-expert Wan 2.2 models. Named as WanGP names 16-bit files."""
    model = build_transformer(arch, seed)
    original = to_original_layout(arch, model.state_dict())
    stem = f"tiny_{arch.replace('.', '_')}_finetune"
    files: dict[str, Path] = {}
    if arch.startswith("vace_"):
        module = {k: v for k, v in original.items() if k.startswith(("vace_blocks.", "vace_patch_embedding."))}
        main = {k: v for k, v in original.items() if k not in module}
        files["transformer"] = save_original(main, folder / f"{stem}_m{dtype}.safetensors", dtype)
        module_name = f"tiny_{arch.replace('.', '_')}_module_m{dtype}.safetensors"
        if arch == "vace_14B":
            module_name = f"tiny_vace_module_m{dtype}.safetensors"
        files["module"] = save_original(module, folder / module_name, dtype)
    elif arch in TWO_EXPERTS:
        # high-noise expert in URLs, low-noise expert in URLs2, as WanGP names them
        low = to_original_layout(arch, build_transformer(arch, seed + 50).state_dict())
        files["transformer"] = save_original(original, folder / f"tiny_{arch}_high_m{dtype}.safetensors", dtype)
        files["transformer2"] = save_original(low, folder / f"tiny_{arch}_low_m{dtype}.safetensors", dtype)
    else:
        files["transformer"] = save_original(original, folder / f"{stem}_m{dtype}.safetensors", dtype)
    return files


def quantize_reference(src: Path, dst: Path) -> Path:
    """int8 file in WanGP's format made by optimum-quanto itself (quantize + freeze the
    ``blocks`` linears of a module tree mirroring the file's keys), used until/besides
    ``tunehub quantize``."""
    import base64

    import torch
    from optimum.quanto import freeze, qint8, quantize, quantization_map
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(src))
    root = torch.nn.Module()
    linears: dict[str, torch.nn.Linear] = {}
    for key, tensor in tensors.items():
        if key.endswith(".weight") and tensor.dim() == 2 and re.match(r"^(blocks|double_blocks|single_blocks|vace_blocks)\.", key):
            name = key[: -len(".weight")]
            bias = tensors.get(name + ".bias")
            layer = torch.nn.Linear(tensor.shape[1], tensor.shape[0], bias=bias is not None, dtype=tensor.dtype)
            with torch.no_grad():
                layer.weight.copy_(tensor)
                if bias is not None:
                    layer.bias.copy_(bias)
            linears[name] = layer
    for name, layer in linears.items():
        parent = root
        parts = name.split(".")
        for part in parts[:-1]:
            if not hasattr(parent, part):
                parent.add_module(part, torch.nn.Module())
            parent = getattr(parent, part)
        parent.add_module(parts[-1], layer)
    quantize(root, weights=qint8)
    freeze(root)
    out = {k: v for k, v in tensors.items() if not any(k == f"{n}.weight" or k == f"{n}.bias" for n in linears)}
    out.update({k: v.contiguous() for k, v in root.state_dict().items()})
    qmap = quantization_map(root)
    metadata = {
        "format": "pt",
        "quantization_format": "quanto",
        "quantization_map_base64": base64.b64encode(json.dumps(qmap).encode()).decode(),
    }
    save_file(out, str(dst), metadata=metadata)
    return dst


@dataclass
class TinyModels:
    """Built once per session: base repo folders and finetune files per architecture."""

    root: Path
    base_repos: dict[str, Path] = field(default_factory=dict)
    finetunes: dict[str, dict[str, Path]] = field(default_factory=dict)
    int8: dict[str, dict[str, Path]] = field(default_factory=dict)

    def base_repo(self, arch: str) -> Path:
        if arch not in self.base_repos:
            self.base_repos[arch] = build_base_repo(arch, self.root / "base" / arch, seed=ALL_ARCHS.index(arch))
        return self.base_repos[arch]

    def finetune(self, arch: str) -> dict[str, Path]:
        if arch not in self.finetunes:
            self.finetunes[arch] = write_finetune(arch, self.root / "ckpts", seed=100 + ALL_ARCHS.index(arch))
        return self.finetunes[arch]

    def finetune_int8(self, arch: str) -> dict[str, Path]:
        """The finetune's files quantized to int8 with optimum-quanto (WanGP's names)."""
        if arch not in self.int8:
            result = {}
            for role, path in self.finetune(arch).items():
                name = path.name.replace("_mbf16", "_quanto_mbf16_int8")
                result[role] = quantize_reference(path, path.with_name(name))
            self.int8[arch] = result
        return self.int8[arch]


def publish_base_repo(server: Any, folder: Path, repo_id: str) -> str:
    """Upload a base repo folder to a test Hub server (``hub_server`` fixture object,
    alice's write token); returns the repo id."""
    api = server.api()
    api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="tiny base repo")
    return repo_id
