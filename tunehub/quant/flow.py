"""``tunehub quantize ID``: WanGP's save-quantized flow, streaming, for every list of a definition.

For ``URLs``, ``URLs2`` and each module's list of variants: the 16-bit source is the
first entry (WanGP's rule), the output is named by WanGP's rule
(:func:`tunehub.registry.naming.quantized_filename`) and written into the weights
folder, then its bare name is appended to that list with the safe definition writer.
An output that exists is not redone unless ``force``. ``tunehub pull`` calls
:func:`quantize_definition` for ``auto_quantize``.

Unlike WanGP, modules are quantized too (WanGP refuses definitions that declare modules).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunehub.config import Config
from tunehub.errors import QuantizationError, UnsupportedArchitectureError
from tunehub.registry.urls import local_name
from tunehub.registry import Registry
from tunehub.registry.architectures import require_quantize
from tunehub.registry.naming import parse_variant_name, quantized_filename
from tunehub.registry.weights import locate
from tunehub.registry.writer import record_change

__all__ = ["QuantizeTarget", "plan_definition", "quantize_definition"]

ProgressCallback = Callable[[dict[str, Any]], None]


@dataclass
class QuantizeTarget:
    """One list of a definition to quantize: where the list is, its 16-bit source, its output."""

    key: str  # "URLs", "URLs2" or "modules"
    module_index: int | None  # for "modules": which item
    choices: list[str]
    source: str  # the entry as written (choices[0])
    source_path: Path
    source_present: bool
    output_name: str
    existing_output: Path | None  # where the int8 file already is, if anywhere
    listed: bool  # the output name is already in the list
    has_int8: bool  # the list already offers an int8 file for this dtype (maybe not downloaded)

    @property
    def label(self) -> str:
        return f"modules[{self.module_index}]" if self.key == "modules" else self.key


def _target_dtype(registry: Registry, definition_id: str, dtype: str | None) -> str:
    definition = registry.get(definition_id)
    effective, reason = registry.effective_dtype(definition, dtype)
    if dtype not in (None, "auto") and dtype != effective:
        raise QuantizationError(
            f"definition '{definition_id}' ({definition.path}) cannot be quantized for {dtype}: {reason} is {effective}"
        )
    return effective


def plan_definition(
    cfg: Config, registry: Registry, definition_id: str, dtype: str | None = None
) -> tuple[str, list[QuantizeTarget]]:
    """The dtype and the lists that quantizing ``definition_id`` would touch; refuses what WanGP refuses."""
    definition = registry.get(definition_id)
    registry.resolve(definition_id)  # an invalid definition fails here, with its problems listed
    try:
        require_quantize(definition.architecture or "")
    except UnsupportedArchitectureError as exc:
        raise QuantizationError(f"definition '{definition_id}': {exc}") from None
    target_dtype = _target_dtype(registry, definition_id, dtype)
    model = definition.model
    lists: list[tuple[str, int | None, list[str]]] = []
    for key in ("URLs", "URLs2"):
        value = model.get(key)
        if isinstance(value, str):
            raise QuantizationError(
                f"definition '{definition_id}' ({definition.path}): model.{key} is a reference to "
                f"definition '{value}', whose files are not this definition's to change; quantize "
                f"'{value}' instead (tunehub quantize {value}), or list the files in '{definition_id}' itself"
            )
        if isinstance(value, list) and value:
            lists.append((key, None, [entry for entry in value if isinstance(entry, str)]))
    modules = model.get("modules")
    if isinstance(modules, list):
        for index, item in enumerate(modules):
            # A string item borrows another definition's module: quantize that definition instead.
            if isinstance(item, list) and item:
                lists.append(("modules", index, [entry for entry in item if isinstance(entry, str)]))
    if not lists:
        raise QuantizationError(f"definition '{definition_id}' ({definition.path}) lists no weight files to quantize")

    targets = []
    for key, index, choices in lists:
        source = choices[0]
        source_name = local_name(source)
        label = f"modules[{index}]" if key == "modules" else key
        if parse_variant_name(source_name).quantization is not None:
            raise QuantizationError(
                f"definition '{definition_id}' ({definition.path}): model.{label}[0] is '{source_name}', which is "
                f"already quantized; the 16-bit file must be listed first (as WanGP expects)"
            )
        source_path, present = registry.locate_source(source, definition.origin)
        output_name = quantized_filename(source_name, target_dtype)
        targets.append(
            QuantizeTarget(
                key=key,
                module_index=index,
                choices=choices,
                source=source,
                source_path=source_path,
                source_present=present,
                output_name=output_name,
                existing_output=locate(output_name, cfg.weights_dirs),
                listed=any(local_name(choice) == output_name for choice in choices),
                has_int8=any(_is_int8_for(local_name(choice), target_dtype) for choice in choices),
            )
        )
    return target_dtype, targets


def _is_int8_for(name: str, dtype: str) -> bool:
    info = parse_variant_name(name)
    return info.quantization == "int8" and info.dtype in (None, dtype)


def _append_to_list(data: dict[str, Any], target: QuantizeTarget, merged_modules: Any) -> bool:
    """Append the output name to the target's list in ``data`` (a definition file's JSON)."""
    model = data.get("model")
    if not isinstance(model, dict):
        model = {}
        data["model"] = model
    if target.key != "modules":
        current = model.get(target.key)
        if not isinstance(current, list):
            # The list came from an earlier file (a built-in): this file overrides it whole.
            current = list(target.choices)
            model[target.key] = current
        if any(isinstance(c, str) and local_name(c) == target.output_name for c in current):
            return False
        current.append(target.output_name)
        return True
    modules = model.get("modules")
    if not isinstance(modules, list) or len(modules) != len(merged_modules):
        modules = json.loads(json.dumps(merged_modules))
        model["modules"] = modules
    item = modules[target.module_index]
    if not isinstance(item, list):
        return False
    if any(isinstance(c, str) and local_name(c) == target.output_name for c in item):
        return False
    item.append(target.output_name)
    return True


def _record(cfg: Config, registry: Registry, definition_id: str, targets: list[QuantizeTarget]) -> Path:
    """Append the new names to the definition's lists; a definition in a read-only folder
    (WanGP's defaults/, a built-in) gets the smallest override in the user's finetunes/."""
    merged_modules = registry.get(definition_id).model.get("modules")

    def mutate(data: dict[str, Any]) -> bool:
        changed = False
        for target in targets:
            changed = _append_to_list(data, target, merged_modules) or changed
        return changed

    return record_change(registry, definition_id, mutate).path


def quantize_definition(
    cfg: Config,
    registry: Registry,
    id: str,  # noqa: A002 - the name the contract gives it
    dtype: str | None = None,
    device: str = "auto",
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> list[Path]:
    """Quantize every 16-bit list of definition ``id``; returns the int8 files (made or found)."""
    from tunehub.quant.stream import quantize_file

    target_dtype, targets = plan_definition(cfg, registry, id, dtype)
    # A list that already offers an int8 file needs nothing when its 16-bit file is not here
    # (pull fetched the int8 one, say): only lists with nothing to use are an error.
    targets = [t for t in targets if t.source_present or t.existing_output is not None or not t.has_int8]
    missing = [t for t in targets if not t.source_present and (force or t.existing_output is None)]
    if missing:
        names = ", ".join(f"{t.label}: {local_name(t.source)}" for t in missing)
        raise QuantizationError(
            f"definition '{id}': the 16-bit file(s) to quantize are not on disk ({names}; looked in "
            f"{', '.join(str(d) for d in cfg.weights_dirs)}); fetch them with: tunehub pull {id} --quantization bf16"
        )
    outputs = []
    for target in targets:
        if target.existing_output is not None and not force:
            outputs.append(target.existing_output)
            continue
        destination = target.existing_output or cfg.download_dir / target.output_name
        quantize_file(target.source_path, destination, dtype=target_dtype, device=device, progress=progress)
        target.existing_output = destination
        outputs.append(destination)
    if any(not target.listed for target in targets):
        _record(cfg, registry, id, targets)
    return outputs
