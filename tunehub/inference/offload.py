"""Offloading without accelerate: pure torch hooks.

- ``model``: every big model of the pipeline (text encoders, image encoder, transformer,
  VAE) lives on the CPU and is moved to the device when it is called, after the previous
  one is moved back: at most one model on the GPU. A 14B int8 Wan transformer (~15 GB)
  then never shares a 24 GB card with the 11 GB umt5-xxl text encoder.
- ``group``: the same, and the transformer's block lists are streamed: only its small
  non-block layers stay on the device while it runs; each block comes in right before
  its forward and goes back right after. Least GPU memory, most transfer time.

diffusers' own offloading (``enable_model_cpu_offload``, ``enable_group_offload``)
needs the accelerate package; these hooks do not.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

BLOCK_LIST_NAMES = ("blocks", "vace_blocks", "transformer_blocks", "single_transformer_blocks", "refiner_blocks")


def _move_direct(module: nn.Module, device: torch.device) -> None:
    """Move only the parameters and buffers that ``module`` itself owns."""
    for name, param in module._parameters.items():
        if param is not None and param.device != device:
            param.data = param.data.to(device)
    for name, buffer in module._buffers.items():
        if buffer is not None and buffer.device != device:
            module._buffers[name] = buffer.to(device)


class Offloader:
    """Keeps at most one of the pipeline's models on ``device``; counts the moves."""

    def __init__(self, device: str | torch.device, stream_blocks: bool) -> None:
        self.device = torch.device(device)
        self.cpu = torch.device("cpu")
        self.stream_blocks = stream_blocks
        self.current: nn.Module | None = None
        self.model_moves = 0
        self.block_moves = 0
        self._blocks: dict[int, list[nn.Module]] = {}
        self.names: dict[int, str] = {}  # id(model) -> pipeline component name
        # after each switch, the component names whose weights were placed on the device and
        # not moved back (at most one: two 14B experts never share the GPU)
        self.resident_log: list[tuple[str, ...]] = []
        self._resident: set[str] = set()

    # --- whole models ------------------------------------------------------------

    def _place(self, module: nn.Module, device: torch.device) -> None:
        blocks = self._blocks.get(id(module))
        if not blocks:
            module.to(device)
            return
        inside = {id(m) for block in blocks for m in block.modules()}
        for sub in module.modules():
            if id(sub) not in inside:
                _move_direct(sub, device)
        if device == self.cpu:
            for block in blocks:
                block.to(self.cpu)

    def activate(self, module: nn.Module) -> None:
        if self.current is module:
            return
        if self.current is not None:
            self._place(self.current, self.cpu)
            self._resident.discard(self._name(self.current))
        self._place(module, self.device)
        self._resident.add(self._name(module))
        self.current = module
        self.model_moves += 1
        self.resident_log.append(tuple(sorted(self._resident)))

    def _name(self, module: nn.Module) -> str:
        return self.names.get(id(module), type(module).__name__)

    # --- blocks ------------------------------------------------------------------

    def stream(self, model: nn.Module) -> int:
        """Register every block of ``model``'s block lists for streaming; returns the count."""
        blocks: list[nn.Module] = []
        for name, child in model.named_modules():
            if isinstance(child, nn.ModuleList) and name.rsplit(".", 1)[-1] in BLOCK_LIST_NAMES:
                blocks.extend(child)
        for block in blocks:
            block.register_forward_pre_hook(self._block_in)
            block.register_forward_hook(self._block_out)
        self._blocks[id(model)] = blocks
        return len(blocks)

    def _block_in(self, block: nn.Module, args: Any) -> None:
        block.to(self.device)
        self.block_moves += 1

    def _block_out(self, block: nn.Module, args: Any, output: Any) -> None:
        block.to(self.cpu)


def enable_offload(pipe: Any, device: str, mode: str) -> Offloader:
    """Install the hooks on ``pipe`` (all its models on CPU until called) and make it run on
    ``device``. ``mode``: ``model`` or ``group``."""
    offloader = Offloader(device, stream_blocks=mode == "group")
    pipe.to("cpu")
    for name, component in pipe.components.items():
        if not isinstance(component, nn.Module):
            continue
        offloader.names.setdefault(id(component), name)
        if mode == "group" and name.startswith("transformer"):
            offloader.stream(component)
        component.register_forward_pre_hook(lambda module, args, _o=offloader: _o.activate(module))
        # VAEs are called through encode/decode, not forward
        for method_name in ("encode", "decode"):
            method = getattr(component, method_name, None)
            if method is not None and callable(method):
                setattr(component, method_name, _activating(method, component, offloader))
    execution_device = torch.device(device)
    pipe_class = type(pipe)
    # diffusers creates latents and embeddings on pipe._execution_device; with every model
    # on the CPU it would say "cpu", so the pipeline is told the device explicitly.
    pipe.__class__ = type(
        pipe_class.__name__, (pipe_class,), {"_execution_device": property(lambda self: execution_device)}
    )
    pipe._tunehub_offloader = offloader
    return offloader


def _activating(method: Any, component: nn.Module, offloader: Offloader) -> Any:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        offloader.activate(component)
        return method(*args, **kwargs)

    return call
