"""``ldapdkim verify``: verify the signatures of one message from standard input."""

from __future__ import annotations

import argparse
import sys

from ldapdkim.cli import options
from ldapdkim.cli.options import Parents, Subparsers
from ldapdkim.model import DkimResult
from ldapdkim.signing import policy
from ldapdkim.signing.canonicalization import split_message
from ldapdkim.signing.dnslookup import TxtLookup
from ldapdkim.signing.verifier import verify


def add_parser(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser(
        "verify", parents=[parents.with_config], help="verify one message from stdin"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = options.load(args)
    message = sys.stdin.buffer.read()
    lookup = TxtLookup(settings.nameservers, timeout=settings.dns_timeout)
    headers, body = split_message(message)
    results = verify(
        headers,
        body,
        lookup,
        author_domain=policy.readable_author_domain(headers),
        max_signatures=settings.maximum_signatures_to_verify,
        minimum_key_bits=settings.minimum_key_bits,
        timeout=settings.dns_timeout,
    )
    if not results:
        print("none: the message has no DKIM-Signature")
        return 1
    for r in results:
        why = f" ({r.reason})" if r.reason else ""
        print(f"{r.result.value}: d={r.domain} s={r.selector} a={r.algorithm}{why}")
    return 0 if all(r.result is DkimResult.PASS for r in results) else 1
