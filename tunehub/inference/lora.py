"""LoRAs on a built transformer: fused into 16-bit weights, unfused adapters on int8 layers.

A LoRA file in any format diffusers reads for the pipeline (the original Wan / Kohya /
ComfyUI layouts as well as diffusers' own: the pipeline class's ``lora_state_dict`` does the
conversion and folds ``alpha`` in) becomes, per linear module, a pair ``A`` (rank x in),
``B`` (out x rank) and optionally a bias delta. Then, per expert and per LoRA:

- the strength over the steps this expert runs is constant and the layer holds a 16-bit
  weight: ``W += s * B @ A`` once (computed in float32); strength 0: nothing is touched;
- otherwise (an int8 layer, whose weight stays int8, or a strength that changes with the
  step, WanGP's ``"0.9,0.8"``): the layer is wrapped in :class:`LoraAdapted`, which adds
  ``s_t * B(A(x))``; ``A``, ``B`` and the strength are its buffers, so offloading and
  ``.to()`` move them with it, and the strength is updated in place before each step.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from tunehub.errors import InferenceError

_STRENGTH = re.compile(r"^[\s0-9.,;+-]+$")


def parse_lora_option(value: str) -> tuple[str, str]:
    """``--lora FILE[:STRENGTH]`` -> (file, strength text; "1" when absent). STRENGTH may use
    WanGP's multiplier syntax (``0.8``, ``1;0``, ``0.9,0.7``)."""
    path, sep, strength = value.rpartition(":")
    if sep and path and _STRENGTH.match(strength) and any(ch.isdigit() for ch in strength):
        return path, strength.strip()
    return value, "1"


# ------------------------------------------------------------------ reading


@dataclass
class LoraWeights:
    """One LoRA file read for a transformer: module name -> (A, B, bias delta or None)."""

    path: Path
    modules: dict[str, tuple[Any, Any, Any]]
    ignored: list[str] = field(default_factory=list)  # keys for other components (text encoder)


def read_lora(path: Path, pipeline_class: Any) -> LoraWeights:
    """Read ``path`` with the pipeline's own LoRA converter (diffusers' loader mixin)."""
    loader = getattr(pipeline_class, "lora_state_dict", None)
    if loader is None:
        raise InferenceError(f"diffusers' {pipeline_class.__name__} has no LoRA support; cannot apply {path.name}")
    try:
        loaded = loader(str(path))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise InferenceError(f"LoRA {path}: diffusers cannot read it: {exc}") from None
    alphas: dict[str, Any] = {}
    if isinstance(loaded, tuple):
        state = loaded[0]
        if len(loaded) > 1 and isinstance(loaded[1], dict):
            alphas = loaded[1]
    else:
        state = loaded
    modules: dict[str, dict[str, Any]] = {}
    ignored: list[str] = []
    for key, tensor in state.items():
        if not key.startswith("transformer."):
            ignored.append(key)
            continue
        name = key[len("transformer.") :]
        for suffix, part in ((".lora_A.weight", "A"), (".lora_B.weight", "B"), (".lora_B.bias", "bias")):
            if name.endswith(suffix):
                modules.setdefault(name[: -len(suffix)], {})[part] = tensor
                break
        else:
            ignored.append(key)
    result: dict[str, tuple[Any, Any, Any]] = {}
    for name, parts in modules.items():
        if "A" not in parts or "B" not in parts:
            raise InferenceError(f"LoRA {path}: {name} has only one of its two matrices (lora_A / lora_B)")
        a, b = parts["A"].float(), parts["B"].float()
        alpha = alphas.get(f"transformer.{name}.alpha", alphas.get(f"{name}.alpha"))
        if alpha is not None:
            b = b * (float(alpha) / a.shape[0])
        result[name] = (a, b, parts.get("bias"))
    if not result:
        raise InferenceError(f"LoRA {path}: no transformer layer in it (is it a LoRA for this model family?)")
    return LoraWeights(path, result, ignored)


# ------------------------------------------------------------------ applying


def _is_16bit_linear(module: Any) -> bool:
    import torch
    from torch import nn

    weight = getattr(module, "weight", None)
    return (
        isinstance(module, nn.Linear)
        and getattr(module, "weight_qtype", None) is None  # optimum-quanto's QLinear
        and type(weight) is nn.Parameter
        and weight.dtype in (torch.bfloat16, torch.float16, torch.float32)
    )


def _out_features(module: Any) -> tuple[int, int] | None:
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return int(module.out_features), int(module.in_features)
    return None


@dataclass
class ExpertLoras:
    """The LoRAs applied to one transformer: what was fused, the adapters and their schedules."""

    fused: int = 0  # layers changed in place
    adapters: int = 0  # layers with an unfused adapter
    skipped_modules: int = 0  # LoRA modules this transformer does not have
    # (strength buffer, per-step strengths) for adapters whose strength changes with the step
    schedules: list[tuple[Any, list[float]]] = field(default_factory=list)

    def set_step(self, step: int) -> None:
        for buffer, strengths in self.schedules:
            if 0 <= step < len(strengths):
                buffer.fill_(strengths[step])


