"""Streaming int8 quantization: a 16-bit safetensors file in, WanGP's quanto int8 file out.

Nothing is ever loaded whole. The output header is computed from the input header
alone (shapes and dtypes are known before any math), written first, and every tensor
is then written at its final offset. Threads overlap the work: a reader (``preadv``
into pooled buffers, pinned ones for CUDA), compute workers (one per core on CPU, each
with one torch thread, rows in 8 MiB blocks; torch releases the GIL; on CUDA two
workers with a stream each), and a writer (``pwrite``) with a flusher that pushes
written data to the disk while the rest is computed, so the final fsync is short. Peak
memory is the two pools' budget (a few of the largest layers) plus small per-worker
scratch, whatever the file size.

The math is optimum-quanto's, op for op, in the target dtype, so the bytes are
identical to ``quantize(model, weights=qint8)`` + ``freeze`` + ``state_dict()``:
``scale = amax(|w|, rows) / 127`` (a scalar when the layer has a single output row),
``data = clamp(round(w / scale), -128, 127)`` as int8.

The output goes through :func:`tunehub.safeio.atomic_writer`: a kill at any moment
leaves no file under the final name (only a temporary that the next run removes).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunehub.errors import DiskFullError, QuantizationError
from tunehub.quant.format import (
    DTYPE_SIZES,
    FORMAT_KEY,
    MAP_KEY,
    QUANTIZATION_FORMAT,
    SafetensorsHeader,
    TensorEntry,
    encode_header,
    encode_map,
    read_header,
)
from tunehub.quant.layers import select_layers
from tunehub.safeio import TEMP_MARKER, atomic_writer

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["QuantizeResult", "QuantizationPlan", "plan_quantization", "quantize_file", "resolve_device"]

ProgressCallback = Callable[[dict[str, Any]], None]

_DTYPE_NAMES = {"bf16": "BF16", "fp16": "F16"}
_SIXTEEN_BIT = ("BF16", "F16")
# Output pieces of a quantized layer, in the order they are laid out.
_QUANT_PARTS = (".weight._scale", ".input_scale", ".output_scale", ".weight._data")
_MiB = 1024 * 1024
# How much written data may wait in the page cache before the flusher pushes it out.
_FLUSH_EVERY = 256 * _MiB
# Rows quantized at a time on CPU: per-worker scratch stays this size.
_ROW_BLOCK_BYTES = 8 * _MiB
# Pieces the CUDA path's read-ahead threads pull into the page cache.
_PREFETCH_CHUNK = 8 * _MiB
_ENV_PREFIX = "TUNEHUB_QUANT_"
_CHOICES = {"pin": ("off", "torch", "register"), "flush": ("fdatasync", "range", "off"), "prefetch": ("read", "willneed")}


@dataclass
class _Tuning:
    """How the pipeline is sized; the defaults per device, each overridable by an environment
    variable ``TUNEHUB_QUANT_<NAME>`` (for benchmarking: ``benchmarks/quantize.py`` tries several).

    - ``workers``: compute threads; ``readers``: threads reading tensors into the input pool;
    - ``pin`` (CUDA): ``off`` (pageable pool buffers; CUDA starts while reading has begun),
      ``torch`` (``pin_memory`` tensors) or ``register`` (our own mappings, ``cudaHostRegister``-ed,
      exact sizes);
    - ``budget_mb``: each pool's budget (default: from the layer sizes);
    - ``flush_mb`` / ``flush``: written data pushed to the disk every so much, by ``fdatasync``,
      ``range`` (``sync_file_range``: starts the writeback without waiting or a journal commit;
      the final fsync still makes the file durable before its rename) or ``off``;
    - ``prefetch_mb`` / ``prefetch_threads`` / ``prefetch``: the input read into the page cache
      this far ahead of the readers (``read`` into a scratch buffer, or ``willneed``: fadvise),
      starting before torch is imported and CUDA started, so that those fixed costs overlap the
      disk; 0 turns it off;
    - ``drop``: the page cache of the input behind the readers and of the output after each
      flush is dropped (``POSIX_FADV_DONTNEED``), so a 28 GB run does not fill the cache.
    """

    workers: int
    readers: int = 1
    pin: str = "off"
    budget_mb: int = 0
    flush_mb: int = 256
    flush: str = "fdatasync"
    prefetch_mb: int = 0
    prefetch_threads: int = 2
    prefetch: str = "read"
    drop: int = 0

    @classmethod
    def for_device(cls, cuda: bool, environ: Any = None) -> _Tuning:
        environ = os.environ if environ is None else environ
        if cuda:
            tuning = cls(
                workers=2, readers=1, pin="off", flush="range", prefetch_mb=2048, prefetch_threads=2, drop=1
            )
        else:
            # One compute worker per core, each with one intra-op thread: OpenMP threads that
            # spin while other processes hold the cores made quantizing 6x slower on a busy
            # 2-core machine than tensor-level parallelism.
            tuning = cls(workers=max(1, min(os.cpu_count() or 1, 4)))
        for name, default in list(vars(tuning).items()):
            value = environ.get(_ENV_PREFIX + name.upper())
            if value is None or value == "":
                continue
            if isinstance(default, int):
                try:
                    number = int(value)
                except ValueError:
                    number = -1
                if number < 0 or (name in ("workers", "readers", "prefetch_threads") and number < 1):
                    raise QuantizationError(f"{_ENV_PREFIX}{name.upper()}={value!r}: not a valid count")
                setattr(tuning, name, number)
            else:
                if value not in _CHOICES[name]:
                    raise QuantizationError(
                        f"{_ENV_PREFIX}{name.upper()}={value!r}: use one of {', '.join(_CHOICES[name])}"
                    )
                setattr(tuning, name, value)
        if not cuda:
            tuning.pin = "off"
        return tuning

    def describe(self) -> dict[str, Any]:
        return {name: value for name, value in vars(self).items()}


class _Stats:
    """Where the time went, per stage (summed over a stage's threads), for the benchmark."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.lock = threading.Lock()
        self.values: dict[str, Any] = {}

    def add(self, name: str, seconds: float, count: int = 1) -> None:
        with self.lock:
            self.values[name] = self.values.get(name, 0.0) + seconds
            if count:
                self.values[name + "_n"] = self.values.get(name + "_n", 0) + count

    def mark(self, name: str, once: bool = True) -> None:
        with self.lock:
            if not once or name not in self.values:
                self.values[name] = time.perf_counter() - self.started

    def set(self, name: str, value: Any) -> None:
        with self.lock:
            self.values[name] = value

    def rss(self, name: str) -> None:
        try:
            with open("/proc/self/statm") as handle:
                pages = int(handle.read().split()[1])
            self.set(name, round(pages * os.sysconf("SC_PAGE_SIZE") / 2**30, 3))
        except (OSError, ValueError, IndexError):
            pass

    def report(self) -> dict[str, Any]:
        with self.lock:
            return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.values.items()}


