"""Attention choices for the transformer: ``sdpa`` (torch's, through diffusers), ``fp8``, ``int8`` or ``fp8-cudnn``.

The 8-bit choices run the video self-attention (Wan's ``attn1``, 32,760 tokens at 832x480x81)
on Hopper (sm 9.0) and newer. They trade accuracy for speed, as WanGP's sage option does, so
they are opt-in:

- ``fp8``: tunehub's Triton kernel (:mod:`tunehub.inference.fp8_flash`), Q @ K^T in int8 (one
  scale per query row, one per block of 128 keys) and P @ V in e4m3 (V scaled per channel), a
  16-bit output: SageAttention 2's recipe. On one H200 at Wan 14B's shape, the kernel alone:
  1.4x torch's bf16 SDPA, 4.7% error on random inputs.
- ``int8``: the same kernel with P @ V in int8 too (P scaled per row of each block of keys):
  2.6% error on the same inputs, at 1.14x SDPA.
- ``fp8-cudnn``: cuDNN's FP8 flash attention, from the optional ``nvidia-cudnn-frontend``
  package: per-tensor scales and an e4m3 output (Hopper cannot write bf16 there): 1.40x, but
  12.6% error on the same inputs.

What bounds the error in both:

- K is smoothed by its mean over the tokens (SageAttention's trick): softmax is unchanged by
  a constant per query row, and the values left to round are smaller;
- V is smoothed the same way and its mean added back to the output (each row of the softmax
  sums to one), so a common component of V is never rounded;
- cuDNN's q/k/v and output use power-of-two per-tensor scales from their absmax;
- cross-attention (512 text tokens) stays in bf16: there FP8 is a net loss.

For ``fp8`` and ``int8`` (tunehub's kernel) on bf16 models, the q/k RMS norms, the rotary
embedding and the 8-bit quantization run from the projections in four Triton kernels
(:func:`~tunehub.inference.fp8_flash.quantize_projections`: 1.5 ms a Wan 14B block on an H200
against 2.3 ms compiled from torch ops). Elsewhere (cuDNN's kernel, context parallelism) they
are plain torch ops that ``torch.compile`` fuses. Each kernel call is a custom op, so compiled
blocks do not break around it. With Ulysses context parallelism the call runs inside diffusers'
all-to-all (full sequence, a share of the heads); ring attention needs the log-sum-exp merge
and keeps bf16.

Elsewhere (CPU, an older GPU, Triton or the package missing, a non-Wan transformer) ``set_attention``
keeps ``sdpa`` and returns a one-line note saying why.

``sdpa`` on a CUDA GPU with Triton (bf16 Wan models): :class:`FusedSdpaSelfAttention` runs the q/k
norms and the rotation in one Triton pass (:mod:`tunehub.inference.fused`), the same numbers as
diffusers' processor, then torch's attention as diffusers dispatches it.
"""

from __future__ import annotations

import atexit
import functools
import math
import threading
from typing import Any

import torch

from tunehub.config import ATTENTIONS  # one list: --attention, [generate], the pipeline

# fp8's two kernels: tunehub's Triton one (per-row and per-block scales, 16-bit output: a third
# of cuDNN's error) and cuDNN's (per-tensor scales, e4m3 output); "fp8" takes the Triton one
# where Triton runs, else cuDNN's; "fp8-cudnn" cuDNN's; "int8" the Triton one, P @ V in int8
FP8_KERNELS = ("triton", "cudnn")
FP8_MAX = 448.0
_PACKAGE = "nvidia-cudnn-frontend"


def _power_of_two_scale(amax: torch.Tensor, target: float = FP8_MAX) -> torch.Tensor:
    """The power of two that maps ``amax`` at or just below ``target`` (exact to undo)."""
    return torch.exp2(torch.floor(torch.log2(target / amax.float().clamp(min=1e-12))))


