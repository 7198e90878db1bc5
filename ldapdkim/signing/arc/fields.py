"""ARC-Message-Signature and ARC-Seal fields checked for syntax (RFC 8617 §4.1.2, §4.1.3).

Each becomes a :class:`~ldapdkim.signing.sigfield.Signature`, so that key
records are fetched and checked (:func:`~ldapdkim.signing.keyrecord.choose_record`:
RFC 8617 §4.1.2 and §4.1.3 reuse DKIM's ``selector._domainkey`` records, RFC 8301
key sizes) and header fields hashed exactly as for DKIM.  Algorithms are
DKIM's: rsa-sha256 and ed25519-sha256; rsa-sha1 is refused (RFC 8301).

An AMS is read as a DKIM-Signature without ``v=`` (RFC 8617 §4.1.2): ``c=``
defaults to simple/simple as in DKIM (every sealer we know writes it), From
must be signed, and ``l=`` is not honoured: the body hash covers the whole
body, so an AMS that left part of the body unsigned fails rather than vouch
for content added after it.
"""

from __future__ import annotations

from ldapdkim.model import Failure
from ldapdkim.signing.arc.chain import ArcField
from ldapdkim.signing.sigfield import (
    ALGORITHMS,
    MAX_HEADER_NAMES,
    OBSOLETE,
    Signature,
    _canonicalization,
    _number,
    base64_value,
    checked_domain,
    checked_selector,
    permerror,
)
from ldapdkim.signing.taglist import plain, unfolded

_MESSAGE_SIGNATURE_REQUIRED = ("i", "a", "b", "bh", "d", "h", "s")
_SEAL_REQUIRED = ("i", "a", "b", "cv", "d", "s")


def message_signature(field: ArcField, now: int) -> Signature:
    """The checked ARC-Message-Signature of ``field``.

    Raises:
        _Verdict: the field breaks a rule; the AMS does not validate.
    """
    tags = _required(field, _MESSAGE_SIGNATURE_REQUIRED, "ARC-Message-Signature")
    algorithm = _algorithm(tags["a"])
    header_canon, body_canon = _canonicalization(tags.get("c", b"simple"))
    headers = tuple(h.strip(b" \t\r\n").lower() for h in unfolded(tags["h"]).split(b":"))
    if len(headers) > MAX_HEADER_NAMES:
        raise permerror(Failure.SYNTAX, f"h= names {len(headers)} fields; too many")
    if b"from" not in headers:
        raise permerror(Failure.SYNTAX, "h= does not sign the From field")
    if b"arc-seal" in headers:
        # RFC 8617 §4.1.2: the ARC-Seal is never in the AMS's scope.
        raise permerror(Failure.SYNTAX, "h= signs ARC-Seal, which an AMS must not")
    timestamp = _number(tags, "t", 12)
    expiry = _number(tags, "x", 12)
    if expiry is not None and expiry < now:
        raise permerror(Failure.EXPIRED, f"the signature expired at x={expiry}")
    return _signature(field, tags, algorithm, header_canon, body_canon, headers, timestamp, expiry)


def seal_signature(field: ArcField) -> Signature:
    """The checked ARC-Seal of ``field`` (relaxed header canonicalization, RFC 8617 §5.1.1).

    Raises:
        _Verdict: the field breaks a rule; the seal does not validate.
    """
    tags = _required(field, _SEAL_REQUIRED, "ARC-Seal")
    algorithm = _algorithm(tags["a"])
    timestamp = _number(tags, "t", 12)
    return _signature(field, tags, algorithm, "relaxed", "relaxed", (), timestamp, None)


def _required(field: ArcField, required: tuple[str, ...], label: str) -> dict[str, bytes]:
    tags = field.tags
    if tags is None:
        raise permerror(Failure.SYNTAX, f"the {label} is not a tag list")
    missing = [t for t in required if t not in tags]
    if missing:
        raise permerror(Failure.SYNTAX, f"the {label} lacks {', '.join(t + '=' for t in missing)}")
    return tags


def _algorithm(value: bytes) -> str:
    algorithm = plain(value).lower()
    if algorithm in OBSOLETE:
        raise permerror(Failure.ALGORITHM, OBSOLETE[algorithm])
    if algorithm not in ALGORITHMS:
        raise permerror(Failure.ALGORITHM, f"unknown algorithm a={algorithm[:40]}")
    return algorithm


def _signature(
    field: ArcField,
    tags: dict[str, bytes],
    algorithm: str,
    header_canon: str,
    body_canon: str,
    headers: tuple[bytes, ...],
    timestamp: int | None,
    expiry: int | None,
) -> Signature:
    body_hash = base64_value(tags["bh"], "bh=") if "bh" in tags else b""
    return Signature(
        index=field.index,
        tags=tags,
        algorithm=algorithm,
        key_type=ALGORITHMS[algorithm],
        header_canon=header_canon,
        body_canon=body_canon,
        domain=checked_domain(plain(tags["d"]), "d="),
        selector=checked_selector(tags["s"]),
        headers=headers,
        body_hash=body_hash,
        signature=base64_value(tags["b"], "b="),
        identity="",
        identity_domain=checked_domain(plain(tags["d"]), "d="),
        length=None,
        timestamp=timestamp,
        expiry=expiry,
    )
