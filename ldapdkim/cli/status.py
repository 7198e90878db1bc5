"""``ldapdkim status``: the running milter's directory servers, from its status.json."""

from __future__ import annotations

import argparse
import sys

from ldapdkim.cli import options
from ldapdkim.cli.options import Parents, Subparsers
from ldapdkim.directory.replica import status
from ldapdkim.errors import (
    StatusUnreadable,
)


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
        options.error(status.missing_hint(path), args.verbose)
        return status.MISSING
    except StatusUnreadable as err:
        options.error(f"{path}: {err}", args.verbose)
        return status.PROBLEM
    now = status.now_utc()
    sys.stdout.write(text if args.json else status.render(report, now, path))
    return status.exit_status(report, now)
