"""Load an int8 (quanto) file into a model without ever building 16-bit weights.

optimum-quanto's ``requantize`` first materialises every quantized module at full
16-bit size on the CPU, then moves the model, then copies the state dict in. Here the
model can stay on the meta device: each quantized ``nn.Linear`` is replaced by a
``QLinear`` whose weight is a ``WeightQBytesTensor`` made directly from the file's
``_data`` (int8) and ``_scale`` tensors, already on the target device; every other
parameter and buffer is assigned from the file (cast to the model's declared dtype,
as ``load_state_dict`` does). The resulting modules are the ones quanto itself builds,
so forward passes give the same outputs as ``requantize``.

From a file on CPU the tensors are views of a private memory map (pages are read when
first used, nothing is copied); onto CUDA the file is streamed through pinned buffers
into one device buffer, so no host copy of the weights is made either.

The inference code, which renames keys from the original Wan layout to the diffusers
one, passes its own mapping of tensors and map: :func:`load_quantized`.
"""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunehub.errors import QuantizationError
from tunehub.quant.format import read_header, read_quantization_map

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = ["LoadReport", "load_quantized", "load_quantized_file", "TensorSource"]


@dataclass
class LoadReport:
    """What was loaded, and what did not match between the model and the tensors."""

    quantized: int = 0
    loaded: int = 0
    missing: list[str] = field(default_factory=list)  # model tensors the source lacks
    unexpected: list[str] = field(default_factory=list)  # source tensors the model lacks
    seconds: float = 0.0


class TensorSource:
    """Tensors by key from a file path, an open ``safe_open`` handle, or a mapping.

    ``get`` returns the tensor on ``device``; keys are the state-dict names the model uses.
    """

    def __init__(self, source: Any, device: Any) -> None:
        import torch

        self.device = torch.device(device)
        self._handle = None
        self._buffer = None
        self._entries: dict[str, Any] = {}
        self._mapping: Mapping[str, Any] | None = None
        self.name = "the state dict"
        if isinstance(source, (str, os.PathLike)):
            self.name = str(source)
            if not Path(source).is_file():
                raise QuantizationError(f"{source}: no such file")
            header = read_header(source)  # a clear error for a file that is not safetensors
            self._entries = header.by_key()
            self._buffer = _read_data_section(Path(source), header.data_start, self.device)
            self._keys = [entry.key for entry in header.tensors]
        elif hasattr(source, "get_tensor") and hasattr(source, "keys"):
            self._handle = source
            self._keys = list(source.keys())
        elif isinstance(source, Mapping):
            self._mapping = source
            self._keys = list(source.keys())
        else:
            raise TypeError("state_dict_source must be a path, a safe_open handle or a mapping of tensors")
        self._key_set = set(self._keys)

    def keys(self) -> list[str]:
        return list(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._key_set

    def get(self, key: str) -> torch.Tensor:
        if key not in self._key_set:
            raise QuantizationError(f"{self.name}: tensor '{key}' is missing")
        if self._buffer is not None:
            return _view(self._buffer, self._entries[key])
        if self._mapping is not None:
            tensor = self._mapping[key]
        else:
            tensor = self._handle.get_tensor(key)
        if tensor.device != self.device:
            tensor = tensor.to(self.device)
        return tensor


def _read_data_section(path: Path, data_start: int, device: torch.device) -> torch.Tensor:
    """The file's tensor bytes in one buffer on ``device``.

    On CPU: a memory map (no copy). On CUDA: read sequentially in large chunks through two
    pinned staging buffers that alternate, so reading the next chunk overlaps the transfer
    of the last, into one device buffer; no host copy of the whole file is ever made.
    """
    import torch

    size = path.stat().st_size - data_start
    chunk = 64 * 1024 * 1024
    if device.type == "cpu":
        # A private (copy-on-write) mapping: tensors view the page cache, nothing is copied.
        # Pages are read when first used, as safetensors and requantize do.
        with open(path, "rb") as handle:
            mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        return torch.frombuffer(mapping, dtype=torch.uint8, offset=data_start, count=size)
    fd = os.open(path, os.O_RDONLY)
    try:
        buffer = torch.empty(size, dtype=torch.uint8, device=device)
        staging = [torch.empty(chunk, dtype=torch.uint8, pin_memory=True) for _ in range(2)]
        done = [None, None]
        stream = torch.cuda.Stream(device)
        for index, offset in enumerate(range(0, size, chunk)):
            slot = index % 2
            if done[slot] is not None:
                done[slot].synchronize()  # that staging buffer's last copy has finished
            count = min(chunk, size - offset)
            _pread_exact(fd, memoryview(staging[slot].numpy())[:count], data_start + offset, path)
            with torch.cuda.stream(stream):
                buffer[offset : offset + count].copy_(staging[slot][:count], non_blocking=True)
                done[slot] = torch.cuda.Event()
                done[slot].record(stream)
        stream.synchronize()
        return buffer
    finally:
        os.close(fd)


def _pread_exact(fd: int, view: memoryview, offset: int, path: Path) -> None:
    done = 0
    while done < len(view):
        count = os.preadv(fd, [view[done:]], offset + done)
        if count == 0:
            raise QuantizationError(f"{path}: file ended early (truncated or changed while loading)")
        done += count


_DTYPES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I16": "int16",
    "U16": "uint16",
    "F16": "float16",
    "BF16": "bfloat16",
    "I32": "int32",
    "U32": "uint32",
    "F32": "float32",
    "I64": "int64",
    "U64": "uint64",
    "F64": "float64",
}


