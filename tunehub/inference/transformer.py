"""Build a diffusers transformer from original-layout files (16-bit or quanto int8).

The model is built from its config with parameters on the meta device (no random init,
no memory), then every tensor is read lazily from the safetensors files, converted to the
diffusers layout by the plan from :mod:`tunehub.inference.convert`, cast to the target
dtype one at a time and assigned. Quantized layers become :class:`Int8Linear` holding the
file's int8 data and scales directly: no 16-bit copy of a quantized weight ever exists.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunehub.errors import InferenceError
from tunehub.inference.convert import Piece, quantized_conversion_plan
from tunehub.inference.int8_linear import replace_with_int8, set_int8_kernel, unfolded_gelu

_BUILD_LOCK = threading.Lock()
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@contextlib.contextmanager
def empty_weights() -> Iterator[None]:
    """Build modules with parameters on the meta device and no initialisation.

    Buffers stay real: some are computed in ``__init__`` (rotary tables) and are not in
    the checkpoint. Patches nn.Module globally for the duration, so builds are serialised
    by a lock (the daemon runs jobs in threads).
    """
    original_register = nn.Module.register_parameter
    init_names = [
        "uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
        "xavier_uniform_", "xavier_normal_", "zeros_", "ones_", "constant_", "orthogonal_",
    ]  # fmt: skip
    originals = {name: getattr(nn.init, name) for name in init_names if hasattr(nn.init, name)}

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original_register(module, name, param)
        if param is not None:
            stored = module._parameters[name]
            assert stored is not None
            module._parameters[name] = nn.Parameter(stored.to("meta"), requires_grad=stored.requires_grad)

    def skip_init(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return tensor

    with _BUILD_LOCK:
        nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign]
        for name in originals:
            setattr(nn.init, name, skip_init)
        try:
            yield
        finally:
            nn.Module.register_parameter = original_register  # type: ignore[method-assign]
            for name, function in originals.items():
                setattr(nn.init, name, function)


def read_config(config: dict[str, Any] | str | Path) -> dict[str, Any]:
    """A transformer config: a dict, a config.json file, or a folder holding one."""
    if isinstance(config, dict):
        return dict(config)
    path = Path(config)
    if path.is_dir():
        path = path / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InferenceError(f"transformer config not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise InferenceError(f"{path}: invalid JSON: {exc}") from None


def build_empty(model_class: str, config: dict[str, Any]) -> nn.Module:
    import diffusers

    cls = getattr(diffusers, model_class)
    init_config = {key: value for key, value in config.items() if not key.startswith("_")}
    with empty_weights():
        try:
            return cls.from_config(init_config)
        except TypeError as exc:
            raise InferenceError(f"config does not fit {model_class}: {exc}") from None


def _keep_fp32(model: nn.Module, key: str) -> bool:
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    parts = key.split(".")
    return any(name in parts for name in keep)


def _file_shapes(handle: Any) -> dict[str, tuple[int, ...]]:
    return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}


def _read_piece(handle: Any, piece: Piece) -> torch.Tensor:
    if piece.start is not None and piece.index is None:
        return handle.get_slice(piece.source)[piece.start : piece.stop]
    return piece.take(handle.get_tensor(piece.source))


class _DictHandle:
    """A state dict (original layout) read through the safe_open interface used here."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def __enter__(self) -> _DictHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def keys(self) -> list[str]:
        return list(self.tensors)

    def get_tensor(self, key: str) -> torch.Tensor:
        return self.tensors[key]

    def get_slice(self, key: str) -> _DictSlice:
        return _DictSlice(self.tensors[key])


class _DictSlice:
    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def get_shape(self) -> list[int]:
        return list(self.tensor.shape)

    def __getitem__(self, index: Any) -> torch.Tensor:
        return self.tensor[index]


def _open(source: str | Path | Mapping[str, torch.Tensor]) -> Any:
    from safetensors import safe_open

    if isinstance(source, Mapping):
        return _DictHandle(source)
    path = Path(source)
    try:
        return safe_open(str(path), framework="pt")
    except FileNotFoundError:
        raise InferenceError(f"weights file not found: {path}") from None
    except Exception as exc:  # safetensors raises its own error types
        raise InferenceError(f"{path}: not a readable safetensors file: {exc}") from None


