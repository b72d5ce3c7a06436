"""``tunehub tui``: the terminal UI. Textual is imported only when the command runs."""

from __future__ import annotations

import argparse

from tunehub.cli.common import config_from_args
from tunehub.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "tui",
        help="browse definitions, follow the daemon, pull/quantize/publish/generate",
        description="Terminal UI over the registry. Works over SSH; press ctrl+p for every command.",
    )
    parser.add_argument("--no-watch", action="store_true", help="do not watch definition folders for changes")
    parser.add_argument(
        "--no-daemon", action="store_true", help="run actions in the UI even when a daemon serves this home"
    )
    parser.set_defaults(func=handle_tui)


def handle_tui(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    try:
        from tunehub.tui.app import TunehubApp
    except ImportError as exc:
        raise ConfigError(f"the TUI needs textual: pip install 'tunehub[tui]' ({exc})") from None
    from tunehub.tui.screens.contact_sheet import prepare_terminal_images

    prepare_terminal_images()  # asks the terminal about images now, before Textual owns it
    TunehubApp(cfg, watch=not args.no_watch, use_daemon=not args.no_daemon).run()
    return 0