class LoraAdapted(nn.Module):
    """A layer with unfused LoRA adapters: ``base(x) + sum_i s_i * (B_i(A_i(x)) + bias_i)``.

    The layer is replaced by this module (not hooked): ``torch.compile`` of the blocks traces
    it like any module (forward hooks on inner layers were dropped by regional compilation:
    measured on the H200, the compiled output equalled the output without the LoRA). ``A``,
    ``B`` and the strengths are buffers, so offloading and ``.to()`` move them with the layer.
    """

    def __init__(self, base: Any) -> None:
        super().__init__()
        self.base = base
        self.count = 0

    @property
    def in_features(self) -> int:
        return int(self.base.in_features)

    @property
    def out_features(self) -> int:
        return int(self.base.out_features)

    def add(self, a: Any, b: Any, bias: Any, strength: float, dtype: Any, device: Any) -> Any:
        import torch

        index = self.count
        self.register_buffer(f"a{index}", a.to(device, dtype), persistent=False)
        self.register_buffer(f"b{index}", b.to(device, dtype), persistent=False)
        self.register_buffer(f"bias{index}", None if bias is None else bias.to(device, dtype), persistent=False)
        strength_buffer = torch.tensor(float(strength), dtype=torch.float32, device=device)
        self.register_buffer(f"s{index}", strength_buffer, persistent=False)
        self.count += 1
        return strength_buffer

    def forward(self, x: Any) -> Any:
        import torch.nn.functional as F

        output = self.base(x)
        activation = getattr(self.base, "input_activation", None)
        if activation is not None and self.count:  # the base applies it to its input: so do the adapters
            from tunehub.inference.int8_linear import apply_input_activation

            x = apply_input_activation(x, activation)
        for index in range(self.count):
            a = getattr(self, f"a{index}")
            delta = F.linear(F.linear(x.to(a.dtype), a), getattr(self, f"b{index}"), getattr(self, f"bias{index}"))
            output = output + (getattr(self, f"s{index}").to(delta.dtype) * delta).to(output.dtype)
        return output


def _add_adapter(model: Any, name: str, module: Any, a: Any, b: Any, bias: Any, strength: float) -> Any:
    """Wrap ``model.<name>`` in a :class:`LoraAdapted` (once) and add one adapter; returns
    the strength buffer."""
    import torch

    if not isinstance(module, LoraAdapted):
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        wrapped = LoraAdapted(module)
        setattr(parent, leaf, wrapped)
        module = wrapped
    base = module.base
    tensors = [t for t in list(base.parameters()) + list(base.buffers()) if t is not None]
    device = tensors[0].device if tensors else a.device
    dtype = getattr(base, "dtype", None)
    if not isinstance(dtype, torch.dtype):
        weight = getattr(base, "weight", None)
        dtype = weight.dtype if isinstance(weight, torch.Tensor) and weight.dtype.is_floating_point else torch.bfloat16
    return module.add(a, b, bias, strength, dtype, device)


def apply_to_transformer(transformer: Any, loras: Sequence[LoraWeights], strengths: Sequence[list[float]]) -> ExpertLoras:
    """Apply each LoRA with its per-step ``strengths`` (the steps this transformer runs; empty:
    it never runs). Fused where the strength is constant and the layer is 16-bit."""
    import torch

    applied = ExpertLoras()
    modules = dict(transformer.named_modules())
    wrapped: dict[str, Any] = {}  # name -> its LoraAdapted, for a second LoRA on the same layer
    for lora, steps in zip(loras, strengths):
        if not steps or all(value == 0 for value in steps):
            continue
        constant = all(value == steps[0] for value in steps)
        matched = 0
        for name, (a, b, bias) in lora.modules.items():
            module = modules.get(name)
            if module is not None and name in wrapped:
                module = wrapped[name]
            if module is None:
                applied.skipped_modules += 1
                continue
            shape = _out_features(module)
            if shape is not None and (b.shape[0], a.shape[1]) != shape:
                raise InferenceError(
                    f"LoRA {lora.path.name}: {name} is {b.shape[0]}x{a.shape[1]} but the model's layer is "
                    f"{shape[0]}x{shape[1]}: this LoRA is for another model size"
                )
            matched += 1
            if constant and _is_16bit_linear(module):
                with torch.no_grad():
                    weight = module.weight
                    delta = steps[0] * (b.to(weight.device) @ a.to(weight.device))
                    weight.copy_((weight.float() + delta).to(weight.dtype))
                    if bias is not None:
                        if module.bias is None:
                            raise InferenceError(f"LoRA {lora.path.name}: {name} changes a bias the layer lacks")
                        module.bias.copy_((module.bias.float() + steps[0] * bias.float().to(weight.device)).to(module.bias.dtype))
                applied.fused += 1
            else:
                buffer = _add_adapter(transformer, name, module, a, b, bias, steps[0])
                wrapped[name] = transformer.get_submodule(name)
                applied.adapters += 1
                if not constant:
                    applied.schedules.append((buffer, steps))
        if matched == 0:
            raise InferenceError(
                f"LoRA {lora.path.name}: none of its {len(lora.modules)} layers exist in this transformer "
                "(a LoRA for another architecture?)"
            )
    return applied
