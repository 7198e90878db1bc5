"""``ldapdkim sign``: sign one message from standard input, as the milter would."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from ldapdkim import config
from ldapdkim.cli import options
from ldapdkim.cli.options import Parents, Subparsers
from ldapdkim.directory.cache import CachedResolver
from ldapdkim.directory.resolution import open_directory
from ldapdkim.domainname import domain_of_address
from ldapdkim.errors import (
    SIGNING_REFUSALS,
    DomainNotSigned,
    KeyUnavailable,
    LdapDkimError,
)
from ldapdkim.signing import policy
from ldapdkim.signing.canonicalization import split_message
from ldapdkim.signing.keyring import Keyring
from ldapdkim.signing.signer import sign_parsed

_REFUSALS: tuple[type[LdapDkimError], ...] = (*SIGNING_REFUSALS, KeyUnavailable)
"""Why a message leaves unsigned: finding its signer, or a key that cannot sign here."""


def add_parser(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser("sign", parents=[parents.with_config], help="sign one message from stdin")
    p.add_argument(
        "--sender",
        metavar="ADDR",
        help="take the signing domain from ADDR instead of the From field",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = options.load(args)
    message = sys.stdin.buffer.read()
    try:
        signatures = _sign(settings, message, args.sender)
    except _REFUSALS as reason:
        sys.stdout.buffer.write(message)
        print(f"ldapdkim: not signed: {reason}", file=sys.stderr)
        return 1
    newline = b"\r\n" if b"\r\n" in message.split(b"\n\n", 1)[0] else b"\n"
    for value in signatures:
        sys.stdout.buffer.write(b"DKIM-Signature:" + value.replace(b"\r\n", newline) + newline)
    sys.stdout.buffer.write(message)
    return 0


def _sign(settings: config.Settings, message: bytes, sender: str | None) -> list[bytes]:
    if not settings.signs:
        raise DomainNotSigned(f"Mode {settings.mode} does not sign")
    headers, body = split_message(message)
    author = policy.author_domain(headers)
    domain = domain_of_address(sender) if sender else author
    with open_directory(settings) as directory:
        resolution = CachedResolver.configured(directory, settings).resolve(domain)
    now = datetime.now(UTC)
    signing_keys = policy.signing_keys(resolution, now)
    if not signing_keys:
        raise DomainNotSigned(
            f"no active key for {resolution.signing_domain} in {resolution.policy.dn!r}"
        )
    params = policy.signing_params(settings, resolution)
    keyring = Keyring.configured(settings)
    try:
        signers = keyring.signers(
            signing_keys, resolution.signing_domain, names=resolution.policy.names
        )
        return sign_parsed(
            headers,
            body,
            resolution.signing_domain,
            signers,
            params,
            timestamp=int(now.timestamp()),
        )
    finally:
        keyring.close()
