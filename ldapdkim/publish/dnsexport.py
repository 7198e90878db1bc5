"""Decide which DKIM key records DNS publishes, and render them as text.

Published are the keys that are pending, active or retired; a revoked key's
name is withdrawn so that verifiers stop finding it (RFC 6376 §3.6.1: an
empty or absent record revokes).  Two renderings: zone-file lines (RFC 1035
§5.1) and input for BIND's ``nsupdate`` (RFC 2136 dynamic update).  Sending
the updates itself is :mod:`ldapdkim.publish.dnsupdate`'s job.

A TXT record is a sequence of character-strings of at most 255 bytes each; a
2048-bit RSA key record is longer, so it is split.  Verifiers join the strings
without separator (RFC 6376 §3.6.2.2).

ADSP records (``_adsp._domainkey``, RFC 5617) can be added on request: RFC
5617 was moved to Historic in 2013, but some older set-ups still publish it.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from ldapdkim import keys
from ldapdkim.keys import txt_record
from ldapdkim.model import Algorithm, DomainPolicy, KeyState, SigningKey

MAX_STRING = 255
DEFAULT_UPDATE_TTL = 3600
"""TTL of records sent as dynamic updates when none is given."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyRecord:
    """One DNS key record to publish: ``selector._domainkey.domain``."""

    domain: str
    selector: str
    algorithm: Algorithm
    public_key: str

    @property
    def name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}."

    @property
    def text(self) -> str:
        return txt_record(self.algorithm, self.public_key)


def split_strings(text: str, size: int = MAX_STRING) -> list[str]:
    """Cut ``text`` into character-strings of at most ``size`` bytes.

    >>> [len(s) for s in split_strings("x" * 600)]
    [255, 255, 90]
    """
    data = text.encode("ascii")
    return [data[i : i + size].decode("ascii") for i in range(0, len(data), size)] or [""]


@enum.unique
class Adsp(enum.Enum):
    """ADSP outbound signing practices (RFC 5617 §4.2.1; Historic since 2013)."""

    UNKNOWN = "unknown"
    ALL = "all"
    DISCARDABLE = "discardable"


@dataclass(frozen=True)
class AdspRecord:
    """One ADSP record: ``_adsp._domainkey.domain TXT "dkim=..."``."""

    domain: str
    practice: Adsp

    @property
    def name(self) -> str:
        return f"_adsp._domainkey.{self.domain}."

    @property
    def text(self) -> str:
        return f"dkim={self.practice.value}"


Record = KeyRecord | AdspRecord


@dataclass(frozen=True)
class Withdrawal:
    """A key name whose TXT records must leave DNS, because its key is revoked."""

    domain: str
    selector: str

    @property
    def name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}."


@dataclass(frozen=True)
class Publication:
    """What DNS should hold: records to publish and key names to withdraw."""

    records: tuple[Record, ...]
    withdrawals: tuple[Withdrawal, ...] = ()

    def outside(self, zone: str) -> list[str]:
        """The names that do not lie in ``zone``."""
        return [i.name for i in (*self.records, *self.withdrawals) if not in_zone(i.name, zone)]


_PUBLISHED_STATES = frozenset({KeyState.PENDING, KeyState.ACTIVE, KeyState.RETIRED})


def publication(
    walk: Iterable[tuple[DomainPolicy, Sequence[SigningKey]]], adsp: Adsp | None = None
) -> Publication:
    """The records for every domain and key in ``walk`` (``Directory.walk()``).

    Pending, active and retired keys are published under every name of their
    domain entry; revoked keys are withdrawn unless another key entry
    publishes the same name.  With ``adsp``, each domain that publishes a key
    also gets an ADSP record.  Keys without a public key are left out with a
    warning.
    """
    records: dict[str, Record] = {}
    revoked: dict[str, Withdrawal] = {}
    for policy, domain_keys in walk:
        for key in domain_keys:
            if key.state is KeyState.REVOKED:
                for name in policy.names:
                    withdrawal = Withdrawal(name, key.selector)
                    revoked[withdrawal.name] = withdrawal
                continue
            if key.state not in _PUBLISHED_STATES:
                continue
            public = _public_key(key)
            if public is None:
                continue
            for name in policy.names:
                record = KeyRecord(name, key.selector, key.algorithm, public)
                records[record.name] = record
                if adsp is not None:
                    adsp_record = AdspRecord(name, adsp)
                    records[adsp_record.name] = adsp_record
    withdrawals = [w for name, w in revoked.items() if name not in records]
    return Publication(
        tuple(sorted(records.values(), key=_order)),
        tuple(sorted(withdrawals, key=_order)),
    )


