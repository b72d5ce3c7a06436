"""``tunehub publish ID --repo NS/NAME``: upload local files in one commit, rewrite them to URLs."""

from __future__ import annotations

import argparse
import json

from tunehub.cli.common import config_and_registry, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "publish",
        help="upload a definition's local files to a Hub repo and point the definition at them",
        description=(
            "Upload every local file the definition references to NS/NAME in one commit (files "
            "whose sha256 is already there are not sent), then rewrite each local entry into its "
            "URL in the definition file, keeping its layout and any edit made meanwhile."
        ),
    )
    p.add_argument("id")
    p.add_argument("--repo", required=True, metavar="NS/NAME", help="the Hub repo (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", default="main", help="branch to commit to (default main)")
    p.add_argument(
        "--include-definition",
        action="store_true",
        help="also upload the rewritten definition as finetunes/ID.json (the shared registry)",
    )
    p.add_argument("--no-loras", action="store_true", help="leave the definition's local LoRAs out")
    p.add_argument("--dry-run", action="store_true", help="show what would be uploaded and the new definition; change nothing")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_publish)


def cmd_publish(args: argparse.Namespace) -> int:
    from tunehub.hub.progress import ProgressDisplay
    from tunehub.hub.publish import publish

    cfg, registry = config_and_registry(args)
    display = ProgressDisplay(enabled=None if not args.json else False)
    with display:
        result = publish(
            cfg,
            registry,
            args.id,
            args.repo,
            private=args.private,
            revision=args.revision,
            include_definition=args.include_definition,
            dry_run=args.dry_run,
            progress=None if args.json else display,
            loras=not args.no_loras,
        )
    if args.json:
        print_json(result.to_json())
        return 0
    verb = "would upload" if result.dry_run else "uploaded"
    for item in result.files:
        status = verb if item.status in ("upload", "definition") else item.status
        print(f"{status:<20} {item.path_in_repo}  ({item.size / 1e6:.1f} MB)")
    if result.dry_run:
        print(f"\n{result.definition_path} would become:")
        print(result.definition_text or json.dumps(result.definition, indent=2, ensure_ascii=False), end="")
        return 0
    if result.committed:
        print(f"commit {result.commit_oid} ({result.bytes_uploaded / 1e6:.1f} MB sent): {result.commit_url}")
    else:
        print("nothing to upload: the repo already has every file; no commit made")
    if result.rewritten:
        if result.override:
            print(f"wrote the override {result.definition_path} (the read-only definition is left as it is)")
        else:
            print(f"rewrote {result.definition_path}")
    return 0
