"""``ldapdkim provision``: LDIF with a domain entry and fresh keys for every domain in a file."""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from ldapdkim.cli import options
from ldapdkim.cli.options import Parents, Subparsers
from ldapdkim.lifecycle import provision
from ldapdkim.model import Algorithm


def add_parser(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser(
        "provision",
        parents=[parents.common],
        help="LDIF with a domain entry and keys for every domain in a file",
    )
    p.add_argument("--base", required=True, metavar="DN")
    p.add_argument(
        "--domains", required=True, metavar="FILE", help="one domain per line, '-' for stdin"
    )
    options.key_options(p, single=False)
    p.add_argument(
        "-s",
        "--selector",
        default="s%Y%m",
        metavar="FORMAT",
        help="selector, strftime format (default s%%Y%%m); with several "
        "algorithms '-rsa' / '-ed25519' is appended",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="LDIF output (default stdout)")
    p.add_argument("--txt", metavar="FILE", help="write the DNS TXT records here")
    p.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="processes generating keys (default: one per core)",
    )
    options.delegation_options(p)
    options.seal_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options.base_dn_arg(args.base)
    algorithms = [Algorithm.parse(a) for a in (args.algorithm or ["rsa-sha256"])]
    source = sys.stdin if args.domains == "-" else Path(args.domains).open()
    with source:
        domains = provision.read_domains(source, where=args.domains)
    selector_format = datetime.now(UTC).strftime(args.selector)
    plan = provision.Plan(
        base=args.base,
        algorithms=tuple(algorithms),
        bits=args.bits,
        selectors=provision.selectors_for(options.selector_arg(selector_format), algorithms),
        delegation=options.delegation_arg(args),
        kek=options.new_key_kek(args),
    )
    if not args.output:
        options.warn_if_terminal("the LDIF")
    out = options.open_private(Path(args.output)) if args.output else sys.stdout
    txt = Path(args.txt).open("w") if args.txt else None
    started = time.monotonic()
    try:
        count = provision.write(
            plan, domains, out, txt, jobs=max(1, args.jobs), progress=sys.stderr.isatty()
        )
    finally:
        if out is not sys.stdout:
            out.close()
        if txt is not None:
            txt.close()
    elapsed = time.monotonic() - started
    print(
        f"ldapdkim: provisioned {count} domains ({count * len(algorithms)} keys) "
        f"in {elapsed:.1f} s",
        file=sys.stderr,
    )
    return 0
