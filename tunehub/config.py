"""tunehub.toml plus environment overrides: the effective configuration of a home.

Precedence for the home folder: ``--home``, then ``TUNEHUB_HOME``, then the current
directory. Precedence for the endpoint: ``HF_ENDPOINT``, then ``endpoint`` in the
TOML, then https://huggingface.co. Tokens are never read from the TOML: they come
from huggingface_hub's own sources (``HF_TOKEN``, the stored login).
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunehub.errors import ConfigError



def _toml() -> Any:
    """tomllib, imported only when a home has a tunehub.toml (keeps `tunehub list` start-up short)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib
    return tomllib

CONFIG_FILE = "tunehub.toml"
DEFAULT_ENDPOINT = "https://huggingface.co"
QUANTIZATIONS = ("int8", "fp8", "bf16")
DTYPES = ("auto", "bf16", "fp16")

# key -> (expected python types, human name of the type)
_TOP_LEVEL: dict[str, tuple[tuple[type, ...], str]] = {
    "quantization": ((str,), "string"),
    "dtype": ((str,), "string"),
    "definition_dirs": ((list,), "list of strings"),
    "weights_dirs": ((list,), "list of strings"),
    "readonly_weights_dirs": ((list,), "list of strings"),
    "endpoint": ((str,), "string"),
    "link_mode": ((str,), "string"),
    "remote": ((list,), "array of tables ([[remote]])"),
    "daemon": ((dict,), "table ([daemon])"),
    "base_repos": ((dict,), "table ([base_repos])"),
    "generate": ((dict,), "table ([generate])"),
    "readonly_dirs": ((list,), "list of strings"),
    "lora_dirs": ((dict,), "table ([lora_dirs])"),
    "max_definition_bytes": ((int,), "integer (bytes)"),
    "cluster": ((dict,), "table ([cluster])"),
}
# [generate] keys -> allowed values (defaults for `tunehub generate` options)
# the self-attention choices (tunehub.inference.attention), --attention's and [generate]'s
ATTENTIONS = ("sdpa", "fp8", "int8", "fp8-cudnn")
GENERATE_KEYS: dict[str, tuple[str, ...]] = {"attention": ATTENTIONS}
LINK_MODES = ("hardlink", "copy", "symlink")


class ConfigWarning(UserWarning):
    """An unknown key in tunehub.toml (kept, ignored)."""


