"""``tunehub pull ID``: fetch the files a definition resolves to, resumable and verified."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tunehub.cli.common import config_and_registry, print_json
from tunehub.config import QUANTIZATIONS
from tunehub.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pull",
        help="download a definition's files (resumable, verified)",
        description=(
            "Fetch what `tunehub resolve ID` names into the first weights folder. Files already "
            "verified are kept; the same bytes elsewhere (another weights folder, the huggingface_hub "
            "cache) are linked; an interrupted pull continues where it stopped."
        ),
    )
    p.add_argument("id", nargs="?", help="the definition (with --update, or --all)")
    p.add_argument("--quantization", choices=QUANTIZATIONS, help="int8, fp8, or bf16 (16-bit, not quantized)")
    p.add_argument("--dtype", choices=("bf16", "fp16"), help="transformer dtype preference")
    p.add_argument("--all-variants", action="store_true", help="every variant listed, not only the chosen one")
    p.add_argument("--connections", type=int, default=4, metavar="N", help="parallel ranges per file (default 4)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="seconds without data (or under 1 KiB/s) before a connection is retried (default 30)")
    p.add_argument("--no-quantize", action="store_true", help="do not run auto_quantize after the pull")
    p.add_argument("--no-loras", action="store_true", help="skip the definition's LoRAs (fetched into loras/<family>/)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (no progress bars)")
    p.add_argument("--update", action="store_true",
                   help="fetch the new version of files the Hub changed (see `tunehub outdated`), verified")
    p.add_argument("--all", action="store_true", help="with --update: every visible definition")
    p.add_argument("-y", "--yes", action="store_true", help="with --update: remove the old versions without asking")
    p.add_argument("--keep-previous", action="store_true",
                   help="with --update: keep the old versions (as [daemon] keep_previous = 1 does)")
    p.set_defaults(func=cmd_pull)


def cmd_pull(args: argparse.Namespace) -> int:
    from tunehub.hub.progress import ProgressDisplay
    from tunehub.errors import Interrupted
    from tunehub.flows import pull_definition

    cfg, registry = config_and_registry(args)
    if args.update or args.all:
        return _update(args, cfg, registry)
    if not args.id:
        raise ConfigError("pull needs a definition ID (or --update --all)")
    display = ProgressDisplay(enabled=None if not args.json else False)
    try:
        with display:
            result = pull_definition(
                cfg,
                registry,
                args.id,
                quantization=args.quantization,
                dtype=args.dtype,
                all_variants=args.all_variants,
                progress=None if args.json else display,
                connections=max(1, args.connections),
                quantize=not args.no_quantize,
                loras=not args.no_loras,
                timeout=max(1.0, args.timeout),
            )
    except (KeyboardInterrupt, Interrupted):
        # the transfers stopped at once; their partials and records stay for the next run
        print("interrupted; run the same command to resume", file=sys.stderr)
        return 130
    if args.json:
        print_json(result.to_json())
        return 0
    for item in result.files:
        print(f"{item.status:<18} {item.path}")
    for path in result.quantized:
        print(f"{'quantized':<18} {path}")
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    moved = result.bytes_transferred
    if moved:
        print(f"{moved / 1e6:.1f} MB downloaded")
    return 0


def _update(args: argparse.Namespace, cfg: Any, registry: Any) -> int:
    """``pull --update ID|--all``: the files the Hub changed, fetched and verified, old ones offered for removal."""
    from tunehub.cli.disk import confirm
    from tunehub.disk.files import human_size
    from tunehub.disk.update import check_outdated, keep_previous_setting, update
    from tunehub.hub.progress import ProgressDisplay

    if not args.update or bool(args.id) == bool(args.all):
        raise ConfigError("use `tunehub pull --update ID` or `tunehub pull --update --all`")
    ids = [args.id] if args.id else None
    report = check_outdated(cfg, registry, ids)
    for problem in report.problems:
        print(f"note: {problem}", file=sys.stderr)
    if not report.files:
        print(f"up to date: {report.checked} Hub file(s) checked")
        return 0
    keep = 1 if args.keep_previous else keep_previous_setting(cfg)

    def ask(previous: list[Any]) -> bool:
        size = sum(s for _, s in previous)
        return confirm(f"Remove the {len(previous)} old version(s), {human_size(size)}?", args.yes)

    with ProgressDisplay(enabled=None if not args.json else False) as display:
        result = update(cfg, registry, ids, remove_old=ask if not args.json else args.yes, keep_previous=keep,
                        progress=None if args.json else display, report=report)
    if args.json:
        print_json(result.to_json())
        return 0
    for item, sha in result.updated:
        print(f"{'updated':<18} {item.path}  (sha256 {sha[:12]}…, verified)")
    for item, why in result.skipped:
        print(f"{'skipped':<18} {item.path}: {why}")
    for path in result.removed_old:
        print(f"{'removed old':<18} {path}")
    kept = [p for p, _ in result.previous if p not in result.removed_old]
    for path in kept:
        print(f"{'kept old':<18} {path}  (tunehub prune removes it)")
    if result.bytes_transferred:
        print(f"{result.bytes_transferred / 1e6:.1f} MB downloaded")
    return 0
