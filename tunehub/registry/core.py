"""The registry: load every definition folder, merge by id, validate, resolve references and files."""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunehub.config import Config
from tunehub.errors import InvalidDefinitionError, ReferenceCycleError, UnknownDefinitionError
from tunehub.registry.architectures import architecture as architecture_row
from tunehub.registry.gpu import bf16_support
from tunehub.registry.model import Definition, FileChoice, Origin, Problem, Resolution
from tunehub.registry.reading import DEFAULT_MAX_DEFINITION_BYTES, definition_entries, read_definition
from tunehub.registry.select import explain_variant
from tunehub.registry.urls import is_url, local_name
from tunehub.registry.validate import (
    MAX_REFERENCE_DEPTH,
    check_file_structure,
    check_merged,
    has_required_keys,
    url_keys,
)
from tunehub.registry.weights import local_path_candidates

# Keys whose string value is the id of another definition whose same key is used.
REFERENCE_KEYS = ("loras", "loras_multipliers")

__all__ = ["Registry", "builtin_definitions_dir", "DefinitionFolder"]


def builtin_definitions_dir() -> Path:
    """The definitions shipped with tunehub (package data; the repo's definitions/ links to it)."""
    return Path(__file__).resolve().parents[1] / "builtin_definitions"


@dataclass(frozen=True)
class DefinitionFolder:
    path: Path
    origin: Origin
    readonly: bool = False  # tunehub never writes here (WanGP's defaults/, the built-ins)


@dataclass(slots=True)
class _RawFile:
    """One definition file as read: its data (None if unreadable) and its own problems."""

    folder_index: int
    path: Path
    data: dict[str, Any] | None
    problems: list[Problem]


@dataclass
class _Merged:
    definition: Definition
    entries: list[_RawFile] = field(default_factory=list)

    def file_setting(self, model_key: str) -> str:
        """The file that last set ``model.<model_key>`` (where a problem with it is reported)."""
        for raw in reversed(self.entries):
            if raw.data is not None and isinstance(raw.data.get("model"), dict) and model_key in raw.data["model"]:
                return str(raw.path)
        return str(self.definition.path)


_ABSENT: Any = object()
_REFERENCE_CAPABLE = frozenset((*REFERENCE_KEYS, "modules", "preload_URLs", "text_encoder_URLs"))


def _has_string_reference(model: dict[str, Any]) -> bool:
    """Whether a key that may name another definition (URLs*, loras, modules ...) holds a string.

    One pass over the model's own keys: the exact list (url_keys) is built only when this is true.
    """
    for key, value in model.items():
        if isinstance(value, str) and (key in _REFERENCE_CAPABLE or key.startswith("URLs")):
            return True
    return False


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside the block.

    Loading builds tens of thousands of dicts and lists that all stay alive: each collection
    the allocations trigger walks every one of them again for nothing (a tenth of a load of
    10,000 files). The parsed JSON holds no cycles, so reference counting frees it as before.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read_file(path: Path, folder_index: int, origin: Origin, max_bytes: int = DEFAULT_MAX_DEFINITION_BYTES) -> _RawFile:
    file = str(path)
    data, problem = read_definition(file, max_bytes)
    if problem is not None:
        return _RawFile(folder_index, path, None, [problem])
    problems = check_file_structure(file, data, origin)
    return _RawFile(folder_index, path, data if isinstance(data, dict) else None, problems)