def load_transformer(
    model_class: str,
    config: dict[str, Any] | str | Path,
    files: Sequence[str | Path | Mapping[str, torch.Tensor]],
    dtype: str | torch.dtype = "bf16",
    device: str | torch.device = "cpu",
    int8_kernel: str = "auto",
) -> nn.Module:
    """A ready transformer from original-layout ``files`` (the main file, then modules
    such as VACE's, merged in order; each a safetensors path or a state dict) and a
    diffusers config.

    ``int8_kernel`` for int8 files: ``quanto`` builds optimum-quanto QLinear modules
    (through :mod:`tunehub.quant.load`); the others build :class:`Int8Linear` layers
    running that kernel (see :mod:`tunehub.inference.int8_linear`)."""
    torch_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    first = "<state dict>" if isinstance(files[0], Mapping) else str(files[0])
    config_dict = read_config(config)
    model = build_empty(model_class, config_dict)
    # Declared dtypes (cheap on meta), as diffusers' loaders set them: the target dtype,
    # and in fp16 only, float32 for the modules the class keeps there (overflow).
    keep_fp32 = torch_dtype == torch.float16
    nn.Module.to(model, torch_dtype)  # ModelMixin.to warns about exactly what we handle below
    for name, module in model.named_modules():
        if keep_fp32 and name and _keep_fp32(model, name):
            nn.Module.to(module, torch.float32)
    hidden = None
    if "Hunyuan" in model_class:
        hidden = int(config_dict.get("num_attention_heads", 24)) * int(config_dict.get("attention_head_dim", 128))
    state: dict[str, torch.Tensor] = {}
    quantized_modules: list[str] = []
    origin_of: dict[str, Path] = {}
    for file in files:
        path = Path("<state dict>") if isinstance(file, Mapping) else Path(file)
        with _open(file) as handle:
            shapes = _file_shapes(handle)
            plan = quantized_conversion_plan(model_class, shapes, hidden)
            for new_key, piece in plan.plain.items():
                tensor = _read_piece(handle, piece)
                if tensor.is_floating_point():
                    tensor = tensor.to(torch.float32 if keep_fp32 and _keep_fp32(model, new_key) else torch_dtype)
                # straight to the device: host memory never holds the whole model
                state[new_key] = tensor.to(device)
                origin_of[new_key] = path
            for new_module, (old_module, piece) in plan.modules.items():
                state[f"{new_module}.weight._data"] = _read_piece(
                    handle, Piece(f"{old_module}.weight._data", piece.start, piece.stop, piece.index)
                ).to(device)
                scale = _read_piece(handle, Piece(f"{old_module}.weight._scale", piece.start, piece.stop, piece.index))
                state[f"{new_module}.weight._scale"] = scale.to(device, torch_dtype)
                quantized_modules.append(new_module)
                origin_of[new_module] = path
    if quantized_modules and int8_kernel == "quanto":
        # optimum-quanto's own QLinear modules, built straight from the int8 tensors
        from tunehub.errors import QuantizationError
        from tunehub.quant.load import load_quantized

        qmap = {name: {"weights": "qint8", "activations": "none"} for name in quantized_modules}
        try:
            load_quantized(model, state, qmap, device, strict=True)
        except QuantizationError as exc:
            raise InferenceError(f"{first}: does not fit {model_class}: {exc}") from None
        _finish(model, device)
        return model
    if quantized_modules:
        try:
            replace_with_int8(model, state, quantized_modules, torch_dtype)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise InferenceError(f"{first}: int8 layers do not fit {model_class}: {exc}") from None
    expected = set(model.state_dict().keys())
    unexpected = sorted(set(state) - expected)
    if unexpected:
        where = origin_of.get(unexpected[0], first)
        raise InferenceError(
            f"{where}: {len(unexpected)} tensor(s) do not belong to {model_class} "
            f"(e.g. {', '.join(unexpected[:3])}); is the definition's architecture right?"
        )
    model.load_state_dict(state, strict=False, assign=True)
    missing = sorted(name for name, param in model.named_parameters() if param.device.type == "meta")
    if missing:
        raise InferenceError(
            f"{first}: {len(missing)} weight(s) of {model_class} are missing "
            f"(e.g. {', '.join(missing[:3])}); is the file complete and the architecture right?"
        )
    _finish(model, device)
    if quantized_modules:
        set_int8_kernel(model, int8_kernel, device)
    return model


def _finish(model: nn.Module, device: str | torch.device) -> None:
    for param in model.parameters():
        param.requires_grad_(False)
    model.eval()
    use_sigmoid_tanh_gelu(model)
    model.to(device)


# 2 * sqrt(2 / pi): 0.5 * (1 + tanh(u)) == sigmoid(2 * u)
_TWO_SQRT_2_OVER_PI = 1.5957691216057308


def sigmoid_form_gelu(gate: torch.Tensor) -> torch.Tensor:
    """The tanh-approximated GELU, ``0.5 x (1 + tanh(u))`` with ``u = sqrt(2/pi) (x + 0.044715 x^3)``,
    written as ``x * sigmoid(2u)``: the same function, in float32 like torch's, output in the input dtype."""
    x = gate.float()
    return (x * torch.sigmoid(_TWO_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))).to(gate.dtype)


def sigmoid_tanh_gelu(gate: torch.Tensor) -> torch.Tensor:
    """The tanh GELU: :func:`sigmoid_form_gelu` while ``torch.compile`` traces (fused, it is the
    cheaper form), torch's own kernel otherwise (eager, the sigmoid form is several float32
    kernels: 0.17 s slower per Wan 1.3B forward on an H200, and more memory)."""
    if torch.compiler.is_compiling():
        return sigmoid_form_gelu(gate)
    return torch.nn.functional.gelu(gate, approximate="tanh")


def use_sigmoid_tanh_gelu(model: nn.Module) -> int:
    """Make each of ``model``'s diffusers tanh GELUs (Wan's feed-forward activation) compute
    :func:`sigmoid_tanh_gelu`; returns how many. Compiled, the activation fuses into the next
    int8 layer's row quantization; with torch's tanh (libdevice's, many instructions) that
    kernel was compute-bound, 1.55 ms a Wan 14B block against 0.38 ms for the quantization
    alone; an exponential and a reciprocal are far cheaper (H200, benchmarks/results/
    gpu_generate_14B_int8qk_h200.txt)."""
    count = 0
    for module in model.modules():
        gelu = getattr(module, "gelu", None)
        folded = gelu is unfolded_gelu  # fold_gelu_into_int8 moved it into the next int8 layer
        if type(module).__name__ == "GELU" and getattr(module, "approximate", None) == "tanh" and callable(gelu) and not folded:
            module.gelu = sigmoid_tanh_gelu  # an instance attribute: diffusers' forward calls self.gelu(x)
            count += 1
    return count


def compile_transformer_blocks(transformer: Any) -> None:
    """``torch.compile`` each repeated block (diffusers' regional compilation): the norms,
    modulation and rotary work around the matrix products fuse into few kernels. The
    first step pays the compile time."""
    if getattr(transformer, "_repeated_blocks", None):
        transformer.compile_repeated_blocks(fullgraph=False, dynamic=False)
    else:
        transformer.compile()
