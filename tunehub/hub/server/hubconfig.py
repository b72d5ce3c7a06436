"""``<root>/hub.toml``: the Hub server's own settings, which `tunehub hub serve` options override.

    upstream = "https://huggingface.co"          # mirror this Hub (see mirror.py)
    upstream_token_file = "/etc/tunehub/hf-token" # the hub's own upstream token (one line)
    upstream_ttl = "10m"                          # re-check branches upstream at most this often
    public_read = true                            # mirrored public repos readable without a LAN token
    sendfile = false                              # file bodies read and written by the server, not the kernel

The token itself never goes into this file (nor into logs or messages): only the path.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from tunehub.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

HUB_CONFIG = "hub.toml"
KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "upstream": ((str,), "a URL string"),
    "upstream_token_file": ((str,), "a path string"),
    "upstream_ttl": ((str, int, float), 'seconds or a duration such as "10m"'),
    "public_read": ((bool,), "true or false"),
    "sendfile": ((bool,), "true or false"),
}
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
               "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_duration(text: str | float, what: str = "duration") -> float:
    """``"90"``, ``"30s"``, ``"10m"``, ``"2h"``, ``"30d"`` -> seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", str(text).lower())
        if not match or match.group(2) not in _DURATION_UNITS:
            raise ConfigError(f"{what} {text!r} is not a duration: use seconds or a number with s, m, h, d or w (e.g. 10m).")
        value, unit = float(match.group(1)), match.group(2)
    if value < 0:
        raise ConfigError(f"{what} {text!r} must not be negative.")
    return value * _DURATION_UNITS[unit]


def parse_size(text: str, what: str = "size") -> int:
    """``"2TB"``, ``"500GiB"``, ``"1000000"`` -> bytes (TB/GB decimal, TiB/GiB binary)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", str(text).lower())
    if not match or match.group(2) not in _SIZE_UNITS:
        raise ConfigError(f"{what} {text!r} is not a size: use bytes or a number with KB, MB, GB, TB (or KiB..TiB).")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def load_hub_config(root: str | Path) -> dict[str, Any]:
    """The keys of ``<root>/hub.toml`` (empty if there is none), checked."""
    path = Path(root) / HUB_CONFIG
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read as TOML: {exc}") from exc
    for key, value in data.items():
        if key not in KEYS:
            raise ConfigError(f"{path}: unknown key {key!r} (known: {', '.join(KEYS)}).")
        types, described = KEYS[key]
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise ConfigError(f"{path}: {key} must be {described}, not {value!r}.")
    return data


def read_token_file(path: str) -> str:
    """The first line of the upstream token file (the token is never shown in an error)."""
    try:
        token = Path(path).expanduser().read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read the upstream token file {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    if not token or not token[0].strip():
        raise ConfigError(f"The upstream token file {path} is empty: put the hub's Hub token on its first line.")
    return token[0].strip()


def check_upstream_url(url: str) -> str:
    if not re.match(r"^https?://[^/\s]+", url):
        raise ConfigError(f"upstream {url!r} is not an http(s) URL (e.g. https://huggingface.co).")
    return url.rstrip("/")