_SYNC_FILE_RANGE: Any = None


def _sync_file_range(fd: int, offset: int, nbytes: int, flags: int) -> bool:
    """``sync_file_range(2)`` through libc; False where it is missing (then the caller fdatasyncs)."""
    global _SYNC_FILE_RANGE
    if _SYNC_FILE_RANGE is None:
        try:
            function = ctypes.CDLL(None, use_errno=True).sync_file_range
            function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            function.restype = ctypes.c_int
            _SYNC_FILE_RANGE = function
        except (OSError, AttributeError):
            _SYNC_FILE_RANGE = False
    if not _SYNC_FILE_RANGE:
        return False
    if _SYNC_FILE_RANGE(fd, offset, nbytes, flags) != 0:
        number = ctypes.get_errno()
        if number in (errno.ENOSYS, errno.EINVAL, errno.ESPIPE):
            return False
        raise OSError(number, os.strerror(number))
    return True


_SFR_WRITE = 2  # SYNC_FILE_RANGE_WRITE: start writeback of the dirty pages, do not wait


def _drop_cache(fd: int, offset: int = 0, nbytes: int = 0) -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.posix_fadvise(fd, offset, nbytes, os.POSIX_FADV_DONTNEED)


class _Prefetch:
    """Threads that pull the input into the page cache ahead of the readers, ``window`` bytes at most."""

    def __init__(self, path: Path, start: int, end: int, window: int, threads: int, mode: str, stats: _Stats) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        with contextlib.suppress(AttributeError, OSError):
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        self.end = end
        self.window = window
        self.mode = mode
        self.stats = stats
        self.next = start
        self.consumer = start
        self.stopped = False
        self.cond = threading.Condition()
        self.threads = [
            threading.Thread(target=self._run, name=f"tunehub-quant-prefetch-{n}", daemon=True) for n in range(threads)
        ]
        for thread in self.threads:
            thread.start()

    def advance(self, position: int) -> None:
        """The readers got to ``position``: the window moves on."""
        with self.cond:
            if position > self.consumer:
                self.consumer = position
                self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        for thread in self.threads:
            thread.join()
        os.close(self.fd)

    def _run(self) -> None:
        scratch = memoryview(bytearray(_PREFETCH_CHUNK)) if self.mode == "read" else None
        busy = 0.0
        fetched = 0
        try:
            while True:
                with self.cond:
                    while not self.stopped and self.next < self.end and self.next >= self.consumer + self.window:
                        self.cond.wait()
                    if self.stopped or self.next >= self.end:
                        return
                    offset = max(self.next, self.consumer)
                    count = min(_PREFETCH_CHUNK, self.end - offset)
                    self.next = offset + count
                began = time.perf_counter()
                if scratch is None:
                    os.posix_fadvise(self.fd, offset, count, os.POSIX_FADV_WILLNEED)
                else:
                    done = 0
                    while done < count:
                        got = os.preadv(self.fd, [scratch[: count - done]], offset + done)
                        if got <= 0:
                            return  # the readers report a short file
                        done += got
                busy += time.perf_counter() - began
                fetched += count
        except OSError:
            return  # only a hint: the readers read (and report) for real
        finally:
            self.stats.add("prefetch_busy_s", busy, 0)
            self.stats.add("prefetch_gb", fetched / 1e9, 0)


@dataclass
class _Unit:
    """One source tensor and what it becomes in the output."""

    source: TensorEntry
    module: str | None  # set when this is a quantized layer's weight
    outputs: list[TensorEntry] = field(default_factory=list)