def _view(buffer: torch.Tensor, entry: Any) -> torch.Tensor:
    """The tensor ``entry`` describes, as a view into the data buffer (a copy when unaligned)."""
    import torch

    dtype = getattr(torch, _DTYPES[entry.dtype])
    raw = buffer[entry.start : entry.end]
    itemsize = torch.empty((), dtype=dtype).element_size()
    if entry.start % itemsize:
        raw = raw.clone()
    return raw.view(dtype).reshape(entry.shape)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, module)


def _empty_qlinear(
    templates: dict[tuple, Any], in_features: int, out_features: int, bias: bool, dtype: Any, qtype: Any
) -> Any:
    """A QLinear on the meta device. Building one runs nn.Linear's initialisation (slow even
    on meta), so one is built per shape and the others are shallow copies of it, each with
    its own containers (parameters, buffers, hooks)."""
    from optimum.quanto.nn import QLinear

    key = (in_features, out_features, bias, dtype, qtype.name)
    template = templates.get(key)
    if template is None:
        template = QLinear(
            in_features,
            out_features,
            bias,
            dtype=dtype,
            device="meta",
            weights=qtype,
            activations=None,
            quantize_input=True,
        )
        templates[key] = template
    qlinear = QLinear.__new__(QLinear)
    qlinear.__dict__.update(
        {name: value.copy() if isinstance(value, (dict, set, list)) else value for name, value in vars(template).items()}
    )
    return qlinear


def _quantized_linear(
    name: str, linear: Any, config: dict[str, str], source: TensorSource, templates: dict[tuple, Any]
) -> Any:
    import torch
    from optimum.quanto import qtypes
    from optimum.quanto.tensor.weights import WeightQBytesTensor

    weights = config.get("weights", "none")
    activations = config.get("activations", "none")
    qtype = qtypes.get(weights)
    if qtype is None or qtype.bits != 8 or activations != "none":
        raise QuantizationError(
            f"{source.name}: layer '{name}' is quantized as weights={weights}, activations={activations}; "
            f"only 8-bit weights without activation quantization are supported (use optimum.quanto.requantize)"
        )
    data = source.get(f"{name}.weight._data")
    scale = source.get(f"{name}.weight._scale")
    shape = (linear.out_features, linear.in_features)
    if tuple(data.shape) != shape:
        raise QuantizationError(
            f"{source.name}: '{name}.weight._data' has shape {list(data.shape)}, the model expects {list(shape)}"
        )
    # Tensors viewed straight from a memory-mapped file keep the file's alignment; CPU int8
    # matmul kernels crash on unaligned weights, so such data gets its own (aligned) copy.
    if data.device.type == "cpu" and data.data_ptr() % 64:
        data = data.clone()
    if scale.device.type == "cpu" and scale.data_ptr() % 64:
        scale = scale.clone()
    bias_key = f"{name}.bias"
    qlinear = _empty_qlinear(
        templates, linear.in_features, linear.out_features, linear.bias is not None, scale.dtype, qtype
    )
    # What quanto's own _load_from_state_dict + optimize() build, without the 16-bit detour.
    qweight = WeightQBytesTensor.create(
        qtype, 0, torch.Size(shape), (linear.in_features, 1), data, scale, activation_qtype=None
    )
    # What nn.Parameter(qweight, requires_grad=False) returns for a tensor subclass, minus
    # its detach (a fresh tensor with no autograd history already; detach re-parses quanto's
    # metadata strings, the largest cost left here).
    qweight.requires_grad_(False)
    qweight._is_param = True
    qlinear._parameters["weight"] = qweight
    if linear.bias is not None:
        qlinear._parameters["bias"] = torch.nn.Parameter(source.get(bias_key).to(scale.dtype), requires_grad=False)
    for buffer in ("input_scale", "output_scale"):
        key = f"{name}.{buffer}"
        value = source.get(key) if key in source else torch.ones((), dtype=scale.dtype, device=source.device)
        qlinear._buffers[buffer] = value.to(scale.dtype)
    qlinear.name = name
    return qlinear


