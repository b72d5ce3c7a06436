"""The registry's records: definitions, their problems, and what resolving one picked."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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


@dataclass
class Definition:
    """A definition after merging every file with its id."""

    id: str
    data: dict[str, Any]
    files: list[Path]
    origin: Origin
    problems: list[Problem] = field(default_factory=list)

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
        name = self.model.get("name")
        return name if isinstance(name, str) else self.id

    @property
    def architecture(self) -> str | None:
        arch = self.model.get("architecture")
        return arch if isinstance(arch, str) else None

    @property
    def description(self) -> str:
        description = self.model.get("description")
        return description if isinstance(description, str) else ""

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def visible(self) -> bool:
        return self.model.get("visible", True) is not False

    def summary(self) -> dict[str, Any]:
        """The object ``tunehub list --json`` prints."""
        return {
            "id": self.id,
            "name": self.name,
            "architecture": self.architecture,
            "description": self.description,
            "origin": self.origin.value,
            "visible": self.visible,
            "valid": self.valid,
            "errors": [str(problem) for problem in self.problems],
            "files": [str(path) for path in self.files],
        }


@dataclass
class FileChoice:
    """One file that resolving a definition picked, and where it is or would be."""

    role: str  # "transformer", "transformer2", "module" or "preload"
    source: str  # the URL or path as written in the definition
    filename: str  # base name in the weights folder
    path: Path  # absolute: where it is, else where it would be placed
    present: bool
    reason: str
    candidates: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "filename": self.filename,
            "path": str(self.path),
            "present": self.present,
        }


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

    def all_files(self) -> list[FileChoice]:
        files = [choice for choice in (self.transformer, self.transformer2) if choice is not None]
        return files + self.modules + self.preload

    @property
    def needs_quantization(self) -> bool:
        """An int8 (or fp8) file is wanted but the pick is a 16-bit one."""
        if self.quantization == "bf16" or self.transformer is None:
            return False
        from tunehub.registry.naming import parse_variant_name

        return parse_variant_name(self.transformer.filename).quantization is None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "architecture": self.architecture,
            "quantization": self.quantization,
            "dtype": self.dtype,
            "transformer": self.transformer.to_json() if self.transformer else None,
            "transformer2": self.transformer2.to_json() if self.transformer2 else None,
            "modules": [choice.to_json() for choice in self.modules],
            "preload": [choice.to_json() for choice in self.preload],
        }