@dataclass
class QuantizationPlan:
    """Everything decided from the headers before any byte is read."""

    source: Path
    header: SafetensorsHeader
    dtype: str  # "bf16" | "fp16": the 16-bit dtype of the output
    layout: str | None
    modules: list[str]
    units: list[_Unit]
    outputs: list[TensorEntry]
    metadata: dict[str, str]
    header_bytes: bytes

    @property
    def output_size(self) -> int:
        return len(self.header_bytes) + sum(entry.nbytes for entry in self.outputs)

    @property
    def input_size(self) -> int:
        return sum(unit.source.nbytes for unit in self.units)

    @property
    def quantization_map(self) -> dict[str, dict[str, str]]:
        return {module: {"weights": "qint8", "activations": "none"} for module in self.modules}


@dataclass
class QuantizeResult:
    """What :func:`quantize_file` did."""

    source: Path
    output: Path
    dtype: str
    layout: str | None
    quantized_layers: int
    tensors: int
    bytes_read: int
    bytes_written: int
    seconds: float
    device: str
    # Where the time went (stage timings, the tuning used): for benchmarks; only in the
    # JSON when TUNEHUB_QUANT_STATS is set.
    stats: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data = self._json()
        if self.stats is not None and os.environ.get(_ENV_PREFIX + "STATS"):
            data["stats"] = self.stats
        return data

    def _json(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "output": str(self.output),
            "dtype": self.dtype,
            "layout": self.layout,
            "quantized_layers": self.quantized_layers,
            "tensors": self.tensors,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "seconds": round(self.seconds, 3),
            "device": self.device,
        }


# --- planning (no torch) ---------------------------------------------------------------


def _source_dtype(header: SafetensorsHeader, modules: list[str]) -> str:
    by_key = header.by_key()
    dtypes = {by_key[f"{module}.weight"].dtype for module in modules}
    if dtypes == {"BF16"}:
        return "bf16"
    if dtypes == {"F16"}:
        return "fp16"
    found = ", ".join(sorted(dtypes))
    raise QuantizationError(
        f"{header.path}: the layers to quantize are {found}, not one 16-bit dtype; choose the output "
        f"dtype with --dtype bf16 or --dtype fp16"
    )


def plan_quantization(
    source: str | os.PathLike[str],
    *,
    dtype: str | None = None,
    layers: str | Sequence[str] | None = None,
) -> QuantizationPlan:
    """Read ``source``'s header and decide every output tensor, offset and metadata key."""
    header = read_header(source)
    if dtype is not None and dtype not in _DTYPE_NAMES:
        raise QuantizationError(f"dtype must be bf16 or fp16, got {dtype!r}")
    if (
        header.metadata.get(FORMAT_KEY)
        or MAP_KEY in header.metadata
        or any(entry.key.endswith(".weight._data") for entry in header.tensors)
    ):
        raise QuantizationError(f"{header.path}: already quantized (it has quanto int8 tensors or a quantization map)")
    candidates = [(e.key, e.dtype, e.shape) for e in header.tensors if e.numel > 0]
    modules, layout = select_layers(candidates, layers, source=str(header.path))
    target = dtype or _source_dtype(header, modules)
    target_name = _DTYPE_NAMES[target]
    quantized = {f"{module}.weight": module for module in modules}

    units: list[_Unit] = []
    for entry in header.tensors:
        module = quantized.get(entry.key)
        unit = _Unit(entry, module)
        if module is None:
            # Other 16-bit tensors follow the model's dtype (as when WanGP loads it); fp32 stays.
            out_dtype = target_name if entry.dtype in _SIXTEEN_BIT else entry.dtype
            size = entry.numel * DTYPE_SIZES[out_dtype]
            unit.outputs.append(TensorEntry(entry.key, out_dtype, entry.shape, 0, size))
        else:
            rows, cols = entry.shape
            scale_shape: tuple[int, ...] = (rows, 1) if rows > 1 else ()
            scale_count = rows if rows > 1 else 1
            unit.outputs += [
                TensorEntry(module + _QUANT_PARTS[0], target_name, scale_shape, 0, 2 * scale_count),
                TensorEntry(module + _QUANT_PARTS[1], target_name, (), 0, 2),
                TensorEntry(module + _QUANT_PARTS[2], target_name, (), 0, 2),
                TensorEntry(module + _QUANT_PARTS[3], "I8", (rows, cols), 0, rows * cols),
            ]
        units.append(unit)

    # Lay the tensors out so that each starts aligned to its element size (torch needs it to
    # view them in place): 8-byte, then 4-byte element types, then the int8 data, then the
    # 16-bit tensors, then any odd-length 1-byte tensor. The header is padded so that the int8
    # block starts on a 64-byte file offset: int8 matmul kernels fault on unaligned weights
    # viewed straight from a memory-mapped file.
    all_outputs = [out for unit in units for out in unit.outputs]
    size_of = {o.key: DTYPE_SIZES[o.dtype] for o in all_outputs}
    wide8 = [o for o in all_outputs if size_of[o.key] >= 8]
    wide4 = [o for o in all_outputs if size_of[o.key] == 4]
    bytes1 = [o for o in all_outputs if size_of[o.key] == 1 and o.nbytes % 2 == 0]
    bytes1.sort(key=lambda o: o.nbytes % 64 != 0)  # stable: the 64-multiples first keep alignment
    bytes2 = [o for o in all_outputs if size_of[o.key] == 2]
    odd = [o for o in all_outputs if size_of[o.key] == 1 and o.nbytes % 2]
    placed: dict[str, TensorEntry] = {}
    offset = 0
    for entry in wide8 + wide4 + bytes1 + bytes2 + odd:
        placed[entry.key] = TensorEntry(entry.key, entry.dtype, entry.shape, offset, offset + entry.nbytes)
        offset += entry.nbytes
    for unit in units:
        unit.outputs = [placed[out.key] for out in unit.outputs]
    ordered = sorted(placed.values(), key=lambda entry: entry.start)
    if len(placed) != len(all_outputs):
        raise QuantizationError(f"{header.path}: two output tensors would share a name; refusing to write")
    wide_bytes = sum(o.nbytes for o in wide8 + wide4)
    data_alignment = 8 if wide8 else 4

    metadata = dict(header.metadata)
    metadata.setdefault("format", "pt")
    metadata[FORMAT_KEY] = QUANTIZATION_FORMAT
    plan = QuantizationPlan(
        source=header.path,
        header=header,
        dtype=target,
        layout=layout.id if layout else None,
        modules=modules,
        units=units,
        outputs=ordered,
        metadata=metadata,
        header_bytes=b"",
    )
    metadata[MAP_KEY] = encode_map(plan.quantization_map)
    plan.header_bytes = encode_header(ordered, metadata)
    # Pad the header (JSON allows trailing spaces) so the int8 block lands on 64 bytes.
    for extra in range(0, 64, data_alignment):
        candidate = encode_header(ordered, metadata, pad_to=data_alignment, extra=extra)
        if (len(candidate) + wide_bytes) % 64 == 0:
            plan.header_bytes = candidate
            break
    return plan


