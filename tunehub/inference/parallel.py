"""One video across the GPUs of a host: CFG-parallel and context-parallel generation.

``generate_parallel(cfg, registry, id, gpus=N, parallel="auto", **generate_kwargs)`` is what
``generate(..., gpus=N)`` calls. It starts one process per GPU (``torch.multiprocessing``,
spawn; NCCL on GPUs, gloo on CPU) and splits the transformer's work two ways:

- **CFG-parallel** (``cfg``): with guidance on, every denoising step runs the transformer
  twice (conditional and unconditional prompt). The conditional pass runs on one group of
  ranks and the unconditional pass on another, at the same time; the outputs are exchanged
  with an ``all_gather`` and rank 0 combines them as the single-GPU pipeline does. Exact:
  the same kernels see the same inputs.
- **Context-parallel** (``context``): the video's token sequence is split across the ranks
  of a group by diffusers' own engine (``ContextParallelConfig`` + ``enable_parallelism``
  with the transformer class's ``_cp_plan``): Ulysses attention when the heads divide
  evenly, ring attention otherwise (on CUDA; on CPU "Ulysses anything"). Only transformers
  with a ``_cp_plan`` in diffusers can (Wan's has one; HunyuanVideo's and VACE's have none
  in diffusers 0.42: those get CFG-parallel only, and the plan's notes say so).
- ``both``: two groups (cond / uncond), each context-parallel over half of the GPUs.
- ``auto``: 2 GPUs -> cfg (no communication inside the step) when guidance is on; 4, 6, 8
  -> both; an odd count or no guidance -> context; no plan and no guidance -> one process.

Rank 0 builds the whole pipeline (text encoder, VAE, image encoder: the single-GPU
:func:`~tunehub.inference.pipeline.build_pipeline`) and runs the pipeline's own call; its
transformer's ``forward`` is replaced by a :class:`Leader` that broadcasts every call's
inputs (latents, prompt embeddings, image / control conditioning) to the other ranks, which
hold only the transformer (loaded from the same files, 16-bit or int8) and :func:`serve`
calls until told to stop. Only rank 0 decodes; the frames come back to the calling process,
which writes the mp4 (atomically, as the single-GPU path does) and the settings file.

Failure: a rank that raises sends its error to the parent, which stops every other rank
(SIGTERM, then SIGKILL) and raises that error (a TunehubError keeps its class, with
``rank N:`` in front; others become InferenceError); a rank that dies without a word
(killed, segfault) is reported with its exit code. No process is left behind (children
also die with their parent: PR_SET_PDEATHSIG) and nothing is written under the final name.

Environment: children inherit the parent's environment (``NCCL_*`` included); NVLink
multicast stays off unless the user set the variables (:data:`NVLINK_MULTICAST_OFF`).

The pieces (:func:`launch`, :func:`init_rank`, :func:`enable_context_parallel`,
:class:`Leader`, :func:`serve`) are public so that ``benchmarks/gpu_parallel.py`` times
this very code with a random-weight model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import queue as queue_module
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunehub.errors import ConfigError, InferenceError, TunehubError

PARALLEL_MODES = ("auto", "cfg", "context", "both")
NVLINK_MULTICAST_OFF = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}
# Collectives wait this long for a peer (rank 0 loads the text encoder while the others
# wait); a rank that dies is noticed by the parent long before, through its exit.
COLLECTIVE_TIMEOUT_S = 2 * 3600
STRAGGLER_GRACE_S = 30.0  # after rank 0's result, how long the other ranks get to exit


# ------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class ParallelPlan:
    """How ``world`` processes share one video: ``cfg`` groups (1 or 2) of ``context``
    ranks each (``world == cfg * context``)."""

    world: int
    cfg: int = 1
    context: int = 1
    attention: str = ""  # ulysses | ring | ulysses_anything | ring_anything ("" without context)
    device_type: str = "cuda"
    notes: tuple[str, ...] = ()

    @property
    def backend(self) -> str:
        return "nccl" if self.device_type == "cuda" else "gloo"

    @property
    def ring_degree(self) -> int:
        return self.context if self.attention.startswith("ring") else 1

    @property
    def ulysses_degree(self) -> int:
        return self.context if self.attention.startswith("ulysses") else 1

    def describe(self) -> str:
        if self.world == 1:
            text = "1 process"
        else:
            axes = []
            if self.cfg > 1:
                axes.append("CFG-parallel x2 (cond / uncond)")
            if self.context > 1:
                axes.append(f"context-parallel x{self.context} ({self.attention.replace('_', ' ')})")
            text = f"{self.world} processes ({self.backend}): " + " + ".join(axes)
        return "; ".join([text, *self.notes])

    def to_json(self) -> dict[str, Any]:
        return {
            "processes": self.world,
            "cfg": self.cfg,
            "context": self.context,
            "attention": self.attention,
            "backend": self.backend,
            "notes": list(self.notes),
        }


def choose_attention(context: int, heads: int, tokens: int | None, device_type: str) -> str:
    """Ulysses when the heads (and the tokens) divide evenly; otherwise ring attention on
    CUDA (it needs an attention kernel that returns the log-sum-exp: cuDNN's), and
    diffusers' "Ulysses anything" on CPU."""
    if context <= 1:
        return ""
    even_tokens = tokens is None or tokens % context == 0
    if heads % context == 0 and even_tokens:
        return "ulysses"
    if device_type == "cuda":
        return "ring" if even_tokens else "ring_anything"
    return "ulysses_anything"


def plan_parallel(
    world: int,
    mode: str = "auto",
    *,
    guidance: bool,
    context_plan: bool,
    heads: int,
    tokens: int | None = None,
    device_type: str = "cuda",
    model_name: str = "this transformer",
) -> ParallelPlan:
    """The plan for ``world`` processes. ``guidance``: the run has a conditional and an
    unconditional pass per step; ``context_plan``: the transformer class has a diffusers
    ``_cp_plan``. Impossible explicit requests raise ConfigError; ``auto`` degrades and
    says why in ``notes``."""
    if mode not in PARALLEL_MODES:
        raise ConfigError(f"--parallel must be one of {', '.join(PARALLEL_MODES)}, got {mode!r}")
    if world < 1:
        raise ConfigError(f"--gpus must be at least 1, got {world}")
    no_plan = f"{model_name} has no context-parallel plan in diffusers: CFG-parallel only"
    no_guidance = "guidance is off (guidance scale <= 1): no CFG pair to split"
    notes: list[str] = []

    def make(cfg: int, context: int) -> ParallelPlan:
        attention = choose_attention(context, heads, tokens, device_type)
        if attention.endswith("_anything") or attention == "ring":
            notes.append(f"{heads} heads / {tokens} tokens do not split evenly over {context}: {attention} attention")
        return ParallelPlan(cfg * context, cfg, context, attention, device_type, tuple(notes))

    if world == 1:
        return ParallelPlan(1, device_type=device_type)
    if mode == "cfg":
        if not guidance:
            raise ConfigError(f"--parallel cfg: {no_guidance}; use --parallel context")
        if world != 2:
            raise ConfigError(f"--parallel cfg uses exactly 2 processes (got --gpus {world}); use --parallel both")
        return make(2, 1)
    if mode == "context":
        if not context_plan:
            raise ConfigError(f"--parallel context: {no_plan}")
        return make(1, world)
    if mode == "both":
        if not guidance:
            raise ConfigError(f"--parallel both: {no_guidance}; use --parallel context")
        if not context_plan:
            raise ConfigError(f"--parallel both: {no_plan}")
        if world < 4 or world % 2:
            raise ConfigError(f"--parallel both needs an even number of GPUs >= 4, got {world}")
        return make(2, world // 2)
    # auto
    if guidance and context_plan:
        if world == 2:
            return make(2, 1)
        if world % 2 == 0:
            return make(2, world // 2)
        return make(1, world)
    if guidance:
        notes.append(no_plan)
        if world > 2:
            notes.append(f"using 2 of the {world} GPUs")
        return make(2, 1)
    if context_plan:
        notes.append(no_guidance)
        return make(1, world)
    notes.extend([no_plan, no_guidance, "running on one GPU"])
    return ParallelPlan(1, device_type=device_type, notes=tuple(notes))


def child_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Variables a child sets when absent: NVLink multicast off (on shared hosts it can
    take the GPUs out of service) unless the user chose otherwise."""
    environ = dict(os.environ) if environ is None else environ
    return {key: value for key, value in NVLINK_MULTICAST_OFF.items() if key not in environ}


# ------------------------------------------------------------------ processes


class Channel:
    """A child's line to the parent: ``send(payload)`` reaches ``on_message(rank, payload)``."""

    def __init__(self, rank: int, queue: Any) -> None:
        self.rank = rank
        self._queue = queue

    def send(self, payload: Any) -> None:
        self._queue.put(("message", self.rank, payload))

    def progress(self, event: dict[str, Any]) -> None:
        self.send({"progress": event})


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when the parent dies (no orphan holding a GPU)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _error_payload(exc: BaseException) -> dict[str, Any]:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        blob: bytes | None = pickle.dumps(exc)
        pickle.loads(blob)
    except Exception:
        blob = None
    return {"type": type(exc).__name__, "message": str(exc), "traceback": text, "pickled": blob}


def _child_main(fn: Callable[..., Any], rank: int, world: int, queue: Any, args: tuple[Any, ...],
                env: dict[str, str]) -> None:  # fmt: skip
    _die_with_parent()
    for key, value in env.items():
        os.environ.setdefault(key, value)
    code = 0
    try:
        result = fn(rank, world, Channel(rank, queue), *args)
        queue.put(("result", rank, result if rank == 0 else None))
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the parent
        queue.put(("error", rank, _error_payload(exc)))
        code = 1
    queue.close()
    queue.join_thread()
    with contextlib.suppress(Exception):
        import multiprocessing.util

        # multiprocessing finalizers only (e.g. tqdm's lock: its semaphore is unregistered
        # from the resource tracker instead of being reported as leaked)
        multiprocessing.util._run_finalizers(0)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    # No interpreter teardown: process-group destructors can block on a dead peer or
    # abort ("terminate called without an active exception") after a clean run.
    os._exit(code)


_SECONDARY = ("DistBackendError", "DistNetworkError", "DistError", "DistStoreError")
_SECONDARY_TEXT = ("connection closed by peer", "connection reset", "broken pipe", "timed out", "nccl")


def _is_secondary(payload: dict[str, Any]) -> bool:
    """An error caused by another rank's death (a collective that lost its peer)."""
    text = payload["message"].lower()
    return payload["type"] in _SECONDARY or any(word in text for word in _SECONDARY_TEXT)


def _rank_error(rank: int, payload: dict[str, Any]) -> BaseException:
    original: BaseException | None = None
    if payload.get("pickled"):
        with contextlib.suppress(Exception):
            original = pickle.loads(payload["pickled"])
    error: BaseException | None = None
    if isinstance(original, TunehubError):
        with contextlib.suppress(Exception):
            error = type(original)(f"rank {rank}: {original}")
    if error is None:
        error = InferenceError(f"rank {rank} failed: {payload['type']}: {payload['message']}")
    error.rank = rank  # type: ignore[attr-defined]
    error.remote_traceback = payload["traceback"]  # type: ignore[attr-defined]
    if original is not None and error is not original:
        error.__cause__ = original
    return error


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _stop(processes: Sequence[Any], grace: float = 5.0) -> None:
    """SIGTERM every live child, then SIGKILL what is left after ``grace``; reap all."""
    for process in processes:
        if process.is_alive():
            with contextlib.suppress(Exception):
                process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            with contextlib.suppress(Exception):
                process.kill()
            process.join(10)


def _start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker before spawning, with a usable stderr.

    Spawning first starts the tracker and hands it ``sys.stderr.fileno()``; under a TUI
    (Textual's print capture) that is -1 and the spawn fails with "bad value(s) in
    fds_to_keep". Then the tracker's stderr goes to /dev/null instead."""
    from multiprocessing import resource_tracker

    try:
        usable = sys.stderr is not None and sys.stderr.fileno() >= 0
    except (AttributeError, OSError, ValueError):
        usable = False
    if usable:
        resource_tracker.ensure_running()
        return
    saved = sys.stderr
    with open(os.devnull, "w", encoding="utf-8") as null:
        sys.stderr = null
        try:
            resource_tracker.ensure_running()
        finally:
            sys.stderr = saved


def launch(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    nprocs: int,
    *,
    on_message: Callable[[int, Any], None] | None = None,
    on_start: Callable[[list[int]], None] | None = None,
    env: dict[str, str] | None = None,
) -> Any:
    """Run ``fn(rank, nprocs, channel, *args)`` in ``nprocs`` spawned processes and return
    rank 0's return value. ``fn`` must be importable (a module-level function).

    A rank that raises (or dies) ends the run: the others are stopped and the rank's error
    is raised here. ``on_message(rank, payload)`` runs in this thread for each
    ``channel.send``; ``on_start(pids)`` once the processes exist."""
    import multiprocessing

    _start_resource_tracker()
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child_env = child_environment() if env is None else env
    processes = [
        context.Process(target=_child_main, args=(fn, rank, nprocs, queue, args, child_env), name=f"tunehub-rank{rank}")
        for rank in range(nprocs)
    ]
    errors: list[tuple[int, dict[str, Any]]] = []
    finished: set[int] = set()
    result: Any = None
    failed_at: float | None = None

    def handle(item: tuple[str, int, Any]) -> None:
        nonlocal result
        kind, rank, payload = item
        if kind == "message":
            if on_message is not None:
                on_message(rank, payload)
        elif kind == "result":
            finished.add(rank)
            if rank == 0:
                result = payload
        elif kind == "error":
            errors.append((rank, payload))

    exits: list[int | None] = []
    result_at: float | None = None
    try:
        for process in processes:
            process.start()
        if on_start is not None:
            on_start([p.pid for p in processes])
        while True:
            try:
                handle(queue.get(timeout=0.1))
                continue
            except queue_module.Empty:
                pass
            # a rank that delivered its result and then died in teardown has done its part
            dead = [r for r, p in enumerate(processes) if p.exitcode not in (None, 0) and r not in finished]
            if errors or dead:
                if failed_at is None:
                    failed_at = time.monotonic()
                # a moment for the failing rank's own message (and its peers') to arrive
                if time.monotonic() - failed_at > 1.0 or (errors and not _is_secondary(errors[0][1])):
                    break
                continue
            if all(p.exitcode == 0 or (p.exitcode is not None and r in finished) for r, p in enumerate(processes)):
                with contextlib.suppress(queue_module.Empty):
                    while True:
                        handle(queue.get(timeout=0.2))
                break
            if 0 in finished:
                # rank 0 has the video; a rank that does not exit within the grace is stopped
                result_at = result_at or time.monotonic()
                if time.monotonic() - result_at > STRAGGLER_GRACE_S:
                    finished.update(range(nprocs))
                    break
    finally:
        exits = [p.exitcode for p in processes]  # before the stop: who died by itself
        _stop(processes)
        with contextlib.suppress(Exception):
            while True:
                handle(queue.get_nowait())
        queue.close()
        queue.cancel_join_thread()
    primary = [item for item in errors if not _is_secondary(item[1])]
    if primary:
        raise _rank_error(*primary[0])
    reported = {rank for rank, _ in errors}
    silent = [(r, code) for r, code in enumerate(exits) if code not in (None, 0) and r not in reported | finished]
    if silent:  # died without a word (killed, out of memory, segfault): the others only lost it
        rank, code = silent[0]
        hint = "out of memory?" if code == -signal.SIGKILL else "its output above may say why"
        raise InferenceError(f"rank {rank} {_describe_exit(code)} without an error message ({hint})")
    if errors:
        raise _rank_error(*errors[0])
    bad = [(r, code) for r, code in enumerate(exits) if code != 0 and r not in finished]
    if bad:
        rank, code = bad[0]
        raise InferenceError(f"rank {rank} {_describe_exit(code)} without reporting an error")
    if 0 not in finished:
        raise InferenceError("rank 0 ended without a result")
    return result


# ------------------------------------------------------------------ inside a rank


@dataclass
class RankContext:
    """One rank's view: its device, its CFG group, the plan."""

    rank: int
    world: int
    plan: ParallelPlan
    device: str

    @property
    def group(self) -> int:
        """0: the conditional pass (rank 0's group); 1: the unconditional pass."""
        return self.rank // self.plan.context

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()


def init_rank(rank: int, plan: ParallelPlan, init_method: str, timeout_s: float = COLLECTIVE_TIMEOUT_S) -> RankContext:
    """Pick the device (``cuda:rank``; CPU threads shared out) and join the process group."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    if plan.device_type == "cuda":
        if torch.cuda.device_count() < plan.world:
            raise InferenceError(f"{plan.world} processes asked but only {torch.cuda.device_count()} CUDA device(s) visible")
        torch.cuda.set_device(rank)
        device = f"cuda:{rank}"
    else:
        device = "cpu"
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // plan.world))
    kwargs: dict[str, Any] = dict(
        backend=plan.backend, init_method=init_method, rank=rank, world_size=plan.world, timeout=timedelta(seconds=timeout_s)
    )
    if plan.device_type == "cuda":
        kwargs["device_id"] = torch.device(device)
    try:
        dist.init_process_group(**kwargs)
    except TypeError:  # a torch without device_id
        kwargs.pop("device_id", None)
        dist.init_process_group(**kwargs)
    return RankContext(rank, plan.world, plan, device)


@contextlib.contextmanager
def _accelerator_count_for_cpu(device_type: str) -> Any:
    """diffusers computes ``rank % torch.accelerator.device_count()`` for the device, which
    is 0 on a CPU-only host; on CPU the answer does not matter, so make it 1."""
    import torch

    if device_type != "cpu" or not hasattr(torch, "accelerator"):
        yield
        return
    original = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: max(1, original())  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.accelerator.device_count = original  # type: ignore[assignment]


def has_context_plan(model_class: str) -> bool:
    """Whether diffusers ships a context-parallel plan (and the API) for this transformer."""
    import diffusers

    cls = getattr(diffusers, model_class, None)
    return (
        cls is not None
        and getattr(cls, "_cp_plan", None) is not None
        and hasattr(diffusers, "ContextParallelConfig")
        and hasattr(cls, "enable_parallelism")
    )


def enable_context_parallel(transformer: Any, ctx: RankContext) -> None:
    """diffusers' context parallelism over this rank's group (a ``cfg x ring x ulysses``
    device mesh; the group's sub-mesh is the context-parallel one)."""
    plan = ctx.plan
    if plan.context <= 1:
        return
    try:
        from diffusers import ContextParallelConfig
        from torch.distributed.device_mesh import init_device_mesh
    except ImportError as exc:
        raise InferenceError(f"this diffusers has no context parallelism ({exc}); use --parallel cfg") from None
    mesh = init_device_mesh(
        plan.device_type, (plan.cfg, plan.ring_degree, plan.ulysses_degree), mesh_dim_names=("cfg", "ring", "ulysses")
    )
    options: dict[str, Any] = {"ring_degree": plan.ring_degree, "ulysses_degree": plan.ulysses_degree, "mesh": mesh}
    if plan.attention.endswith("_anything"):  # newer options: passed only when needed
        options[plan.attention] = True
    config = ContextParallelConfig(**options)
    if plan.ring_degree > 1 and plan.device_type == "cuda":
        # ring attention merges partial results by their log-sum-exp: SDPA's default path
        # does not return it, cuDNN's does
        transformer.set_attention_backend("_native_cudnn")
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # "enable_parallelism is experimental"
    with _accelerator_count_for_cpu(plan.device_type):
        transformer.enable_parallelism(config=config)


# --- moving call arguments between ranks ---------------------------------------------


def _flatten(value: Any, tensors: list[Any]) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        tensors.append(value)
        return ("__tensor__", len(tensors) - 1, tuple(value.shape), value.dtype)
    if isinstance(value, dict):
        return {key: _flatten(item, tensors) for key, item in value.items()}
    if isinstance(value, list):
        return [_flatten(item, tensors) for item in value]
    if isinstance(value, tuple):
        return tuple(_flatten(item, tensors) for item in value)
    return value


def _unflatten(value: Any, tensors: list[Any]) -> Any:
    if isinstance(value, tuple) and len(value) == 4 and value[0] == "__tensor__":
        return tensors[value[1]]
    if isinstance(value, dict):
        return {key: _unflatten(item, tensors) for key, item in value.items()}
    if isinstance(value, list):
        return [_unflatten(item, tensors) for item in value]
    if isinstance(value, tuple):
        return tuple(_unflatten(item, tensors) for item in value)
    return value


def _tensor_specs(value: Any, out: list[tuple[tuple[int, ...], Any]]) -> None:
    if isinstance(value, tuple) and len(value) == 4 and value[0] == "__tensor__":
        out.append((value[2], value[3]))
    elif isinstance(value, dict):
        for item in value.values():
            _tensor_specs(item, out)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _tensor_specs(item, out)


def _as_bytes(tensor: Any) -> Any:
    """Any dtype as a flat uint8 view: every backend moves bytes (gloo lacks some dtypes)."""
    import torch

    flat = tensor.contiguous().reshape(-1)
    if flat.numel() and flat.stride(0) != 1:  # a 1-element expand keeps stride 0
        flat = torch.empty(flat.shape, dtype=flat.dtype, device=flat.device).copy_(flat)
    return flat.view(torch.uint8)


def _empty_bytes(shape: tuple[int, ...], dtype: Any, device: str) -> Any:
    import torch

    count = 1
    for size in shape:
        count *= size
    return torch.empty(count * torch.empty((), dtype=dtype).element_size(), dtype=torch.uint8, device=device)


def _from_bytes(buffer: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    return buffer.view(dtype).reshape(shape)


def broadcast_call(ctx: RankContext, kind: str, calls: Any = None) -> tuple[str, Any]:
    """Rank 0: send ``(kind, calls)`` (any nesting of tensors and plain values) to every
    rank; others: receive it. Tensors travel as bytes on the rank's device."""
    import torch.distributed as dist

    if ctx.rank == 0:
        tensors: list[Any] = []
        structure = _flatten(calls, tensors)
        header = [(kind, structure)]
        dist.broadcast_object_list(header, src=0)
        for tensor in tensors:
            dist.broadcast(_as_bytes(tensor), src=0)
        return kind, calls
    header = [None]
    dist.broadcast_object_list(header, src=0)
    kind, structure = header[0]  # type: ignore[misc]
    specs: list[tuple[tuple[int, ...], Any]] = []
    _tensor_specs(structure, specs)
    received = []
    for shape, dtype in specs:
        buffer = _empty_bytes(shape, dtype, ctx.device)
        dist.broadcast(buffer, src=0)
        received.append(_from_bytes(buffer, shape, dtype))
    return kind, _unflatten(structure, received)


def all_gather_tensor(ctx: RankContext, tensor: Any) -> list[Any]:
    """Every rank's ``tensor`` (same shape and dtype everywhere), in rank order."""
    import torch.distributed as dist

    local = _as_bytes(tensor)
    buffers = [local.new_empty(local.shape) for _ in range(ctx.world)]
    dist.all_gather(buffers, local)
    return [_from_bytes(buffer, tuple(tensor.shape), tensor.dtype) for buffer in buffers]


def _output_tensor(output: Any) -> Any:
    if isinstance(output, (tuple, list)):
        return output[0]
    return output.sample


def _wrap_output(tensor: Any, kwargs: dict[str, Any]) -> Any:
    if kwargs.get("return_dict", True):
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        return Transformer2DModelOutput(sample=tensor)
    return (tensor,)


def _output_like(transformer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """An empty tensor shaped and typed as the transformer's output for these inputs:
    (batch, out_channels, *latent dims), in the dtype of its final projection."""
    import torch

    hidden = kwargs.get("hidden_states", args[0] if args else None)
    if hidden is None:
        raise InferenceError("CFG-parallel: the transformer was called without hidden_states")
    config = transformer.config
    channels = getattr(config, "out_channels", None) or config.in_channels
    dtype = None
    proj = getattr(transformer, "proj_out", None)
    weight = getattr(proj, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.is_floating_point():
        dtype = weight.dtype
    if dtype is None:
        dtype = next(p.dtype for p in transformer.parameters() if p.is_floating_point())
    return torch.empty((hidden.shape[0], channels, *hidden.shape[2:]), dtype=dtype, device=hidden.device)


class Leader:
    """Rank 0's transformer ``forward``: the pipeline calls it as usual.

    Without CFG pairs, each call is broadcast and every rank runs it (context-parallel).
    With CFG pairs the pipelines call the conditional pass, then the unconditional one,
    and combine only after both returned: the first call returns an empty tensor; the
    second broadcasts both calls, rank 0's group computes the conditional pass while the
    other group computes the unconditional one, ``all_gather`` exchanges the outputs, the
    conditional result is copied into the tensor returned before, and the unconditional
    one is returned."""

    def __init__(self, transformer: Any, ctx: RankContext, cfg_pairs: bool) -> None:
        self.transformer = transformer
        self.ctx = ctx
        self.cfg_pairs = cfg_pairs and ctx.plan.cfg == 2
        if cfg_pairs and ctx.plan.cfg != 2:
            self.cfg_pairs = False
        self.inner = transformer.forward  # diffusers' context-parallel hooks included
        self.pending: tuple[tuple[Any, ...], dict[str, Any], Any] | None = None
        self.calls = 0
        self.stopped = False
        transformer.forward = self.forward

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if not self.cfg_pairs:
            broadcast_call(self.ctx, "one", [(args, kwargs)])
            return self.inner(*args, **kwargs)
        if self.pending is None:
            placeholder = _output_like(self.transformer, args, kwargs)
            self.pending = (args, kwargs, placeholder)
            return _wrap_output(placeholder, kwargs)
        cond_args, cond_kwargs, placeholder = self.pending
        self.pending = None
        broadcast_call(self.ctx, "pair", [(cond_args, cond_kwargs), (args, kwargs)])
        cond = _output_tensor(self.inner(*cond_args, **cond_kwargs))
        outputs = all_gather_tensor(self.ctx, cond)
        uncond = outputs[self.ctx.plan.context]  # the first rank of group 1
        if cond.shape != placeholder.shape or cond.dtype != placeholder.dtype:
            raise InferenceError(
                f"CFG-parallel: the transformer returned {tuple(cond.shape)} {cond.dtype}, "
                f"expected {tuple(placeholder.shape)} {placeholder.dtype}; use --parallel context or one GPU"
            )
        placeholder.copy_(cond)
        return _wrap_output(uncond, kwargs)

    def finish(self) -> None:
        """Tell the other ranks to stop serving (after the last step)."""
        if self.stopped:
            return
        self.stopped = True
        if self.pending is not None:
            raise InferenceError("CFG-parallel: a conditional pass was never followed by its unconditional pass")
        broadcast_call(self.ctx, "stop")


def serve(transformer: Any, ctx: RankContext) -> int:
    """Ranks > 0: run the calls rank 0 broadcasts until it says stop; returns the count."""
    import torch

    count = 0
    with torch.inference_mode():
        while True:
            kind, calls = broadcast_call(ctx, "")
            if kind == "stop":
                return count
            count += 1
            if kind == "one":
                args, kwargs = calls[0]
                transformer(*args, **kwargs)
            elif kind == "pair":
                args, kwargs = calls[ctx.group]
                output = _output_tensor(transformer(*args, **kwargs))
                all_gather_tensor(ctx, output)
            else:
                raise InferenceError(f"rank {ctx.rank}: unknown command {kind!r} from rank 0")


# ------------------------------------------------------------------ generation


@dataclass
class _Job:
    cfg: Any
    architecture: str
    files: list[Path]
    dtype: str
    int8_kernel: str
    vae_tiling: bool
    compile_blocks: bool
    values: Any
    inputs: Any
    plan: ParallelPlan
    init_method: str
    workdir: Path
    extra: dict[str, Any] = field(default_factory=dict)
    attention: str = "sdpa"


def load_transformer_only(cfg: Any, architecture: str, files: Sequence[Path], dtype: str, device: str,
                          int8_kernel: str = "auto", compile_blocks: bool = False,
                          attention: str = "sdpa") -> Any:  # fmt: skip
    """The transformer part of :func:`~tunehub.inference.pipeline.build_pipeline` alone
    (:func:`~tunehub.inference.pipeline.load_finetune_transformer`, then the int8 kernel
    and compilation as there): what ranks other than 0 hold (no text encoder, no VAE)."""
    from tunehub.inference.int8_linear import int8_layers, set_int8_kernel
    from tunehub.inference.pipeline import choose_attention, fetch_base_repo, load_finetune_transformer
    from tunehub.inference.transformer import compile_transformer_blocks

    base_folder = fetch_base_repo(cfg, architecture)
    transformer, _ = load_finetune_transformer(base_folder, architecture, list(files), dtype, device, int8_kernel)
    if int8_kernel != "quanto" and any(True for _ in int8_layers(transformer)):
        set_int8_kernel(transformer, int8_kernel, device)
    choose_attention(transformer, attention, device)  # before enable_context_parallel: it sets the processors' config
    if compile_blocks:
        compile_transformer_blocks(transformer)
    return transformer


def _quiet_children() -> None:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*experimental.*")


def _generate_rank(rank: int, world: int, channel: Channel, job: _Job) -> dict[str, Any] | None:
    """One rank of :func:`generate_parallel`."""
    _quiet_children()
    import numpy as np

    from tunehub.inference.pipeline import (
        build_pipeline,
        denoise,
        pipeline_inputs,
        set_flow_shift,
    )
    from tunehub.inference.video import to_uint8_frames

    # No ``finally`` around the work: after a failure this rank neither tells the others to
    # stop nor tears the process group down (either could block on a peer in another
    # collective); it reports its error and exits, and the parent stops the others. After
    # success the process exits without teardown too (see _child_main).
    ctx = init_rank(rank, job.plan, job.init_method)
    if rank != 0:
        transformer = load_transformer_only(
            job.cfg, job.architecture, job.files, job.dtype, ctx.device, job.int8_kernel, job.compile_blocks,
            job.attention,
        )
        enable_context_parallel(transformer, ctx)
        serve(transformer, ctx)
        return None
    built = build_pipeline(
        job.cfg,
        job.architecture,
        job.files,
        dtype=job.dtype,
        device=ctx.device,
        offload="none",
        int8_kernel=job.int8_kernel,
        vae_tiling=job.vae_tiling,
        compile_blocks=job.compile_blocks,
        progress=channel.progress,
        attention=job.attention,
    )
    enable_context_parallel(built.pipe.transformer, ctx)
    set_flow_shift(built.pipe, job.values.flow_shift)
    kwargs = pipeline_inputs(built, job.values, job.inputs)
    leader = Leader(built.pipe.transformer, ctx, cfg_pairs=job.plan.cfg == 2)
    started = time.perf_counter()
    frames = denoise(built, kwargs, channel.progress)
    denoise_seconds = time.perf_counter() - started
    leader.finish()  # the other ranks stop serving
    path = Path(job.workdir) / "frames.npy"
    np.save(path, to_uint8_frames(frames))
    return {
        "frames_file": str(path),
        "device": built.device,
        "int8_kernels": built.int8_kernels,
        "attention": built.attention,
        "load_seconds": built.load_seconds,
        "denoise_seconds": denoise_seconds,
        "transformer_calls": leader.calls,
    }


def resolve_world(gpus: int | str, device_type: str) -> int:
    """``--gpus N|auto`` -> a process count (auto: every visible CUDA device)."""
    if isinstance(gpus, str):
        if gpus.strip().lower() != "auto":
            try:
                gpus = int(gpus)
            except ValueError:
                raise ConfigError(f"--gpus must be a number or 'auto', got {gpus!r}") from None
        else:
            if device_type != "cuda":
                raise ConfigError("--gpus auto counts CUDA devices; on CPU give a number of processes")
            import torch

            return max(1, torch.cuda.device_count())
    if gpus < 1:
        raise ConfigError(f"--gpus must be at least 1, got {gpus}")
    if device_type == "cuda":
        import torch

        count = torch.cuda.device_count()
        if gpus > count:
            raise ConfigError(f"--gpus {gpus}: only {count} CUDA device(s) visible")
    return int(gpus)


def _latent_tokens(spec: Any, config: dict[str, Any], values: Any) -> int | None:
    """Tokens the transformer sees per pass (for the split check); Wan: 4x temporal,
    8x spatial VAE compression, then the patch."""
    if spec.family != "wan":
        return None
    patch = config.get("patch_size") or (1, 2, 2)
    frames = (values.frames - 1) // 4 + 1
    return (frames // patch[0]) * (values.height // 8 // patch[1]) * (values.width // 8 // patch[2])


def generate_parallel(
    cfg: Any,
    registry: Any,
    definition_id: str,
    *,
    gpus: int | str = "auto",
    parallel: str = "auto",
    image: str | Path | None = None,
    video: str | Path | None = None,
    mask: str | Path | None = None,
    out: str | Path | None = None,
    device: str | None = None,
    offload: str = "none",
    quantization: str | None = None,
    dtype: str | None = None,
    int8_kernel: str = "auto",
    vae_tiling: bool = True,
    compile_blocks: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
    attention: str = "sdpa",
    loras: list[str] | None = None,
    no_loras: bool = False,
    **settings: Any,
) -> Any:
    """:func:`tunehub.inference.generate` over ``gpus`` processes (see the module
    docstring). Same result, video and settings file as the single-GPU run; a first
    ``{"status": "parallel", "plan", "description"}`` event says how the work is split."""
    from tunehub.inference.generation import finish, generate, prepare
    from tunehub.inference.pipeline import fetch_base_repo, transformer_config

    if parallel not in PARALLEL_MODES:
        raise ConfigError(f"--parallel must be one of {', '.join(PARALLEL_MODES)}, got {parallel!r}")
    if offload not in (None, "none"):
        raise ConfigError("--offload cannot be combined with --gpus > 1 (each GPU holds its own copy of the transformer)")
    import torch

    if device in (None, "", "auto"):
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    elif str(device).startswith("cuda"):
        device_type = "cuda"
        if not torch.cuda.is_available():
            raise InferenceError("--device cuda asked but no CUDA device is available; use --device cpu")
    else:
        device_type = str(device)
    if device_type not in ("cuda", "cpu"):
        raise ConfigError(f"--gpus needs --device cuda or cpu, got {device!r}")
    world = resolve_world(gpus, device_type)
    common = dict(image=image, video=video, mask=mask, out=out, quantization=quantization, dtype=dtype,
                  int8_kernel=int8_kernel, vae_tiling=vae_tiling, compile_blocks=compile_blocks,
                  attention=attention)  # fmt: skip

    prepared = prepare(
        registry, definition_id, quantization, dtype, settings, image, video, mask, out,
        loras=loras, no_loras=no_loras,
    )  # fmt: skip
    resolution, spec, files = prepared.resolution, prepared.spec, prepared.files
    values, inputs = prepared.values, prepared.inputs
    settings = {**settings, "seed": values.seed}  # a random seed is drawn once, here

    base_folder = fetch_base_repo(cfg, resolution.architecture, progress)  # once, here
    config, _ = transformer_config(base_folder, resolution.architecture)
    model_class = config.get("_class_name") or spec.transformer
    plan = plan_parallel(
        world,
        parallel,
        guidance=values.guidance_scale > 1.0,
        context_plan=world > 1 and has_context_plan(model_class),
        heads=int(config.get("num_attention_heads") or 1),
        tokens=_latent_tokens(spec, config, values),
        device_type=device_type,
        model_name=model_class,
    )
    if progress:
        progress({"status": "parallel", "plan": plan.to_json(), "description": plan.describe()})
    if plan.world == 1:
        return generate(cfg, registry, definition_id, device=device, offload="none", progress=progress,
                        loras=loras, no_loras=no_loras, **common, **settings)  # fmt: skip
    if spec.two_experts or prepared.loras or image is not None and spec.image_pipeline:
        what = "two-expert models" if spec.two_experts else "LoRAs" if prepared.loras else "ti2v with a start image"
        raise ConfigError(
            f"definition '{definition_id}': {what} run on one GPU for now (drop --gpus"
            + (", or add --no-loras)" if prepared.loras and not spec.two_experts else ")")
        )

    child_cfg = dataclasses.replace(cfg, base_repos={**cfg.base_repos, resolution.architecture: str(base_folder)})
    workdir = Path(tempfile.mkdtemp(prefix="tunehub-parallel-"))
    job = _Job(
        cfg=child_cfg,
        architecture=resolution.architecture,
        files=[choice.path for choice in files],
        dtype=resolution.dtype,
        int8_kernel=int8_kernel,
        vae_tiling=vae_tiling,
        compile_blocks=compile_blocks,
        values=values,
        inputs=inputs,
        plan=plan,
        init_method=(workdir / "rendezvous").as_uri(),
        workdir=workdir,
        attention=attention,
    )

    def on_message(rank: int, payload: Any) -> None:
        if progress and isinstance(payload, dict) and "progress" in payload:
            progress(payload["progress"])

    try:
        outcome = launch(_generate_rank, (job,), plan.world, on_message=on_message)
        import numpy as np

        frames = np.load(outcome["frames_file"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return finish(
        cfg, definition_id, prepared, frames,
        device=f"{outcome['device'].split(':')[0]} x{plan.world}", int8_kernels=outcome["int8_kernels"],
        load_seconds=outcome["load_seconds"], denoise_seconds=outcome["denoise_seconds"], progress=progress,
        attention=outcome.get("attention", "sdpa"),
    )  # fmt: skip