def smooth_kv(key: torch.Tensor, value: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(K, V, V's mean) in float32, K and V less their mean over the tokens (axis ``dim``): softmax
    is unchanged by a constant per query row, and each row of it sums to one, so V's mean is
    added back to the output."""
    key = key.float()
    value = value.float()
    v_mean = value.mean(dim=dim, keepdim=True)
    return key - key.mean(dim=dim, keepdim=True), value - v_mean, v_mean


def quantize_qkv(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[B, S, H, D]`` bf16 -> (q8, k8, v8, descale q/k/v as [1,1,1,1] float32, V's mean
    [B, 1, H, D]). K and V are smoothed by their mean over the sequence."""
    key, value, v_mean = smooth_kv(key, value, dim=1)
    quantized, descales = [], []
    for tensor in (query, key, value):
        scale = _power_of_two_scale(tensor.abs().amax())
        quantized.append((tensor.float() * scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn))
        descales.append(scale.reciprocal().reshape(1, 1, 1, 1))
    return quantized[0], quantized[1], quantized[2], descales[0], descales[1], descales[2], v_mean


def reference_fp8_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The same scheme in plain torch (float32 math on the e4m3-rounded q/k/v): what the cuDNN
    kernel computes, up to its own rounding of P and the output. For checks on any device."""
    q8, k8, v8, dq, dk, dv, v_mean = quantize_qkv(query, key, value)
    q, k, v = (t.float() * d for t, d in ((q8, dq), (k8, dk), (v8, dv)))
    out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return (out.transpose(1, 2) + v_mean.float()).to(query.dtype)


# ------------------------------------------------------------------ availability


def unavailable_reason(device: torch.device | str, head_dim: int | None = None, kernel: str = "cudnn") -> str | None:
    """Why fp8 attention's ``kernel`` cannot run on ``device`` (None: it can)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return f"needs a CUDA GPU (device is {device.type})"
    capability = torch.cuda.get_device_capability(device)
    if capability < (9, 0):
        return f"needs Hopper (sm 9.0) or newer, this GPU is sm {capability[0]}.{capability[1]}"
    if head_dim is not None and head_dim % 16:
        return f"needs a head size divisible by 16 (got {head_dim})"
    if kernel == "triton":
        if head_dim is not None and head_dim & (head_dim - 1):
            return f"its Triton kernel needs a power-of-two head size (got {head_dim})"
        try:
            import triton  # noqa: F401
        except ImportError as exc:
            return f"needs the triton package: {type(exc).__name__}"
        return None
    try:
        import cudnn  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"needs the {_PACKAGE} package (pip install 'tunehub[fp8-attention]'): {type(exc).__name__}"
    return None


# ------------------------------------------------------------------ the cuDNN call


class _CudnnFp8Sdpa:
    """One built cuDNN FP8 SDPA graph per (shape, strides, device), reused for every call."""

    _lock = threading.Lock()
    _graphs: dict[tuple[Any, ...], _CudnnFp8Sdpa] = {}
    _handles: dict[int, Any] = {}

    def __init__(self, q8: torch.Tensor, attn_scale: float) -> None:
        import cudnn

        self.cudnn = cudnn
        device_index = q8.device.index if q8.device.index is not None else torch.cuda.current_device()
        if device_index not in self._handles:
            self._handles[device_index] = cudnn.create_handle()
        self.handle = self._handles[device_index]
        e4m3, fp32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
        graph = cudnn.pygraph(io_data_type=e4m3, intermediate_data_type=fp32, compute_data_type=fp32,
                              handle=self.handle)  # fmt: skip
        batch, sequence, heads, dim = q8.shape
        # the model's [B, S, H, D] tensors seen as cuDNN's [B, H, S, D], no copy
        shape = (batch, heads, sequence, dim)
        strides = (q8.stride(0), q8.stride(2), q8.stride(1), q8.stride(3))
        self.q, self.k, self.v = (graph.tensor(name=n, dim=shape, stride=strides, data_type=e4m3) for n in "qkv")
        scalar = dict(dim=(1, 1, 1, 1), stride=(1, 1, 1, 1), data_type=fp32)
        names = ("descale_q", "descale_k", "descale_v", "descale_s", "scale_s", "scale_o")
        self.scalars = {name: graph.tensor(name=name, **scalar) for name in names}
        out, _, amax_s, amax_o = graph.sdpa_fp8(
            q=self.q, k=self.k, v=self.v, **self.scalars,
            generate_stats=False, attn_scale=attn_scale, use_causal_mask=False,
        )  # fmt: skip
        # Hopper writes the output in e4m3 (a bf16 output is Blackwell-only)
        out.set_output(True).set_dim(shape).set_stride(strides).set_data_type(e4m3)
        for amax in (amax_s, amax_o):
            amax.set_output(True).set_dim((1, 1, 1, 1)).set_stride((1, 1, 1, 1)).set_data_type(fp32)
        self.out, self.amax_s, self.amax_o = out, amax_s, amax_o
        graph.validate()
        graph.build_operation_graph()
        graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        graph.check_support()
        graph.build_plans()
        self.graph = graph
        self.workspace = torch.empty(graph.get_workspace_size(), dtype=torch.uint8, device=q8.device)
        self.amax_buffers = torch.empty(2, 1, 1, 1, 1, dtype=torch.float32, device=q8.device)

    @classmethod
    def get(cls, q8: torch.Tensor, attn_scale: float) -> _CudnnFp8Sdpa:
        key = (tuple(q8.shape), tuple(q8.stride()), str(q8.device), attn_scale)
        with cls._lock:
            if key not in cls._graphs:
                cls._graphs[key] = cls(q8, attn_scale)
            return cls._graphs[key]

    def __call__(self, q8: torch.Tensor, k8: torch.Tensor, v8: torch.Tensor, descales: torch.Tensor,
                 scales: torch.Tensor) -> torch.Tensor:  # fmt: skip
        output = torch.empty_like(q8)
        pack = {
            self.q: q8, self.k: k8, self.v: v8,
            self.scalars["descale_q"]: descales[0], self.scalars["descale_k"]: descales[1],
            self.scalars["descale_v"]: descales[2], self.scalars["descale_s"]: descales[3],
            self.scalars["scale_s"]: scales[0], self.scalars["scale_o"]: scales[1],
            self.out: output, self.amax_s: self.amax_buffers[0], self.amax_o: self.amax_buffers[1],
        }  # fmt: skip
        self.cudnn.set_stream(handle=self.handle, stream=torch.cuda.current_stream(q8.device).cuda_stream)
        self.graph.execute(pack, self.workspace, handle=self.handle)
        return output


@atexit.register
def _release_cudnn() -> None:
    """Graphs before handles, while the interpreter still runs (else nanobind reports leaks)."""
    _CudnnFp8Sdpa._graphs.clear()
    for handle in _CudnnFp8Sdpa._handles.values():
        try:
            import cudnn

            cudnn.destroy_handle(handle)
        except Exception:  # shutting down: nothing left to report to
            pass
    _CudnnFp8Sdpa._handles.clear()


@torch.library.custom_op("tunehub::cudnn_fp8_sdpa", mutates_args=())
def cudnn_fp8_sdpa(
    q8: torch.Tensor, k8: torch.Tensor, v8: torch.Tensor, descales: torch.Tensor, scales: torch.Tensor,
    attn_scale: float,
) -> torch.Tensor:  # fmt: skip
    """cuDNN FP8 SDPA on ``[B, S, H, D]`` e4m3 tensors; ``descales`` [4, 1, 1, 1, 1] float32 (q,
    k, v, P), ``scales`` [2, 1, 1, 1, 1] (P, output); returns the e4m3 output times the output scale."""
    q8, k8, v8 = q8.contiguous(), k8.contiguous(), v8.contiguous()
    return _CudnnFp8Sdpa.get(q8, attn_scale)(q8, k8, v8, descales, scales)


@cudnn_fp8_sdpa.register_fake
def _(q8: torch.Tensor, k8: torch.Tensor, v8: torch.Tensor, descales: torch.Tensor, scales: torch.Tensor,
      attn_scale: float) -> torch.Tensor:  # fmt: skip
    return torch.empty_like(q8.contiguous())


P_SCALE = 256.0  # P in [0, 1] (the running max is subtracted): a power of two maps 1 to 256
O_HEADROOM = 0.5  # |P V| <= max |V| (a convex combination): half V's scale leaves room for P's rounding


def fp8_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float | None = None,
    p_scale: float = P_SCALE, o_headroom: float = O_HEADROOM,
) -> torch.Tensor:  # fmt: skip
    """Self-attention of ``[B, S, H, D]`` 16-bit tensors through cuDNN FP8, output in the
    input dtype and layout."""
    attn_scale = scale if scale is not None else 1.0 / math.sqrt(query.shape[-1])
    q8, k8, v8, dq, dk, dv, v_mean = quantize_qkv(query, key, value)
    scale_p = torch.full_like(dq, p_scale)
    scale_o = dv.reciprocal() * o_headroom
    out = cudnn_fp8_sdpa(q8, k8, v8, torch.stack([dq, dk, dv, scale_p.reciprocal()]), torch.stack([scale_p, scale_o]),
                         attn_scale)  # fmt: skip
    return (out.float() / scale_o + v_mean.float()).to(query.dtype)


def _ulysses_forward_op(
    ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
    return_lse: bool = False, _save_ctx: bool = True, _parallel_config: Any = None, attention: Any = None,
) -> torch.Tensor:  # fmt: skip
    """diffusers' context-parallel forward-op signature, for its Ulysses all-to-all wrapper:
    this rank's heads over the whole sequence."""
    if return_lse or attn_mask is not None or is_causal:
        raise ValueError("fp8 attention: no mask, no causal mask, no log-sum-exp")
    if attention is not None:
        return attention(query, key, value)
    return fp8_attention(query, key, value, scale)


def _ulysses_backward_op(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("fp8 attention is for inference only")


# ------------------------------------------------------------------ the processor


def _rotate(hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's rotary embedding: channel pairs (2i, 2i+1) rotated by the table's angle."""
    pairs = hidden.unflatten(-1, (-1, 2)).float()
    even, odd = pairs[..., 0], pairs[..., 1]
    cos, sin = cos[..., 0::2].float(), sin[..., 1::2].float()
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2).to(hidden.dtype)


def _fusable(attn: Any, rotary_emb: tuple[torch.Tensor, torch.Tensor] | None, hidden_states: torch.Tensor) -> bool:
    """Whether ``attn`` is Wan's self-attention as tunehub's Triton kernels take it from the
    projections: bf16, RMS norms with bf16 weights over all heads, a power-of-two head size, and
    one rotary table for the batch ([1, S, 1, D])."""
    norms = (attn.norm_q, attn.norm_k)
    width = getattr(attn, "inner_dim", None)
    head_dim = (width or 0) // max(1, attn.heads)
    return (
        hidden_states.dtype == torch.bfloat16
        and head_dim > 0 and head_dim & (head_dim - 1) == 0
        and rotary_emb is not None
        and rotary_emb[0].dim() == 4
        and rotary_emb[0].shape[0] == rotary_emb[0].shape[2] == 1
        and all(isinstance(n, torch.nn.RMSNorm) and n.weight is not None and n.weight.dtype == torch.bfloat16
                and tuple(n.normalized_shape) == (width,) for n in norms)
    )  # fmt: skip


def _projections(attn: Any, hidden_states: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if getattr(attn, "fused_projections", False):
        return tuple(attn.to_qkv(hidden_states).chunk(3, dim=-1))
    return attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)


class Fp8SelfAttention:
    """Processor for a Wan self-attention module (``attn1``): projections, q/k RMS norms and
    rotary embedding as the model defines them, then :func:`fp8_attention` (inside diffusers'
    Ulysses all-to-all under context parallelism), or all of it after the projections in
    ``from_projections`` (tunehub's Triton path) where :func:`_fusable` holds and no context
    parallelism runs. Anything else goes to the stock processor."""

    _attention_backend = None
    _parallel_config = None

    def __init__(self, stock: Any, attention: Any = None, from_projections: Any = None) -> None:
        self.stock = stock
        # the attention function on [B, S, H, D] tensors (tests pass an exact one)
        self.attention = attention or fp8_attention
        # the same from the projections, the norms and rotation fused into its quantization
        # (tunehub's Triton kernel); None: norms and rotation in torch, then ``attention``
        self.from_projections = from_projections

    def _ring(self) -> bool:
        config = getattr(self._parallel_config, "context_parallel_config", None)
        return config is not None and config.ring_degree > 1

    def _parallel(self) -> bool:
        return getattr(self._parallel_config, "context_parallel_config", None) is not None

    def __call__(
        self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None, rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:  # fmt: skip
        if encoder_hidden_states is not None or attention_mask is not None or self._ring():
            self.stock._parallel_config = self._parallel_config
            return self.stock(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        query, key, value = _projections(attn, hidden_states)
        out = self._attend(attn, query, key, value, rotary_emb, hidden_states)
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))

    def _attend(self, attn: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                rotary_emb: tuple[torch.Tensor, torch.Tensor] | None, hidden_states: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """[B, S, H, D] attention output from the projections."""
        parallel = self._parallel()
        if self.from_projections is not None and not parallel and _fusable(attn, rotary_emb, hidden_states):
            return self.from_projections(query, key, value, attn.norm_q, attn.norm_k, rotary_emb, attn.heads)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query, key, value = (t.unflatten(2, (attn.heads, -1)) for t in (query, key, value))
        if rotary_emb is not None:
            query, key = _rotate(query, *rotary_emb), _rotate(key, *rotary_emb)
        if parallel:
            from diffusers.models.attention_dispatch import _templated_context_parallel_attention

            return _templated_context_parallel_attention(
                query, key, value, None, 0.0, False, None, False, False,
                forward_op=functools.partial(_ulysses_forward_op, attention=self.attention),
                backward_op=_ulysses_backward_op,
                _parallel_config=self._parallel_config,
            )  # fmt: skip
        return self.attention(query, key, value)


class FusedSdpaSelfAttention(Fp8SelfAttention):
    """Processor for a Wan self-attention module under ``sdpa``: diffusers' computation, but the
    q/k RMS norms and the rotary embedding in one Triton pass from the projections
    (:func:`tunehub.inference.fused.normed_rotated_projections`) where :func:`_fusable` holds and
    no context parallelism runs; then torch's attention through diffusers' dispatcher. Anything
    else goes to the stock processor."""

    def __call__(
        self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None, rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:  # fmt: skip
        if (encoder_hidden_states is not None or attention_mask is not None or self._parallel()
                or not _fusable(attn, rotary_emb, hidden_states)):  # fmt: skip
            self.stock._parallel_config = self._parallel_config
            return self.stock(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        from tunehub.inference.fused import normed_rotated_projections

        assert rotary_emb is not None  # _fusable holds
        query, key, value = _projections(attn, hidden_states)
        query, key = normed_rotated_projections(query, key, attn.norm_q, attn.norm_k, rotary_emb, attn.heads)
        query, key, value = (t.unflatten(2, (attn.heads, -1)) for t in (query, key, value))
        backend = self._attention_backend or getattr(self.stock, "_attention_backend", None)
        out = dispatch_attention_fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, backend=backend)
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


def _self_attention_modules(transformer: torch.nn.Module) -> list[Any]:
    blocks = getattr(transformer, "blocks", None) or []
    return [block.attn1 for block in blocks if hasattr(block, "attn1")]


def set_attention(transformer: torch.nn.Module, attention: str, device: torch.device | str) -> tuple[str, str | None]:
    """Use ``attention`` for ``transformer``'s self-attention; returns (attention in use, a
    one-line note when ``fp8`` fell back to ``sdpa``, else None). Call before compiling."""
    # "fp8-cudnn": that kernel only; "int8": the Triton kernel with P @ V in int8
    kernels = {"fp8": FP8_KERNELS, "int8": ("triton",), **{f"fp8-{k}": (k,) for k in FP8_KERNELS}}
    if attention not in kernels and attention != "sdpa":
        raise ValueError(f"unknown attention '{attention}'; choose one of {', '.join(ATTENTIONS)}")
    modules = _self_attention_modules(transformer)
    for module in modules:  # back to the stock processor first (sdpa, or a second call)
        if isinstance(module.processor, Fp8SelfAttention):
            module.set_processor(module.processor.stock)
    wan = type(transformer).__name__ in ("WanTransformer3DModel", "WanVACETransformer3DModel")
    if attention == "sdpa":
        from tunehub.inference.fused import fused_kernels_wanted

        if wan and modules and fused_kernels_wanted(device):
            _install(modules, FusedSdpaSelfAttention)
        return "sdpa", None
    reason: str | None = None
    kernel: str | None = None
    if not modules or not wan:
        reason = f"made for Wan transformers, not {type(transformer).__name__}"
    else:
        head_dim = getattr(modules[0], "inner_dim", 0) // max(1, modules[0].heads)
        reasons = {name: unavailable_reason(device, head_dim, name) for name in kernels[attention]}
        kernel = next((k for k, why in reasons.items() if why is None), None)
        reason = None if kernel else "; ".join(dict.fromkeys(why for why in reasons.values() if why))
    if reason is not None:
        return "sdpa", f"{attention} attention {reason}: using sdpa"
    from_projections = None
    if kernel == "triton":
        from tunehub.inference.fp8_flash import ATTENTION_PV, fp8_flash_attention, fp8_flash_attention_from_projections

        function = functools.partial(fp8_flash_attention, pv=ATTENTION_PV[attention])
        from_projections = functools.partial(fp8_flash_attention_from_projections, pv=ATTENTION_PV[attention])
    else:
        function = fp8_attention
    _install(modules, functools.partial(Fp8SelfAttention, attention=function, from_projections=from_projections))
    return attention, None


def _install(modules: list[Any], make_processor: Any) -> None:
    """Each module's processor wrapped by ``make_processor(stock)``, keeping diffusers' settings."""
    for module in modules:
        processor = make_processor(module.processor)
        processor._parallel_config = getattr(module.processor, "_parallel_config", None)
        processor._attention_backend = getattr(module.processor, "_attention_backend", None)
        module.set_processor(processor)