# --- buffers and threads ------------------------------------------------------------


class _Aborted(Exception):
    """Another stage failed; this one stops quietly."""


class _BufferPool:
    """Reusable byte buffers under a budget (fresh big allocations cost page faults each time).

    ``acquire`` blocks while the budget is used by buffers in flight; a single request
    bigger than the whole budget is still served once nothing else is held.
    """

    def __init__(self, budget: int, pin: str = "off", stats: _Stats | None = None) -> None:
        self.budget = budget
        self.pin = pin  # "off" | "torch" | "register"
        self.stats = stats
        self.allocated = 0
        self.in_use = 0
        self.free: list[Any] = []
        self.registered: dict[int, int] = {}  # id(buffer) -> its cudaHostRegister-ed address
        self.closed = False
        self.cond = threading.Condition()

    def _allocate(self, size: int) -> Any:
        import torch

        began = time.perf_counter()
        try:
            if self.pin == "torch":
                return torch.empty(size, dtype=torch.uint8, pin_memory=True)
            # Anonymous mappings of our own: a dropped buffer goes back to the system at once,
            # where malloc (or torch's pinned-memory cache, which also rounds sizes up to powers
            # of two) would keep freed blocks and RSS would creep.
            buf = torch.frombuffer(mmap.mmap(-1, size), dtype=torch.uint8)
            if self.pin == "register":
                try:
                    code = torch.cuda.cudart().cudaHostRegister(buf.data_ptr(), size, 0)
                    code = int(getattr(code, "value", code))
                except Exception:  # noqa: BLE001 - no cudart binding: torch's pinned memory instead
                    code = -1
                if code != 0:
                    self.pin = "torch"
                    if self.stats is not None:
                        self.stats.set("pin_fallback", f"cudaHostRegister gave {code}")
                    return torch.empty(size, dtype=torch.uint8, pin_memory=True)
                self.registered[id(buf)] = buf.data_ptr()
            return buf
        finally:
            if self.stats is not None:
                self.stats.add("pool_alloc_s", time.perf_counter() - began)

    def _free(self, buf: Any) -> None:
        address = self.registered.pop(id(buf), None)
        if address is not None:
            import torch

            with contextlib.suppress(Exception):
                torch.cuda.cudart().cudaHostUnregister(address)

    def acquire(self, nbytes: int) -> Any:
        size = max(_MiB, -(-nbytes // _MiB) * _MiB)  # whole MiB, so buffers get reused
        with self.cond:
            while True:
                if self.closed:
                    raise _Aborted()
                fits = [buf for buf in self.free if size <= buf.numel() <= 2 * size]
                if fits:
                    buf = min(fits, key=lambda b: b.numel())
                    self._take(buf)
                    self.in_use += buf.numel()
                    return buf
                # Drop idle buffers of the wrong size before growing.
                while self.free and self.allocated + size > self.budget:
                    dropped = max(self.free, key=lambda b: b.numel())
                    self._take(dropped)
                    self.allocated -= dropped.numel()
                    self._free(dropped)
                if self.allocated + size <= self.budget or self.in_use == 0:
                    buf = self._allocate(size)
                    self.allocated += size
                    self.in_use += size
                    return buf
                self.cond.wait()

    def _take(self, buf: Any) -> None:
        # By identity: ``list.remove`` would compare tensors element-wise.
        index = next(i for i, candidate in enumerate(self.free) if candidate is buf)
        del self.free[index]

    def release(self, buf: Any) -> None:
        with self.cond:
            self.in_use -= buf.numel()
            self.free.append(buf)
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            for buf in self.free:
                self._free(buf)
            self.free.clear()
            self.cond.notify_all()


def _torch_dtype(name: str) -> torch.dtype:
    import torch

    return {
        "BOOL": torch.bool,
        "U8": torch.uint8,
        "I8": torch.int8,
        "F8_E4M3": torch.float8_e4m3fn,
        "F8_E5M2": torch.float8_e5m2,
        "I16": torch.int16,
        "U16": torch.uint16,
        "F16": torch.float16,
        "BF16": torch.bfloat16,
        "I32": torch.int32,
        "U32": torch.uint32,
        "F32": torch.float32,
        "I64": torch.int64,
        "U64": torch.uint64,
        "F64": torch.float64,
    }[name]


def _typed(buf: Any, entry: TensorEntry, dtype_name: str | None = None) -> torch.Tensor:
    """A tensor of ``entry``'s dtype and shape viewing the start of the byte buffer ``buf``."""
    dtype = _torch_dtype(dtype_name or entry.dtype)
    return buf[: entry.nbytes].view(dtype).view(entry.shape)


def _as_bytes(tensor: torch.Tensor) -> memoryview:
    import torch

    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy())


def _read_into(fd: int, buf: Any, nbytes: int, offset: int, path: Path) -> None:
    view = memoryview(buf.numpy())[:nbytes]
    done = 0
    while done < nbytes:
        try:
            count = os.preadv(fd, [view[done:]], offset + done)
        except OSError as exc:
            exc.tunehub_side = "read"  # so the message names the source, not the output
            raise
        if count == 0:
            raise QuantizationError(f"{path}: file ended early (truncated or changed while reading)")
        done += count


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)