def _public_key(key: SigningKey) -> str | None:
    """The public key to publish: the private key's public half wins over the attribute."""
    public = key.public_key
    private = keys.private_key_of(key)
    if private is not None:
        derived = keys.public_key_b64(private)
        if public and public != derived:
            log.warning(
                "%s: dkimSignPublicKey does not match the private key; "
                "publishing the private key's public half",
                key.dn,
            )
        public = derived
    if not public:
        log.warning("%s: no public key to publish", key.dn)
        return None
    return public


def _order(item: Record | Withdrawal) -> tuple[str, str]:
    return (item.domain, item.name)


def zone_line(record: Record, ttl: int | None = None) -> str:
    """One zone-file line for ``record``.

    >>> zone_line(KeyRecord("example.com", "s1", Algorithm.ED25519_SHA256, "AAAA"))
    's1._domainkey.example.com. IN TXT "v=DKIM1; k=ed25519; p=AAAA"'
    >>> zone_line(AdspRecord("example.com", Adsp.ALL), 3600)
    '_adsp._domainkey.example.com. 3600 IN TXT "dkim=all"'
    """
    ttl_part = f" {ttl}" if ttl is not None else ""
    return f"{record.name}{ttl_part} IN TXT {_quoted(record.text)}"


def zone_lines(records: Iterable[Record], ttl: int | None = None) -> Iterator[str]:
    """Zone-file lines for ``records``, sorted by domain, then owner name."""
    for record in sorted(records, key=_order):
        yield zone_line(record, ttl)


def _quoted(text: str) -> str:
    return " ".join(f'"{s}"' for s in split_strings(text))


def absolute_name(name: str) -> str:
    """``name`` in lowercase with exactly one trailing dot.

    >>> absolute_name("Example.COM")
    'example.com.'
    """
    return name.lower().rstrip(".") + "."


def in_zone(name: str, zone: str) -> bool:
    """True when ``name`` is ``zone`` or lies below it.

    >>> in_zone("s1._domainkey.example.com.", "example.com")
    True
    >>> in_zone("s1._domainkey.badexample.com.", "example.com")
    False
    """
    name, zone = absolute_name(name), absolute_name(zone)
    return zone == "." or name == zone or name.endswith("." + zone)


def nsupdate_lines(
    publication: Publication,
    ttl: int = DEFAULT_UPDATE_TTL,
    *,
    server: tuple[str, int] | None = None,
    zone: str | None = None,
) -> Iterator[str]:
    """Input for BIND's ``nsupdate`` that makes DNS hold ``publication``.

    Each published name's TXT RRset is replaced (``update delete`` then
    ``update add``); a withdrawn name's is deleted.  ``server`` and ``zone``
    lines appear only when given.  Without ``zone``, ``nsupdate`` finds each
    zone itself, and since one update message holds one zone, ``send`` ends
    every domain's group; with ``zone`` one ``send`` ends the whole.

    >>> pub = Publication(
    ...     (KeyRecord("example.com", "s1", Algorithm.ED25519_SHA256, "AAAA"),),
    ...     (Withdrawal("example.com", "s0"),),
    ... )
    >>> print("\\n".join(nsupdate_lines(pub, 600, server=("192.0.2.53", 53))))
    server 192.0.2.53 53
    update delete s0._domainkey.example.com. TXT
    update delete s1._domainkey.example.com. TXT
    update add s1._domainkey.example.com. 600 TXT "v=DKIM1; k=ed25519; p=AAAA"
    send
    """
    if server is not None:
        yield f"server {server[0]} {server[1]}"
    if zone is not None:
        yield f"zone {absolute_name(zone)}"
    by_domain: dict[str, list[Record | Withdrawal]] = {}
    for item in (*publication.withdrawals, *publication.records):
        by_domain.setdefault(item.domain, []).append(item)
    for domain in sorted(by_domain):
        for item in by_domain[domain]:
            yield f"update delete {item.name} TXT"
            if not isinstance(item, Withdrawal):
                yield f"update add {item.name} {ttl} TXT {_quoted(item.text)}"
        if zone is None:
            yield "send"
    if zone is not None:
        yield "send"
