"""``tunehub pull ID``: fetch the files a definition resolves to, resumable and verified."""

from __future__ import annotations

import argparse
import sys

from tunehub.cli.common import config_and_registry, print_json
from tunehub.config import QUANTIZATIONS


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
    p.add_argument("id")
    p.add_argument("--quantization", choices=QUANTIZATIONS, help="int8, fp8, or bf16 (16-bit, not quantized)")
    p.add_argument("--dtype", choices=("bf16", "fp16"), help="transformer dtype preference")
    p.add_argument("--all-variants", action="store_true", help="every variant listed, not only the chosen one")
    p.add_argument("--connections", type=int, default=4, metavar="N", help="parallel ranges per file (default 4)")
    p.add_argument("--no-quantize", action="store_true", help="do not run auto_quantize after the pull")
    p.add_argument("--no-loras", action="store_true", help="skip the definition's LoRAs (fetched into loras/<family>/)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (no progress bars)")
    p.set_defaults(func=cmd_pull)


def cmd_pull(args: argparse.Namespace) -> int:
    from tunehub.hub.progress import ProgressDisplay
    from tunehub.flows import pull_definition

    cfg, registry = config_and_registry(args)
    display = ProgressDisplay(enabled=None if not args.json else False)
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
        )
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
