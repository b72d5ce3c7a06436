"""``tunehub demo [--keep]``: the whole flow on this machine, offline, in about half a minute."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "demo",
        help="run the whole flow offline with tiny models: Hub server, daemon, int8, publish, generate",
        description=(
            "Start a private `tunehub hub serve` on a free loopback port, publish a tiny Wan 2.1 base "
            "repo and a community repo with one tiny finetune definition (16-bit file only, "
            "auto_quantize), start `tunehub daemon` for a temporary home subscribed to it, wait while "
            "it pulls, verifies, quantizes to int8, publishes and rewrites the definition into URLs, "
            "then generate one short video. Prints each step's time and bytes. Needs no network and "
            "no GPU (uses one when there is one). Everything goes into one temporary folder."
        ),
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the Hub server and the daemon running; print how to open the TUI and how to stop them",
    )
    parser.add_argument("--dir", metavar="DIR", default=None,
                        help="work in DIR (must be empty or absent) instead of a new temporary folder")  # fmt: skip
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None,
                        help="device for the video (default: cuda when available)")  # fmt: skip
    parser.set_defaults(func=handle_demo)


def handle_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tunehub.errors import ConfigError

    if args.dir is not None:
        folder = Path(args.dir).expanduser()
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise ConfigError(f"--dir {folder}: must be an empty folder or not exist yet")
        folder.mkdir(parents=True, exist_ok=True)
    from tunehub.demo.run import INTERRUPTED, run_demo

    code = run_demo(keep=args.keep, workdir=args.dir, device=args.device)
    if code == INTERRUPTED:
        # Every child is stopped and every file closed: skip the interpreter's slow teardown
        # (torch, diffusers) so that Ctrl-C ends the command promptly.
        import os
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
