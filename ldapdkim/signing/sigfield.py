"""The DKIM-Signature field, checked for syntax (RFC 6376 §3.5, §6.1.1, RFC 8301).

A field that breaks a rule raises :class:`_Verdict` with the result it earns.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

from ldapdkim.model import DkimResult, Failure
from ldapdkim.signing.taglist import colon_list, parse_tag_list, plain, unfolded

MAX_SIGNATURES = 64
"""Signature fields considered per message; the rest are ignored."""
MAX_SIGNATURE_FIELD = 16_384
"""Octets of one DKIM-Signature field; a longer one is refused unread."""
MAX_HEADER_NAMES = 512
"""Names in one ``h=`` tag."""
SIGNATURE_TAGS = frozenset({"v", "a", "b", "bh", "c", "d", "h", "i", "l", "q", "s", "t", "x", "z"})
"""The signature tags of RFC 6376 §3.5; others are ignored, however their names are spelt."""

_HEADER_CANON = ("simple", "relaxed")
ALGORITHMS = {"rsa-sha256": "rsa", "ed25519-sha256": "ed25519"}
OBSOLETE = {"rsa-sha1": "rsa-sha1 is not accepted any more (RFC 8301)"}
_REQUIRED = ("v", "a", "b", "bh", "d", "h", "s")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}\Z")
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+\Z")
_QP = re.compile(rb"=([0-9A-F]{2})")
_LOCAL_PART = re.compile(
    rb"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z"
)


class _Verdict(Exception):
    """Ends the checks of one signature with a result.

    Shared by the verifier's modules, and never raised out of
    :func:`~ldapdkim.signing.verifier.verify`.
    """

    def __init__(self, result: DkimResult, failure: Failure, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.failure = failure
        self.reason = reason


def permerror(failure: Failure, reason: str) -> _Verdict:
    return _Verdict(DkimResult.PERMERROR, failure, reason)


def base64_value(value: bytes, what: str) -> bytes:
    text = unfolded(value)
    if not _BASE64.match(text):
        raise permerror(Failure.SYNTAX, f"{what} is not base64")
    try:
        return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise permerror(Failure.SYNTAX, f"{what} is not base64") from None


def checked_domain(text: str, what: str) -> str:
    """A ``d=`` or ``i=`` domain: A-labels only (RFC 6376 §3.5), compared in lowercase."""
    name = text.lower()
    if (
        not name
        or not name.isascii()
        or len(name) > 253
        or not all(_LDH_LABEL.match(label) for label in name.split("."))
    ):
        raise permerror(Failure.SYNTAX, f"{what} {text!r} is not a domain name")
    return name


# -- the signature field (RFC 6376 §3.5, §6.1.1) ----------------------------------


@dataclass(frozen=True)
class Signature:
    """One DKIM-Signature field, checked for syntax (RFC 6376 §3.5, §6.1.1)."""

    index: int
    """Position of the field among the message's header fields."""
    tags: dict[str, bytes] = field(repr=False)
    algorithm: str
    key_type: str
    header_canon: str
    body_canon: str
    domain: str
    selector: str
    headers: tuple[bytes, ...]
    body_hash: bytes
    signature: bytes = field(repr=False)
    identity: str
    """``i=`` decoded, or "" when the signature has none."""
    identity_domain: str
    length: int | None
    timestamp: int | None
    expiry: int | None

    @property
    def obsolete(self) -> str | None:
        """Why the algorithm is refused, for one that is no longer accepted (rsa-sha1)."""
        return OBSOLETE.get(self.algorithm)

    @property
    def key_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


