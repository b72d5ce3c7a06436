"""``tunehub hub``: the bundled Hub-compatible server and its administration.

    tunehub hub serve --root DIR [--host H] [--port P] [--public-url URL] [limits...]
    tunehub hub token add USER --root DIR [--write] | token list | token revoke ID
    tunehub hub org add ORG --member USER --root DIR | org remove ORG --member USER
    tunehub hub user rm USER --root DIR [--with-repos]
    tunehub hub import PATH --repo NS/NAME --root DIR [--link] [--follow-symlinks]
    tunehub hub serve --upstream https://huggingface.co [--upstream-token-file F] [--public-read]
    tunehub hub grant TOKEN_ID REPO [--revoke] | status | mirror ls|prefetch|evict
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
    serve.add_argument(
        "--upstream",
        default=None,
        help="mirror this Hub (e.g. https://huggingface.co): repos not held here are fetched from it once "
        "(default: `upstream` in ROOT/hub.toml)",
    )
    serve.add_argument(
        "--upstream-token-file",
        default=None,
        help="file holding the hub's own token for the upstream (default: `upstream_token_file`; none: public repos only)",
    )
    serve.add_argument(
        "--upstream-ttl",
        default=None,
        help="re-check branches upstream at most this often (seconds or 30s/10m/1h; default 10m)",
    )
    serve.add_argument(
        "--public-read",
        action="store_true",
        default=None,
        help="mirrored public repos readable without a LAN token (default: `public_read`, else a token is needed)",
    )
    serve.set_defaults(func=_serve)

    grant = commands.add_parser(
        "grant", help="let one LAN token read a private or gated repo mirrored from the upstream"
    )
    grant.add_argument("token", help="the token's id (see `tunehub hub token list`) or the token itself")
    grant.add_argument("repo", nargs="?", help="NAMESPACE/NAME as on the upstream (leave out to list grants)")
    grant.add_argument("--type", default="model", choices=["model", "dataset", "space"])
    grant.add_argument("--revoke", action="store_true", help="take the grant back")
    _root_argument(grant)
    grant.set_defaults(func=_grant)

    status = commands.add_parser("status", help="the server's root: serving or not, the upstream and whether it answers")
    _root_argument(status)
    status.set_defaults(func=_status)

    mirror_commands = _command_group(commands, "mirror", "the upstream mirror's cache: list, warm, evict")
    mirror_ls = mirror_commands.add_parser("ls", help="mirrored repos: cached bytes, last check, hits")
    _root_argument(mirror_ls)
    mirror_ls.set_defaults(func=_mirror_ls)
    prefetch = mirror_commands.add_parser("prefetch", help="fetch a repo's files into the cache before a job")
    prefetch.add_argument("repo", help="NAMESPACE/NAME on the upstream")
    prefetch.add_argument("--include", action="append", default=[], help="only paths matching this glob (repeatable)")
    prefetch.add_argument("--revision", default="main")
    prefetch.add_argument("--type", default="model", choices=["model", "dataset", "space"])
    prefetch.add_argument("--upstream", default=None, help="default: the upstream the server uses (or hub.toml)")
    prefetch.add_argument("--upstream-token-file", default=None)
    _root_argument(prefetch)
    prefetch.set_defaults(func=_mirror_prefetch)
    evict = mirror_commands.add_parser("evict", help="remove cached files (metadata stays; read again = fetched again)")
    evict.add_argument("repo", nargs="?", help="all cached files of this mirrored repo")
    evict.add_argument("--type", default="model", choices=["model", "dataset", "space"])
    evict.add_argument("--older-than", default=None, help="files last read longer ago than this (e.g. 30d, 12h)")
    evict.add_argument("--max-size", default=None, help="then least recently read files until the cache fits (e.g. 2TB)")
    _root_argument(evict)
    evict.set_defaults(func=_mirror_evict)

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
    from dataclasses import fields, replace

    from tunehub.hub.server.hubconfig import load_hub_config
    from tunehub.hub.server.limits import Limits
    from tunehub.hub.server.serve import serve

    if not 0 <= args.port <= 65535:
        raise ServerError(f"--port {args.port} is not a port number.")
    config = load_hub_config(_root(args))
    limits = Limits(**{field.name: getattr(args, field.name) for field in fields(Limits) if hasattr(args, field.name)})
    if config.get("sendfile") is False:
        limits = replace(limits, sendfile=False)
    return serve(
        _root(args),
        args.host,
        args.port,
        page_size=args.page_size,
        access_log=args.access_log,
        log_level=args.log_level,
        public_url=args.public_url,
        limits=limits,
        mirror_settings=_mirror_settings(args, config=config),
    )


def _mirror_settings(args: argparse.Namespace, *, for_prefetch: bool = False, config: dict[str, Any] | None = None) -> Any:
    """The mirror's settings from the options, then ROOT/hub.toml (``config`` when read already;
    then, for prefetch, the server's); None: no mirror."""
    from tunehub.hub.server.hubconfig import check_upstream_url, load_hub_config, parse_duration, read_token_file
    from tunehub.hub.server.mirror import DEFAULT_TTL_S, MirrorSettings

    config = config if config is not None else load_hub_config(_root(args))
    upstream = args.upstream or config.get("upstream")
    token_file = args.upstream_token_file or config.get("upstream_token_file")
    if for_prefetch and not upstream:
        with _store(args) as store:
            from tunehub.hub.server.mirror_store import MirrorStore

            used = MirrorStore(store).state("upstream") or {}
        upstream = used.get("url")
        token_file = token_file or used.get("token_file")
    if not upstream:
        if token_file or getattr(args, "upstream_ttl", None) or getattr(args, "public_read", None):
            raise ServerError("--upstream-token-file, --upstream-ttl and --public-read need --upstream URL (or `upstream` in hub.toml).")
        return None
    ttl_text = getattr(args, "upstream_ttl", None) or config.get("upstream_ttl", DEFAULT_TTL_S)
    public_read = getattr(args, "public_read", None)
    return MirrorSettings(
        upstream=check_upstream_url(upstream),
        token=read_token_file(token_file) if token_file else None,
        token_file=str(token_file) if token_file else None,
        ttl=parse_duration(ttl_text, "upstream_ttl"),
        public_read=bool(config.get("public_read", False) if public_read is None else public_read),
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


def _token_id(store: Any, token: str) -> int:
    from tunehub.hub.server.storage import hash_token

    if token.isdigit():
        return int(token)
    row = store._connect().execute("SELECT id FROM tokens WHERE token_hash=?", (hash_token(token),)).fetchone()
    if row is None:
        raise ServerError("That token is not one of this server's (give its id from `tunehub hub token list`).")
    return int(row[0])


def _grant(args: argparse.Namespace) -> int:
    from tunehub.hub.server.mirror_store import MirrorStore

    with _store(args) as store:
        mirror_store = MirrorStore(store)
        token_id = _token_id(store, args.token)
        if args.repo is None:
            for granted_id, user, repo_type, repo_id in mirror_store.grants():
                if granted_id == token_id:
                    print(f"{granted_id:>4}  {user:<20} {repo_type:<8} {repo_id}")
            return 0
        if args.revoke:
            if not mirror_store.revoke_grant(token_id, args.type, args.repo):
                raise ServerError(f"Token {token_id} had no grant for {args.repo}.")
            print(f"token {token_id}: no longer reads {args.repo}", file=sys.stderr)
            return 0
        mirror_store.grant(token_id, args.type, args.repo)
    print(f"token {token_id} may read {args.repo} through the mirror", file=sys.stderr)
    return 0


def _serving_pid(root: str) -> int | None:
    """The pid serving ``root`` (it holds serve.lock), or None."""
    import fcntl

    path = os.path.join(root, "serve.lock")
    try:
        handle = open(path)
    except FileNotFoundError:
        return None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = handle.read().split()
            return int(text[1]) if len(text) > 1 and text[1].isdigit() else -1
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return None


def _ago(timestamp: float | None) -> str:
    if not timestamp:
        return "never"
    seconds = max(0.0, datetime.datetime.now().timestamp() - timestamp)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{count} B"


def _status(args: argparse.Namespace) -> int:
    from tunehub.hub.server.mirror_store import MirrorStore

    root = _root(args)
    pid = _serving_pid(root)
    with _store(args) as store:
        mirror_store = MirrorStore(store)
        state = mirror_store.state("upstream")
        mirrored = mirror_store.list_mirrored()
    print(f"root:      {store.root}")
    print(f"serving:   {'yes (pid ' + str(pid) + ')' if pid else 'no'}")
    if not state or (pid and state.get("pid") != pid):
        print("upstream:  none (not a mirror)")  # (a mirror before, maybe: the server now running is not)
        return 0
    if state.get("up") is None:
        health = "not asked yet"
    elif state["up"]:
        health = f"reachable (answering since {_ago(state.get('since'))})"
    else:
        health = f"UNREACHABLE since {_ago(state.get('since'))}: {state.get('reason', '')}; serving cached files only"
    if not pid:
        health += " (as last seen by the server)"
    print(f"upstream:  {state.get('url')}  {health}")
    print(f"token:     {'from ' + state['token_file'] if state.get('token_file') else 'none (public repos only)'}")
    print(f"ttl:       {state.get('ttl', 0):g}s")
    print(f"mirrored:  {len(mirrored)} repo(s), {_bytes(sum(m.cached_bytes for m in mirrored))} cached")
    return 0


def _mirror_ls(args: argparse.Namespace) -> int:
    from tunehub.hub.server.mirror_store import MirrorStore

    with _store(args) as store:
        mirrored = MirrorStore(store).list_mirrored()
    if not mirrored:
        print("no mirrored repos", file=sys.stderr)
        return 0
    print(f"{'REPO':<48} {'CACHED':>10} {'OF MAIN':>10} {'CHECKED':>10} {'HITS':>6}  ACCESS")
    for item in mirrored:
        name = ("" if item.repo.type == "model" else item.repo.type + "s/") + item.repo.repo_id
        access = "granted tokens" if item.restricted else "public"
        print(
            f"{name:<48} {_bytes(item.cached_bytes):>10} {_bytes(item.listed_bytes):>10} "
            f"{_ago(item.last_check):>10} {item.hits:>6}  {access}"
        )
    return 0


def _mirror_prefetch(args: argparse.Namespace) -> int:
    from tunehub.hub.server.mirror import Mirror
    from tunehub.hub.server.problems import ApiProblem

    settings = _mirror_settings(args, for_prefetch=True)
    if settings is None:
        raise ServerError("No upstream to prefetch from: give --upstream URL, or set `upstream` in hub.toml.")
    with _store(args) as store:
        mirror = Mirror(store, settings, serving=False)
        try:
            files, fetched, cached = mirror.prefetch(
                args.type, args.repo, args.revision, args.include, lambda line: print(line, file=sys.stderr)
            )
        except ApiProblem as problem:
            raise ServerError(problem.message) from problem
        finally:
            mirror.close()
    print(f"{args.repo}@{args.revision}: {files} file(s), {cached} already cached, {_bytes(fetched)} fetched")
    return 0


def _mirror_evict(args: argparse.Namespace) -> int:
    from tunehub.hub.server.hubconfig import parse_duration, parse_size
    from tunehub.hub.server.mirror_store import MirrorStore, evict

    if not (args.repo or args.older_than or args.max_size):
        raise ServerError("Say what to evict: a REPO, --older-than 30d and/or --max-size 2TB.")
    older = parse_duration(args.older_than, "--older-than") if args.older_than else None
    max_size = parse_size(args.max_size, "--max-size") if args.max_size else None
    with _store(args) as store:
        mirror_store = MirrorStore(store)
        repo = None
        if args.repo:
            repo = store.get_repo(args.type, args.repo)
            if repo is None or mirror_store.mirrored(repo) is None:
                raise ServerError(f"{args.repo} is not a mirrored repo here (see `tunehub hub mirror ls`).")
        result = evict(mirror_store, repo=repo, older_than_s=older, max_size=max_size)
    print(f"evicted {result.blobs} file(s), {_bytes(result.bytes)}; {_bytes(result.kept_bytes)} cached remain")
    return 0
