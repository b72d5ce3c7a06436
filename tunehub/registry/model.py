"""The registry's records: definitions, their problems, and what resolving one picked."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunehub.registry.architectures import architecture


class Origin(str, enum.Enum):
    """Where a definition file comes from; decides what its paths may do."""

    BUILTIN = "builtin"  # shipped with tunehub
    LOCAL = "local"  # the user's own folders: absolute paths and '..' allowed
    REMOTE = "remote"  # fetched from a subscribed Hub repo: paths confined to the weights folder


@dataclass(frozen=True)
class Problem:
    """One validation problem: ``FILE: KEY: message``."""

    file: str
    key: str
    message: str
    kind: str = field(default="file", compare=False)  # "reference" problems are recomputed on reload

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return {"file": self.file, "key": self.key, "message": self.message}


def _name_of(model: dict[str, Any], definition_id: str) -> str:
    name = model.get("name")
    return name if isinstance(name, str) else definition_id


def _architecture_of(model: dict[str, Any]) -> str | None:
    arch = model.get("architecture")
    return arch if isinstance(arch, str) else None


def _description_of(model: dict[str, Any]) -> str:
    description = model.get("description")
    return description if isinstance(description, str) else ""


def _visible(model: dict[str, Any]) -> bool:
    return model.get("visible", True) is not False


@dataclass
class Definition:
    """A definition after merging every file with its id."""

    id: str
    data: dict[str, Any]
    files: list[Path]
    origin: Origin
    problems: list[Problem] = field(default_factory=list)
    readonly: bool = False  # its last file is in a folder tunehub must not write (WanGP's defaults/, built-ins)

    @property
    def model(self) -> dict[str, Any]:
        model = self.data.get("model")
        return model if isinstance(model, dict) else {}

    @property
    def settings(self) -> dict[str, Any]:
        return {key: value for key, value in self.data.items() if key != "model"}

    @property
    def path(self) -> Path:
        """The file a rewrite targets: the last one merged (the user's own)."""
        return self.files[-1]

    @property
    def name(self) -> str:
        return _name_of(self.model, self.id)

    @property
    def architecture(self) -> str | None:
        return _architecture_of(self.model)

    @property
    def family(self) -> str:
        """The architecture's family (``wan2.1``, ``ltx``, ... or ``unknown``)."""
        arch = self.architecture
        return architecture(arch).family if arch else "unknown"

    @property
    def description(self) -> str:
        return _description_of(self.model)

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def visible(self) -> bool:
        return _visible(self.model)

    def summary(self) -> dict[str, Any]:
        """The object ``tunehub list --json`` prints."""
        model = self.model  # one lookup of the model: this runs for every listed file
        arch = _architecture_of(model)
        return {
            "id": self.id,
            "name": _name_of(model, self.id),
            "architecture": arch,
            "family": architecture(arch).family if arch else "unknown",
            "description": _description_of(model),
            "origin": self.origin.value,
            "visible": _visible(model),
            "valid": not self.problems,
            "errors": [str(problem) for problem in self.problems],
            "files": [str(path) for path in self.files],
        }


@dataclass
class FileChoice:
    """One file that resolving a definition picked, and where it is or would be."""

    role: str  # "transformer", "transformer2" (URLs3: "transformer3" ...), "module", "text_encoder", "preload", "lora"
    source: str  # the URL or path as written in the definition
    filename: str  # base name in the weights folder
    path: Path  # absolute: where it is, else where it would be placed
    present: bool
    reason: str
    candidates: list[str] = field(default_factory=list)
    multiplier: Any = None  # LoRAs: the strength (a number, or WanGP's per-step text such as "1;0")

    @property
    def label(self) -> str:
        """What the file is: "int8 bf16", "16-bit fp16", "nvfp4", "gguf q4_k_m" ..."""
        from tunehub.registry.naming import parse_variant_name

        return parse_variant_name(self.filename).label

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source,
            "filename": self.filename,
            "path": str(self.path),
            "present": self.present,
        }
        if self.role == "lora":
            out["multiplier"] = self.multiplier
        return out


@dataclass
class Resolution:
    """What would be used for a definition under given preferences, and why."""

    id: str
    architecture: str
    quantization: str
    dtype: str
    dtype_reason: str
    transformer: FileChoice | None
    transformer2: FileChoice | None
    modules: list[FileChoice]
    preload: list[FileChoice]
    auto_quantize: bool = False
    more_transformers: list[FileChoice] = field(default_factory=list)  # URLs3, URLs4 ...
    text_encoder: FileChoice | None = None
    loras: list[FileChoice] = field(default_factory=list)
    module_dtype: str = ""  # the dtype modules were picked in (WanGP: the quantized main file's)
    module_dtype_reason: str = ""

    def all_files(self, loras: bool = True) -> list[FileChoice]:
        files = [choice for choice in (self.transformer, self.transformer2) if choice is not None]
        files += self.more_transformers + self.modules
        if self.text_encoder is not None:
            files.append(self.text_encoder)
        return files + self.preload + (self.loras if loras else [])

    @property
    def needs_quantization(self) -> bool:
        """An int8 (or fp8) file is wanted but the pick is a 16-bit one (an nvfp4 or gguf file is not)."""
        if self.quantization == "bf16" or self.transformer is None:
            return False
        from tunehub.registry.naming import parse_variant_name

        return not parse_variant_name(self.transformer.filename).quantized

    def to_json(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "architecture": self.architecture,
            "quantization": self.quantization,
            "dtype": self.dtype,
            "transformer": self.transformer.to_json() if self.transformer else None,
            "transformer2": self.transformer2.to_json() if self.transformer2 else None,
            "modules": [choice.to_json() for choice in self.modules],
            "preload": [choice.to_json() for choice in self.preload],
            "loras": [choice.to_json() for choice in self.loras],
        }
        for choice in self.more_transformers:  # "transformer3" ... only where a definition has URLs3 ...
            out[choice.role] = choice.to_json()
        if self.text_encoder is not None:
            out["text_encoder"] = self.text_encoder.to_json()
        return out
