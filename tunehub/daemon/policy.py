"""The daemon's settings: ``[daemon]`` and ``[[remote]]`` from tunehub.toml, checked.

Every bad value is a :class:`ConfigError` naming the file and the key, raised when the
daemon starts or reloads (SIGHUP), so a typo never silently changes what is synced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tunehub.config import Config
from tunehub.errors import ConfigError

PULL_POLICIES = ("all", "new", "none")
QUANTIZE_POLICIES = ("auto", "always", "never")
UPDATE_POLICIES = ("notify", "auto", "off")
JOB_KINDS = ("pull", "quantize", "publish", "generate")
DEFAULT_CONCURRENCY = {"pull": 3, "quantize": 1, "publish": 2, "generate": 1}

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def parse_duration(value: Any, where: str = "duration") -> float:
    """``"30s"``, ``"5m"``, ``"1h"``, ``"250ms"`` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration such as '30s', '5m' or '1h', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if not match:
            raise ConfigError(f"{where}: expected a duration such as '30s', '5m' or '1h', got {value!r}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ConfigError(f"{where}: expected a duration such as '30s', '5m' or '1h', got {value!r}")
    if seconds <= 0:
        raise ConfigError(f"{where}: must be more than zero, got {value!r}")
    return seconds


@dataclass(frozen=True)
class RemoteSpec:
    """One ``[[remote]]`` entry."""

    repo: str
    path: str = ""
    revision: str = "main"
    interval: float = 300.0
    repo_type: str = "model"

    @property
    def key(self) -> str:
        """Folder name under ``<home>/remote/``: ``ns--name``."""
        return self.repo.replace("/", "--")


@dataclass
class DaemonSettings:
    pull: str = "new"
    quantize: str = "auto"
    publish: str | None = None
    publish_private: bool = False
    min_free_gb: float = 0.0
    rescan_interval: float = 300.0
    max_attempts: int = 5
    retry_base: float = 30.0
    concurrency: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_CONCURRENCY))
    update: str = "notify"  # Hub files changed: notify ("update available"), auto (update), off
    update_interval: float = 3600.0
    keep_previous: int = 0
    remotes: list[RemoteSpec] = field(default_factory=list)


def _where(cfg: Config, key: str) -> str:
    file = cfg.config_file or (cfg.home / "tunehub.toml")
    return f"{file}: {key}"


def settings_from_config(cfg: Config) -> DaemonSettings:
    """Check ``cfg.daemon`` and ``cfg.remotes`` and turn them into :class:`DaemonSettings`."""
    raw = dict(cfg.daemon)
    settings = DaemonSettings()
    known = {
        "pull", "quantize", "publish", "publish_private", "min_free_gb", "rescan",
        "max_attempts", "retry_base", "concurrency", "update", "update_interval", "keep_previous",
    }
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"{_where(cfg, '[daemon]')} unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    if "pull" in raw:
        if raw["pull"] not in PULL_POLICIES:
            raise ConfigError(f"{_where(cfg, '[daemon] pull')} must be one of {', '.join(PULL_POLICIES)}; got {raw['pull']!r}")
        settings.pull = raw["pull"]
    if "quantize" in raw:
        if raw["quantize"] not in QUANTIZE_POLICIES:
            raise ConfigError(
                f"{_where(cfg, '[daemon] quantize')} must be one of {', '.join(QUANTIZE_POLICIES)}; got {raw['quantize']!r}"
            )
        settings.quantize = raw["quantize"]
    if "publish" in raw:
        repo = raw["publish"]
        if not isinstance(repo, str) or not _REPO_RE.match(repo):
            raise ConfigError(f"{_where(cfg, '[daemon] publish')} must be a repo id 'namespace/name'; got {repo!r}")
        settings.publish = repo
    if "publish_private" in raw:
        if not isinstance(raw["publish_private"], bool):
            raise ConfigError(f"{_where(cfg, '[daemon] publish_private')} must be true or false")
        settings.publish_private = raw["publish_private"]
    if "min_free_gb" in raw:
        value = raw["min_free_gb"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{_where(cfg, '[daemon] min_free_gb')} must be a number >= 0; got {value!r}")
        settings.min_free_gb = float(value)
    if "rescan" in raw:
        settings.rescan_interval = parse_duration(raw["rescan"], _where(cfg, "[daemon] rescan"))
    if "retry_base" in raw:
        settings.retry_base = parse_duration(raw["retry_base"], _where(cfg, "[daemon] retry_base"))
    if "max_attempts" in raw:
        value = raw["max_attempts"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{_where(cfg, '[daemon] max_attempts')} must be an integer >= 1; got {value!r}")
        settings.max_attempts = value
    if "concurrency" in raw:
        table = raw["concurrency"]
        if not isinstance(table, dict):
            raise ConfigError(f"{_where(cfg, '[daemon] concurrency')} must be a table such as {{pull = 3}}")
        for kind, value in table.items():
            if kind not in JOB_KINDS:
                raise ConfigError(f"{_where(cfg, f'[daemon.concurrency] {kind}')}: unknown job kind; known: {', '.join(JOB_KINDS)}")
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{_where(cfg, f'[daemon.concurrency] {kind}')} must be an integer >= 1; got {value!r}")
            settings.concurrency[kind] = value
    if "update" in raw:
        if raw["update"] not in UPDATE_POLICIES:
            raise ConfigError(f"{_where(cfg, '[daemon] update')} must be one of {', '.join(UPDATE_POLICIES)}; got {raw['update']!r}")
        settings.update = raw["update"]
    if "update_interval" in raw:
        settings.update_interval = parse_duration(raw["update_interval"], _where(cfg, "[daemon] update_interval"))
    if "keep_previous" in raw:
        value = raw["keep_previous"]
        if isinstance(value, bool) or not isinstance(value, int) or value not in (0, 1):
            raise ConfigError(f"{_where(cfg, '[daemon] keep_previous')} must be 0 or 1; got {value!r}")
        settings.keep_previous = value
    seen: set[str] = set()
    for index, entry in enumerate(cfg.remotes):
        where = _where(cfg, f"[[remote]] #{index + 1}")
        repo = entry.get("repo")
        if not isinstance(repo, str) or not _REPO_RE.match(repo):
            raise ConfigError(f"{where} 'repo' must be 'namespace/name'; got {repo!r}")
        extra = sorted(set(entry) - {"repo", "path", "revision", "interval", "repo_type"})
        if extra:
            raise ConfigError(f"{where} unknown key(s) {', '.join(extra)}")
        path = entry.get("path", "")
        if not isinstance(path, str) or path.startswith("/") or ".." in path.split("/"):
            raise ConfigError(f"{where} 'path' must be a relative folder inside the repo; got {path!r}")
        revision = entry.get("revision", "main")
        if not isinstance(revision, str) or not revision:
            raise ConfigError(f"{where} 'revision' must be a non-empty string; got {revision!r}")
        repo_type = entry.get("repo_type", "model")
        if repo_type not in ("model", "dataset", "space"):
            raise ConfigError(f"{where} 'repo_type' must be model, dataset or space; got {repo_type!r}")
        interval = parse_duration(entry.get("interval", "5m"), f"{where} 'interval'")
        if repo in seen:
            raise ConfigError(f"{where} repo {repo} is listed twice")
        seen.add(repo)
        settings.remotes.append(
            RemoteSpec(repo=repo, path=path.strip("/"), revision=revision, interval=interval, repo_type=repo_type)
        )
    return settings
