"""The ``tunehub`` command: builds the parser from the command-group modules and runs one.

Each group module exposes ``register(subparsers)`` and sets ``func(args) -> int`` on
its parsers. Group modules import only argparse-level code at import time; heavy
libraries (torch, diffusers, textual) are imported inside the handlers.

Exit codes: 0 success, 1 a user-facing error (message, no traceback), 2 usage.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from tunehub import __version__
from tunehub.errors import TunehubError

# In --help order. A group whose module is missing is left out of the parser.
COMMAND_GROUPS = (
    "registry",
    "pull",
    "disk",
    "publish",
    "quantize",
    "generate",
    "daemon",
    "tui",
    "hub",
    "demo",
    "cluster",
)


# Packages that only an extra installs, and the extra a command needs them from.
OPTIONAL_PACKAGES = {
    "torch": "quant", "optimum": "quant",
    "diffusers": "inference", "transformers": "inference", "sentencepiece": "inference", "ftfy": "inference",
    "imageio": "inference", "imageio_ffmpeg": "inference", "accelerate": "inference",
    "textual": "tui", "starlette": "server", "uvicorn": "server",
}
COMMAND_EXTRAS = {"quantize": "quant", "generate": "inference", "tui": "tui", "hub": "server", "demo": "all"}


def missing_extra_message(command: str | None, exc: ModuleNotFoundError) -> str | None:
    """One line naming the extra to install, for a package that a core install lacks (else None)."""
    package = (exc.name or "").split(".")[0]
    if package not in OPTIONAL_PACKAGES:
        return None
    extra = COMMAND_EXTRAS.get(command or "", OPTIONAL_PACKAGES[package])
    what = f"tunehub {command}" if command else "this command"
    return f"{what} needs {package}, which is not installed: pip install 'tunehub[{extra}]'"


class _Parser(argparse.ArgumentParser):
    """argparse, plus "did you mean" for a mistyped command (Python < 3.14 has no suggest_on_error)."""

    def error(self, message: str) -> NoReturn:
        import difflib
        import re

        match = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if match:
            choices = re.findall(r"'([^']*)'", match.group(2))
            close = difflib.get_close_matches(match.group(1), choices, n=1, cutoff=0.5)
            if close:
                message = f"unknown command '{match.group(1)}'; did you mean '{close[0]}'?"
        super().error(message)


# Commands whose group is known without importing every group: `tunehub list` then imports only
# the registry group (the generate group alone costs ~0.25 s of imports; list stays cheap).
COMMAND_GROUP_OF = {"list": "registry", "show": "registry", "resolve": "registry", "validate": "registry",
                    "config": "registry"}


def _command_of(argv: Sequence[str]) -> str | None:
    """The command word of ``argv`` (skipping ``--home DIR``), or None."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--home":
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def build_parser(groups: Sequence[str] = COMMAND_GROUPS) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tunehub",
        description="Registry, Hub sync, int8 quantization and generation for video-diffusion finetunes.",
    )
    parser.add_argument("--version", action="version", version=f"tunehub {__version__}")
    parser.add_argument(
        "--home",
        default=None,
        help="home folder (default: $TUNEHUB_HOME, else the current directory)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in groups:
        try:
            module = importlib.import_module(f"tunehub.cli.{group}")
        except ModuleNotFoundError as exc:
            if exc.name == f"tunehub.cli.{group}":
                continue
            raise
        module.register(subparsers)
    return parser


def _format_warning(message, category, filename, lineno, line=None):  # type: ignore[no-untyped-def]
    """Configuration warnings read as one line for the user, not as a Python source location."""
    from tunehub.config import ConfigWarning

    if issubclass(category, ConfigWarning):
        return f"warning: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


_python_format_warning = warnings.formatwarning


def main(argv: Sequence[str] | None = None) -> int:
    warnings.formatwarning = _format_warning
    arguments = list(sys.argv[1:] if argv is None else argv)
    group = COMMAND_GROUP_OF.get(_command_of(arguments) or "")
    parser = build_parser((group,) if group else COMMAND_GROUPS)
    args = parser.parse_args(arguments)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if group == "registry":
            from tunehub.registry.core import paused_gc

            # a one-shot read of every definition: what it builds is alive until the command
            # returns, so cyclic collections in between would only walk it again and again
            with paused_gc():
                return int(args.func(args) or 0)
        return int(args.func(args) or 0)
    except TunehubError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        message = missing_extra_message(getattr(args, "command", None), exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