@dataclass
class Config:
    """The effective configuration. ``origins`` says where each value came from."""

    home: Path
    quantization: str = "int8"
    dtype: str = "auto"
    extra_definition_dirs: list[Path] = field(default_factory=list)
    weights_dirs: list[Path] = field(default_factory=list)
    # folders of other tools (ComfyUI, another WanGP): searched for reusable files, never written
    readonly_weights_dirs: list[Path] = field(default_factory=list)
    endpoint: str = DEFAULT_ENDPOINT
    link_mode: str = "hardlink"
    remotes: list[dict[str, Any]] = field(default_factory=list)
    daemon: dict[str, Any] = field(default_factory=dict)
    base_repos: dict[str, str] = field(default_factory=dict)
    generate: dict[str, str] = field(default_factory=dict)
    # None: any folder named "defaults" is read-only (WanGP replaces it on every update)
    readonly_dirs: list[Path] | None = None
    # WanGP LoRA folder name ("wan", "wan_i2v", "hunyuan", ...) -> folder; "root" -> the loras/ folder
    lora_dirs: dict[str, Path] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    config_file: Path | None = None
    warnings: list[str] = field(default_factory=list)
    max_definition_bytes: int = 1 << 20  # larger definition files are refused unread
    # [cluster] as written (checked by tunehub.cluster.settings); empty: generate jobs run here
    cluster: dict[str, Any] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        """tunehub's own state: journal, verified-file records, socket, logs."""
        return self.home / ".tunehub"

    @property
    def remote_dir(self) -> Path:
        """Where definitions fetched from subscribed remote repos are kept."""
        return self.home / "remote"

    @property
    def outputs_dir(self) -> Path:
        return self.home / "outputs"

    @property
    def user_definition_dirs(self) -> list[Path]:
        """The definition folders of the home, in load order (after the built-ins).

        As WanGP reads its own folder: ``defaults/`` then ``finetunes/`` (a user's file wins),
        then tunehub's ``definitions/``. ``definition_dirs`` come after, in the order listed,
        and a home folder named there takes the place it has in that list.
        """
        listed = {path.resolve() for path in self.extra_definition_dirs}
        home_dirs = [self.home / "defaults", self.home / "finetunes", self.home / "definitions"]
        return [path for path in home_dirs if path.resolve() not in listed] + list(self.extra_definition_dirs)

    @property
    def override_dir(self) -> Path:
        """Where tunehub records a change to a definition it must not edit: the user's finetunes/."""
        for path in self.user_definition_dirs:
            if path.name == "finetunes" and not self.is_readonly(path):
                return path
        writable = [path for path in self.user_definition_dirs if not self.is_readonly(path)]
        return writable[0] if writable else self.home / "finetunes"

    def is_readonly(self, folder: Path) -> bool:
        """A definition folder tunehub never writes into (``readonly_dirs``; default: named ``defaults``)."""
        if self.readonly_dirs is None:
            return folder.name == "defaults"
        resolved = folder.resolve()
        return any(resolved == path.resolve() for path in self.readonly_dirs)

    @property
    def loras_root(self) -> Path:
        return self.lora_dirs.get("root", self.home / "loras")

    def lora_dir(self, folder_name: str | None) -> Path:
        """The folder of one WanGP LoRA family folder (``wan``, ``hunyuan_i2v`` ...)."""
        if not folder_name:
            return self.loras_root
        return self.lora_dirs.get(folder_name, self.loras_root / folder_name)

    @property
    def download_dir(self) -> Path:
        """The first weights folder receives downloads and quantized files."""
        return self.weights_dirs[0]

    def as_dict(self) -> dict[str, Any]:
        return {
            "home": str(self.home),
            "config_file": str(self.config_file) if self.config_file else None,
            "quantization": self.quantization,
            "dtype": self.dtype,
            "definition_dirs": [str(p) for p in self.user_definition_dirs],
            "weights_dirs": [str(p) for p in self.weights_dirs],
            "readonly_weights_dirs": [str(p) for p in self.readonly_weights_dirs],
            "endpoint": self.endpoint,
            "link_mode": self.link_mode,
            "remote": self.remotes,
            "daemon": self.daemon,
            "base_repos": self.base_repos,
            "generate": self.generate,
            "readonly_dirs": [str(p) for p in self.readonly_dirs] if self.readonly_dirs is not None else "any folder named defaults",
            "lora_dirs": {"root": str(self.loras_root), **{k: str(v) for k, v in self.lora_dirs.items() if k != "root"}},
        }


