"""Registry commands: list, show, resolve, validate, config."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tunehub.cli.common import config_and_registry, config_from_args, print_json
from tunehub.config import QUANTIZATIONS
from tunehub.errors import TunehubError

if TYPE_CHECKING:
    from tunehub.registry import Definition, Problem, Registry


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
    p.add_argument("--verbose", "-v", action="store_true", help="every problem on its own line (no grouping)")
    p.set_defaults(func=cmd_validate)

    p = subparsers.add_parser("config", help="the effective configuration", description="The effective configuration and where each value came from.")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_config)


def _presence(registry: Registry, definitions: list[Definition]) -> dict[str, tuple[int, int]]:
    """id -> (files of the picked set present, files picked), from one scan of each weights folder."""
    from tunehub.registry.urls import is_url, local_name

    names: set[str] = set()
    for folder in registry.config.weights_dirs:
        try:
            names.update(entry.name for entry in os.scandir(folder))
        except OSError:
            continue
    out: dict[str, tuple[int, int]] = {}
    for definition in definitions:
        if not definition.valid:
            continue
        try:
            files = registry.resolve(definition.id).all_files()
        except TunehubError:
            continue
        present = sum(
            1 for f in files
            if (f.present if f.role == "lora" or not is_url(f.source) else local_name(f.source) in names)
        )
        out[definition.id] = (present, len(files))
    return out


def cmd_list(args: argparse.Namespace) -> int:
    from tunehub.registry.architectures import architecture

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
    presence = _presence(registry, selected)
    width = max(len(d.id) for d in selected)
    arch_width = max(len(d.architecture or "?") for d in selected)
    family_width = max(len(d.family) for d in selected)
    lines = [f"{'ID':<{width}}  {'ARCHITECTURE':<{arch_width}}  {'FAMILY':<{family_width}}  {'STATE':<8}  {'FILES':<10}  NAME"]
    generate = problems = downloaded = 0
    for d in selected:
        if d.valid:
            state = "ok"
            generate += architecture(d.architecture or "").generate
        else:
            problems += 1
            state = f"INVALID ({len(d.problems)} problem{'s' if len(d.problems) > 1 else ''})"
        have, total = presence.get(d.id, (0, 0))
        files = "-" if not total else "present" if have == total else f"{have}/{total}" if have else "missing"
        downloaded += bool(total) and have == total
        lines.append(
            f"{d.id:<{width}}  {d.architecture or '?':<{arch_width}}  {d.family:<{family_width}}  {state:<8}  "
            f"{files:<10}  {d.name}"
        )
    lines.append(
        f"{len(selected)} definitions, {generate} you can generate with here, {problems} with problems, "
        f"{downloaded} downloaded"
    )
    print("\n".join(lines))
    return 0


def _describe_variants(choices: list[str]) -> list[str]:
    from tunehub.registry.naming import parse_variant_name

    return [f"    - {source}  [{parse_variant_name(source).label}]" for source in choices]


def _show_files(registry: Registry, definition: Definition) -> list[str]:
    """Every file list of a definition, references followed; a broken one says why."""
    from tunehub.registry.validate import url_keys

    out: list[str] = []
    for key in url_keys(definition.model):
        raw = definition.model.get(key)
        if raw is None:
            continue
        via = f" (from '{raw}')" if isinstance(raw, str) else ""
        try:
            out.append(f"  {key}{via}:")
            out.extend(_describe_variants(registry.reference_list(definition.id, key)))
        except TunehubError as exc:
            out.append(f"    ({exc})")
    try:
        for index, key, variants in registry.modules(definition.id):
            out.append(f"  module {index + 1}{'' if key == 'URLs' else ' (URLs2)'}:")
            out.extend(_describe_variants(variants))
    except TunehubError as exc:
        out.append(f"  modules: ({exc})")
    try:
        loras = registry.loras(definition.id)
    except TunehubError as exc:
        out.append(f"  loras: ({exc})")
        loras = []
    if loras:
        out.append(f"  loras (into {registry.lora_folder(definition)}):")
        out.extend(f"    - {source}  x{multiplier}" for source, multiplier in loras)
    return out


def cmd_show(args: argparse.Namespace) -> int:
    from tunehub.registry.architectures import architecture

    _, registry = config_and_registry(args)
    definition = registry.get(args.id)
    if args.json:
        print_json({**definition.summary(), "data": definition.data})
        return 0
    row = architecture(definition.architecture or "")
    out = [
        f"{definition.id}: {definition.name}",
        f"  architecture: {definition.architecture} (family {row.family}; tunehub can {row.can()} it)",
        f"  origin: {definition.origin.value}{' (read-only folder)' if definition.readonly else ''}",
        f"  files: {', '.join(str(p) for p in definition.files)}",
    ]
    if definition.description:
        out.append(f"  description: {definition.description}")
    if definition.problems:
        out.append("  problems:")
        out.extend(f"    - {problem.key}: {problem.message}" for problem in definition.problems)
    out.extend(_show_files(registry, definition))
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
        label = f"x{choice.multiplier}" if choice.role == "lora" else choice.label
        out.append(f"  {choice.role}: {choice.filename}  ({label})  [{state}: {choice.path}]")
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
    problems = sorted(problems, key=lambda p: (p.file, p.key))
    if args.verbose:
        for problem in problems:
            print(problem)
    elif problems:
        print("\n".join(group_problems(problems)))
    if problems:
        files = len({p.file for p in problems})
        print(f"{len(problems)} problem(s) in {files} file(s)", file=sys.stderr)
        return 1
    return 0


GROUP_AT = 3  # a message met in more files than this is one line with a count


def group_problems(problems: list[Problem], shown: int = 3) -> list[str]:
    """One line per problem, except a message repeated over many files: one line with a count
    and the first files (``--verbose`` prints every line)."""
    by_message: dict[tuple[str, str], list[Problem]] = {}
    for problem in problems:
        by_message.setdefault((problem.key, problem.message), []).append(problem)
    lines: list[str] = []
    for (key, message), group in by_message.items():
        if len(group) <= GROUP_AT:
            lines.extend(str(problem) for problem in group)
            continue
        first = ", ".join(Path(p.file).name for p in group[:shown])
        lines.append(f"{key}: {message}  [{len(group)} files: {first}, ...; --verbose lists all]")
    return lines


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