def parse_signature(index: int, value: bytes, now: int) -> Signature:
    """The checked signature of one field value (what follows ``DKIM-Signature:``).

    Raises:
        _Verdict: PERMFAIL with the reason (RFC 6376 §6.1.1).
    """
    if len(value) > MAX_SIGNATURE_FIELD:
        raise permerror(Failure.SYNTAX, f"signature field of {len(value)} octets is too long")
    try:
        tags = parse_tag_list(value, SIGNATURE_TAGS)
    except ValueError as err:
        raise permerror(Failure.SYNTAX, f"malformed signature: {err}") from None
    missing = [t for t in _REQUIRED if t not in tags]
    if missing:
        raise permerror(Failure.SYNTAX, f"signature lacks {', '.join(t + '=' for t in missing)}")
    if tags["v"] != b"1":
        raise permerror(Failure.SYNTAX, f"signature version v={_shown(tags['v'])} is not 1")
    # ABNF literals match case-insensitively (RFC 5234 §2.3): a=, c= and q= values too.
    algorithm = plain(tags["a"]).lower()
    if algorithm not in ALGORITHMS and algorithm not in OBSOLETE:
        raise permerror(Failure.ALGORITHM, f"unknown algorithm a={_shown(tags['a'])}")
    header_canon, body_canon = _canonicalization(tags.get("c", b"simple"))
    domain = checked_domain(plain(tags["d"]), "d=")
    selector = checked_selector(tags["s"])
    headers = tuple(h.strip(b" \t\r\n").lower() for h in unfolded(tags["h"]).split(b":"))
    if len(headers) > MAX_HEADER_NAMES:
        raise permerror(Failure.SYNTAX, f"h= names {len(headers)} fields; too many")
    if not all(_FIELD_NAME.match(h) for h in headers):
        raise permerror(Failure.SYNTAX, "h= holds an empty or malformed field name")
    if b"from" not in headers:
        # RFC 6376 §5.4, §6.1.1: PERMFAIL (From field not signed).
        raise permerror(Failure.SYNTAX, "h= does not sign the From field")
    identity, identity_domain = _identity(tags.get("i"), domain)
    _query_methods(tags.get("q"))
    length = _number(tags, "l", 76)
    timestamp = _number(tags, "t", 12)
    expiry = _number(tags, "x", 12)
    if expiry is not None and timestamp is not None and expiry <= timestamp:
        raise permerror(Failure.SYNTAX, f"x={expiry} is not after t={timestamp}")
    if expiry is not None and expiry < now:
        raise permerror(Failure.EXPIRED, f"signature expired at x={expiry}")
    return Signature(
        index=index,
        tags=tags,
        algorithm=algorithm,
        key_type=ALGORITHMS.get(algorithm, "rsa"),
        header_canon=header_canon,
        body_canon=body_canon,
        domain=domain,
        selector=selector,
        headers=headers,
        body_hash=base64_value(tags["bh"], "bh="),
        signature=base64_value(tags["b"], "b="),
        identity=identity,
        identity_domain=identity_domain,
        length=length,
        timestamp=timestamp,
        expiry=expiry,
    )


def _shown(value: bytes) -> str:
    text = value.decode("ascii", "replace")
    return text if len(text) <= 40 else text[:37] + "..."


def _canonicalization(value: bytes) -> tuple[str, str]:
    text = plain(value).lower()
    header, _, body = text.partition("/")
    body = body or "simple"
    if header not in _HEADER_CANON or body not in _HEADER_CANON:
        raise permerror(Failure.SYNTAX, f"unknown canonicalization c={_shown(value)}")
    return header, body


def checked_selector(value: bytes) -> str:
    text = plain(value).lower()
    if not text or len(text) > 253 or not all(_LDH_LABEL.match(p) for p in text.split(".")):
        raise permerror(Failure.SYNTAX, f"s={_shown(value)} is not a selector")
    return text


def _identity(value: bytes | None, domain: str) -> tuple[str, str]:
    """``i=`` decoded from dkim-quoted-printable, and its domain (``d=`` when absent)."""
    if value is None:
        return "", domain
    raw = unfolded(value)
    decoded = _QP.sub(lambda m: bytes([int(m.group(1), 16)]), raw)
    local, at, host = decoded.rpartition(b"@")
    if not at:
        raise permerror(Failure.SYNTAX, "i= has no @")
    if local and not _LOCAL_PART.match(local):
        # The identity goes into Authentication-Results (header.i): nothing but a
        # dot-atom local part, so no decoded CR, LF, quote or ';' can reach it.
        raise permerror(Failure.SYNTAX, "i= has a local part that is not a dot-atom")
    identity_domain = checked_domain(host.decode("ascii", "replace"), "i= domain")
    if identity_domain != domain and not identity_domain.endswith("." + domain):
        # RFC 6376 §3.5, §6.1.1: the i= domain is d= or a subdomain of it.
        raise permerror(Failure.SYNTAX, f"i= domain {identity_domain} is outside d={domain}")
    return local.decode("utf-8", "replace") + "@" + identity_domain, identity_domain


def _query_methods(value: bytes | None) -> None:
    """RFC 6376 §3.5: unknown methods are ignored, but one must be dns/txt."""
    if value is not None and "dns/txt" not in colon_list(value):
        raise permerror(Failure.SYNTAX, f"q={_shown(value)} offers no dns/txt")


def _number(tags: dict[str, bytes], name: str, digits: int) -> int | None:
    value = tags.get(name)
    if value is None:
        return None
    text = plain(value)
    if not text.isdigit() or not text.isascii() or len(text) > digits:
        raise permerror(Failure.SYNTAX, f"{name}={_shown(value)} is not a number")
    return int(text)
