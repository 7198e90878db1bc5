"""The ``ldapdkim`` command: one parser built from the sub-command modules; the exit status.

Exit status: 0 success, 1 a runtime outcome (message not signed, signature
not verified, directory down), 2 a usage or configuration error.  Errors are
one line on stderr; ``-v`` adds tracebacks and debug logging.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ldapdkim import __version__
from ldapdkim.cli import (
    checkconfig,
    dnsrecords,
    genkey,
    migrate,
    options,
    provision,
    rotate,
    run,
    sign,
    status,
    testkey,
    verify,
)
from ldapdkim.errors import ConfigError, KeyFormatError, LdapDkimError, UsageError
from ldapdkim.log import setup_cli_logging

COMMANDS = (
    checkconfig,
    run,
    genkey,
    provision,
    migrate,
    sign,
    verify,
    dnsrecords,
    rotate,
    testkey,
    status,
)
"""The sub-command modules, in the order ``ldapdkim --help`` lists them."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    setup_cli_logging(args.verbose)
    try:
        result: int = args.func(args)
        return result
    except (ConfigError, UsageError, KeyFormatError) as err:
        options.error(err, args.verbose)
        return 2
    except LdapDkimError as err:
        options.error(err, args.verbose)
        return 1
    except BrokenPipeError:
        # The reader went away (``ldapdkim sign ... | head``): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as err:
        options.error(f"{err.filename}: {err.strerror}" if err.filename else err, args.verbose)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ldapdkim",
        description="DKIM signing and verifying with keys and policy in an LDAP directory.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"ldapdkim {__version__}")
    parents = options.Parents.make()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub, parents)
    return parser
