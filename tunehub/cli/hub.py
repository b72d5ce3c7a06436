"""``tunehub hub``: the bundled Hub-compatible server and its administration.

    tunehub hub serve --root DIR [--host H] [--port P] [--public-url URL] [limits...]
    tunehub hub token add USER --root DIR [--write] | token list | token revoke ID
    tunehub hub org add ORG --member USER --root DIR | org remove ORG --member USER
    tunehub hub user rm USER --root DIR [--with-repos]
    tunehub hub import PATH --repo NS/NAME --root DIR [--link] [--follow-symlinks]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import sys
from collections.abc import Iterator
from typing import Any

from tunehub.errors import ServerError


def _root_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        default=os.environ.get("TUNEHUB_HUB_ROOT"),
        help="the server's data folder (default: $TUNEHUB_HUB_ROOT)",
    )


def _root(args: argparse.Namespace) -> str:
    if not args.root:
        raise ServerError("Give the server's data folder with --root DIR (or set TUNEHUB_HUB_ROOT).")
    return str(args.root)


def _command_group(commands: argparse._SubParsersAction, name: str, text: str) -> argparse._SubParsersAction:
    """`tunehub hub NAME ACTION ...`: a group that prints its help when no action is given."""
    group = commands.add_parser(name, help=text)
    actions = group.add_subparsers(dest=f"{name}_command", metavar="ACTION")
    group.set_defaults(func=lambda args: (group.print_help(), 2)[1])
    return actions


def register(subparsers: argparse._SubParsersAction) -> None:
    hub = subparsers.add_parser("hub", help="run and administer the bundled Hub-compatible server")
    commands = hub.add_subparsers(dest="hub_command", metavar="SUBCOMMAND")
    hub.set_defaults(func=lambda args: (hub.print_help(), 2)[1])

    serve = commands.add_parser("serve", help="serve a folder as a Hub (HF_ENDPOINT) until Ctrl-C / SIGTERM")
    _root_argument(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    serve.add_argument("--page-size", type=int, default=None, help="entries per page in listings (default 1000)")
    serve.add_argument(
        "--access-log", action="store_true", help="log each request on stderr (never tokens or upload signatures)"
    )
    serve.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--public-url",
        default=None,
        help="the URL clients reach this server at (behind a proxy); links in answers use it instead of the Host header",
    )
    _limit_arguments(serve)
    serve.set_defaults(func=_serve)

    token_commands = _command_group(commands, "token", "create, list and revoke access tokens")
    add = token_commands.add_parser("add", help="create a token for USER (created if new); prints it once")
    add.add_argument("user")
    add.add_argument("--write", action="store_true", help="allow writes (default: read-only)")
    add.add_argument("--name", default=None, help="a label for the token")
    _root_argument(add)
    add.set_defaults(func=_token_add)
    listing = token_commands.add_parser("list", help="list tokens (never the secrets)")
    listing.add_argument("--user", default=None)
    _root_argument(listing)
    listing.set_defaults(func=_token_list)
    revoke = token_commands.add_parser("revoke", help="revoke a token by its id (see token list)")
    revoke.add_argument("id", type=int)
    _root_argument(revoke)
    revoke.set_defaults(func=_token_revoke)

    org_commands = _command_group(commands, "org", "organisations")
    for action, text in [
        ("add", "create ORG (if new) and add members"),
        ("remove", "remove members from ORG (they keep their own repos)"),
    ]:
        org_action = org_commands.add_parser(action, help=text)
        org_action.add_argument("org")
        org_action.add_argument("--member", action="append", default=[], required=True, help="a user (repeatable)")
        _root_argument(org_action)
        org_action.set_defaults(func=_org_members)

    user_commands = _command_group(commands, "user", "users")
    user_rm = user_commands.add_parser("rm", help="delete USER: their tokens stop working at once")
    user_rm.add_argument("user")
    user_rm.add_argument("--with-repos", action="store_true", help="also delete the repos in their namespace")
    _root_argument(user_rm)
    user_rm.set_defaults(func=_user_rm)

    importer = commands.add_parser(
        "import", help="add a local folder or a huggingface_hub cache repo to a repo, as one commit"
    )
    importer.add_argument("path", help="a folder, or a cache folder like .../hub/models--org--name")
    importer.add_argument("--repo", required=True, help="NAMESPACE/NAME on this server")
    importer.add_argument("--type", default="model", choices=["model", "dataset", "space"])
    importer.add_argument("--revision", default="main", help="branch to commit to (default main)")
    importer.add_argument("--source-revision", default=None, help="for a cache folder: the ref or commit to take")
    importer.add_argument("--private", action="store_true", help="create the repo private")
    importer.add_argument(
        "--link",
        action="store_true",
        help="hard-link files instead of copying (same disk; never edit the sources afterwards)",
    )
    importer.add_argument(
        "--follow-symlinks",
        action="store_true",
        default=None,
        help="import what symbolic links point to, if inside the folder (always on for a huggingface_hub cache folder)",
    )
    importer.add_argument("-m", "--message", default=None, help="commit title")
    _root_argument(importer)
    importer.set_defaults(func=_import)


def _limit_arguments(serve: argparse.ArgumentParser) -> None:
    """The limits that keep one client from taking the server from the others (defaults in the README)."""
    from tunehub.hub.server.limits import DEFAULTS

    def positive(kind: type) -> Any:
        def parse(text: str) -> Any:
            value = kind(text)
            if value <= 0:
                raise argparse.ArgumentTypeError(f"{text} is not a positive number")
            return value

        return parse

    limits = serve.add_argument_group("limits (per connection, per client address, in total)")
    for flag, kind, text in [
        ("header_timeout", float, "seconds a client may take to send a request's headers"),
        ("idle_timeout", float, "seconds without a byte while a request body is arriving"),
        ("send_timeout", float, "seconds a client may read nothing of an answer before it is dropped"),
        ("keep_alive", int, "seconds an idle keep-alive connection stays open"),
        ("max_connections", int, "open connections in total (also bounded by the open-files limit)"),
        ("max_connections_per_client", int, "open connections from one client address"),
        ("request_timeout", float, "seconds a request may wait for storage work before a 503 with Retry-After"),
        ("login_failures", int, "failed token checks per client address per minute before 429"),
    ]:
        limits.add_argument(
            "--" + flag.replace("_", "-"),
            type=positive(kind),
            default=getattr(DEFAULTS, flag),
            help=f"{text} (default {getattr(DEFAULTS, flag)})",
        )


def _serve(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from tunehub.hub.server.limits import Limits
    from tunehub.hub.server.serve import serve

    if not 0 <= args.port <= 65535:
        raise ServerError(f"--port {args.port} is not a port number.")
    limits = Limits(**{field.name: getattr(args, field.name) for field in fields(Limits) if hasattr(args, field.name)})
    return serve(
        _root(args),
        args.host,
        args.port,
        page_size=args.page_size,
        access_log=args.access_log,
        log_level=args.log_level,
        public_url=args.public_url,
        limits=limits,
    )


@contextlib.contextmanager
def _store(args: argparse.Namespace) -> Iterator[Any]:
    """The server's store under ``--root``, closed afterwards; bad input becomes a user error."""
    from tunehub.hub.server.storage import HubStore
    from tunehub.hub.server.validation import InvalidInput

    store = HubStore(_root(args))
    try:
        yield store
    except InvalidInput as exc:
        raise ServerError(str(exc)) from exc
    finally:
        store.close()


