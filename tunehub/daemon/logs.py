"""Structured logs: one JSON object per line in ``<home>/.tunehub/daemon.log`` and on stderr.

Every line passes through :func:`redact` first: the token huggingface_hub would use,
anything shaped like a Hub token (``hf_...``), ``Bearer ...`` headers and ``token=``
query values are replaced by ``***``, so a token never reaches a log, even inside an
exception message from a library.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["redact", "setup_logging", "JsonFormatter", "LOGGER_NAME", "log_event"]

LOGGER_NAME = "tunehub.daemon"

_TOKEN_PATTERNS = [
    re.compile(r"hf_[A-Za-z0-9]{8,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)((?:access_)?token[\"']?\s*[=:]\s*[\"']?)[^\s\"'&,}]+"),
]
_extra_secrets: set[str] = set()


def add_secret(value: str | None) -> None:
    """Remember a secret (e.g. the token in use) to scrub it wherever it appears."""
    if value and len(value) >= 6:
        _extra_secrets.add(value)


def _known_tokens() -> None:
    add_secret(os.environ.get("HF_TOKEN"))
    add_secret(os.environ.get("HUGGING_FACE_HUB_TOKEN"))


def redact(text: str) -> str:
    for secret in _extra_secrets:
        if secret in text:
            text = text.replace(secret, "***")
    for pattern in _TOKEN_PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + "***", text)
        else:
            text = pattern.sub("***", text)
    return text


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "event", "msg", ...fields}`` on one line, redacted."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "event": getattr(record, "event", record.name),
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            for key, value in fields.items():
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, ensure_ascii=False, default=str))


class ReadableFormatter(logging.Formatter):
    """``HH:MM:SS level message key=value ...`` for a person at a terminal, redacted."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        text = f"{stamp} {record.levelname.lower():<7} {record.getMessage()}"
        fields = getattr(record, "fields", None) or {}
        shown = {k: v for k, v in fields.items() if k not in ("event_id", "trace") and v not in (None, "", [], {})}
        if shown:
            text += "  " + " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)}"
                                    for k, v in shown.items())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return redact(text)


def setup_logging(
    state_dir: Path, *, level: str = "info", to_stderr: bool = True, stderr_format: str | None = None
) -> logging.Logger:
    """daemon.log is JSON lines; stderr is readable text on a terminal, JSON otherwise (or as ``stderr_format``)."""
    _known_tokens()
    try:
        from huggingface_hub import get_token

        add_secret(get_token())
    except Exception:  # no stored token, or an old client: nothing to add
        pass
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(getattr(logging, level.upper(), logging.INFO))
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    state_dir.mkdir(parents=True, exist_ok=True)
    file_handler = logging.handlers.RotatingFileHandler(
        state_dir / "daemon.log", maxBytes=10 * 1024 * 1024, backupCount=3, encoding="utf-8"
    )
    file_handler.setFormatter(JsonFormatter())
    logger.addHandler(file_handler)
    if to_stderr:
        stream = logging.StreamHandler(sys.stderr)
        readable = stderr_format == "text" or (stderr_format is None and sys.stderr.isatty())
        stream.setFormatter(ReadableFormatter() if readable else JsonFormatter())
        logger.addHandler(stream)
    return logger


def log_event(logger: logging.Logger, level: int, event: str, msg: str = "", **fields: Any) -> None:
    logger.log(level, msg or event, extra={"event": event, "fields": fields})
