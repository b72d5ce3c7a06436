"""``tunehub quantize``: make WanGP's int8 file from a definition's 16-bit weights, or from any file.

Nothing heavy is imported here: torch is loaded by the handler, when quantizing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tunehub.cli.common import config_and_registry, print_json
from tunehub.errors import QuantizationError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "quantize",
        help="write the int8 (quanto) file of a definition or of any safetensors file, streaming",
        description=(
            "Quantize to int8 in optimum-quanto's format, as WanGP's --save-quantized does, but tensor by "
            "tensor: memory stays bounded whatever the model size. With ID: the definition's 16-bit files "
            "(URLs, URLs2 and each module) become *_quanto_*_int8 files in the weights folder and their "
            "names are appended to the definition. With --file: any file, to --out."
        ),
    )
    parser.add_argument("id", nargs="?", help="definition id (omit with --file)")
    parser.add_argument("--file", type=Path, help="quantize this safetensors file instead of a definition's")
    parser.add_argument("--out", type=Path, help="output file for --file (default: WanGP's name, beside it)")
    parser.add_argument(
        "--layers",
        help="with --file: fnmatch pattern(s) of the module names to quantize, comma-separated "
        "(default: the transformer-block linears of the detected layout)",
    )
    parser.add_argument(
        "--dtype", choices=("bf16", "fp16"), help="16-bit dtype of the output (default: the definition's / the file's)"
    )
    parser.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to compute (default: auto)"
    )
    parser.add_argument("--force", action="store_true", help="redo an output that already exists")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    parser.set_defaults(func=handle)


class _Progress:
    """A progress line on stderr when it is a terminal (rich), otherwise nothing."""

    def __init__(self, enabled: bool) -> None:
        self.progress = None
        self.tasks: dict[str, Any] = {}
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

            self.progress = Progress(
                "[bold]{task.description}",
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )

    def __enter__(self) -> _Progress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: dict[str, Any]) -> None:
        if self.progress is None:
            return
        name = event["file"]
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=event.get("total"))
        self.progress.update(self.tasks[name], completed=event.get("completed", 0))


def handle(args: argparse.Namespace) -> int:
    if args.file is not None:
        if args.id:
            raise QuantizationError("give either a definition ID or --file, not both")
        return _handle_file(args)
    if args.out is not None or args.layers:
        raise QuantizationError("--out and --layers go with --file; a definition's output is named by WanGP's rule")
    if not args.id:
        raise QuantizationError("tunehub quantize needs a definition ID, or --file IN.safetensors [--out OUT]")
    from tunehub.quant.flow import quantize_definition

    cfg, registry = config_and_registry(args)
    with _Progress(not args.quiet and not args.json) as progress:
        outputs = quantize_definition(
            cfg, registry, args.id, dtype=args.dtype, device=args.device, force=args.force, progress=progress
        )
    if args.json:
        print_json({"id": args.id, "files": [str(path) for path in outputs]})
    else:
        for path in outputs:
            print(path)
        print(f"definition: {registry.get(args.id).path}", file=sys.stderr)  # an override, for a read-only one
    return 0


def _handle_file(args: argparse.Namespace) -> int:
    from tunehub.quant.stream import plan_quantization, quantize_file
    from tunehub.registry.naming import quantized_filename

    source: Path = args.file
    output = args.out
    if output is None:
        plan = plan_quantization(source, dtype=args.dtype, layers=args.layers)
        output = source.with_name(quantized_filename(source.name, plan.dtype))
    if output.exists() and not args.force:
        raise QuantizationError(f"{output} exists; pass --force to overwrite it")
    with _Progress(not args.quiet and not args.json) as progress:
        result = quantize_file(
            source, output, dtype=args.dtype, layers=args.layers, device=args.device, progress=progress
        )
    if args.json:
        print_json(result.to_json())
    else:
        print(
            f"wrote {result.output}: {result.quantized_layers} layers int8 ({result.layout or 'by --layers'}), "
            f"{result.bytes_read / 1e9:.2f} GB -> {result.bytes_written / 1e9:.2f} GB in {result.seconds:.1f} s "
            f"on {result.device}"
        )
    return 0