def _token_add(args: argparse.Namespace) -> int:
    with _store(args) as store:
        token = store.add_token(args.user, write=args.write, name=args.name)
    print(token)
    return 0


def _token_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        tokens = store.list_tokens(args.user)
    for record in tokens:
        created = datetime.datetime.fromtimestamp(record.created).strftime("%Y-%m-%d %H:%M")
        state = "revoked" if record.revoked else "active"
        print(f"{record.id:>4}  {record.user:<20} {record.role:<5}  {state:<7}  {created}  {record.name}")
    if not tokens:
        print("no tokens", file=sys.stderr)
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    with _store(args) as store:
        revoked = store.revoke_token(args.id)
    if not revoked:
        raise ServerError(f"No active token with id {args.id} (see `tunehub hub token list`).")
    print(f"revoked token {args.id}", file=sys.stderr)
    return 0


def _org_members(args: argparse.Namespace) -> int:
    """`org add` and `org remove`: the same walk over --member, a different store call."""
    adding = args.org_command == "add"
    with _store(args) as store:
        change = store.add_org_member if adding else store.remove_org_member
        for member in args.member:
            change(args.org, member)
    print(f"{args.org}: {'added' if adding else 'removed'} {', '.join(args.member)}", file=sys.stderr)
    return 0


def _user_rm(args: argparse.Namespace) -> int:
    with _store(args) as store:
        deleted = store.remove_user(args.user, with_repos=args.with_repos)
    extra = f" and {deleted} repo(s)" if deleted else ""
    print(f"deleted user {args.user}, their tokens{extra}", file=sys.stderr)
    return 0


def _import(args: argparse.Namespace) -> int:
    from tunehub.hub.server.importer import import_folder

    result = import_folder(
        _root(args),
        args.path,
        args.repo,
        repo_type=args.type,
        revision=args.revision,
        source_revision=args.source_revision,
        private=args.private,
        message=args.message,
        link=args.link,
        follow_symlinks=args.follow_symlinks,
    )
    print(
        f"imported {result.files} file(s), {result.bytes} bytes from {result.source} "
        f"into {result.repo_id}@{result.revision}: commit {result.commit}"
    )
    return 0
