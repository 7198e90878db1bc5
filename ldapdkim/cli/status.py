"""``ldapdkim status``: the running milter's directory servers, from its status.json.

The command reads the status file (:mod:`ldapdkim.directory.replica.status`),
renders it as a table (one row per server, and the age of the file) and
decides the exit status:

* 0 when at least one server is connected and the file is fresh (updated
  within :data:`~ldapdkim.directory.replica.status.FRESH_SECONDS`);
* 1 otherwise (no server connected, a stale file: the milter may be hung or
  gone, or a file that cannot be understood);
* 2 when there is no file at all (is the milter running?).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from ldapdkim.cli import options
from ldapdkim.cli.options import Parents, Subparsers
from ldapdkim.directory.replica import status
from ldapdkim.directory.replica.status import FRESH_SECONDS, Status
from ldapdkim.errors import (
    StatusUnreadable,
)

OK = 0
PROBLEM = 1
MISSING = 2


def add_parser(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser(
        "status",
        parents=[parents.with_config],
        help="show the running milter's directory servers (StateDirectory/status.json)",
        description="Exits 0 when a directory server is connected and the status is fresh "
        "(written within 30 s), 1 otherwise, 2 when there is no status file.",
    )
    p.add_argument("--json", action="store_true", help="print status.json as it is")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = status.status_path(options.load(args).state_directory)
    try:
        text, report = status.read_status(path)
    except FileNotFoundError:
        options.error(missing_hint(path), args.verbose)
        return MISSING
    except StatusUnreadable as err:
        options.error(f"{path}: {err}", args.verbose)
        return PROBLEM
    now = now_utc()
    sys.stdout.write(text if args.json else render(report, now, path))
    return exit_status(report, now)


def exit_status(status: Status, now: datetime) -> int:
    """0 when a server is connected and the file is fresh, else 1."""
    return OK if status.connected() > 0 and status.fresh(now) else PROBLEM


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} d ago"


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def render(status: Status, now: datetime, path: Path) -> str:
    """The human-readable report: header, one row per server, verdict."""
    age = status.age(now)
    lines = [f"{path}: mode {status.mode}, updated {_stamp(status.updated)} ({_ago(age)})", ""]
    rows: list[list[str]] = [["SERVER", "STATE", "LAST SYNC", "ENTRIES", "STALENESS"]]
    for server in status.servers:
        last = "never"
        if server.last_sync is not None:
            since = max(0.0, (now - server.last_sync).total_seconds())
            last = f"{_stamp(server.last_sync)} ({_ago(since)})"
        rows.append(
            [
                server.uri,
                "connected" if server.connected else "disconnected",
                last,
                str(server.entries),
                "-" if server.staleness_s is None else f"{server.staleness_s:.1f} s",
            ]
        )
    if status.servers:
        lines += _table(rows)
    else:
        lines.append("(no servers listed)")
    lines.append("")
    connected, total = status.connected(), len(status.servers)
    if not status.fresh(now):
        lines.append(
            f"PROBLEM: the status is {age:.0f} s old (the milter rewrites it at least every "
            f"{FRESH_SECONDS:.0f} s); is the milter running?"
        )
    elif connected == 0:
        lines.append(f"PROBLEM: none of {total} directory servers is connected")
    else:
        lines.append(f"OK: {connected} of {total} directory servers connected")
    return "\n".join(lines) + "\n"


def missing_hint(path: Path) -> str:
    return (
        f"{path} does not exist; is the milter running? "
        f"StateDirectory is {path.parent} (set in the configuration file)"
    )


def now_utc() -> datetime:
    return datetime.now(UTC)