def load_quantized(
    model: nn.Module,
    state_dict_source: Any,
    quantization_map: dict[str, dict[str, str]],
    device: Any = "cpu",
    *,
    strict: bool = True,
) -> LoadReport:
    """Fill ``model`` (typically built on the meta device) from quantized tensors, on ``device``.

    ``state_dict_source``: a file path, an open ``safe_open`` handle, or a mapping of
    key -> tensor (keys in the model's naming). ``quantization_map``: module name ->
    ``{"weights": "qint8", "activations": "none"}``. The modules it names must be
    ``nn.Linear`` in ``model``; they become quanto ``QLinear`` with int8 weights.
    ``strict``: raise when the model and the tensors do not match key for key.
    """
    import torch

    started = time.perf_counter()
    source = TensorSource(state_dict_source, device)
    report = LoadReport()
    consumed: set[str] = set()
    templates: dict[tuple, Any] = {}
    for name, config in quantization_map.items():
        try:
            linear = model.get_submodule(name)
        except AttributeError:
            raise QuantizationError(
                f"{source.name}: the quantization map names '{name}', which the model lacks"
            ) from None
        if not isinstance(linear, torch.nn.Linear):
            raise QuantizationError(
                f"{source.name}: the quantization map names '{name}', a {type(linear).__name__}, not a Linear layer"
            )
        _set_submodule(model, name, _quantized_linear(name, linear, config, source, templates))
        consumed.update(
            f"{name}.{suffix}" for suffix in ("weight._data", "weight._scale", "bias", "input_scale", "output_scale")
        )
        report.quantized += 1

    quantized_names = set(quantization_map)
    with torch.no_grad():
        for module_name, module in model.named_modules():
            if module_name in quantized_names:
                continue
            prefix = f"{module_name}." if module_name else ""
            for param_name, param in list(module._parameters.items()):
                if param is None:
                    continue
                key = prefix + param_name
                if key not in source:
                    report.missing.append(key)
                    continue
                tensor = source.get(key)
                if tensor.is_floating_point() and param.is_floating_point() and tensor.dtype != param.dtype:
                    tensor = tensor.to(param.dtype)
                module._parameters[param_name] = torch.nn.Parameter(tensor, requires_grad=False)
                consumed.add(key)
                report.loaded += 1
            for buffer_name, buffer in list(module._buffers.items()):
                if buffer is None or buffer_name in module._non_persistent_buffers_set:
                    continue
                key = prefix + buffer_name
                if key not in source:
                    report.missing.append(key)
                    continue
                tensor = source.get(key)
                if tensor.is_floating_point() and buffer.is_floating_point() and tensor.dtype != buffer.dtype:
                    tensor = tensor.to(buffer.dtype)
                module._buffers[buffer_name] = tensor
                consumed.add(key)
                report.loaded += 1
    report.unexpected = [key for key in source.keys() if key not in consumed]
    report.seconds = time.perf_counter() - started
    if strict and (report.missing or report.unexpected):
        parts = []
        if report.missing:
            parts.append(f"missing {len(report.missing)} tensor(s): {', '.join(report.missing[:5])}")
        if report.unexpected:
            parts.append(f"{len(report.unexpected)} unexpected tensor(s): {', '.join(report.unexpected[:5])}")
        raise QuantizationError(f"{source.name} does not match the model: {'; '.join(parts)}")
    return report


def load_quantized_file(
    model: nn.Module,
    path: str | os.PathLike[str],
    device: Any = "cpu",
    *,
    quantization_map: dict[str, dict[str, str]] | None = None,
    strict: bool = True,
) -> LoadReport:
    """:func:`load_quantized` for a file, with its map from the metadata or the sidecar ``<stem>_map.json``."""
    if quantization_map is None:
        quantization_map = read_quantization_map(path)
        if quantization_map is None:
            raise QuantizationError(
                f"{path}: no quantization map (neither '{'quantization_map_base64'}' in its metadata "
                f"nor a sidecar {Path(path).stem}_map.json beside it)"
            )
    return load_quantized(model, path, quantization_map, device, strict=strict)
