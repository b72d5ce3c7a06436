"""``tunehub daemon``, ``tunehub status``, ``tunehub jobs``, ``tunehub logs``.

Only argparse and the light client are imported here; the daemon's own modules
(watchdog, SQLite) load when ``tunehub daemon`` runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tunehub.cli.common import config_from_args, print_json
from tunehub.errors import DaemonError


STATUS_LIMIT = 25  # definition lines `tunehub status` prints before it summarises
_QUIET_STATES = ("ready", "missing", "checking", "pending", "hidden")  # listed only with --all on a large home


def register(subparsers: Any) -> None:
    daemon = subparsers.add_parser(
        "daemon", help="run the sync service in the foreground (watch, poll, reconcile)",
        description="Watch definition and weights folders, poll [[remote]] repos, pull/quantize/publish as "
        "[daemon] in tunehub.toml says. SIGTERM stops it, SIGHUP reloads tunehub.toml.",
    )
    daemon.add_argument("--once", action="store_true", help="one complete pass, then exit (0 = all in its desired state)")
    daemon.add_argument("--quiet", action="store_true", help="log to daemon.log only, not to stderr")
    daemon.add_argument("--log-format", choices=("text", "json"), default=None,
                        help="stderr lines: readable text (default on a terminal) or JSON (default otherwise)")
    daemon.set_defaults(func=_daemon)

    status = subparsers.add_parser("status", help="what the running daemon sees: definitions, jobs, remotes")
    status.add_argument("--json", action="store_true", help="the full status as JSON")
    status.add_argument("--all", action="store_true",
                        help=f"list every definition (default: a summary when there are more than {STATUS_LIMIT})")
    status.set_defaults(func=_status)

    jobs = subparsers.add_parser("jobs", help="the daemon's jobs (from the journal); submit or cancel one")
    jobs.add_argument("--json", action="store_true")
    jobs.add_argument("--all", action="store_true", help="include finished jobs (default: the last 20)")
    jobs.add_argument("--submit", nargs=2, metavar=("KIND", "ID"), help="queue a job: pull|quantize|publish|generate ID")
    jobs.add_argument("--cancel", type=int, metavar="JOB", help="cancel a queued or running job")
    jobs.set_defaults(func=_jobs)

    logs = subparsers.add_parser("logs", help="the daemon's log (one JSON event per line)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("-n", "--lines", type=int, default=50, help="how many last lines to print first (default 50)")
    logs.add_argument("--raw", action="store_true", help="print the JSON lines as they are")
    logs.set_defaults(func=_logs)


def _daemon(args: argparse.Namespace) -> int:
    from tunehub.daemon.service import Daemon

    daemon = Daemon(getattr(args, "home", None), log_to_stderr=not args.quiet, log_format=args.log_format)
    if args.once:
        return daemon.run_once()
    return daemon.run()


def _client(args: argparse.Namespace) -> Any:
    from tunehub.daemon.client import DaemonClient

    return DaemonClient(config_from_args(args).home)


def _ago(timestamp: float | None) -> str:
    if not timestamp:
        return "never"
    seconds = time.time() - timestamp
    if seconds < 0:
        return f"in {-seconds:.0f}s"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _status(args: argparse.Namespace) -> int:
    from tunehub.daemon.client import DaemonNotRunningError

    cfg = config_from_args(args)
    try:
        status = _client(args).status()
    except DaemonNotRunningError as exc:
        if args.json:
            print_json({"daemon": {"running": False, "home": str(cfg.home), "error": str(exc)}})
        else:
            print(f"daemon: not running for {cfg.home} (start it with: tunehub daemon)")
        return 3
    if args.json:
        print_json(status)
        return 0
    daemon = status["daemon"]
    print(f"daemon: {daemon['state']} (pid {daemon['pid']}, up {daemon['uptime']:.0f}s) for {daemon['home']}")
    policy = status["policy"]
    print(f"policy: pull={policy['pull']} quantize={policy['quantize']} publish={policy['publish'] or '-'}")
    if status.get("downloads_paused"):
        print(f"  {status['downloads_paused']}")
    counts = ", ".join(f"{n} {state}" for state, n in sorted(status["counts"].items()))
    print(f"definitions: {len(status['definitions'])} ({counts})")
    listed = [e for e in status["definitions"]
              if not (e["origin"] == "builtin" and e["state"] in ("ready", "missing", "checking"))]
    left_out: dict[str, int] = {}
    if not args.all and len(listed) > STATUS_LIMIT:
        # A large home: what needs attention, then a count of the rest
        attention = [e for e in listed if e["state"] not in _QUIET_STATES][:STATUS_LIMIT]
        for entry in listed:
            if entry not in attention:
                left_out[entry["state"]] = left_out.get(entry["state"], 0) + 1
        listed = attention
    for entry in listed:
        line = f"  {entry['state']:<9} {entry['id']}"
        if entry.get("needs"):
            line += f"  needs {', '.join(entry['needs'])}"
        if entry.get("error"):
            line += f"  ({entry['error']})"
        if entry.get("remote", {}).get("upstream") == "gone":
            line += "  (removed from the remote)"
        print(line)
        for problem in entry["problems"][:3]:
            print(f"            {problem}")
    if left_out:
        rest = ", ".join(f"{n} {state}" for state, n in sorted(left_out.items()))
        print(f"  ... and {sum(left_out.values())} more ({rest}); `tunehub status --all` lists every one")
    for remote in status["remotes"]:
        line = f"remote {remote['repo']}: {remote['state']}, checked {_ago(remote['last_check'])}"
        if remote.get("failures"):
            line += f", {remote['failures']} failure(s), next try {_ago(remote['next_check'])}: {remote['last_error']}"
        print(line)
    active = [j for j in status["jobs"] if j["state"] in ("queued", "running")]
    print(f"jobs: {len(active)} active")
    for job in active:
        print(f"  #{job['id']} {job['kind']} {job['definition_id']} {job['state']}")
    return 0


def _jobs(args: argparse.Namespace) -> int:
    if args.submit:
        kind, definition_id = args.submit
        job = _client(args).submit_job(kind, definition_id)
        print(f"queued job #{job['id']}: {kind} {definition_id}")
        return 0
    if args.cancel is not None:
        answer = _client(args).cancel_job(args.cancel)
        print(f"job #{answer['id']}: {answer['state']}")
        return 0
    from tunehub.daemon.journal import Journal

    cfg = config_from_args(args)
    db = cfg.state_dir / "state.db"
    if not db.is_file():
        raise DaemonError(f"no journal at {db}: the daemon never ran for {cfg.home}")
    journal = Journal(db, readonly=True)
    try:
        jobs = journal.jobs(limit=100000 if args.all else 20)
    finally:
        journal.close()
    if args.json:
        print_json(jobs)
        return 0
    if not jobs:
        print("no jobs")
    for job in reversed(jobs):
        line = f"#{job['id']:<5} {job['kind']:<9} {job['state']:<9} {job['definition_id']}  attempts {job['attempts']}"
        if job.get("last_error") and job["state"] != "done":
            line += f"  last error: {job['last_error']}"
        print(line)
    return 0


def _format_log_line(line: str, raw: bool) -> str:
    if raw:
        return line
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    extras = {k: v for k, v in entry.items() if k not in ("time", "level", "event", "msg")}
    text = f"{entry.get('time', '')} {entry.get('level', ''):<7} {entry.get('msg', '')}"
    if extras:
        text += "  " + " ".join(f"{k}={json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v}" for k, v in extras.items())
    return text


def _logs(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    path = cfg.state_dir / "daemon.log"
    if not path.exists() and not args.follow:
        raise DaemonError(f"no log at {path}: the daemon never ran for {cfg.home}")
    lines: list[str] = []
    if path.exists():
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    for line in lines[-args.lines:] if args.lines > 0 else []:
        print(_format_log_line(line, args.raw))
    sys.stdout.flush()
    if not args.follow:
        return 0
    return _follow(path, args.raw)


def _follow(path: Path, raw: bool) -> int:
    position = path.stat().st_size if path.exists() else 0
    inode = path.stat().st_ino if path.exists() else None
    pending = ""
    while True:
        try:
            st = path.stat()
        except FileNotFoundError:
            time.sleep(0.5)
            continue
        if st.st_ino != inode or st.st_size < position:  # rotated or truncated: start over
            inode, position = st.st_ino, 0
        if st.st_size > position:
            with open(path, encoding="utf-8", errors="replace") as handle:
                handle.seek(position)
                chunk = handle.read()
                position = handle.tell()
            pending += chunk
            *complete, pending = pending.split("\n")
            for line in complete:
                print(_format_log_line(line, raw), flush=True)
        time.sleep(0.25)
