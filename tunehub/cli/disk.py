"""Disk commands: du, rm, prune, verify, adopt, outdated (logic in :mod:`tunehub.disk`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from tunehub.cli.common import config_and_registry, config_from_args, print_json


def _command(subparsers: argparse._SubParsersAction, name: str, summary: str, description: str,
             func: Callable[[argparse.Namespace], int], *, ids: bool = False, deletes: bool = False
             ) -> argparse.ArgumentParser:
    """One disk command: optional IDs, --json, and for those that delete --dry-run and --yes."""
    p = subparsers.add_parser(name, help=summary, description=description)
    if ids:
        p.add_argument("ids", nargs="*", metavar="ID", help="only these definitions (default: every visible one)")
    if deletes:
        p.add_argument("--dry-run", action="store_true", help="say what would be deleted and kept; delete nothing")
        p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=func)
    return p


def register(subparsers: argparse._SubParsersAction) -> None:
    _command(subparsers, "du", "disk space each definition's files take",
             "Per definition, the bytes of its files on disk: its own and those shared with other definitions "
             "(counted once in the totals); a total per weights folder and the free space left.", cmd_du, ids=True)
    p = _command(subparsers, "rm", "delete a definition's local files that nothing else needs",
                 "Delete the files of a definition that no other visible definition needs; never a file outside "
                 "the weights folders or in a read-only one. The definition is marked 'removed by you' so the "
                 "daemon does not fetch it again; `tunehub pull ID` clears the mark.", cmd_rm, deletes=True)
    p.add_argument("id")
    p.add_argument("--variant", choices=("int8", "16-bit", "all"), default="all",
                   help="only the int8 (or fp8) files, only the 16-bit ones, or all (default, with shared parts)")
    _command(subparsers, "prune", "delete weight files no definition names",
             "Files in the weights folders that no definition names: old versions after an update, quantized "
             "files whose definition is gone, partial downloads untouched for a day. Only model files "
             "(safetensors, gguf, pth, ...), their partials and sidecars are candidates.", cmd_prune, deletes=True)
    p = _command(subparsers, "verify", "re-hash files against the sha256 they were downloaded with",
                 "Check each present file of the definitions against the sha256 recorded at download (or the "
                 "Hub's). Unchanged files are answered by the hash cache; --rehash reads every byte again.",
                 cmd_verify, ids=True)
    p.add_argument("--repair", action="store_true", help="fetch corrupt files again")
    p.add_argument("--rehash", action="store_true", help="ignore the hash cache (bit rot that kept the mtime)")
    p = _command(subparsers, "adopt", "index a folder's weight files so pulls reuse them",
                 "Hash every weight file below DIR once (a ComfyUI models/ folder, another WanGP ckpts/) into the "
                 "hash cache; later pulls link those files instead of downloading. Nothing is written in DIR.",
                 cmd_adopt)
    p.add_argument("dir")
    _command(subparsers, "outdated", "definitions whose Hub files changed since they were pulled",
             "Ask the Hub (one request per repo revision) which pulled files have a newer version. "
             "`tunehub pull --update ID|--all` fetches them.", cmd_outdated, ids=True)


def confirm(question: str, assume_yes: bool) -> bool:
    """y/N on a terminal; without one, --yes is required (nothing is deleted by surprise)."""
    from tunehub.errors import ConfigError

    if assume_yes:
        return True
    if not sys.stdin.isatty():
        raise ConfigError(f"{question} needs confirmation: run it on a terminal, or pass --yes")
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in rows
    ]


def cmd_du(args: argparse.Namespace) -> int:
    from tunehub.disk.files import human_size
    from tunehub.disk.usage import disk_usage

    cfg, registry = config_and_registry(args)
    usage = disk_usage(cfg, registry, args.ids or None)
    if args.json:
        print_json(usage.to_json())
        return 0
    rows = [["ID", "SIZE", "OWN", "SHARED", "FILES", "SHARED WITH"]]
    for item in usage.definitions:
        if not item.files and not args.ids:
            continue
        others = sorted({u for f in item.files if len(f.users) > 1 for u in f.users if u != item.id})
        shared_with = ", ".join(others[:3]) + (f" +{len(others) - 3}" if len(others) > 3 else "")
        rows.append([item.id, human_size(item.total_bytes), human_size(item.own_bytes),
                     human_size(item.shared_bytes), str(len(item.files)), shared_with or "-"])
    if len(rows) > 1:
        print("\n".join(_table(rows, {1, 2, 3, 4})))
    else:
        print("no definition has files on disk")
    print()
    folder_rows = [["WEIGHTS FOLDER", "USED", "FILES", "FREE"]]
    for folder in usage.folders:
        folder_rows.append([str(folder.path) + (" (read-only)" if folder.readonly else ""),
                            human_size(folder.bytes), str(folder.files), human_size(folder.free)])
    if usage.outside_bytes:
        folder_rows.append(["(outside the weights folders)", human_size(usage.outside_bytes), "", ""])
    print("\n".join(_table(folder_rows, {1, 2, 3})))
    print(f"total: {human_size(usage.total_bytes)} in {usage.total_files} file(s), each counted once")
    if usage.orphan_files:
        print(f"not named by any definition: {human_size(usage.orphan_bytes)} in {usage.orphan_files} file(s)"
              " (tunehub prune --dry-run)")
    for problem in usage.problems:
        print(f"note: {problem}", file=sys.stderr)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from tunehub.disk.files import human_size
    from tunehub.disk.remove import execute_removal, plan_removal, removal_lines

    cfg, registry = config_and_registry(args)
    plan = plan_removal(cfg, registry, args.id, args.variant)
    if args.json and (args.dry_run or not plan.delete):
        print_json({**plan.to_json(), "deleted": False})
        return 0
    if not args.json:
        for line in removal_lines(plan, cfg.home):
            print(line)
    if not plan.delete:
        if not args.json:
            print(f"{args.id}: no local files to delete")
        return 0
    summary = f"{len(plan.delete)} file(s), {human_size(plan.bytes_freed)}"
    if args.dry_run:
        print(f"would delete {summary} (dry run)")
        return 0
    if not confirm(f"Delete {summary} of '{args.id}'?", args.yes):
        print("nothing deleted")
        return 1
    from tunehub.daemon.client import cancel_pulls

    cancel_pulls(cfg.home, args.id)  # a daemon fetching these very files stops first
    freed = execute_removal(cfg, plan)
    if args.json:
        print_json({**plan.to_json(), "deleted": True, "freed": freed})
        return 0
    print(f"deleted {len(plan.delete)} file(s), {human_size(freed)} freed; "
          f"'{args.id}' is marked removed (tunehub pull {args.id} fetches it again)")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from tunehub.disk.files import human_size
    from tunehub.disk.prune import delete_orphans, find_orphans

    cfg, registry = config_and_registry(args)
    orphans = find_orphans(cfg, registry)
    total = sum(o.size for o in orphans)
    if args.json and (args.dry_run or not orphans):
        print_json({"orphans": [o.to_json() for o in orphans], "bytes": total, "deleted": False})
        return 0
    if not orphans:
        print("nothing to prune: every weight file is named by a definition")
        return 0
    if not args.json:
        rows = [["SIZE", "FILE", "WHY"]] + [[human_size(o.size), str(o.path), o.why] for o in orphans]
        print("\n".join(_table(rows, {0})))
        print(f"total: {human_size(total)} in {len(orphans)} file(s)")
    if args.dry_run:
        return 0
    if not confirm(f"Delete these {len(orphans)} file(s), {human_size(total)}?", args.yes):
        print("nothing deleted")
        return 1
    freed = delete_orphans(cfg, orphans)
    if args.json:
        print_json({"orphans": [o.to_json() for o in orphans], "bytes": total, "deleted": True, "freed": freed})
    else:
        print(f"deleted {len(orphans)} file(s), {human_size(freed)} freed")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from tunehub.disk.files import human_size
    from tunehub.disk.verify import repair, verify
    from tunehub.hub.progress import ProgressDisplay
    from tunehub.registry.urls import is_url

    cfg, registry = config_and_registry(args)
    live = not args.json and sys.stderr.isatty()  # bars on a terminal; a log gets only the results
    with ProgressDisplay(enabled=live) as display:
        checked = verify(cfg, registry, args.ids or None, rehash=args.rehash, progress=display if live else None)
    repaired = []
    if args.repair and any(c.status == "corrupt" for c in checked):
        with ProgressDisplay(enabled=False if args.json else None) as display:
            repaired = repair(cfg, checked, progress=None if args.json else display)
    corrupt = [c for c in checked if c.status == "corrupt"]
    if args.json:
        print_json({"files": [c.to_json() for c in checked],
                    "repaired": [{"path": str(c.path), "outcome": why} for c, why in repaired]})
        return 1 if corrupt else 0
    for item in checked:
        if item.status == "corrupt":
            print(f"CORRUPT       {item.path}  (sha256 {item.actual[:12] if item.actual else '?'}…, "
                  f"expected {item.expected[:12] if item.expected else '?'}… {item.reference})")
        elif item.status == "unverifiable" and is_url(item.source):
            print(f"unverifiable  {item.path}  ({item.note or 'no reference hash'})")
    local = [c for c in checked if c.status == "unverifiable" and not is_url(c.source)]
    if local:
        print(f"unverifiable  {len(local)} local file(s) tunehub did not download: no reference hash "
              f"(e.g. {local[0].path.name})")
    for item, outcome in repaired:
        print(f"repaired      {item.path}: {outcome}" if item.status == "ok" else f"NOT REPAIRED  {item.path}: {outcome}")
    ok = sum(1 for c in checked if c.status == "ok")
    size = sum(c.size for c in checked)
    print(f"{len(checked)} file(s), {human_size(size)}: {ok} ok, {len(corrupt)} corrupt, "
          f"{len(checked) - ok - len(corrupt)} unverifiable")
    if corrupt and not args.repair:
        print("run `tunehub verify --repair` to fetch the corrupt files again", file=sys.stderr)
    return 1 if corrupt else 0


def cmd_adopt(args: argparse.Namespace) -> int:
    from tunehub.disk.files import human_size
    from tunehub.disk.verify import adopt
    from tunehub.hub.progress import ProgressDisplay

    cfg = config_from_args(args)
    with ProgressDisplay(enabled=False if args.json else None) as display:
        result = adopt(cfg, Path(args.dir), progress=None if args.json else display)
    if args.json:
        print_json(result.to_json())
        return 0
    print(f"{result.files} weight file(s), {human_size(result.bytes)} indexed in {result.seconds:.1f}s "
          f"({result.hashed} hashed now, {result.files - result.hashed} already known)")
    folder = Path(args.dir).expanduser().resolve()
    if all(Path(p).resolve() != folder for p in [*cfg.weights_dirs, *cfg.readonly_weights_dirs]):
        print(f"pulls now link these files by hash; to also find new files there by name, add it to "
              f"readonly_weights_dirs in {cfg.home / 'tunehub.toml'}")
    return 0


def cmd_outdated(args: argparse.Namespace) -> int:
    from tunehub.disk.update import check_outdated

    cfg, registry = config_and_registry(args)
    report = check_outdated(cfg, registry, args.ids or None)
    if args.json:
        print_json(report.to_json())
        return 0
    for problem in report.problems:
        print(f"note: {problem}", file=sys.stderr)
    if not report.files:
        print(f"up to date: {report.checked} Hub file(s) checked ({report.requests} request(s))")
        return 0
    rows = [["ID", "FILE", "LOCAL", "HUB", "REPO"]]
    for definition_id, files in sorted(report.by_definition().items()):
        for item in files:
            hub = (item.remote_sha256 or item.remote_git_sha1 or "")[:12] if item.status == "changed" else "(removed)"
            rows.append([definition_id, item.path.name, (item.local_sha256 or "?")[:12], hub,
                         f"{item.repo_id}@{item.revision}"])
    print("\n".join(_table(rows, set())))
    print(f"{len(report.files)} file(s) changed upstream; `tunehub pull --update ID` or `--all` fetches them")
    return 0
