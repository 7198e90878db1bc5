"""``ldapdkim check-config``: validate the configuration, and open its directory once, like
``opendkim -n``."""

from __future__ import annotations

import argparse

from ldapdkim.cli import options
from ldapdkim.cli.options import Parents, Subparsers
from ldapdkim.directory.resolution import open_directory


def add_parser(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser(
        "check-config", parents=[parents.with_config], help="validate the configuration"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = options.load(args)
    with open_directory(settings):
        pass
    print(f"{args.config}: OK")
    return 0
