"""``ldapdkim run``: the milter, in the foreground (pymilter is imported only here)."""

from __future__ import annotations

import argparse

from ldapdkim.cli.options import Parents, Subparsers


def add_parser(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser("run", parents=[parents.with_config], help="run the milter (foreground)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ldapdkim.milter.daemon import Daemon  # pymilter is needed only here

    return Daemon(args.config).run()