def _disk_full(output: Path, needed: int) -> DiskFullError:
    free = shutil.disk_usage(output.parent).free
    return DiskFullError(
        f"{output.parent}: disk full writing {output.name} ({needed / 1e9:.2f} GB needed, {free / 1e9:.2f} GB free)"
    )


def _user_error(exc: BaseException, plan: QuantizationPlan, output: Path) -> BaseException:
    """An OS error from a worker thread as a message that names the file."""
    if not isinstance(exc, OSError) or isinstance(exc, DiskFullError):
        return exc
    if exc.errno == errno.ENOSPC:
        return _disk_full(output, plan.output_size)
    if exc.filename is None and getattr(exc, "tunehub_side", None) == "read":
        return QuantizationError(f"{plan.source}: reading failed: {exc.strerror or exc}")
    return QuantizationError(f"{output}: writing failed: {exc.strerror or exc}")


def resolve_device(device: str | None) -> str:
    """``auto`` -> ``cuda`` when a GPU is usable, else ``cpu``; other names as given."""
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" or re.fullmatch(r"cuda(:\d+)?", device):
        if device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise QuantizationError("--device cuda was asked but no CUDA GPU is available; use --device cpu")
        return device
    raise QuantizationError(f"unknown device {device!r}: use auto, cpu or cuda")