def resolve_home(home: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """The home folder and where it came from."""
    if home is not None:
        return Path(home).expanduser().resolve(), "--home"
    env_home = os.environ.get("TUNEHUB_HOME")
    if env_home:
        return Path(env_home).expanduser().resolve(), "TUNEHUB_HOME"
    return Path.cwd().resolve(), "current directory"


def _check_type(file: Path, key: str, value: Any) -> None:
    types, type_name = _TOP_LEVEL[key]
    if not isinstance(value, types):
        raise ConfigError(
            f"{file}: key '{key}' must be a {type_name}, got {type(value).__name__} ({value!r})"
        )


def _path_list(file: Path, key: str, value: list[Any], home: Path) -> list[Path]:
    paths = []
    for item in value:
        if not isinstance(item, str):
            raise ConfigError(f"{file}: key '{key}' must be a list of strings, found {item!r}")
        path = Path(item).expanduser()
        paths.append(path if path.is_absolute() else home / path)
    return paths


def _choice(file: Path, key: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{file}: key '{key}' must be one of {', '.join(allowed)}; got '{value}'")
    return value


def load_config(home: str | os.PathLike[str] | None = None) -> Config:
    """Read ``<home>/tunehub.toml`` (optional) and apply environment overrides."""
    home_path, home_origin = resolve_home(home)
    cfg = Config(home=home_path)
    cfg.origins["home"] = home_origin
    for key in ("quantization", "dtype", "definition_dirs", "weights_dirs", "endpoint", "link_mode"):
        cfg.origins[key] = "default"
    file = home_path / CONFIG_FILE
    raw: dict[str, Any] = {}
    if file.is_file():
        cfg.config_file = file
        tomllib = _toml()
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: invalid TOML: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{file}: not UTF-8 text") from None
    unknown = [key for key in raw if key not in _TOP_LEVEL]
    if unknown:
        message = f"{file}: unknown key(s) ignored: {', '.join(sorted(unknown))}"
        cfg.warnings.append(message)
        warnings.warn(message, ConfigWarning, stacklevel=2)
    for key, value in raw.items():
        if key in _TOP_LEVEL:
            _check_type(file, key, value)
            cfg.origins[key] = str(file)
    if "quantization" in raw:
        cfg.quantization = _choice(file, "quantization", raw["quantization"], QUANTIZATIONS)
    if "dtype" in raw:
        cfg.dtype = _choice(file, "dtype", raw["dtype"], DTYPES)
    if "definition_dirs" in raw:
        cfg.extra_definition_dirs = _path_list(file, "definition_dirs", raw["definition_dirs"], home_path)
    if "readonly_dirs" in raw:
        cfg.readonly_dirs = _path_list(file, "readonly_dirs", raw["readonly_dirs"], home_path)
    for name, target in raw.get("lora_dirs", {}).items():
        if not isinstance(target, str):
            raise ConfigError(f"{file}: [lora_dirs] key '{name}' must be a string (a folder)")
        cfg.lora_dirs[name] = _path_list(file, "lora_dirs", [target], home_path)[0]
    for folder in cfg.extra_definition_dirs:
        if not folder.is_dir():
            message = f"{file}: definition_dirs: {folder} does not exist (nothing is read from it)"
            cfg.warnings.append(message)
            warnings.warn(message, ConfigWarning, stacklevel=2)
    if "weights_dirs" in raw and raw["weights_dirs"]:
        cfg.weights_dirs = _path_list(file, "weights_dirs", raw["weights_dirs"], home_path)
    else:
        cfg.weights_dirs = [home_path / "ckpts"]
    if "readonly_weights_dirs" in raw:
        cfg.readonly_weights_dirs = _path_list(file, "readonly_weights_dirs", raw["readonly_weights_dirs"], home_path)
    if "endpoint" in raw:
        cfg.endpoint = raw["endpoint"].rstrip("/")
    if "link_mode" in raw:
        cfg.link_mode = _choice(file, "link_mode", raw["link_mode"], LINK_MODES)
    if "remote" in raw:
        for index, entry in enumerate(raw["remote"]):
            if not isinstance(entry, dict) or not isinstance(entry.get("repo"), str):
                raise ConfigError(f"{file}: [[remote]] entry {index + 1} needs a string key 'repo'")
        cfg.remotes = list(raw["remote"])
    if "max_definition_bytes" in raw:
        if isinstance(raw["max_definition_bytes"], bool) or raw["max_definition_bytes"] < 1024:
            raise ConfigError(f"{file}: key 'max_definition_bytes' must be an integer of at least 1024 (bytes)")
        cfg.max_definition_bytes = raw["max_definition_bytes"]
    cfg.daemon = dict(raw.get("daemon", {}))
    cfg.cluster = dict(raw.get("cluster", {}))
    base_repos = raw.get("base_repos", {})
    for arch, target in base_repos.items():
        if not isinstance(target, str):
            raise ConfigError(f"{file}: [base_repos] key '{arch}' must be a string (repo id or folder)")
    cfg.base_repos = dict(base_repos)
    for key, value in raw.get("generate", {}).items():
        if key not in GENERATE_KEYS:
            raise ConfigError(f"{file}: [generate] unknown key '{key}'; known: {', '.join(GENERATE_KEYS)}")
        if value not in GENERATE_KEYS[key]:
            raise ConfigError(
                f"{file}: [generate] {key} must be one of {', '.join(GENERATE_KEYS[key])}; got {value!r}"
            )
        cfg.generate[key] = value
    env_endpoint = os.environ.get("HF_ENDPOINT")
    if env_endpoint:
        cfg.endpoint = env_endpoint.rstrip("/")
        cfg.origins["endpoint"] = "HF_ENDPOINT"
    return cfg
