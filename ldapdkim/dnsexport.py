"""Render DKIM key records as DNS zone-file lines (RFC 1035 §5.1, RFC 6376 §3.6.2).

A TXT record is a sequence of character-strings of at most 255 bytes each; a
2048-bit RSA key record is longer, so it is split.  Verifiers join the strings
without separator (RFC 6376 §3.6.2.2).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ldapdkim.keys import txt_record
from ldapdkim.model import Algorithm

MAX_STRING = 255


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


def zone_line(record: KeyRecord, ttl: int | None = None) -> str:
    """One zone-file line for ``record``.

    >>> zone_line(KeyRecord("example.com", "s1", Algorithm.ED25519_SHA256, "AAAA"))
    's1._domainkey.example.com. IN TXT "v=DKIM1; k=ed25519; p=AAAA"'
    """
    strings = " ".join(f'"{s}"' for s in split_strings(record.text))
    ttl_part = f" {ttl}" if ttl is not None else ""
    return f"{record.name}{ttl_part} IN TXT {strings}"


def zone_lines(records: Iterable[KeyRecord], ttl: int | None = None) -> Iterator[str]:
    """Zone-file lines for ``records``, sorted by owner name."""
    for record in sorted(records, key=lambda r: (r.domain, r.selector)):
        yield zone_line(record, ttl)