def remove_stale_temporaries(output: Path) -> list[Path]:
    """Delete temporaries of ``output`` left by runs that were killed (their pid is gone)."""
    removed = []
    prefix = f".{output.name}{TEMP_MARKER}"
    try:
        names = os.listdir(output.parent)
    except FileNotFoundError:
        return removed
    for name in names:
        if not name.startswith(prefix):
            continue
        pid_text = name[len(prefix) :].split("-", 1)[0]
        if pid_text.isdigit() and _pid_alive(int(pid_text)):
            continue
        with contextlib.suppress(FileNotFoundError):
            (output.parent / name).unlink()
            removed.append(output.parent / name)
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Compute:
    """The quantization math on one device, with scratch buffers reused between tensors."""

    def __init__(self, device: str, target: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.target = _torch_dtype(_DTYPE_NAMES[target])
        self.scratch: dict[str, Any] = {}
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None

    def _scratch(self, name: str, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        torch = self.torch
        count = 1
        for dim in shape:
            count *= dim
        nbytes = count * torch.empty((), dtype=dtype).element_size()
        buf = self.scratch.get(name)
        if buf is None or buf.numel() < nbytes:
            buf = torch.empty(nbytes, dtype=torch.uint8, device=self.device)
            self.scratch[name] = buf
        return buf[:nbytes].view(dtype).view(tuple(shape))

    def quantize(self, weight: torch.Tensor, data_out: torch.Tensor, scale_out: torch.Tensor) -> None:
        """Fill ``data_out`` (int8) and ``scale_out`` (target dtype) from the host tensor ``weight``.

        On CPU the rows go in blocks of about 8 MiB (every op is per row, so the bytes are
        the same), which keeps each worker's scratch small whatever the layer size.
        """
        torch = self.torch
        rows = weight.shape[0]
        if self.cuda or rows == 1:
            self._quantize_rows(weight, data_out, scale_out.reshape(-1, 1) if rows > 1 else scale_out)
            return
        block = max(1, _ROW_BLOCK_BYTES // max(1, weight.shape[1] * weight.element_size()))
        scales = scale_out.reshape(rows, 1)
        with torch.no_grad():
            for start in range(0, rows, block):
                stop = min(rows, start + block)
                self._quantize_rows(weight[start:stop], data_out[start:stop], scales[start:stop])

    def _quantize_rows(self, weight: torch.Tensor, data_out: torch.Tensor, scale_out: torch.Tensor) -> None:
        torch = self.torch
        context = torch.cuda.stream(self.stream) if self.cuda else contextlib.nullcontext()
        with torch.no_grad(), context:
            if self.cuda:
                source = self._scratch("source", weight.shape, weight.dtype)
                source.copy_(weight, non_blocking=True)
            else:
                source = weight
            if source.dtype != self.target:
                converted = self._scratch("converted", weight.shape, self.target)
                converted.copy_(source)  # the same rounding as model.to(dtype)
                source = converted
            work = self._scratch("work", weight.shape, self.target)
            # optimum-quanto's AbsmaxOptimizer + quantize_symmetric, op for op, same dtype.
            torch.abs(source, out=work)
            if scale_out.ndim == 0:
                scale = torch.max(work) / 127  # one row: quanto quantizes per tensor
            else:
                scale = torch.amax(work, dim=[1], keepdim=True) / 127
            torch.div(source, scale, out=work)
            work.round_()
            work.clamp_(-128, 127)
            if self.cuda:
                data_dev = self._scratch("data", weight.shape, torch.int8)
                data_dev.copy_(work)
                data_out.copy_(data_dev, non_blocking=True)
                scale_out.copy_(scale.reshape(scale_out.shape), non_blocking=True)
                self.stream.synchronize()
            else:
                data_out.copy_(work)
                scale_out.copy_(scale.reshape(scale_out.shape))

    def convert(self, source: torch.Tensor, out: torch.Tensor) -> None:
        out.copy_(source)


def quantize_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    dtype: str | None = None,
    layers: str | Sequence[str] | None = None,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
    budget_bytes: int | None = None,
) -> QuantizeResult:
    """Quantize the safetensors file ``src`` into ``dst`` (WanGP/quanto int8 format), streaming.

    ``dtype`` is the 16-bit dtype of the output (default: the source's); ``layers`` are
    fnmatch patterns of module names overriding the per-layout table; ``budget_bytes``
    bounds the read-ahead and write-behind buffers (each of the two pools; by default
    sized so that every compute worker holds a layer while one more is read ahead).
    """
    started = time.perf_counter()
    stats = _Stats(started)
    plan = plan_quantization(src, dtype=dtype, layers=layers)
    output = Path(dst)
    if output.resolve() == plan.source.resolve():
        raise QuantizationError(f"{output}: the output must not be the input file")
    cuda_asked = str(device).startswith("cuda")
    tuning = _Tuning.for_device(cuda_asked)
    stats.set("tuning", tuning.describe())
    data_region = (plan.header.data_start, plan.header.data_start + max((u.source.end for u in plan.units), default=0))
    prefetch: _Prefetch | None = None
    if tuning.prefetch_mb > 0:
        # Before torch is imported and CUDA started: the disk works while those fixed costs run.
        prefetch = _Prefetch(
            plan.source, *data_region, tuning.prefetch_mb * _MiB, tuning.prefetch_threads, tuning.prefetch, stats
        )
    held = [prefetch]
    try:
        return _quantize(plan, output, device, progress, budget_bytes, tuning, held, stats)
    finally:
        if held[0] is not None:
            held[0].stop()


def _quantize(
    plan: QuantizationPlan,
    output: Path,
    device: str,
    progress: ProgressCallback | None,
    budget_bytes: int | None,
    tuning: _Tuning,
    held: list[_Prefetch | None],
    stats: _Stats,
) -> QuantizeResult:
    started = stats.started
    device_name = resolve_device(device)
    cuda = device_name.startswith("cuda")
    if cuda != str(device).startswith("cuda"):  # "auto" found a GPU
        tuning = _Tuning.for_device(cuda)
        stats.set("tuning", tuning.describe())
        if tuning.prefetch_mb > 0 and held[0] is None:
            end = plan.header.data_start + max((u.source.end for u in plan.units), default=0)
            held[0] = _Prefetch(
                plan.source,
                plan.header.data_start,
                end,
                tuning.prefetch_mb * _MiB,
                tuning.prefetch_threads,
                tuning.prefetch,
                stats,
            )
    prefetch = held[0]
    import torch  # here, so that the stage timings show what the import costs

    stats.mark("torch_imported")
    stats.rss("rss_after_import_gib")
    # On CPU one compute worker per core, each with one intra-op thread (see _Tuning); on CUDA
    # a few, each with its own stream, so one layer's transfers overlap another's.
    workers = tuning.workers
    readers = tuning.readers
    if budget_bytes is None and tuning.budget_mb:
        budget_bytes = tuning.budget_mb * _MiB
    if budget_bytes is None:
        # Room for each worker's layer plus one read ahead per reader, sized by the quantized
        # layers: one odd big tensor that is only copied (Wan 14B's time_projection, 314 MB) is
        # served alone rather than multiplied.
        quantized = [unit for unit in plan.units if unit.module is not None]
        largest_layer_in = max(unit.source.nbytes for unit in quantized)
        largest_layer_out = max(sum(o.nbytes for o in unit.outputs) for unit in quantized)
        largest_in = max(unit.source.nbytes for unit in plan.units)
        in_budget = max(128 * _MiB, largest_in, (workers + readers) * largest_layer_in)
        out_budget = max(64 * _MiB, (workers + 1) * largest_layer_out)
    else:
        in_budget = out_budget = budget_bytes
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output)
    free = shutil.disk_usage(output.parent).free
    headroom = 64 * _MiB  # the filesystem's own needs while the file is written
    if free < plan.output_size + headroom:
        raise DiskFullError(
            f"{output.parent}: not enough free space to quantize: the quantized file needs "
            f"{plan.output_size / 1e9:.2f} GB plus {headroom / 1e9:.2f} GB of headroom "
            f"({(plan.output_size + headroom) / 1e9:.2f} GB), {free / 1e9:.2f} GB free; free "
            f"{(plan.output_size + headroom - free) / 1e9:.2f} GB and run it again"
        )

    in_pool = _BufferPool(in_budget, tuning.pin, stats)
    out_pool = _BufferPool(out_budget, tuning.pin, stats)
    stats.set("budgets_mib", [in_budget // _MiB, out_budget // _MiB])
    read_queue: queue.Queue[Any] = queue.Queue()
    write_queue: queue.Queue[Any] = queue.Queue()
    errors: list[BaseException] = []
    stop = threading.Event()
    data_start = len(plan.header_bytes)

    def fail(exc: BaseException) -> None:
        if not isinstance(exc, _Aborted):
            errors.append(exc)
        stop.set()
        in_pool.close()
        out_pool.close()

    src_fd = os.open(plan.source, os.O_RDONLY)
    try:
        with contextlib.suppress(AttributeError, OSError):
            os.posix_fadvise(src_fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        next_unit = [0]
        readers_left = [readers]
        reader_lock = threading.Lock()

        def reader() -> None:
            busy = waiting = 0.0
            try:
                while not stop.is_set():
                    with reader_lock:  # units are taken in file order, whichever reader is free
                        index = next_unit[0]
                        if index >= len(plan.units):
                            return
                        next_unit[0] += 1
                    unit = plan.units[index]
                    offset = plan.header.data_start + unit.source.start
                    if prefetch is not None:
                        prefetch.advance(offset)
                    began = time.perf_counter()
                    buf = in_pool.acquire(unit.source.nbytes)
                    got = time.perf_counter()
                    _read_into(src_fd, buf, unit.source.nbytes, offset, plan.source)
                    busy += time.perf_counter() - got
                    waiting += got - began
                    stats.mark("first_read_done")
                    if tuning.drop:
                        _drop_cache(src_fd, offset, unit.source.nbytes)
                    read_queue.put((unit, buf))
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                fail(exc)
            finally:
                stats.add("read_busy_s", busy)
                stats.add("read_wait_pool_s", waiting)
                with reader_lock:
                    readers_left[0] -= 1
                    last = readers_left[0] == 0
                if last:  # the workers stop at this; every reader's units are queued by now
                    stats.mark("reading_done")
                    read_queue.put(None)

        with atomic_writer(output, "wb") as handle:
            out_fd = handle.fileno()
            try:  # reserve the space now: a full disk fails here, not after minutes of work
                os.posix_fallocate(out_fd, 0, plan.output_size)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise _disk_full(output, plan.output_size) from None
            except AttributeError:  # not on this platform
                pass
            _write_all(out_fd, memoryview(plan.header_bytes), 0)
            flush_needed = threading.Event()
            written = [0]

            def flusher() -> None:
                # Push written pages to the disk while the rest is computed, so that the final
                # fsync (which makes the file durable before its rename) has little left to do.
                busy = 0.0
                try:
                    while True:
                        flush_needed.wait()
                        flush_needed.clear()
                        if stop.is_set():
                            return
                        began = time.perf_counter()
                        if tuning.drop:  # clean pages of earlier rounds: written, no longer needed
                            _drop_cache(out_fd)
                        with contextlib.suppress(OSError):
                            if tuning.flush != "range" or not _sync_file_range(out_fd, 0, 0, _SFR_WRITE):
                                os.fdatasync(out_fd)
                        busy += time.perf_counter() - began
                        stats.add("flushes", 0.0)
                finally:
                    stats.add("flush_busy_s", busy, 0)

            def writer() -> None:
                since_flush = 0
                busy = waiting = 0.0
                try:
                    while True:
                        began = time.perf_counter()
                        item = write_queue.get()
                        waiting += time.perf_counter() - began
                        if item is None:
                            return
                        began = time.perf_counter()
                        pieces, release = item
                        for offset, data in pieces:
                            if not stop.is_set():
                                _write_all(out_fd, data, data_start + offset)
                                since_flush += len(data)
                                written[0] += len(data)
                        for pool, buf in release:
                            pool.release(buf)
                        busy += time.perf_counter() - began
                        if tuning.flush != "off" and since_flush >= tuning.flush_mb * _MiB:
                            since_flush = 0
                            flush_needed.set()
                except BaseException as exc:  # noqa: BLE001
                    fail(exc)
                    # Keep draining so that no producer waits on a full queue.
                    while write_queue.get() is not None:
                        pass
                finally:
                    stats.add("write_busy_s", busy, 0)
                    stats.add("write_wait_s", waiting, 0)
                    stats.mark("writing_done")

            one_bytes = {
                "BF16": torch.ones((), dtype=torch.bfloat16),
                "F16": torch.ones((), dtype=torch.float16),
            }
            total = plan.input_size
            processed = [0]
            progress_lock = threading.Lock()

            def process(compute: _Compute, unit: _Unit, in_buf: Any) -> None:
                source_tensor = _typed(in_buf, unit.source)
                if unit.module is None:
                    out = unit.outputs[0]
                    if out.dtype == unit.source.dtype:
                        write_queue.put(([(out.start, _as_bytes(source_tensor))], [(in_pool, in_buf)]))
                    else:
                        out_buf = out_pool.acquire(out.nbytes)
                        compute.convert(source_tensor, _typed(out_buf, out))
                        in_pool.release(in_buf)
                        write_queue.put(([(out.start, _as_bytes(_typed(out_buf, out)))], [(out_pool, out_buf)]))
                else:
                    scale_entry, input_entry, output_entry, data_entry = unit.outputs
                    # The 16-bit scale first: an int8 block of odd length would misalign it.
                    began = time.perf_counter()
                    out_buf = out_pool.acquire(scale_entry.nbytes + data_entry.nbytes)
                    got = time.perf_counter()
                    scale_view = _typed(out_buf, scale_entry)
                    data_bytes = out_buf[scale_entry.nbytes : scale_entry.nbytes + data_entry.nbytes]
                    data_view = data_bytes.view(torch.int8).view(data_entry.shape)
                    compute.quantize(source_tensor, data_view, scale_view)
                    stats.add("compute_s", time.perf_counter() - got)
                    stats.add("compute_wait_pool_s", got - began, 0)
                    in_pool.release(in_buf)
                    one = _as_bytes(one_bytes[input_entry.dtype])
                    pieces = [
                        (scale_entry.start, _as_bytes(scale_view)),
                        (input_entry.start, one),
                        (output_entry.start, one),
                        (data_entry.start, _as_bytes(data_view)),
                    ]
                    write_queue.put((pieces, [(out_pool, out_buf)]))
                if progress is not None:
                    with progress_lock:
                        processed[0] += unit.source.nbytes
                        progress(
                            {"file": output.name, "total": total, "completed": processed[0], "status": "quantizing"}
                        )

            def worker() -> None:
                waiting = 0.0
                try:
                    if not cuda:
                        torch.set_num_threads(1)
                    began = time.perf_counter()
                    compute = _Compute(device_name, plan.dtype)
                    stats.add("compute_init_s", time.perf_counter() - began)
                    stats.mark("compute_ready")
                    while not stop.is_set():
                        began = time.perf_counter()
                        item = read_queue.get()
                        waiting += time.perf_counter() - began
                        if item is None:
                            read_queue.put(None)  # let the other workers see the end too
                            return
                        process(compute, *item)
                except BaseException as exc:  # noqa: BLE001
                    fail(exc)
                finally:
                    stats.add("compute_wait_input_s", waiting, 0)

            intra_op_threads = torch.get_num_threads()
            reading = [
                threading.Thread(target=reader, name=f"tunehub-quant-read-{n}", daemon=True) for n in range(readers)
            ]
            writing = threading.Thread(target=writer, name="tunehub-quant-write", daemon=True)
            flushing = threading.Thread(target=flusher, name="tunehub-quant-flush", daemon=True)
            computing = [
                threading.Thread(target=worker, name=f"tunehub-quant-{n}", daemon=True) for n in range(workers)
            ]
            for thread in [*reading, writing, flushing, *computing]:
                thread.start()
            try:
                for thread in computing:
                    thread.join()
            except BaseException as exc:  # KeyboardInterrupt while waiting
                fail(exc)
                for thread in computing:
                    thread.join()
            finally:
                torch.set_num_threads(intra_op_threads)  # workers changed torch's default for new threads
                write_queue.put(None)
                writing.join()
                for thread in reading:
                    thread.join()
                stop.set()  # the writer is done: end the flusher
                flush_needed.set()
                flushing.join()
            if errors:
                converted = _user_error(errors[0], plan, output)
                raise converted if converted is errors[0] else converted from errors[0]
            if written[0] != sum(entry.nbytes for entry in plan.outputs):
                raise QuantizationError(f"{output}: internal error: wrote {written[0]} bytes of tensor data")
            if progress is not None:
                progress({"file": output.name, "total": total, "completed": total, "status": "syncing"})
            stats.mark("all_written")
    except OSError as exc:  # the header write, the rename, the final fsync
        converted = _user_error(exc, plan, output)
        if converted is exc:
            raise
        raise converted from exc
    finally:
        os.close(src_fd)
        in_pool.close()
        out_pool.close()
    seconds = time.perf_counter() - started
    stats.set("seconds", seconds)
    stats.set("final_sync_s", seconds - stats.values.get("all_written", seconds))
    stats.rss("rss_at_end_gib")
    if progress is not None:
        progress({"file": output.name, "total": plan.input_size, "completed": plan.input_size, "status": "done"})
    return QuantizeResult(
        source=plan.source,
        output=output,
        dtype=plan.dtype,
        layout=plan.layout,
        quantized_layers=len(plan.modules),
        tensors=len(plan.outputs),
        bytes_read=plan.input_size,
        bytes_written=plan.output_size,
        seconds=seconds,
        device=device_name,
        stats=stats.report(),
    )
