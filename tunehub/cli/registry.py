"""Registry commands: list, show, resolve, validate, config."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tunehub.cli.common import config_and_registry, config_from_args, print_json
from tunehub.config import QUANTIZATIONS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("list", help="list the definitions", description="List the definitions the configuration loads.")
    p.add_argument("--json", action="store_true", help="print one JSON array")
    p.add_argument("--arch", metavar="A", help="only this architecture id")
    p.add_argument("--search", metavar="TEXT", help="only those whose id, name or description contains TEXT")
    p.add_argument("--invalid", action="store_true", help="only invalid definitions")
    p.add_argument("--all", action="store_true", help="include hidden definitions")
    p.set_defaults(func=cmd_list)

    p = subparsers.add_parser("show", help="show one definition", description="Show one definition, its files and settings.")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = subparsers.add_parser(
        "resolve", help="which files a definition uses, and why", description="Which files would be used, and why."
    )
    p.add_argument("id")
    p.add_argument("--quantization", choices=QUANTIZATIONS, help="int8, fp8, or bf16 (16-bit, not quantized)")
    p.add_argument("--dtype", choices=("bf16", "fp16"), help="transformer dtype preference")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_resolve)

    p = subparsers.add_parser(
        "validate",
        help="check definitions",
        description="Check definition folders or files; one line per problem (FILE: KEY: message). Exit 1 if any.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="folders or files (default: everything the config loads)")
    p.set_defaults(func=cmd_validate)

    p = subparsers.add_parser("config", help="the effective configuration", description="The effective configuration and where each value came from.")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_config)


def cmd_list(args: argparse.Namespace) -> int:
    _, registry = config_and_registry(args)
    selected = list(
        registry.filter(architecture=args.arch, search=args.search, invalid_only=args.invalid, include_hidden=args.all)
    )
    selected.sort(key=lambda d: d.id)
    if args.json:
        sys.stdout.write(json.dumps([d.summary() for d in selected], ensure_ascii=False))
        sys.stdout.write("\n")
        return 0
    if not selected:
        print("no definitions match")
        return 0
    width = max(len(d.id) for d in selected)
    arch_width = max(len(d.architecture or "?") for d in selected)
    lines = []
    for d in selected:
        state = "ok" if d.valid else f"INVALID ({len(d.problems)} problem{'s' if len(d.problems) > 1 else ''})"
        lines.append(f"{d.id:<{width}}  {d.architecture or '?':<{arch_width}}  {state:<8}  {d.name}")
    print("\n".join(lines))
    return 0


def _describe_variants(choices: list[str]) -> list[str]:
    from tunehub.registry.naming import parse_variant_name

    return [f"    - {source}  [{parse_variant_name(source).label}]" for source in choices]


def cmd_show(args: argparse.Namespace) -> int:
    _, registry = config_and_registry(args)
    definition = registry.get(args.id)
    if args.json:
        print_json({**definition.summary(), "data": definition.data})
        return 0
    out = [
        f"{definition.id}: {definition.name}",
        f"  architecture: {definition.architecture}",
        f"  origin: {definition.origin.value}",
        f"  files: {', '.join(str(p) for p in definition.files)}",
    ]
    if definition.description:
        out.append(f"  description: {definition.description}")
    if definition.problems:
        out.append("  problems:")
        out.extend(f"    - {problem.key}: {problem.message}" for problem in definition.problems)
    else:
        for key in ("URLs", "URLs2", "preload_URLs"):
            raw = definition.model.get(key)
            if raw is None:
                continue
            via = f" (from '{raw}')" if isinstance(raw, str) else ""
            out.append(f"  {key}{via}:")
            out.extend(_describe_variants(registry.reference_list(definition.id, key)))
        for index, variants in enumerate(registry.module_lists(definition.id)):
            out.append(f"  module {index + 1}:")
            out.extend(_describe_variants(variants))
    if definition.settings:
        out.append("  settings:")
        out.extend(f"    {key}: {json.dumps(value, ensure_ascii=False)}" for key, value in definition.settings.items())
    print("\n".join(out))
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    _, registry = config_and_registry(args)
    resolution = registry.resolve(args.id, args.quantization, args.dtype)
    if args.json:
        print_json(resolution.to_json())
        return 0
    out = [
        f"{resolution.id} ({resolution.architecture}): quantization {resolution.quantization}, "
        f"dtype {resolution.dtype} ({resolution.dtype_reason})"
    ]
    for choice in resolution.all_files():
        state = "present" if choice.present else "missing"
        out.append(f"  {choice.role}: {choice.filename}  [{state}: {choice.path}]")
        out.append(f"      why: {choice.reason}")
        if choice.source != choice.filename:
            out.append(f"      from: {choice.source}")
    if resolution.transformer is None:
        out.append("  (no transformer file listed)")
    if resolution.needs_quantization:
        hint = "tunehub pull quantizes it (auto_quantize)" if resolution.auto_quantize else "run 'tunehub quantize'"
        out.append(f"  note: {resolution.quantization} wanted but only a 16-bit file is listed; {hint}")
    print("\n".join(out))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from tunehub.registry import DefinitionFolder, Origin, Registry

    config = config_from_args(args)
    folders = Registry.default_folders(config)
    wanted: list[Path] = []
    for raw in args.paths:
        path = Path(raw)
        if not path.exists():
            print(f"{raw}: no such file or folder", file=sys.stderr)
            return 1
        wanted.append(path.resolve())
        folder = path if path.is_dir() else path.parent
        folders.append(DefinitionFolder(folder, Origin.LOCAL))
    registry = Registry.load(config, folders)
    problems = registry.problems()
    if wanted:
        problems = [
            p for p in problems if any(Path(p.file).resolve() == w or w in Path(p.file).resolve().parents for w in wanted)
        ]
    for problem in sorted(problems, key=lambda p: (p.file, p.key)):
        print(problem)
    if problems:
        files = len({p.file for p in problems})
        print(f"{len(problems)} problem(s) in {files} file(s)", file=sys.stderr)
        return 1
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    values = config.as_dict()
    if args.json:
        print_json({"values": values, "origins": config.origins, "warnings": config.warnings})
        return 0
    for key, value in values.items():
        origin = config.origins.get(key, "default" if key not in ("config_file",) else "")
        suffix = f"   ({origin})" if origin else ""
        print(f"{key} = {json.dumps(value, ensure_ascii=False)}{suffix}")
    return 0