class Registry:
    """Every definition the configuration loads, merged by id, with its problems."""

    loads = 0  # full loads in this process (the daemon reports it: per-file reloads should be the rule)

    def __init__(self, config: Config, folders: Sequence[DefinitionFolder]) -> None:
        self.config = config
        self.folders = list(folders)
        self._raw: dict[str, list[_RawFile]] = {}
        self._merged: dict[str, _Merged] = {}

    # --- loading -------------------------------------------------------------------

    @classmethod
    def default_folders(cls, config: Config) -> list[DefinitionFolder]:
        """Built-ins first, then subscribed remotes, then the user's folders (whose edits win)."""
        folders = [DefinitionFolder(builtin_definitions_dir(), Origin.BUILTIN, readonly=True)]
        if config.remote_dir.is_dir():
            for entry in sorted(os.scandir(config.remote_dir), key=lambda e: e.name):
                if entry.is_dir() and not entry.name.startswith("."):
                    folders.append(DefinitionFolder(Path(entry.path), Origin.REMOTE))
        folders.extend(
            DefinitionFolder(path, Origin.LOCAL, readonly=config.is_readonly(path))
            for path in config.user_definition_dirs
        )
        seen: set[Path] = set()
        unique = []
        for folder in folders:
            key = folder.path.resolve()
            if key not in seen:
                seen.add(key)
                unique.append(folder)
        return unique

    @classmethod
    def load(cls, config: Config, folders: Sequence[DefinitionFolder] | None = None) -> Registry:
        registry = cls(config, folders if folders is not None else cls.default_folders(config))
        Registry.loads += 1
        with paused_gc():
            for index, folder in enumerate(registry.folders):
                for path in registry._scan(folder.path):
                    raw = _read_file(path, index, folder.origin, config.max_definition_bytes)
                    definition_id = path.name[:-5]  # the stem: every scanned name ends in .json
                    if definition_id in registry._raw:
                        registry._raw[definition_id].append(raw)
                    else:
                        registry._raw[definition_id] = [raw]
            for definition_id in registry._raw:
                registry._merge(definition_id)
            registry._check_references()
        return registry

    @staticmethod
    def _scan(folder: Path) -> list[Path]:
        return definition_entries(folder)  # broken entries included: each becomes one problem

    def _folder_index(self, path: Path) -> int | None:
        parent = path.absolute().parent.resolve()  # the folder's, not the file's: it may be a broken link
        for index, folder in enumerate(self.folders):
            if folder.path.resolve() == parent:
                return index
        return None

    def snapshot(self) -> Registry:
        """A copy that later reload_file/remove_file calls on this one leave as it is (no file is read)."""
        copy = Registry(self.config, self.folders)
        copy._raw = {key: list(files) for key, files in self._raw.items()}
        copy._merged = dict(self._merged)
        return copy

    def reload_file(self, path: str | os.PathLike[str]) -> str | None:
        """Re-read one definition file after it changed on disk; returns its id (None if not watched)."""
        file_path = Path(path)
        index = self._folder_index(file_path)
        if index is None or file_path.suffix != ".json" or file_path.name.startswith("."):
            return None
        if not os.path.lexists(file_path):
            return self.remove_file(file_path)
        raw = _read_file(file_path, index, self.folders[index].origin, self.config.max_definition_bytes)
        entries = [r for r in self._raw.get(file_path.stem, []) if r.path != file_path] + [raw]
        entries.sort(key=lambda r: r.folder_index)
        self._raw[file_path.stem] = entries
        self._merge(file_path.stem)
        self._check_references()
        return file_path.stem

    def remove_file(self, path: str | os.PathLike[str]) -> str | None:
        """Forget a deleted definition file; returns its id."""
        file_path = Path(path)
        entries = [r for r in self._raw.get(file_path.stem, []) if r.path != file_path]
        if entries:
            self._raw[file_path.stem] = entries
            self._merge(file_path.stem)
        else:
            self._raw.pop(file_path.stem, None)
            self._merged.pop(file_path.stem, None)
        self._check_references()
        return file_path.stem

    def _merge(self, definition_id: str) -> None:
        """Merge every file with this id key by key, as WanGP does: settings, then model keys."""
        entries = self._raw[definition_id]
        if len(entries) > 1 and any(self._is_full_definition(raw) for raw in entries):
            # tunehub's built-ins fill gaps: a whole definition of the same id in any other
            # folder (WanGP's own t2v.json, say) replaces them; a partial file merges over them.
            entries = [raw for raw in entries if self.folders[raw.folder_index].origin is not Origin.BUILTIN]
        if len(entries) == 1 and entries[0].data is not None:
            self._merge_one(definition_id, entries[0])
        else:
            self._merge_many(definition_id, entries)

    def _merge_many(self, definition_id: str, entries: list[_RawFile]) -> None:
        """The general merge of a definition's files, in order."""
        data: dict[str, Any] = {}
        model: dict[str, Any] = {}
        problems: list[Problem] = []
        has_model = readable = False
        for raw in entries:
            if raw.problems:
                problems.extend(raw.problems)
            file_data = raw.data
            if file_data is None:
                continue
            readable = True
            data.update(file_data)  # settings, in the file's order ("model" is set below)
            if "model" in file_data:
                has_model = True
                if isinstance(file_data["model"], dict):
                    model.update(file_data["model"])
        if has_model:
            data["model"] = model
        else:
            data.pop("model", None)
        last = entries[-1]
        folder = self.folders[last.folder_index]
        definition = Definition(
            id=definition_id,
            data=data,
            files=[raw.path for raw in entries],
            origin=folder.origin,
            problems=problems,
            readonly=folder.readonly,
        )
        if has_model and readable and not any(p.key == "model" for p in problems):
            definition.problems.extend(check_merged(str(last.path), model))
        self._merged[definition_id] = _Merged(definition, entries)

    def _merge_one(self, definition_id: str, raw: _RawFile) -> None:
        """_merge_many for an id with one readable file, the rule in a large folder: same result, less
        work (tests/registry/test_merge_paths.py holds the two to the same result)."""
        file_data = raw.data
        assert file_data is not None
        data = file_data.copy()
        problems = list(raw.problems)
        model = file_data.get("model", _ABSENT)
        if model is not _ABSENT:
            model = model.copy() if isinstance(model, dict) else {}
            data["model"] = model
        folder = self.folders[raw.folder_index]
        definition = Definition(definition_id, data, [raw.path], folder.origin, problems, folder.readonly)
        if model is not _ABSENT and not has_required_keys(model) and not any(p.key == "model" for p in problems):
            problems.extend(check_merged(str(raw.path), model))
        self._merged[definition_id] = _Merged(definition, [raw])

    def _is_full_definition(self, raw: _RawFile) -> bool:
        if self.folders[raw.folder_index].origin is Origin.BUILTIN or raw.data is None:
            return False
        model = raw.data.get("model")
        return isinstance(model, dict) and "name" in model and "architecture" in model

    def earlier_data(self, path: Path) -> dict[str, Any]:
        """The merged data of every file with this id that comes before ``path`` (WanGP's merge)."""
        entries = self._raw.get(path.stem, [])
        if any(self._is_full_definition(raw) for raw in entries):
            entries = [raw for raw in entries if self.folders[raw.folder_index].origin is not Origin.BUILTIN]
        data: dict[str, Any] = {}
        model: dict[str, Any] = {}
        for raw in entries:
            if raw.path == path:
                break
            if raw.data is None:
                continue
            data.update({k: v for k, v in raw.data.items() if k != "model"})
            if isinstance(raw.data.get("model"), dict):
                model.update(raw.data["model"])
        data["model"] = model
        return data

    def folder_of(self, path: Path) -> DefinitionFolder | None:
        index = self._folder_index(path)
        return None if index is None else self.folders[index]

    def _check_references(self) -> None:
        """String references (URLs*, preload_URLs, loras, modules ...) must exist and not cycle."""
        for merged in self._merged.values():
            definition = merged.definition
            if definition.problems:
                definition.problems = [p for p in definition.problems if p.kind != "reference"]
            model = definition.model
            modules = model.get("modules")
            if not isinstance(modules, list) and not _has_string_reference(model):
                continue  # nothing to follow (the common case: a fast path for large folders)
            keys = [k for k in (*url_keys(model), *REFERENCE_KEYS, "modules") if isinstance(model.get(k), str)]
            for key in keys:
                if isinstance(model.get(key), str):
                    try:
                        self._follow(definition.id, key)
                    except (UnknownDefinitionError, ReferenceCycleError) as exc:
                        self._reference_problem(merged, key, f"model.{key}", str(exc))
            if isinstance(modules, list):
                for index, item in enumerate(modules):
                    if isinstance(item, str):
                        try:
                            self._module_item(item, [definition.id])
                        except (UnknownDefinitionError, ReferenceCycleError, InvalidDefinitionError) as exc:
                            self._reference_problem(merged, "modules", f"model.modules[{index}]", str(exc))

    @staticmethod
    def _reference_problem(merged: _Merged, model_key: str, key: str, message: str) -> None:
        file = merged.file_setting(model_key)
        merged.definition.problems.append(Problem(file, key, message, kind="reference"))

    # --- queries -------------------------------------------------------------------

    @property
    def definitions(self) -> dict[str, Definition]:
        return {key: merged.definition for key, merged in self._merged.items()}

    def __contains__(self, definition_id: object) -> bool:
        return definition_id in self._merged

    def __len__(self) -> int:
        return len(self._merged)

    def get(self, definition_id: str) -> Definition:
        merged = self._merged.get(definition_id)
        if merged is None:
            raise UnknownDefinitionError(
                f"no definition '{definition_id}' (run 'tunehub list' to see the ids; "
                "a definition's id is its file name without .json)"
            )
        return merged.definition

    def visible(self) -> list[Definition]:
        return [m.definition for m in self._merged.values() if m.definition.visible]

    def problems(self) -> list[Problem]:
        return [problem for m in self._merged.values() for problem in m.definition.problems]

    # --- references ----------------------------------------------------------------

    def _follow(self, definition_id: str, key: str) -> Any:
        """The value a ``key`` resolves to, following string references (WanGP: depth 10).

        A string is the id of another definition whose same key is used; a definition
        without the key gives nothing (WanGP's ``get_model_recursive_prop``).
        """
        chain = [definition_id]
        value = self.get(definition_id).model.get(key)
        while isinstance(value, str):
            if value in chain:
                cycle = " -> ".join([*chain[chain.index(value) :], value])
                raise ReferenceCycleError(f"circular reference: {cycle}")
            if value not in self._merged:
                raise UnknownDefinitionError(f"refers to definition '{value}', which does not exist")
            chain.append(value)
            if len(chain) > MAX_REFERENCE_DEPTH:
                raise ReferenceCycleError(f"references nested deeper than {MAX_REFERENCE_DEPTH}: {' -> '.join(chain)}")
            value = self._merged[value].definition.model.get(key)
        return value

    def reference_list(self, definition_id: str, key: str) -> list[str]:
        """``URLs``, ``URLs2`` ..., ``preload_URLs``, ``text_encoder_URLs`` or ``loras``, references resolved."""
        value = self._follow(definition_id, key)
        return [entry for entry in value if isinstance(entry, str)] if isinstance(value, list) else []

    def _module_item(self, item: Any, chain: list[str]) -> Any:
        """A module item with string ids followed: the id of a definition whose ``modules``
        is a list of exactly one item stands for that item (WanGP's ``_list`` sub-property)."""
        while isinstance(item, str):
            if item in chain:
                raise ReferenceCycleError(f"circular module reference: {' -> '.join([*chain, item])}")
            if item not in self._merged:
                raise UnknownDefinitionError(f"refers to module definition '{item}', which does not exist")
            modules = self._merged[item].definition.model.get("modules")
            if not isinstance(modules, list) or len(modules) != 1:
                count = len(modules) if isinstance(modules, list) else 0
                raise InvalidDefinitionError(
                    f"refers to '{item}' as a module, but '{item}' declares {count} modules (exactly 1 needed)"
                )
            chain = [*chain, item]
            if len(chain) > MAX_REFERENCE_DEPTH:
                raise ReferenceCycleError(f"module references nested deeper than {MAX_REFERENCE_DEPTH}")
            item = modules[0]
        return item

    def modules(self, definition_id: str) -> list[tuple[int, str, list[str]]]:
        """Every module file list: (module index, "URLs"/"URLs2", variants).

        ``modules`` may be a reference (another definition's whole list, as WanGP's loader
        follows it); an item is a list of variants, a definition id (whose single module is
        used) or an object ``{"URLs": [...], "URLs2": [...]}`` (extra files of each transformer).
        """
        value = self._follow(definition_id, "modules")
        if not isinstance(value, list):
            return []
        out: list[tuple[int, str, list[str]]] = []
        for index, item in enumerate(value):
            item = self._module_item(item, [definition_id])
            if isinstance(item, dict):
                for sub in ("URLs", "URLs2"):
                    files = item.get(sub)
                    files = [files] if isinstance(files, str) else files  # WanGP: a string is one file here
                    if isinstance(files, list):
                        out.append((index, sub, [entry for entry in files if isinstance(entry, str)]))
            elif isinstance(item, list):
                out.append((index, "URLs", [entry for entry in item if isinstance(entry, str)]))
        return out

    def module_lists(self, definition_id: str) -> list[list[str]]:
        return [variants for _index, _key, variants in self.modules(definition_id)]

    def loras(self, definition_id: str) -> list[tuple[str, Any]]:
        """The definition's LoRAs and their multipliers (default 1.0 each, as WanGP)."""
        entries = self.reference_list(definition_id, "loras")
        multipliers = self._follow(definition_id, "loras_multipliers")
        if isinstance(multipliers, str):  # a resolved string is WanGP's space-separated text
            multipliers = multipliers.split()
        values = list(multipliers) if isinstance(multipliers, list) else []
        values += [1.0] * max(0, len(entries) - len(values))
        return list(zip(entries, values[: len(entries)]))

    # --- resolving -----------------------------------------------------------------

    def architecture_dtype(self, definition: Definition) -> tuple[str, str] | None:
        """The ``dtype`` of the architecture's own definition (the id equal to the architecture id)."""
        arch_id = definition.architecture or ""
        merged = self._merged.get(arch_id)
        if merged is None:
            return None
        forced = merged.definition.model.get("dtype")
        if forced is None:
            return None
        dtype = "fp16" if forced == "fp16" else "bf16"  # WanGP: anything but "fp16" is bf16
        return dtype, f"set by the architecture's definition '{arch_id}' (dtype = {forced})"

    def effective_dtype(self, definition: Definition, preference: str | None = None) -> tuple[str, str]:
        """The transformer dtype and why (WanGP's ``get_transformer_dtype``).

        The architecture's definition's ``dtype`` wins (a finetune's own is not read); then
        the preference; ``auto`` is bf16 on a GPU that supports it, fp16 on one that does not,
        bf16 without a GPU.
        """
        forced = self.architecture_dtype(definition)
        if forced is not None:
            return forced
        wanted = preference or self.config.dtype
        if wanted in ("bf16", "fp16"):
            return wanted, f"your preference (dtype = {wanted})"
        supported, gpu = bf16_support()
        if supported is None:
            return "bf16", "dtype = auto, no GPU found: bf16"
        if supported:
            return "bf16", f"dtype = auto: {gpu} supports bf16"
        return "fp16", f"dtype = auto: {gpu} has no fast bf16 (compute capability < 8): fp16"

    @staticmethod
    def module_dtype(main_source: str | None, transformer_dtype: str) -> tuple[str, str]:
        """WanGP picks modules in the dtype of the chosen main file when that file is quantized."""
        if not main_source or "quanto" not in main_source:
            return transformer_dtype, "the transformer dtype"
        dtype = transformer_dtype
        if "bf16" in main_source or "BF16" in main_source:
            dtype = "bf16"
        if "fp16" in main_source or "FP16" in main_source:  # WanGP tests fp16 last: it wins
            dtype = "fp16"
        return dtype, f"the dtype of the quantized main file ({local_name(main_source)})"

    def locate_source(self, source: str, origin: Origin = Origin.LOCAL) -> tuple[Path, bool]:
        """Where the file of a URL or path entry is (True) or would be placed (False)."""
        weights_dirs = self.config.weights_dirs
        filename = local_name(source)
        if is_url(source) or origin is Origin.REMOTE:
            candidates = [folder / filename for folder in weights_dirs]
        else:
            candidates = local_path_candidates(source, self.config.home, weights_dirs)
        for candidate in candidates:
            if os.path.isfile(candidate):
                return candidate.absolute(), True
        default = candidates[0] if candidates else self.config.download_dir / filename
        return default.absolute(), False

    def lora_folder(self, definition: Definition) -> Path:
        """The LoRA folder WanGP uses for the definition's architecture (``lora_dirs`` overrides)."""
        return self.config.lora_dir(architecture_row(definition.architecture or "").lora_dir)

    def locate_lora(self, definition: Definition, source: str) -> tuple[Path, bool]:
        """A LoRA entry is a URL or a file name in the family's LoRA folder (or a path of its own)."""
        folder = self.lora_folder(definition)
        candidates = [folder / local_name(source)]
        if not is_url(source) and definition.origin is not Origin.REMOTE:
            path = Path(source).expanduser()
            if path.is_absolute():
                candidates.insert(0, path)
            elif len(path.parts) > 1:
                candidates += [folder / path, self.config.home / path]
        for candidate in candidates:
            if os.path.isfile(candidate):
                return candidate.absolute(), True
        return candidates[0].absolute(), False

    def _choice(
        self, role: str, choices: list[str], quantization: str, dtype: str, origin: Origin, why: str = ""
    ) -> FileChoice | None:
        selection = explain_variant(choices, quantization, dtype)
        if selection.choice is None:
            return None
        path, present = self.locate_source(selection.choice, origin)
        return FileChoice(
            role=role,
            source=selection.choice,
            filename=local_name(selection.choice),
            path=path,
            present=present,
            reason=selection.reason + why,
            candidates=list(choices),
        )

    def resolve(self, definition_id: str, quantization: str | None = None, dtype: str | None = None) -> Resolution:
        """Which files this definition uses under the given (or configured) preferences, and why."""
        definition = self.get(definition_id)
        if not definition.valid:
            details = "; ".join(f"{p.key}: {p.message}" for p in definition.problems)
            raise InvalidDefinitionError(f"definition '{definition_id}' ({definition.path}) is invalid: {details}")
        wanted_quantization = quantization or self.config.quantization
        effective_dtype, dtype_reason = self.effective_dtype(definition, dtype)
        origin = definition.origin
        keys = url_keys(definition.model)
        # URLs3 ... come from merged files too: collect every URLsN key of the chain's first file.
        transformers = []
        for key in keys:
            if key in ("preload_URLs", "text_encoder_URLs"):
                continue
            role = "transformer" if key == "URLs" else f"transformer{key[4:]}"
            transformers.append(
                self._choice(role, self.reference_list(definition_id, key), wanted_quantization, effective_dtype, origin)
            )
        transformer = transformers[0] if transformers else None
        transformer2 = transformers[1] if len(transformers) > 1 else None
        forced = self.architecture_dtype(definition)
        if forced is not None:
            module_dtype, module_reason = forced[0], "the architecture's dtype"
        else:
            module_dtype, module_reason = self.module_dtype(
                transformer.source if transformer else None, effective_dtype
            )
        modules = []
        for index, key, variants in self.modules(definition_id):
            why = f"; picked in {module_dtype} ({module_reason})"
            if key == "URLs2":
                why += f"; module {index + 1}'s files for the second transformer"
            choice = self._choice("module", variants, wanted_quantization, module_dtype, origin, why)
            if choice is not None:
                modules.append(choice)
        text_encoder = self._choice(
            "text_encoder", self.reference_list(definition_id, "text_encoder_URLs"), wanted_quantization,
            effective_dtype, origin,
        )
        preload = []
        for source in self.reference_list(definition_id, "preload_URLs"):
            path, present = self.locate_source(source, origin)
            preload.append(
                FileChoice("preload", source, local_name(source), path, present, "preload: always fetched", [source])
            )
        loras = []
        for source, multiplier in self.loras(definition_id):
            path, present = self.locate_lora(definition, source)
            loras.append(
                FileChoice("lora", source, local_name(source), path, present,
                           f"LoRA always applied, multiplier {multiplier}", [source], multiplier=multiplier)
            )
        return Resolution(
            id=definition_id,
            architecture=definition.architecture or "",
            quantization=wanted_quantization,
            dtype=effective_dtype,
            dtype_reason=dtype_reason,
            transformer=transformer,
            transformer2=transformer2,
            modules=modules,
            preload=preload,
            auto_quantize=definition.model.get("auto_quantize") is True,
            more_transformers=[t for t in transformers[2:] if t is not None],
            text_encoder=text_encoder,
            loras=loras,
            module_dtype=module_dtype,
            module_dtype_reason=module_reason,
        )

    def filter(
        self,
        architecture: str | None = None,
        search: str | None = None,
        invalid_only: bool = False,
        include_hidden: bool = False,
    ) -> Iterable[Definition]:
        needle = search.lower() if search else None
        for merged in self._merged.values():
            definition = merged.definition
            if not include_hidden and not definition.visible:
                continue
            if invalid_only and definition.valid:
                continue
            if architecture and definition.architecture != architecture:
                continue
            if needle and not (
                needle in definition.id.lower()
                or needle in definition.name.lower()
                or needle in definition.description.lower()
            ):
                continue
            yield definition
