"""ARC chains for the differential: keys, and base chains sealed by real sealers.

A base chain is a message sealed by one to three hops, each by dkimpy's
``dkim.ARC`` or Perl ``Mail::DKIM::ARC::Signer`` with RSA keys, or by
:mod:`harness.arcreseal` with Ed25519 (neither of the others seals with it),
some with a mailing list changing the message between hops.
"""

from __future__ import annotations

import base64
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from harness import arcreseal
from harness.arc_judges import MailDkimArc, sealed_fields
from harness.forge import Header, PrivateKey, key_record, rsa_key
from ldapdkim.model import Algorithm
from ldapdkim.signing.arc import ArcVerdict, seal, verify_chain
from ldapdkim.signing.keyfetch import DnsLookup
from ldapdkim.signing.keyring import MemorySigner

DOMAINS = ["relay.example", "list.example", "fwd.example"]
SELECTORS = {
    "rsa": "rsa-sha256",
    "ed": "ed25519-sha256",
    "short": "rsa-sha256",
    "weak": "rsa-sha256",
}
"""Selector -> algorithm; every sealing domain has the four (``short``: RSA 1024 bits,
``weak``: 512 bits, too short by RFC 8301 §3.2)."""
SERVFAIL_SELECTOR = "tempfail"
"""A selector whose key record every domain answers with SERVFAIL."""

T0 = 1_700_000_000
"""t= of the first hop; hop k seals at T0 + k."""

BODIES = [
    b"Hello Bob,\r\n\r\nthe figures.\r\n",
    b"",
    b"\r\n\r\n",
    b"trailing  \t\r\nspace\t\r\n\r\n",
    b"x" * 998 + b"\r\n",
]
SIGNED = [b"from", b"to", b"subject", b"date", b"message-id"]
"""The fields dkimpy's sealers sign (Mail::DKIM signs its default list, which has them)."""

FOOTER = b"--\r\nlist footer: unsubscribe at https://list.example/\r\n"


@dataclass(frozen=True)
class Keys:
    private: dict[tuple[str, str], PrivateKey]
    """(domain, selector) -> key."""
    files: dict[tuple[str, str], Path]
    """(domain, selector) -> PEM file of an RSA key, for Mail::DKIM's sealer."""

    def records(self) -> dict[str, list[str]]:
        return {
            f"{s}._domainkey.{d}": [key_record(k).decode()] for (d, s), k in self.private.items()
        }

    def key_for(self) -> arcreseal.KeyFor:
        return arcreseal.key_lookup(self.private, self.private[(DOMAINS[0], "rsa")])


def rsa_key_of(bits: int) -> rsa.RSAPrivateKey:
    """A new RSA key (not :func:`harness.forge.rsa_key`'s one per size: each domain has its
    own, so that a seal moved to another d= does not verify)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def make_keys(directory: Path) -> Keys:
    private: dict[tuple[str, str], PrivateKey] = {}
    files: dict[tuple[str, str], Path] = {}
    for domain in DOMAINS:
        private[(domain, "rsa")] = rsa_key_of(2048)
        private[(domain, "short")] = rsa_key_of(1024)
        private[(domain, "ed")] = ed25519.Ed25519PrivateKey.generate()
        private[(domain, "weak")] = rsa_key(512)
        for selector in ("rsa", "short"):
            key = private[(domain, selector)]
            assert isinstance(key, rsa.RSAPrivateKey)
            path = directory / f"{selector}.{domain}.pem"
            path.write_bytes(_pkcs1(key))
            files[(domain, selector)] = path
    return Keys(private, files)


def _pkcs1(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _dkimpy_private(key: PrivateKey) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return base64.b64encode(raw)
    return _pkcs1(key)


def message_of(headers: Sequence[Header], body: bytes) -> bytes:
    return b"".join(n + b":" + v for n, v in headers) + b"\r\n" + body


# -- base chains ----------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    headers: tuple[Header, ...]
    body: bytes
    hops: int
    note: str


def _dkimpy_seal(
    headers: Sequence[Header],
    body: bytes,
    keys: Keys,
    domain: str,
    selector: str,
    srvid: str,
    t: int,
) -> list[Header]:
    algorithm = SELECTORS[selector].encode()
    arc = dkim.ARC(message_of(headers, body), signature_algorithm=algorithm)
    lines = arc.sign(
        selector.encode(),
        domain.encode(),
        _dkimpy_private(keys.private[(domain, selector)]),
        srvid.encode(),
        include_headers=SIGNED,
        timestamp=t,
    )
    if not lines:
        raise RuntimeError(f"dkimpy did not seal hop {srvid}")
    return sealed_fields(lines)


SEALERS = [
    "dkimpy-rsa",
    "dkimpy-rsa",
    "dkimpy-short",
    "perl-rsa",
    "perl-rsa",
    "perl-rsa",
    "forge-ed",
    "ldapdkim-rsa",
]
"""Who seals a hop (repeated for weight): dkimpy or Mail::DKIM with RSA keys of 2048 or
1024 bits, :mod:`harness.arcreseal` with Ed25519 (neither of those can), and
ldapdkim's own ``seal``."""


