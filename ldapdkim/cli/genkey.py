"""``ldapdkim genkey``: a new key as an LDIF entry, with its DNS TXT record."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ldapdkim import keys, sealing
from ldapdkim.cli import options, tokenkeys
from ldapdkim.cli.options import Parents, Subparsers
from ldapdkim.directory import ldifout
from ldapdkim.errors import UsageError
from ldapdkim.model import Algorithm, KeyState
from ldapdkim.publish.dnsexport import (
    KeyRecord,
    zone_lines,
)


def add_parser(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser("genkey", parents=[parents.common], help="make a key; print its LDIF entry")
    p.add_argument("-d", "--domain", required=True)
    p.add_argument("-s", "--selector", required=True)
    options.key_options(p, single=True)
    p.add_argument(
        "--base",
        required=True,
        metavar="DN",
        help="container of the domain entries, e.g. ou=domains,dc=example,dc=com",
    )
    p.add_argument(
        "--domain-dn", metavar="DN", help="the domain's entry, when it is not ou=DOMAIN,BASE"
    )
    p.add_argument("--with-domain", action="store_true", help="also print the domain entry")
    options.delegation_options(p)
    p.add_argument("--state", default="active", choices=[s.value for s in KeyState])
    p.add_argument(
        "--not-before",
        metavar="TIME",
        type=options.time_arg,
        help="do not sign before TIME (20270101000000Z or 2027-01-01T00:00Z)",
    )
    p.add_argument(
        "--not-after", metavar="TIME", type=options.time_arg, help="do not sign from TIME on"
    )
    p.add_argument("--txt", metavar="FILE", help="write the DNS TXT record here (default stderr)")
    p.add_argument("--private", metavar="FILE", help="also write the private key as PEM (0600)")
    options.seal_options(p)
    tokenkeys.add_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options.base_dn_arg(args.base)
    domain = options.domain_arg(args.domain)
    selector = options.selector_arg(args.selector)
    algorithm = Algorithm.parse(args.algorithm)
    if args.pkcs11:
        if args.kek is not None:
            raise UsageError("--kek: a key made with --pkcs11 stays in its token, unsealed")
        stored, public = tokenkeys.make_key(args, domain, selector)
        private_pem = None
    else:
        kek = options.new_key_kek(args)
        key = keys.generate(algorithm, args.bits)
        stored = sealing.stored_value(key, kek, domain, selector)
        public, private_pem = keys.public_key_b64(key), keys.private_pem(key)
    parent = args.domain_dn or ldifout.domain_dn(domain, args.base)
    delegation = options.delegation_arg(args)
    if delegation != ldifout.Delegation() and not args.with_domain:
        raise UsageError(
            "--allowed-sender, --allowed-network and --sender-alignment go on the domain "
            "entry: add --with-domain"
        )
    records = []
    if args.with_domain:
        records.append(ldifout.domain_record(domain, args.base, delegation))
    records.append(
        ldifout.stored_key_record(
            parent,
            selector,
            algorithm,
            stored,
            public,
            state=KeyState(args.state),
            not_before=args.not_before,
            not_after=args.not_after,
        )
    )
    options.warn_if_terminal("the LDIF entry")
    sys.stdout.write(ldifout.render(records))
    line = next(zone_lines([KeyRecord(domain, selector, algorithm, public)]))
    if args.txt:
        Path(args.txt).write_text(line + "\n")
    else:
        print(line, file=sys.stderr)
    if args.private and private_pem is not None:
        options.write_private(Path(args.private), private_pem)
    return 0
