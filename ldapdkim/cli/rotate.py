"""``ldapdkim rotate``: start key rotations, or advance them as DNS and time allow."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from ldapdkim import config, keys
from ldapdkim.cli import options
from ldapdkim.cli.options import Parents, Subparsers
from ldapdkim.directory.resolution import open_directory
from ldapdkim.directory.writer import DirectoryWriter
from ldapdkim.errors import (
    KeyFormatError,
    UsageError,
)
from ldapdkim.lifecycle.rotation import Created, StepKind, advance, start_rotation
from ldapdkim.model import Algorithm
from ldapdkim.signing.dnslookup import TxtLookup


def add_parser(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser(
        "rotate",
        parents=[parents.with_config],
        help="start key rotations (new pending keys), or advance them (--advance, from cron)",
        description="-d/--all adds a pending key per algorithm to each domain and prints its "
        "DNS record.  --advance activates each pending key once DNS has shown its record for "
        "RotationOverlap, and retires the active keys of the same algorithm it replaces; it "
        "exits 1 when something is wrong (e.g. DNS shows another key).  Writes bind as "
        "LDAPAdminBindUser.",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "-d", "--domain", action="append", help="domain to rotate (repeat for several)"
    )
    which.add_argument("--all", action="store_true", help="every domain entry in the directory")
    which.add_argument(
        "--advance", action="store_true", help="activate and retire keys as DNS and time allow"
    )
    p.add_argument(
        "-a",
        "--algorithm",
        action="append",
        choices=[a.value for a in Algorithm],
        help="algorithm of the new key, repeat for several "
        "(default: those of the domain's active keys)",
    )
    p.add_argument(
        "-b",
        "--bits",
        type=int,
        default=keys.DEFAULT_RSA_BITS,
        help=f"RSA key size (default {keys.DEFAULT_RSA_BITS})",
    )
    p.add_argument(
        "--selector-format",
        default="s%Y%m",
        metavar="FORMAT",
        help="strftime format of the new selector (default s%%Y%%m); '-2', '-3' ... is "
        "appended when the domain has it already",
    )
    options.kek_option(p)
    p.add_argument(
        "--prune",
        action="store_true",
        help="with --advance: also delete keys retired longer than RotationRetireAfter",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = options.load(args)
    if args.advance:
        if args.algorithm:
            raise UsageError("-a goes with -d or --all; --advance works on the pending keys")
        return _advance(settings, prune=args.prune)
    if args.prune:
        raise UsageError("--prune goes with --advance")
    if args.bits < keys.MIN_RSA_BITS:
        raise KeyFormatError(
            f"RSA keys of {args.bits} bits are refused; use at least {keys.MIN_RSA_BITS} "
            f"(RFC 8301), {keys.DEFAULT_RSA_BITS} is the default"
        )
    selector = options.selector_arg(datetime.now(UTC).strftime(args.selector_format))
    algorithms = [Algorithm.parse(a) for a in args.algorithm] if args.algorithm else None
    kek = options.sealing_kek(settings, args.kek)
    with open_directory(settings) as directory, DirectoryWriter.for_settings(settings) as writer:
        if args.all:
            targets = list(directory.walk())
        else:
            targets = [directory.find(options.domain_arg(d)) for d in args.domain]
        added = 0
        for domain_policy, domain_keys in targets:
            created, notes = start_rotation(
                writer,
                domain_policy,
                domain_keys,
                algorithms=algorithms,
                selector=selector,
                bits=args.bits,
                kek=kek,
            )
            for note in notes:
                print(f"ldapdkim: {note}", file=sys.stderr)
            added += len(created)
            _print_created(created)
    if added:
        print(
            f"ldapdkim: {added} pending key{'s' if added > 1 else ''} added; once in DNS, "
            "'ldapdkim rotate --advance' activates them after RotationOverlap",
            file=sys.stderr,
        )
    return 0


def _print_created(created: Sequence[Created]) -> None:
    """Each new pending key on stderr, and the DNS records to publish on stdout."""
    for new in created:
        print(
            f"ldapdkim: {new.domain}: pending key {new.selector} "
            f"({new.algorithm.value}) added; publish:",
            file=sys.stderr,
        )
        for line in new.zone_lines:
            print(line, flush=True)


def _advance(settings: config.Settings, *, prune: bool) -> int:
    lookup = TxtLookup(settings.nameservers, timeout=settings.dns_timeout)
    problems = 0
    with open_directory(settings) as directory, DirectoryWriter.for_settings(settings) as writer:
        steps = advance(
            directory,
            writer,
            lookup,
            now=datetime.now(UTC),
            overlap=settings.rotation_overlap,
            retire_after=settings.rotation_retire_after if prune else None,
        )
        for step in steps:
            if step.kind is StepKind.PROBLEM:
                problems += 1
                print(f"ldapdkim: {step.line()}", file=sys.stderr, flush=True)
            else:
                print(step.line(), flush=True)
    return 1 if problems else 0
