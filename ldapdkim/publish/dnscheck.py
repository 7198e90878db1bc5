"""Does DNS publish the key the directory holds?  One answer per key record name.

A DKIM key record (RFC 6376 §3.6.1) is a tag list: ``v=DKIM1; k=rsa; p=...``.
:func:`check` fetches the record at ``selector._domainkey.domain`` through a
:class:`~ldapdkim.signing.keyfetch.DnsLookup` (in production
:class:`~ldapdkim.signing.dnslookup.TxtLookup`, which honours
``Nameservers``) and compares its ``p=`` with the public key the directory
holds for the key entry: the public half of ``dkimSignPrivateKey`` where it
can be read, else ``dkimSignPublicKey``.  Keys are compared as keys, not as
text, so line breaks inside ``p=`` or an RSA key published in PKCS#1 form
instead of SubjectPublicKeyInfo still match.

Used by ``ldapdkim rotate --advance`` (activate a key only once DNS shows
it) and ``ldapdkim testkey``.  Nothing here writes anything.
"""

from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ldapdkim import keys, schema
from ldapdkim.errors import DnsTemporaryError
from ldapdkim.model import Algorithm, SigningKey
from ldapdkim.signing.keyfetch import DnsLookup


@enum.unique
class DnsStatus(enum.Enum):
    """What DNS publishes at a key's name, compared with the directory."""

    MATCH = "match"
    MISMATCH = "mismatch"
    MISSING = "missing"
    REVOKED = "revoked"
    """A key record with an empty ``p=``: the key is revoked (RFC 6376 §3.6.1)."""
    ERROR = "dns-error"


@dataclass(frozen=True)
class Published:
    """The outcome of checking one key record name."""

    name: str
    status: DnsStatus
    detail: str = ""
    """Why, for anything but a match: what was found, or the DNS error."""


def record_name(selector: str, domain: str) -> str:
    """Where the key record of ``selector`` lives for ``domain`` (RFC 6376 §3.6.2.1).

    >>> record_name("s202612", "example.com")
    's202612._domainkey.example.com'
    """
    return f"{selector}._domainkey.{domain}"


def parse_key_record(text: str) -> dict[str, str]:
    """The tags of a DKIM key record; whitespace is removed from values (RFC 6376 §3.2).

    >>> parse_key_record("v=DKIM1; k=ed25519;\\tp=AB CD")
    {'v': 'DKIM1', 'k': 'ed25519', 'p': 'ABCD'}

    Raises:
        ValueError: not a tag list.
    """
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, equals, value = part.partition("=")
        name = name.strip()
        if not equals or not name:
            raise ValueError(f"{part.strip()!r} is not a tag=value pair")
        tags.setdefault(name, "".join(value.split()))
    return tags


def _decode(b64: str) -> bytes | None:
    try:
        return base64.b64decode("".join(b64.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _public_key(der: bytes) -> rsa.RSAPublicKey | ed25519.Ed25519PublicKey | None:
    if len(der) == 32:
        return ed25519.Ed25519PublicKey.from_public_bytes(der)
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError):
        return None
    return key if isinstance(key, rsa.RSAPublicKey | ed25519.Ed25519PublicKey) else None


def same_public_key(first: str, second: str) -> bool:
    """True when two ``p=`` values (base64) hold the same public key."""
    a, b = _decode(first), _decode(second)
    if a is None or b is None:
        return False
    if a == b:
        return True
    key_a, key_b = _public_key(a), _public_key(b)
    if isinstance(key_a, rsa.RSAPublicKey) and isinstance(key_b, rsa.RSAPublicKey):
        return key_a.public_numbers() == key_b.public_numbers()
    return False


def public_key_bits(b64: str) -> int | None:
    """The size of the public key in a ``p=`` value (256 for Ed25519), or None if unreadable."""
    der = _decode(b64)
    key = _public_key(der) if der else None
    if isinstance(key, rsa.RSAPublicKey):
        return key.key_size
    return 256 if key is not None else None


def key_bits(key: SigningKey) -> int | None:
    """The size of a key entry's key, from the private key or else the public key."""
    private = keys.private_key_of(key)
    if private is not None:
        return keys.key_bits(private)
    return public_key_bits(key.public_key) if key.public_key else None


@dataclass(frozen=True)
class Expected:
    """The public key DNS should publish for a key entry, and what is wrong with the entry."""

    public_key: str | None
    problem: str | None = None


def expected_public_key(key: SigningKey) -> Expected:
    """What DNS should show for ``key``: the private key's public half wins.

    ``problem`` is set when ``dkimSignPublicKey`` contradicts the private key,
    or when the entry has neither.
    """
    private = keys.private_key_of(key)
    if private is not None:
        derived = keys.public_key_b64(private)
        if key.public_key and not same_public_key(key.public_key, derived):
            return Expected(
                derived,
                f"{schema.PUBLIC_KEY} does not match {schema.PRIVATE_KEY}; replace it with "
                "the public key that 'ldapdkim dns-records' prints",
            )
        return Expected(derived)
    if key.public_key:
        return Expected(key.public_key)
    return Expected(
        None,
        f"entry has neither {schema.PUBLIC_KEY} nor a {schema.PRIVATE_KEY} this bind DN can read",
    )


def compare(
    text: bytes | None, algorithm: Algorithm, expected: str | None
) -> tuple[DnsStatus, str]:
    """Compare the record ``text`` found in DNS with the ``expected`` public key."""
    if text is None:
        return DnsStatus.MISSING, "no TXT record"
    shown = text.decode("utf-8", "replace")
    try:
        tags = parse_key_record(shown)
    except ValueError as err:
        return DnsStatus.MISMATCH, f"not a DKIM key record ({err})"
    if tags.get("v", "DKIM1") != "DKIM1":
        return DnsStatus.MISMATCH, f"v={tags['v']}, not DKIM1"
    if "p" not in tags:
        return DnsStatus.MISMATCH, "the record has no p= tag"
    if not tags["p"]:
        return DnsStatus.REVOKED, "p= is empty (the key is published as revoked)"
    published_type = tags.get("k", "rsa").lower()
    if published_type != algorithm.key_type:
        return DnsStatus.MISMATCH, f"k={published_type}, but the key is {algorithm.key_type}"
    if expected is None:
        return DnsStatus.MISMATCH, "the directory holds no public key to compare with"
    if same_public_key(tags["p"], expected):
        return DnsStatus.MATCH, ""
    return DnsStatus.MISMATCH, "p= holds a different public key"


def check(lookup: DnsLookup, name: str, algorithm: Algorithm, expected: str | None) -> Published:
    """Fetch the key record at ``name`` and compare it with ``expected``; never raises for DNS.

    Of several records at ``name``, the first is compared.
    """
    try:
        records = lookup(name)
        text = records[0] if records else None
    except DnsTemporaryError as err:
        return Published(name, DnsStatus.ERROR, str(err))
    status, detail = compare(text, algorithm, expected)
    return Published(name, status, detail)
