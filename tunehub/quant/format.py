"""The quantized file format (WanGP / optimum-quanto) and the safetensors container.

A safetensors file is an 8-byte little-endian header length, a JSON header
(``{"__metadata__": {...}, "<key>": {"dtype", "shape", "data_offsets"}, ...}``) and
the tensor bytes. We read and write the header ourselves so that a file can be
streamed tensor by tensor without loading it. No torch here.

The quantization map says which modules are quantized and how:
``{"<module>": {"weights": "qint8", "activations": "none"}}``. It is stored base64
JSON in the metadata key ``quantization_map_base64`` (with ``quantization_format =
"quanto"``), or, in older files, in a sidecar ``<file stem>_map.json``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunehub.errors import QuantizationError

__all__ = [
    "DTYPE_SIZES",
    "TensorEntry",
    "SafetensorsHeader",
    "read_header",
    "encode_header",
    "encode_map",
    "decode_map",
    "sidecar_map_path",
    "read_quantization_map",
    "QUANTIZATION_FORMAT",
    "MAP_KEY",
    "FORMAT_KEY",
]

QUANTIZATION_FORMAT = "quanto"
FORMAT_KEY = "quantization_format"
MAP_KEY = "quantization_map_base64"
# A header bigger than this is not a real safetensors file (the reference reader's limit too).
MAX_HEADER_BYTES = 100 * 1024 * 1024

DTYPE_SIZES: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors header; offsets are relative to the data section."""

    key: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@dataclass
class SafetensorsHeader:
    """A parsed header: metadata, tensors in file order, and where the data section starts."""

    path: Path
    metadata: dict[str, str]
    tensors: list[TensorEntry]
    data_start: int

    def by_key(self) -> dict[str, TensorEntry]:
        return {entry.key: entry for entry in self.tensors}


def _bad(path: Path, message: str) -> QuantizationError:
    return QuantizationError(f"{path}: not a valid safetensors file: {message}")


def read_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Parse the header of ``path``; a clear error naming the file when it is not safetensors."""
    file_path = Path(path)
    try:
        file_size = file_path.stat().st_size
        with open(file_path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise _bad(file_path, "shorter than 8 bytes")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > MAX_HEADER_BYTES or 8 + header_len > file_size:
                raise _bad(file_path, f"header length {header_len} does not fit the file ({file_size} bytes)")
            raw = handle.read(header_len)
    except FileNotFoundError:
        raise QuantizationError(f"{file_path}: no such file") from None
    except IsADirectoryError:
        raise QuantizationError(f"{file_path}: is a folder, not a safetensors file") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(file_path, f"header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _bad(file_path, "header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise _bad(file_path, "__metadata__ is not an object")
    data_start = 8 + header_len
    data_size = file_size - data_start
    tensors = []
    for key, info in header.items():
        try:
            dtype = info["dtype"]
            shape = tuple(int(d) for d in info["shape"])
            start, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise _bad(file_path, f"tensor '{key}' has no valid dtype/shape/data_offsets") from None
        if dtype not in DTYPE_SIZES:
            raise _bad(file_path, f"tensor '{key}' has unknown dtype {dtype!r}")
        entry = TensorEntry(key, dtype, shape, start, end)
        if start < 0 or end > data_size or entry.nbytes != entry.numel * DTYPE_SIZES[dtype]:
            raise _bad(file_path, f"tensor '{key}' offsets {start}..{end} do not match its shape {list(shape)}")
        tensors.append(entry)
    tensors.sort(key=lambda entry: entry.start)
    return SafetensorsHeader(file_path, {str(k): str(v) for k, v in metadata.items()}, tensors, data_start)


def encode_header(tensors: list[TensorEntry], metadata: dict[str, str], *, pad_to: int = 8, extra: int = 0) -> bytes:
    """The length prefix plus the JSON header, padded with spaces to ``pad_to`` bytes (8, as
    safetensors does), plus ``extra`` more spaces to move the data section where wanted."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = metadata
    for entry in tensors:
        header[entry.key] = {"dtype": entry.dtype, "shape": list(entry.shape), "data_offsets": [entry.start, entry.end]}
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * ((pad_to - len(raw) % pad_to) % pad_to + extra)
    return struct.pack("<Q", len(raw)) + raw


def encode_map(quantization_map: dict[str, dict[str, str]]) -> str:
    """Base64 of the JSON map, as WanGP writes ``quantization_map_base64``."""
    return base64.b64encode(json.dumps(quantization_map, ensure_ascii=False).encode("utf-8")).decode("ascii")


def decode_map(encoded: str, *, source: str = "metadata") -> dict[str, dict[str, str]]:
    """The map from its base64 form; a clear error naming ``source`` when it is damaged."""
    try:
        value = json.loads(base64.b64decode(encoded, validate=True).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise QuantizationError(f"{source}: '{MAP_KEY}' is not base64 JSON ({exc})") from None
    return _check_map(value, source)


def _check_map(value: Any, source: str) -> dict[str, dict[str, str]]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("weights"), str) for k, v in value.items()
    ):
        raise QuantizationError(
            f"{source}: the quantization map must be an object "
            '{"<module>": {"weights": "qint8", "activations": "none"}, ...}'
        )
    return {k: {"weights": v["weights"], "activations": str(v.get("activations", "none"))} for k, v in value.items()}


def sidecar_map_path(path: str | os.PathLike[str]) -> Path:
    """``<folder>/<stem>_map.json``: where older quantized files keep their map."""
    file_path = Path(path)
    return file_path.with_name(f"{file_path.stem}_map.json")


def read_quantization_map(
    path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> dict[str, dict[str, str]] | None:
    """The map of a quantized file: from its metadata, else from its sidecar, else None."""
    file_path = Path(path)
    if metadata is None:
        metadata = read_header(file_path).metadata
    if MAP_KEY in metadata:
        return decode_map(metadata[MAP_KEY], source=str(file_path))
    sidecar = sidecar_map_path(file_path)
    if sidecar.is_file():
        try:
            value = json.loads(sidecar.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise QuantizationError(f"{sidecar}: not a JSON quantization map ({exc})") from None
        return _check_map(value, str(sidecar))
    return None
