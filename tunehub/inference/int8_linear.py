"""Linear layers that run an int8 (quanto-format) weight, with a choice of kernels.

Pure torch on purpose: the GPU benchmark runs this on machines where neither diffusers
nor optimum-quanto may be installed. A weight arrives as quanto stores it: ``data``
(int8, ``[out, in]``) and ``scale`` (16-bit, ``[out, 1]``), ``w = scale * data``.

Kernels (``KERNELS``):

- ``dequant``: quanto's own math (``qbytes_mm``): ``x @ (scale * data).T + bias`` in the
  16-bit dtype. Same numbers as optimum-quanto's QLinear on CUDA; saves memory, not time.
- ``fp8``: the weight is turned into float8 e4m3 once, with one scale per output row; each
  call quantizes the activations per row to float8 (one compiled kernel on CUDA) and runs
  ``torch._scaled_mm`` with row-wise scales. Needs an fp8-capable GPU (sm 8.9+) for speed.
- ``int8mm``: activations quantized per row to int8, the int8 weight used as stored (no
  second rounding), int32 accumulators rescaled in float32: on CUDA with Triton one fused
  kernel (:func:`int8_gemm`: product, both row scales and the bias in its epilogue), else
  ``torch._int_mm`` plus a rescaling kernel.
- ``auto``: ``int8mm`` on a CUDA GPU with Triton (the fused GEMM), else ``fp8`` on a CUDA
  device of compute capability 8.9 or more, else ``dequant``.

A layer whose shape a fast kernel cannot take (``_scaled_mm`` wants dimensions that are
multiples of 16) keeps ``dequant``: correctness first.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from tunehub.inference.fused import gelu_quantize_rows_int8, gelu_quantize_rows_op, gelu_rows_fit, unfused_by_env

KERNELS = ("auto", "dequant", "fp8", "int8mm")
FP8_MAX = 448.0  # largest finite float8 e4m3fn value

_compiled: dict[str, Callable[..., Any]] = {}


def _quantize_rows_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row absmax float8 quantization: (values e4m3fn, float32 scales [rows, 1])."""
    x32 = x.float()
    scale = x32.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / FP8_MAX
    quantized = (x32 / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return quantized, scale


def _quantize_rows_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row absmax int8 quantization: (values int8, float32 scales [rows, 1])."""
    x32 = x.float()
    scale = x32.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / 127.0
    quantized = torch.round(x32 / scale).clamp(-127, 127).to(torch.int8)
    return quantized, scale


def _compiled_or_eager(key: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile(function)``, falling back for good to the eager function if compiling
    fails (no Triton, no compiler): slower, still correct."""
    if key in _compiled:
        return _compiled[key]
    compiled = torch.compile(function, dynamic=True)

    def call(*args: Any) -> Any:
        try:
            return compiled(*args)
        except Exception as exc:  # torch raises many kinds of backend errors
            warnings.warn(f"torch.compile failed for {key} ({type(exc).__name__}); running eager", stacklevel=2)
            _compiled[key] = function
            return function(*args)

    _compiled[key] = call
    return call


def _activation_quantizer(name: str, device: torch.device) -> Callable[..., Any]:
    """The per-row quantizer, compiled into one kernel on CUDA (plain ops eat the gain)."""
    function = _quantize_rows_fp8 if name == "fp8" else _quantize_rows_int8
    if device.type != "cuda" or os.environ.get("TUNEHUB_NO_COMPILE"):
        return function
    return _compiled_or_eager(f"{name}:cuda", function)


def _int8mm_epilogue(
    accumulated: torch.Tensor, act_scale: torch.Tensor, weight_scale: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    # float32: int32 accumulators times two scales can overflow 16-bit floats
    return (accumulated.float() * act_scale * weight_scale.float().t()).to(dtype)


def _epilogue(device: torch.device) -> Callable[..., Any]:
    if device.type != "cuda" or os.environ.get("TUNEHUB_NO_COMPILE"):
        return _int8mm_epilogue
    return _compiled_or_eager("epilogue:cuda", _int8mm_epilogue)


# ------------------------------------------------------------------ fused int8 GEMM (Triton)
#
# torch._int_mm writes int32 accumulators (4 bytes an element) that a second kernel reads
# back to rescale: on Wan 14B's shapes that traffic and cuBLAS's int8 path cost more than the
# fp8 kernel saves. One Triton kernel does the int8 x int8 -> int32 product and the epilogue
# (activation row scale x weight row scale, + bias, -> 16-bit) before anything leaves the chip.

# Tiles are (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages). Measured on an H200 at Wan 14B's shapes (benchmarks/results/gpu_int8_gemm_tiles_h200.txt): the
# persistent TMA kernel with 256x128x128 tiles runs at cuBLAS fp8's speed (8.76 ms against 8.68 for
# the three shapes; the plain kernel's best tile 10.5 ms). TMA needs Hopper: older GPUs get the plain one.
INT8_GEMM_CONFIG: tuple[int, int, int, int, int, int] = (128, 256, 128, 8, 8, 4)
INT8_GEMM_VARIANT = "pointer"
INT8_GEMM_HOPPER: tuple[str, tuple[int, int, int, int, int, int]] = ("tma", (256, 128, 128, 8, 8, 3))
# Below this many rows (Wan 2.2 5B: 2,340 tokens at 832x480x21) the plain-pointer tile is the
# faster one on an H200 (0.102 ms against TMA's 0.221 ms for 2340 x 3072 -> 3072) and it
# launches without building TMA descriptors on the host.
INT8_GEMM_HOPPER_SMALL: tuple[str, tuple[int, int, int, int, int, int]] = ("pointer", (256, 128, 128, 8, 8, 3))
INT8_GEMM_SMALL_ROWS = 8192
_triton_kernel: list[Any] = []


def _int8_gemm_kernel() -> list[Any]:
    """[the pointer kernel, the TMA persistent kernel], built once (Triton imported lazily)."""
    if _triton_kernel:
        return _triton_kernel
    import triton
    import triton.language as tl

    @triton.jit
    def int8_gemm_rowscaled(
        a_ptr, b_ptr, c_ptr, a_scale_ptr, b_scale_ptr, bias_ptr, M, N, K: tl.constexpr,
        stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn,
        HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        GROUP_M: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0)
        num_pid_m = tl.cdiv(M, BLOCK_M)
        num_pid_n = tl.cdiv(N, BLOCK_N)
        # grouped order: GROUP_M row tiles share each weight tile while it sits in L2
        in_group = GROUP_M * num_pid_n
        first_m = (pid // in_group) * GROUP_M
        group_rows = min(num_pid_m - first_m, GROUP_M)
        pid_m = first_m + ((pid % in_group) % group_rows)
        pid_n = (pid % in_group) // group_rows
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        # wrapped indices instead of masks in the loop: rows past the end are computed, never stored
        rows = offs_m % M
        cols = offs_n % N
        a_ptrs = a_ptr + rows[:, None] * stride_am + offs_k[None, :] * stride_ak
        b_ptrs = b_ptr + offs_k[:, None] * stride_bk + cols[None, :] * stride_bn
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        for _ in range(0, K // BLOCK_K):  # K constexpr: a known trip count
            acc = tl.dot(tl.load(a_ptrs), tl.load(b_ptrs), acc, out_dtype=tl.int32)
            a_ptrs += BLOCK_K * stride_ak
            b_ptrs += BLOCK_K * stride_bk
        a_scale = tl.load(a_scale_ptr + rows)
        b_scale = tl.load(b_scale_ptr + cols)
        out = acc.to(tl.float32) * a_scale[:, None] * b_scale[None, :]
        if HAS_BIAS:
            out += tl.load(bias_ptr + cols).to(tl.float32)[None, :]
        c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
        tl.store(c_ptrs, out.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))

    @triton.jit
    def int8_gemm_rowscaled_tma(
        a_desc, b_desc, c_desc, a_scale_ptr, b_scale_ptr, bias_ptr, M, N, K: tl.constexpr,
        HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        GROUP_M: tl.constexpr, NUM_PROGRAMS: tl.constexpr, TILES_PER_PROGRAM: tl.constexpr,
    ):  # fmt: skip
        # persistent: one program per multiprocessor walks the tiles; loads and the store go
        # through the tensor memory accelerator (Hopper's bulk copies), out-of-range rows zero.
        # A known trip count (the last program redoes the last tile: same values, no branch).
        num_pid_m = tl.cdiv(M, BLOCK_M)
        num_pid_n = tl.cdiv(N, BLOCK_N)
        in_group = GROUP_M * num_pid_n
        for step in tl.range(0, TILES_PER_PROGRAM, flatten=True):
            tile = tl.minimum(tl.program_id(0) + step * NUM_PROGRAMS, num_pid_m * num_pid_n - 1)
            first_m = (tile // in_group) * GROUP_M
            group_rows = min(num_pid_m - first_m, GROUP_M)
            off_m = (first_m + ((tile % in_group) % group_rows)) * BLOCK_M
            off_n = ((tile % in_group) // group_rows) * BLOCK_N
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
            for k in range(0, K // BLOCK_K):
                a = a_desc.load([off_m, k * BLOCK_K])
                b = b_desc.load([off_n, k * BLOCK_K])
                acc = tl.dot(a, b.T, acc, out_dtype=tl.int32)
            rows = off_m + tl.arange(0, BLOCK_M)
            cols = off_n + tl.arange(0, BLOCK_N)
            a_scale = tl.load(a_scale_ptr + rows, mask=rows < M, other=0.0)
            b_scale = tl.load(b_scale_ptr + cols, mask=cols < N, other=0.0)
            out = acc.to(tl.float32) * a_scale[:, None] * b_scale[None, :]
            if HAS_BIAS:
                out += tl.load(bias_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
            c_desc.store([off_m, off_n], out.to(c_desc.dtype))

    _triton_kernel.extend([int8_gemm_rowscaled, int8_gemm_rowscaled_tma])
    return _triton_kernel


def _gemm_config_from_env() -> tuple[str, tuple[int, int, int, int, int, int]] | None:
    """``TUNEHUB_INT8_GEMM=pointer:128,256,128,8,8,4`` (or ``tma:...``): a tile to try without
    editing code (benchmarks/gpu_kernels.py measures them)."""
    value = os.environ.get("TUNEHUB_INT8_GEMM", "")
    if ":" not in value:
        return None
    variant, _, numbers = value.partition(":")
    config = tuple(int(n) for n in numbers.split(","))
    if variant not in ("pointer", "tma") or len(config) != 6:
        raise ValueError(f"TUNEHUB_INT8_GEMM={value!r}: expected pointer|tma:BM,BN,BK,GROUP,WARPS,STAGES")
    return variant, config  # type: ignore[return-value]


def int8_gemm(
    a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor, bias: torch.Tensor | None,
    out_dtype: torch.dtype, config: tuple[int, int, int, int, int, int] | None = None, variant: str | None = None,
) -> torch.Tensor:  # fmt: skip
    """``(a @ b.T) * a_scale * b_scale.T + bias`` in ``out_dtype``, one Triton kernel: ``a``
    int8 [M, K], ``b`` int8 [N, K] (the weight as stored), ``a_scale`` float32 [M, 1],
    ``b_scale`` [N, 1], ``bias`` [N] or None. K must be a multiple of the tile's BLOCK_K.
    ``variant``: ``pointer`` (plain loads) or ``tma`` (persistent, bulk tensor copies: Hopper+;
    compiled once per weight shape and row count)."""
    import triton

    if config is None and variant is None:
        variant, config = _gemm_config_from_env() or _default_gemm(a.device, a.shape[0])
    variant = variant or "pointer"
    block_m, block_n, block_k, group_m, warps, stages = config or INT8_GEMM_CONFIG
    M, K = a.shape
    N = b.shape[0]
    if K % block_k:
        raise ValueError(f"int8_gemm: K={K} is not a multiple of {block_k}")
    out = torch.empty(M, N, dtype=out_dtype, device=a.device)
    a_scale = a_scale.reshape(-1).float().contiguous()
    b_scale = b_scale.reshape(-1).float().contiguous()
    pointer_kernel, tma_kernel = _int8_gemm_kernel()
    tiles = triton.cdiv(M, block_m) * triton.cdiv(N, block_n)
    common = dict(HAS_BIAS=bias is not None, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=group_m,
                  num_warps=warps, num_stages=stages)  # fmt: skip
    bias_arg = bias if bias is not None else b_scale
    if variant == "tma":
        from triton.tools.tensor_descriptor import TensorDescriptor

        programs = min(tiles, _multiprocessors(a.device))
        tma_kernel[(programs,)](
            TensorDescriptor.from_tensor(a, [block_m, block_k]), TensorDescriptor.from_tensor(b, [block_n, block_k]),
            TensorDescriptor.from_tensor(out, [block_m, block_n]), a_scale, b_scale, bias_arg, M, N, K,
            NUM_PROGRAMS=programs, TILES_PER_PROGRAM=triton.cdiv(tiles, programs), **common,
        )  # fmt: skip
        return out
    pointer_kernel[(tiles,)](
        a, b, out, a_scale, b_scale, bias_arg, M, N, K,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), out.stride(0), out.stride(1), **common,
    )  # fmt: skip
    return out


def _default_gemm(device: torch.device, rows: int = INT8_GEMM_SMALL_ROWS) -> tuple[str, tuple[int, int, int, int, int, int]]:
    if device.type == "cuda" and _capability(device) >= (9, 0):
        return INT8_GEMM_HOPPER if rows >= INT8_GEMM_SMALL_ROWS else INT8_GEMM_HOPPER_SMALL
    return INT8_GEMM_VARIANT, INT8_GEMM_CONFIG


_capabilities: dict[str, tuple[int, int]] = {}


def _capability(device: torch.device) -> tuple[int, int]:
    """torch.cuda.get_device_capability, asked once per device (this runs on every GEMM call)."""
    key = str(device)
    if key not in _capabilities:
        _capabilities[key] = torch.cuda.get_device_capability(device)
    return _capabilities[key]


def _multiprocessors(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # the interpreter on CPU: a few programs, so the persistent loop is exercised


@torch.library.custom_op("tunehub::int8_gemm", mutates_args=())
def _int8_gemm_op(
    a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor, bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:  # fmt: skip
    return int8_gemm(a, b, a_scale, b_scale, bias, out_dtype)


@_int8_gemm_op.register_fake
def _(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor, bias: torch.Tensor | None,
      out_dtype: torch.dtype) -> torch.Tensor:  # fmt: skip
    return a.new_empty(a.shape[0], b.shape[0], dtype=out_dtype)


_fused_ok: dict[str, bool] = {}


def fused_int8_gemm_available(device: torch.device) -> bool:
    """Triton importable and ``device`` a CUDA GPU (checked once per device kind); the
    ``TUNEHUB_INT8_GEMM=int_mm`` environment variable forces torch._int_mm."""
    if device.type != "cuda" or os.environ.get("TUNEHUB_INT8_GEMM") == "int_mm":
        return False
    key = str(device)
    if key not in _fused_ok:
        try:
            import triton  # noqa: F401

            _fused_ok[key] = torch.cuda.get_device_capability(device) >= (8, 0)
        except ImportError:
            _fused_ok[key] = False
    return _fused_ok[key]


_scaled_mm_takes_bias: dict[str, bool] = {}


def _scaled_mm_bias_ok(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether this torch/device takes a bias in row-wise scaled ``_scaled_mm`` (probed once)."""
    key = f"{device.type}:{dtype}"
    if key not in _scaled_mm_takes_bias:
        a = torch.zeros(16, 16, device=device).to(torch.float8_e4m3fn)
        b = torch.zeros(16, 16, device=device).to(torch.float8_e4m3fn)
        try:
            torch._scaled_mm(
                a, b.t(), scale_a=torch.ones(16, 1, device=device), scale_b=torch.ones(1, 16, device=device),
                bias=torch.zeros(16, device=device, dtype=dtype), out_dtype=dtype,
            )  # fmt: skip
            _scaled_mm_takes_bias[key] = True
        except (RuntimeError, TypeError):
            _scaled_mm_takes_bias[key] = False
    return _scaled_mm_takes_bias[key]


def fp8_supported(device: torch.device | str) -> bool:
    """Whether ``torch._scaled_mm`` with float8 runs fast here (Ada/Hopper or newer)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available() or not hasattr(torch, "float8_e4m3fn"):
        return False
    return torch.cuda.get_device_capability(device) >= (8, 9)


def choose_kernel(kernel: str, device: torch.device | str) -> str:
    """Resolve ``auto`` to the fastest kernel known to be correct on ``device``."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown int8 kernel '{kernel}'; choose one of {', '.join(KERNELS)}")
    if kernel != "auto":
        return kernel
    # int8mm keeps the weight as stored (rel.err 0.021 on Wan 1.3B against fp8's 0.053, same
    # compiled speed on an H200): the default wherever its fused Triton GEMM runs
    if fused_int8_gemm_available(torch.device(device)):
        return "int8mm"
    return "fp8" if fp8_supported(device) else "dequant"


class Int8Linear(nn.Module):
    """``nn.Linear`` whose weight is stored as quanto's int8 data + per-row scale."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.dtype = dtype
        self.register_buffer("weight_data", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, 1, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device)) if bias else None
        self.kernel = "dequant"
        # fp8 form of the weight, made once by prepare("fp8"); buffers so that offloading
        # hooks and .to() move them
        self.register_buffer("weight_fp8", None)
        self.register_buffer("weight_fp8_scale", None)
        # the per-row scale in float32 as the fused int8 GEMM reads it, made by prepare("int8mm")
        # (not saved: the file holds weight_scale)
        self.register_buffer("weight_scale_f32", None, persistent=False)
        # an activation applied to the input first ("gelu_tanh": the feed-forward's GELU, folded
        # in by fold_gelu_into_int8 so that one kernel computes and quantizes it)
        self.input_activation: str | None = None

    @classmethod
    def from_quantized(
        cls, data: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype
    ) -> Int8Linear:
        """A layer that takes ownership of already-loaded int8 tensors (no copy of the weight)."""
        out_features, in_features = data.shape
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.in_features, layer.out_features, layer.dtype = in_features, out_features, dtype
        layer.register_buffer("weight_data", data.to(torch.int8))
        layer.register_buffer("weight_scale", scale.reshape(out_features, 1).to(dtype))
        layer.bias = nn.Parameter(bias.to(dtype), requires_grad=False) if bias is not None else None
        layer.kernel = "dequant"
        layer.register_buffer("weight_fp8", None)
        layer.register_buffer("weight_fp8_scale", None)
        layer.register_buffer("weight_scale_f32", None, persistent=False)
        layer.input_activation = None
        return layer

    def extra_repr(self) -> str:
        folded = f", input_activation={self.input_activation}" if self.input_activation else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel}{folded}"

    def _fast_kernel_fits(self) -> bool:
        return self.in_features % 16 == 0 and self.out_features % 16 == 0

    @torch.no_grad()
    def prepare(self, kernel: str, work_device: torch.device | str | None = None) -> str:
        """Switch to ``kernel`` (already resolved, not ``auto``); returns the one in use.
        ``work_device``: where the one-time fp8 conversion computes (the GPU, also for a
        layer kept on the CPU by offloading); default: where the layer is."""
        device = self.weight_data.device
        work = torch.device(work_device) if work_device is not None else device
        if kernel in ("fp8", "int8mm") and not self._fast_kernel_fits():
            kernel = "dequant"
        if kernel == "fp8":
            if self.weight_fp8 is None:
                # int8 -> float8 once, in row blocks so that no 16-bit copy of the whole
                # weight ever exists; then the int8 copy is dropped (same size as fp8).
                fp8 = torch.empty(self.out_features, self.in_features, dtype=torch.float8_e4m3fn, device=device)
                row_scale = torch.empty(self.out_features, 1, dtype=torch.float32, device=device)
                block = max(1, (64 << 20) // max(1, self.in_features * 4))
                for start in range(0, self.out_features, block):
                    rows = slice(start, start + block)
                    weight = self.weight_data[rows].to(work).float() * self.weight_scale[rows].to(work).float()
                    values, scales = _quantize_rows_fp8(weight)
                    fp8[rows], row_scale[rows] = values.to(device), scales.to(device)
                self.weight_fp8 = fp8
                self.weight_fp8_scale = row_scale.reshape(1, -1).contiguous()
                self.weight_data = torch.empty(0, dtype=torch.int8, device=device)
        elif self.weight_fp8 is not None:
            raise ValueError("this layer was converted to fp8; its int8 weight is gone")
        if kernel == "int8mm":
            self.weight_scale_f32 = self.weight_scale.reshape(-1).float().contiguous()
        self.kernel = kernel
        return kernel

    def dequantized_weight(self) -> torch.Tensor:
        if self.weight_fp8 is not None:
            assert self.weight_fp8_scale is not None
            return (self.weight_fp8.float() * self.weight_fp8_scale.reshape(-1, 1)).to(self.dtype)
        return self.weight_scale * self.weight_data.to(self.weight_scale.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, shape[-1])
        # the fused Triton GEMM (chosen per call: offloading may move the layer after prepare());
        # torch._int_mm wants more than 16 rows (modulation layers see one per sample)
        fused = (self.kernel == "int8mm" and rows.shape[0] > 16 and fused_int8_gemm_available(rows.device)
                 and self.in_features % 128 == 0)  # both tiles' BLOCK_K  # fmt: skip
        gelu_fused = fused and self.input_activation == "gelu_tanh" and gelu_rows_fit(self.in_features)
        if self.input_activation is not None and not gelu_fused:
            x = apply_input_activation(x, self.input_activation)
            rows = x.reshape(-1, shape[-1])
        if self.kernel == "dequant" or (self.kernel == "int8mm" and rows.shape[0] <= 16):
            # quanto's qbytes_mm: activations in the scale dtype, scale applied to the weight
            out = torch.matmul(x.to(self.weight_scale.dtype), self.dequantized_weight().t())
            return out + self.bias if self.bias is not None else out
        compiling = torch.compiler.is_compiling()
        if gelu_fused:
            # eager: the kernel straight, without the custom op's dispatch (host time)
            quantized, act_scale = (gelu_quantize_rows_op if compiling else gelu_quantize_rows_int8)(rows)
        else:
            quantized, act_scale = _activation_quantizer(self.kernel, rows.device)(rows)
        if self.kernel == "fp8":
            fused_bias = self.bias is not None and _scaled_mm_bias_ok(rows.device, self.dtype)
            out = torch._scaled_mm(
                quantized,
                self.weight_fp8.t(),
                scale_a=act_scale,
                scale_b=self.weight_fp8_scale,
                bias=self.bias if fused_bias else None,
                out_dtype=self.dtype,
            )
            if self.bias is not None and not fused_bias:
                out = out + self.bias
        elif fused:
            scale = self.weight_scale_f32 if self.weight_scale_f32 is not None else self.weight_scale
            if compiling:
                out = _int8_gemm_op(quantized, self.weight_data, act_scale, scale, self.bias, self.dtype)
            else:
                # eager: the kernel straight, without the custom op's dispatch (about 0.2 ms of
                # host time a call measured on Wan 2.2 5B, where a GEMM takes 0.1 ms on the GPU)
                out = int8_gemm(quantized, self.weight_data, act_scale, scale, self.bias, self.dtype)
        else:
            accumulated = torch._int_mm(quantized, self.weight_data.t())
            out = _epilogue(rows.device)(accumulated, act_scale, self.weight_scale, self.dtype)
            if self.bias is not None:
                out = out + self.bias
        return out.reshape(*shape[:-1], self.out_features)


def apply_input_activation(x: torch.Tensor, activation: str) -> torch.Tensor:
    """``activation`` of :attr:`Int8Linear.input_activation` in torch (where no fused kernel runs)."""
    if activation != "gelu_tanh":
        raise ValueError(f"unknown input activation '{activation}'")
    from tunehub.inference.transformer import sigmoid_tanh_gelu

    return sigmoid_tanh_gelu(x)


def unfolded_gelu(gate: torch.Tensor) -> torch.Tensor:
    """A GELU module's activation once the next int8 layer computes it: the identity."""
    return gate


def fold_gelu_into_int8(model: nn.Module) -> int:
    """In each diffusers feed-forward of ``model`` whose tanh GELU is followed (through dropouts)
    by an Int8Linear, move the GELU into that layer (:attr:`Int8Linear.input_activation`): with the
    fused int8 GEMM on a GPU one kernel computes the GELU and quantizes each row, read once;
    elsewhere the layer applies the same GELU in torch first. Returns how many were folded."""
    folded = 0
    for module in model.modules():
        net = getattr(module, "net", None)
        if type(module).__name__ != "FeedForward" or not isinstance(net, nn.ModuleList) or len(net) < 2:
            continue
        activation, rest = net[0], list(net[1:])
        if (type(activation).__name__ != "GELU" or getattr(activation, "approximate", None) != "tanh"
                or not callable(getattr(activation, "gelu", None))):  # fmt: skip
            continue
        linears = [m for m in rest if not isinstance(m, nn.Dropout)]
        if len(linears) != 1 or not isinstance(linears[0], Int8Linear) or linears[0].input_activation is not None:
            continue  # not an int8 layer next (a LoRA wraps it, say), or folded already
        between = rest[: rest.index(linears[0])]
        if any(m.p > 0 and m.training for m in between):
            continue  # a dropout between them would see the activation (training only)
        activation.gelu = unfolded_gelu  # an instance attribute: diffusers' forward calls self.gelu(x)
        linears[0].input_activation = "gelu_tanh"
        folded += 1
    return folded


def int8_layers(model: nn.Module) -> Iterator[tuple[str, Int8Linear]]:
    for name, module in model.named_modules():
        if isinstance(module, Int8Linear):
            yield name, module


def set_int8_kernel(model: nn.Module, kernel: str, device: torch.device | str | None = None) -> dict[str, int]:
    """Prepare every Int8Linear of ``model`` for ``kernel``; counts of layers per kernel used."""
    layers = list(int8_layers(model))
    if not layers:
        return {}
    device = device if device is not None else layers[0][1].weight_scale.device
    resolved = choose_kernel(kernel, device)
    counts: dict[str, int] = {}
    for _, layer in layers:
        used = layer.prepare(resolved, device)
        counts[used] = counts.get(used, 0) + 1
    if not unfused_by_env():
        fold_gelu_into_int8(model)
    return counts


def replace_with_int8(
    model: nn.Module, tensors: dict[str, torch.Tensor], modules: list[str], dtype: torch.dtype
) -> None:
    """Swap each ``nn.Linear`` named in ``modules`` for an Int8Linear built from
    ``tensors[<m>.weight._data]`` / ``._scale`` / ``<m>.bias`` (popped: the caller's dict
    no longer holds them, so nothing is kept twice)."""
    for name in modules:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child)
        if not isinstance(old, nn.Linear):
            raise TypeError(f"{name} is a {type(old).__name__}, not a Linear layer")
        data = tensors.pop(f"{name}.weight._data")
        if data.dtype != torch.int8:
            raise ValueError(f"{name}.weight._data is {data.dtype}: only quanto int8 (qint8) weights are supported")
        scale = tensors.pop(f"{name}.weight._scale")
        tensors.pop(f"{name}.input_scale", None)
        tensors.pop(f"{name}.output_scale", None)
        bias = tensors.pop(f"{name}.bias", None)
        if (bias is None) != (old.bias is None):
            raise KeyError(f"{name}.bias")
        if tuple(data.shape) != (old.out_features, old.in_features):
            raise ValueError(
                f"{name}: int8 weight has shape {tuple(data.shape)}, the model expects "
                f"{(old.out_features, old.in_features)}"
            )
        setattr(parent, child, Int8Linear.from_quantized(data, scale, bias, dtype))
