"""The ``ldapdkim`` command: one parser built from the sub-command modules; the exit status.

Exit status: 0 success, 1 a runtime outcome (message not signed, signature
not verified, directory down), 2 a usage or configuration error.  Errors are
one line on stderr; ``-v`` adds tracebacks and debug logging.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from ldapdkim import __version__, nodoh
from ldapdkim.cli import options
from ldapdkim.errors import ConfigError, KeyFormatError, LdapDkimError, UsageError
from ldapdkim.log import setup_cli_logging

COMMANDS = {
    "check-config": "checkconfig",
    "run": "run",
    "genkey": "genkey",
    "provision": "provision",
    "migrate": "migrate",
    "sign": "sign",
    "verify": "verify",
    "dns-records": "dnsrecords",
    "rotate": "rotate",
    "keys": "keys",
    "testkey": "testkey",
    "status": "status",
}
"""Each sub-command and its module in ``ldapdkim.cli``, in the order ``ldapdkim --help``
lists them.  A command line that names one imports that module alone (``run``
then starts without loading what ``migrate`` or ``rotate`` need)."""


def main(argv: Sequence[str] | None = None) -> int:
    nodoh.install()  # before a sub-command's modules import dnspython
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_named(argv))
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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with ``command`` only that sub-command's (the same for it)."""
    parser = argparse.ArgumentParser(
        prog="ldapdkim",
        description="DKIM signing and verifying with keys and policy in an LDAP directory.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"ldapdkim {__version__}")
    parents = options.Parents.make()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        if command is None or name == command:
            importlib.import_module(f"ldapdkim.cli.{module}").add_parser(sub, parents)
    return parser


def _command_named(argv: Sequence[str]) -> str | None:
    """The sub-command ``argv`` names, if its first word that is not an option is one."""
    first = next((word for word in argv if not word.startswith("-")), None)
    return first if first in COMMANDS else None
