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
)


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
    parser = argparse.ArgumentParser(
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
        return int(args.func(args) or 0)
    except TunehubError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