def forged_set(
    headers: Sequence[Header], body: bytes, keys: Keys, domain: str, selector: str, hop: int
) -> list[Header]:
    """Set ``hop`` made by :mod:`harness.arcreseal` (AS, AMS, AAR, to prepend), signed with
    ``selector``'s key: for Ed25519 (dkimpy 1.1's ``ARC.sign`` reads only PEM keys and
    Mail::DKIM's ARC signer only RSA) and for chains past the 50 sets real sealers stop at."""
    cv = "none" if hop == 1 else "pass"
    algorithm, t = SELECTORS[selector], str(T0 + hop)
    results = f"mx{hop}.{domain}; spf=pass smtp.mailfrom=origin.example; arc={cv}"
    signed = ":".join(n.decode() for n in SIGNED)
    ams_tags = [("i", str(hop)), ("a", algorithm), ("c", "relaxed/relaxed"), ("d", domain),
                ("s", selector), ("t", t), ("h", signed), ("bh", ""), ("b", "")]  # fmt: skip
    seal_tags = [("i", str(hop)), ("a", algorithm), ("cv", cv), ("d", domain),
                 ("s", selector), ("t", t), ("b", "")]  # fmt: skip
    fields = [
        (AS_NAME, arcreseal.render(seal_tags)),
        (AMS_NAME, arcreseal.render(ams_tags)),
        (AAR_NAME, f" i={hop}; {results}\r\n".encode()),
        *headers,
    ]
    key_for = keys.key_for()
    arcreseal.resign_ams(fields, body, 1, key_for)
    arcreseal.reseal(fields, key_for, start=hop)
    return fields[:3]


def _ldapdkim_seal(
    headers: Sequence[Header], body: bytes, keys: Keys, domain: str, srvid: str, t: int,
    verdict: ArcVerdict,
) -> list[Header]:  # fmt: skip
    """ldapdkim's own sealer after its own verdict on the chain as it arrived, as the milter
    seals a hop: its chains are then judged by dkimpy and Mail::DKIM like everyone else's."""
    signer = MemorySigner("rsa", Algorithm.RSA_SHA256, keys.private[(domain, "rsa")])
    results = f"spf=pass smtp.mailfrom=origin.example; arc={verdict.cv.value}"
    fields = seal(headers, body, verdict, domain=domain, signer=signer, authserv_id=srvid,
                  results=results, timestamp=t)  # fmt: skip
    # Folded as for the milter's addheader (LF or CRLF): the message travels with CRLF.
    return [(n, re.sub(rb"\r?\n", b"\r\n", v.rstrip(b"\r\n")) + b"\r\n") for n, v in fields]


def build_base(
    number: int, rng: random.Random, keys: Keys, perl: MailDkimArc, lookup: DnsLookup
) -> Base:
    """A message sealed by 1-3 hops, each by one of :data:`SEALERS`."""
    hops = rng.choice([1, 1, 2, 2, 3])
    body = rng.choice(BODIES)
    headers: list[Header] = [
        (b"From", b" Alice <alice@origin.example>\r\n"),
        (b"To", b" Bob <bob@dest.example>\r\n"),
        (b"Subject", f" chain {number}\r\n".encode()),
        (b"Date", b" Sat, 28 Nov 2026 12:00:00 +0000\r\n"),
        (b"Message-ID", f" <chain-{number}@origin.example>\r\n".encode()),
    ]
    notes = []
    for hop in range(1, hops + 1):
        domain = rng.choice(DOMAINS)
        sealer = rng.choice(SEALERS)
        # A hop validates the chain as it arrives, before it changes the message.
        arrived = (
            verify_chain(headers, body, lookup, timeout=2) if sealer == "ldapdkim-rsa" else None
        )
        if hop > 1 and rng.random() < 0.25:
            # A mailing list: the older AMS no longer verifies, the chain still does.
            body = body + FOOTER
            headers = [(n, b" [list]" + v if n == b"Subject" else v) for n, v in headers]
            notes.append("list")
        srvid = f"mx{hop}.{domain}"
        date = f"Sat, 28 Nov 2026 12:0{hop}:00 +0000"
        arc = "none" if hop == 1 else "pass"
        headers = [
            (
                b"Authentication-Results",
                f" {srvid}; spf=pass smtp.mailfrom=origin.example; arc={arc}\r\n".encode(),
            ),
            (
                b"Received",
                f" from hop{hop - 1}.example by {srvid}; {date}\r\n".encode(),
            ),
            *headers,
        ]
        selector = {
            "dkimpy-rsa": "rsa",
            "forge-ed": "ed",
            "dkimpy-short": "short",
            "perl-rsa": "rsa",
            "ldapdkim-rsa": "rsa",
        }[sealer]
        if sealer == "forge-ed":
            new = forged_set(headers, body, keys, domain, selector, hop)
        elif sealer == "ldapdkim-rsa":
            assert arrived is not None
            new = _ldapdkim_seal(headers, body, keys, domain, srvid, T0 + hop, arrived)
        elif sealer.startswith("perl"):
            new = perl.seal(
                message_of(headers, body),
                domain,
                selector,
                srvid,
                keys.files[(domain, selector)],
                T0 + hop,
            )
        else:
            new = _dkimpy_seal(headers, body, keys, domain, selector, srvid, T0 + hop)
        headers = [*new, *headers]
        notes.append(f"{sealer}@{domain}")
    return Base(tuple(headers), body, hops, " ".join(notes))


def build_long(count: int, keys: Keys, rng: random.Random) -> Base:
    """``count`` sets by :func:`forged_set` (no real sealer goes past 50)."""
    headers: list[Header] = [
        (b"From", b" Alice <alice@origin.example>\r\n"),
        (b"To", b" Bob <bob@dest.example>\r\n"),
        (b"Subject", f" {count} hops\r\n".encode()),
    ]
    body = BODIES[0]
    for i in range(1, count + 1):
        headers = [*forged_set(headers, body, keys, rng.choice(DOMAINS), "rsa", i), *headers]
    return Base(tuple(headers), body, count, f"forged {count} sets")


AAR_NAME = b"ARC-Authentication-Results"
AMS_NAME = b"ARC-Message-Signature"
AS_NAME = b"ARC-Seal"
