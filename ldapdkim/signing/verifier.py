"""Verify the DKIM signatures of one message: RFC 6376 §3 and §6, RFC 8463, RFC 8301.

Every rule is applied here, clause by clause, rather than left to a library:
the results feed DMARC and spam filters downstream, so a signature the RFC
says must fail never reads ``pass``, and nothing a message, a signature or
a key record holds can raise out of :func:`verify`.  Each signature ends as
one :class:`~ldapdkim.model.VerifyResult` (RFC 8601 result, a typed
:class:`~ldapdkim.model.Failure` and a reason for people).

Cost is bounded whatever the message holds:

* at most :data:`MAX_SIGNATURES` signature fields are considered, author
  signatures (``d=`` the From domain or a parent of it) first, then the
  others, each group top to bottom;
* their keys are fetched concurrently under one overall deadline (the
  ``DNSTimeout``), so key queries that never answer cost one timeout in all,
  not one each;
* signature checks (body hash and public-key operation) are made for at most
  ``max_signatures`` signatures whose key was found (``MaximumSignaturesToVerify``;
  the others are not reported): signatures whose key is missing or does not
  answer take no part of that budget, so they cannot hide a good signature
  behind them;
* RSA keys above :data:`MAX_RSA_BITS` bits, oversized signature fields and
  tag values are refused before any work is done with them.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils

from ldapdkim.errors import DnsTemporaryError
from ldapdkim.model import DkimResult, Failure, Header, VerifyResult
from ldapdkim.signing.bodyhash import canonical_body, crlf_line_ends

KeyLookup = Callable[[str], bytes | Sequence[bytes] | None]
"""``lookup(name)``: the TXT records at ``name`` (each record's strings joined),
or one record, or None when there is none; raises
:class:`~ldapdkim.errors.DnsTemporaryError` when the answer may come later."""

MAX_SIGNATURES = 64
"""Signature fields considered per message; the rest are ignored."""
MAX_SIGNATURE_FIELD = 16_384
"""Octets of one DKIM-Signature field; a longer one is refused unread."""
MAX_HEADER_NAMES = 512
"""Names in one ``h=`` tag."""
RFC_8301_BITS = 1024
"""RFC 8301 §3.2: verifiers MUST NOT consider signatures with smaller RSA keys valid."""
MAX_RSA_BITS = 8192
"""Larger RSA keys are refused: their operations cost a verifier too much."""
MAX_KEY_RECORD = 8192
"""Octets of one key record."""
SIGNATURE_TAGS = frozenset({"v", "a", "b", "bh", "c", "d", "h", "i", "l", "q", "s", "t", "x", "z"})
"""The signature tags of RFC 6376 §3.5; others are ignored, however their names are spelt."""
KEY_RECORD_TAGS = frozenset({"v", "h", "k", "p", "s", "t"})
"""The key record tags of RFC 6376 §3.6.1 that a verifier reads; any other (``n=``,
notes for people, among them) is ignored, however written."""

_HEADER_CANON = ("simple", "relaxed")
_ALGORITHMS = {"rsa-sha256": "rsa", "ed25519-sha256": "ed25519"}
_OBSOLETE = {"rsa-sha1": "rsa-sha1 is not accepted any more (RFC 8301)"}
_REQUIRED = ("v", "a", "b", "bh", "d", "h", "s")
_TAG_NAME = re.compile(rb"[A-Za-z][A-Za-z0-9_]*\Z")
_FWS = re.compile(rb"(?:[ \t]*\r\n)?[ \t]+")
# tag-value = [ tval *( 1*(WSP / FWS) tval ) ]: between values any run of blanks
# and folds, each fold a CRLF followed by a blank (RFC 6376 §3.2).
_VALUE = re.compile(rb"[\x21-\x3a\x3c-\x7e]+(?:(?:[ \t]|\r\n[ \t])+[\x21-\x3a\x3c-\x7e]+)*\Z")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}\Z")
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+\Z")
_QP = re.compile(rb"=([0-9A-F]{2})")
_LOCAL_PART = re.compile(
    rb"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z"
)
_WSP_RUN = re.compile(rb"[ \t]+")


class _Verdict(Exception):
    """Ends the checks of one signature with a result (never leaves this module)."""

    def __init__(self, result: DkimResult, failure: Failure, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.failure = failure
        self.reason = reason


def _permerror(failure: Failure, reason: str) -> _Verdict:
    return _Verdict(DkimResult.PERMERROR, failure, reason)


# -- tag lists (RFC 6376 §3.2) -------------------------------------------------------


def parse_tag_list(
    value: bytes, known: frozenset[str] | None = None, *, strict_values: bool = True
) -> dict[str, bytes]:
    """The tags of a tag list, each value with its FWS as written.

    ``known``: the tags the caller reads.  Any other tag is ignored (RFC 6376
    §3.2, §3.6.1: unrecognized tags MUST be ignored) once it has a name and an
    ``=``, however its name is spelt (``x-note=``, ``9z=``), as at the other
    verifiers; with ``strict_values`` False its value may hold anything but
    ``;`` too (a key record's ``n=café`` does not revoke its key).  Without
    ``known`` every tag follows the grammar.

    Raises:
        ValueError: not a tag list: a bad tag name, a character a tag value
            may not hold, a tag without ``=``, or a tag given twice.
    """
    tags: dict[str, bytes] = {}
    specs = value.split(b";")
    if specs and not specs[-1].strip(b" \t\r\n"):
        specs.pop()  # tag-list = tag-spec *(";" tag-spec) [";"]
    for spec in specs:
        name, equals, text = spec.partition(b"=")
        name = _strip_fws(name)
        text = _strip_fws(text)
        key = name.decode("latin-1")
        checked = strict_values or key in (known or ())
        if text and checked and not _VALUE.match(text):
            shown = name[:20].decode("ascii", "backslashreplace")  # it may reach a header
            raise ValueError(f"tag {shown}= holds a character a tag value may not hold")
        if equals and name and known is not None and key not in known:
            if not _TAG_NAME.match(name):
                continue  # not even a tag name: nothing anyone could read as a known tag
        if not equals or not _TAG_NAME.match(name):
            shown = name[:20].decode("ascii", "replace")
            raise ValueError(f"{shown!r} is not a tag (name=value)")
        if key in tags:
            raise ValueError(f"tag {key}= is given twice")
        tags[key] = text
    return tags


def _strip_fws(text: bytes) -> bytes:
    text = text.strip(b" \t")
    while text.startswith(b"\r\n") and text[2:3] in (b" ", b"\t"):
        text = text[2:].lstrip(b" \t")
    while text.endswith(b"\r\n"):
        text = text[:-2].rstrip(b" \t")
    return text


def _unfolded(value: bytes) -> bytes:
    """``value`` without FWS; most values have none, and a long b= need not be scanned."""
    if b" " not in value and b"\t" not in value:
        return value
    return _FWS.sub(b"", value)


def _plain(value: bytes) -> str:
    """A tag value with its FWS removed (base64 and colon lists may be folded)."""
    return _unfolded(value).decode("ascii")


def _base64(value: bytes, what: str) -> bytes:
    text = _unfolded(value)
    if not _BASE64.match(text):
        raise _permerror(Failure.SYNTAX, f"{what} is not base64")
    try:
        return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _permerror(Failure.SYNTAX, f"{what} is not base64") from None


def _domain(text: str, what: str) -> str:
    """A ``d=`` or ``i=`` domain: A-labels only (RFC 6376 §3.5), compared in lowercase."""
    name = text.lower()
    if (
        not name
        or not name.isascii()
        or len(name) > 253
        or not all(_LDH_LABEL.match(label) for label in name.split("."))
    ):
        raise _permerror(Failure.SYNTAX, f"{what} {text!r} is not a domain name")
    return name


def _colon_list(value: bytes) -> list[str]:
    """A colon-separated list of ABNF literals, lowercased (they match case-insensitively)."""
    return [item for item in _plain(value).lower().split(":") if item]


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
        return _OBSOLETE.get(self.algorithm)

    @property
    def key_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


def parse_signature(index: int, value: bytes, now: int) -> Signature:
    """The checked signature of one field value (what follows ``DKIM-Signature:``).

    Raises:
        _Verdict: PERMFAIL with the reason (RFC 6376 §6.1.1).
    """
    if len(value) > MAX_SIGNATURE_FIELD:
        raise _permerror(Failure.SYNTAX, f"signature field of {len(value)} octets is too long")
    try:
        tags = parse_tag_list(value, SIGNATURE_TAGS)
    except ValueError as err:
        raise _permerror(Failure.SYNTAX, f"malformed signature: {err}") from None
    missing = [t for t in _REQUIRED if t not in tags]
    if missing:
        raise _permerror(Failure.SYNTAX, f"signature lacks {', '.join(t + '=' for t in missing)}")
    if tags["v"] != b"1":
        raise _permerror(Failure.SYNTAX, f"signature version v={_shown(tags['v'])} is not 1")
    # ABNF literals match case-insensitively (RFC 5234 §2.3): a=, c= and q= values too.
    algorithm = _plain(tags["a"]).lower()
    if algorithm not in _ALGORITHMS and algorithm not in _OBSOLETE:
        raise _permerror(Failure.ALGORITHM, f"unknown algorithm a={_shown(tags['a'])}")
    header_canon, body_canon = _canonicalization(tags.get("c", b"simple"))
    domain = _domain(_plain(tags["d"]), "d=")
    selector = _selector(tags["s"])
    headers = tuple(h.strip(b" \t\r\n").lower() for h in _FWS.sub(b"", tags["h"]).split(b":"))
    if len(headers) > MAX_HEADER_NAMES:
        raise _permerror(Failure.SYNTAX, f"h= names {len(headers)} fields; too many")
    if not all(_FIELD_NAME.match(h) for h in headers):
        raise _permerror(Failure.SYNTAX, "h= holds an empty or malformed field name")
    if b"from" not in headers:
        # RFC 6376 §5.4, §6.1.1: PERMFAIL (From field not signed).
        raise _permerror(Failure.SYNTAX, "h= does not sign the From field")
    identity, identity_domain = _identity(tags.get("i"), domain)
    _query_methods(tags.get("q"))
    length = _number(tags, "l", 76)
    timestamp = _number(tags, "t", 12)
    expiry = _number(tags, "x", 12)
    if expiry is not None and timestamp is not None and expiry <= timestamp:
        raise _permerror(Failure.SYNTAX, f"x={expiry} is not after t={timestamp}")
    if expiry is not None and expiry < now:
        raise _permerror(Failure.EXPIRED, f"signature expired at x={expiry}")
    return Signature(
        index=index,
        tags=tags,
        algorithm=algorithm,
        key_type=_ALGORITHMS.get(algorithm, "rsa"),
        header_canon=header_canon,
        body_canon=body_canon,
        domain=domain,
        selector=selector,
        headers=headers,
        body_hash=_base64(tags["bh"], "bh="),
        signature=_base64(tags["b"], "b="),
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
    text = _plain(value).lower()
    header, _, body = text.partition("/")
    body = body or "simple"
    if header not in _HEADER_CANON or body not in _HEADER_CANON:
        raise _permerror(Failure.SYNTAX, f"unknown canonicalization c={_shown(value)}")
    return header, body


def _selector(value: bytes) -> str:
    text = _plain(value).lower()
    if not text or len(text) > 253 or not all(_LDH_LABEL.match(p) for p in text.split(".")):
        raise _permerror(Failure.SYNTAX, f"s={_shown(value)} is not a selector")
    return text


def _identity(value: bytes | None, domain: str) -> tuple[str, str]:
    """``i=`` decoded from dkim-quoted-printable, and its domain (``d=`` when absent)."""
    if value is None:
        return "", domain
    raw = _FWS.sub(b"", value)
    decoded = _QP.sub(lambda m: bytes([int(m.group(1), 16)]), raw)
    local, at, host = decoded.rpartition(b"@")
    if not at:
        raise _permerror(Failure.SYNTAX, "i= has no @")
    if local and not _LOCAL_PART.match(local):
        # The identity goes into Authentication-Results (header.i): nothing but a
        # dot-atom local part, so no decoded CR, LF, quote or ';' can reach it.
        raise _permerror(Failure.SYNTAX, "i= has a local part that is not a dot-atom")
    identity_domain = _domain(host.decode("ascii", "replace"), "i= domain")
    if identity_domain != domain and not identity_domain.endswith("." + domain):
        # RFC 6376 §3.5, §6.1.1: the i= domain is d= or a subdomain of it.
        raise _permerror(Failure.SYNTAX, f"i= domain {identity_domain} is outside d={domain}")
    return local.decode("utf-8", "replace") + "@" + identity_domain, identity_domain


def _query_methods(value: bytes | None) -> None:
    """RFC 6376 §3.5: unknown methods are ignored, but one must be dns/txt."""
    if value is not None and "dns/txt" not in _colon_list(value):
        raise _permerror(Failure.SYNTAX, f"q={_shown(value)} offers no dns/txt")


def _number(tags: dict[str, bytes], name: str, digits: int) -> int | None:
    value = tags.get(name)
    if value is None:
        return None
    text = _plain(value)
    if not text.isdigit() or not text.isascii() or len(text) > digits:
        raise _permerror(Failure.SYNTAX, f"{name}={_shown(value)} is not a number")
    return int(text)


# -- key records (RFC 6376 §3.6.1, RFC 8463 §4) ------------------------------------


@dataclass(frozen=True)
class PublicKey:
    """A key record checked for one signature."""

    key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey
    testing: bool
    """``t=y``: the domain is testing DKIM (RFC 6376 §3.6.1)."""


def parse_key_record(record: bytes, signature: Signature, minimum_bits: int) -> PublicKey:
    """The public key of ``record``, if the record allows it for ``signature``.

    Raises:
        _Verdict: PERMFAIL: a malformed or revoked record, or one whose tags
            refuse this signature (hash, key type, service, ``t=s``).
    """
    name = signature.key_name
    if len(record) > MAX_KEY_RECORD:
        raise _permerror(Failure.KEY_UNUSABLE, f"key record at {name} is too long")
    # A TXT record is no header field: a line break in it is a blank like any other.
    text = record.replace(b"\r\n", b" ").replace(b"\n", b" ").replace(b"\r", b" ")
    try:
        tags = parse_tag_list(text, KEY_RECORD_TAGS, strict_values=False)
    except ValueError as err:
        raise _permerror(
            Failure.KEY_UNUSABLE, f"key record at {name} is malformed: {err}"
        ) from None
    if "v" in tags and _plain(tags["v"]).upper() != "DKIM1":
        # §3.6.1: records with another version are discarded.  (That v= comes
        # first binds whoever publishes the record; a verifier gains nothing by
        # refusing a DKIM1 record that lists it later, and none of the others do.)
        raise _permerror(Failure.KEY_UNUSABLE, f"key record at {name} is not v=DKIM1")
    if "h" in tags and "sha256" not in _colon_list(tags["h"]):
        raise _permerror(Failure.KEY_UNUSABLE, f"key record at {name} does not allow sha256 (h=)")
    key_type = _plain(tags.get("k", b"rsa")).lower()
    if key_type != signature.key_type:
        raise _permerror(
            Failure.KEY_UNUSABLE,
            f"key record at {name} is k={key_type}, the signature a={signature.algorithm}",
        )
    services = _colon_list(tags.get("s", b"*"))
    if "*" not in services and "email" not in services:
        raise _permerror(Failure.KEY_UNUSABLE, f"key record at {name} is not for email (s=)")
    flags = _colon_list(tags.get("t", b""))
    if "s" in flags and signature.identity and signature.identity_domain != signature.domain:
        raise _permerror(
            Failure.KEY_UNUSABLE, f"key record at {name} has t=s: i= must be in d= itself"
        )
    if "p" not in tags:
        raise _permerror(Failure.KEY_UNUSABLE, f"key record at {name} has no p=")
    data = _base64(tags["p"], f"p= of the key record at {name}")
    if not data:
        raise _permerror(Failure.KEY_UNUSABLE, f"key at {name} is revoked (empty p=)")
    key = _load_key(data, key_type, name, minimum_bits)
    return PublicKey(key, "y" in flags)


def _load_key(
    data: bytes, key_type: str, name: str, minimum_bits: int
) -> rsa.RSAPublicKey | ed25519.Ed25519PublicKey:
    key = _public_key(data, key_type)
    if key is None:
        what = "a 32-octet Ed25519 key" if key_type == "ed25519" else "an RSA key"
        raise _permerror(Failure.KEY_UNUSABLE, f"key at {name} is not {what}")
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < minimum_bits:
            # RFC 8301 invalidates keys under 1024 bits; a larger one refused only by a
            # stricter MinimumKeyBits is this site's policy (RFC 8601 "policy", as OpenDKIM).
            result = DkimResult.POLICY if key.key_size >= RFC_8301_BITS else DkimResult.PERMERROR
            raise _Verdict(
                result,
                Failure.KEY_UNUSABLE,
                f"key at {name} has {key.key_size} bits, fewer than MinimumKeyBits {minimum_bits}",
            )
        if key.key_size > MAX_RSA_BITS:
            raise _permerror(
                Failure.KEY_UNUSABLE,
                f"key at {name} has {key.key_size} bits, more than {MAX_RSA_BITS}",
            )
    return key


@functools.lru_cache(maxsize=1024)
def _public_key(data: bytes, key_type: str) -> rsa.RSAPublicKey | ed25519.Ed25519PublicKey | None:
    """The key ``p=`` holds, or None; parsed once for the many signatures that share it."""
    if key_type == "ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(data) if len(data) == 32 else None
    key: object
    try:
        key = serialization.load_der_public_key(data)
    except (ValueError, TypeError):
        key = _pkcs1_key(data)
    return key if isinstance(key, rsa.RSAPublicKey) else None


def _pkcs1_key(data: bytes) -> object:
    """Some records hold the bare PKCS#1 RSAPublicKey rather than SubjectPublicKeyInfo."""
    pem = b"-----BEGIN RSA PUBLIC KEY-----\n" + base64.encodebytes(data)
    try:
        return serialization.load_pem_public_key(pem + b"-----END RSA PUBLIC KEY-----\n")
    except (ValueError, TypeError):
        return None


def _choose_record(records: Sequence[bytes], signature: Signature, minimum_bits: int) -> PublicKey:
    """RFC 6376 §3.6.2.2: several records at one name make the result undefined.

    One usable record among them is used; several different usable keys, or
    none, give PERMFAIL.
    """
    name = signature.key_name
    if not records:
        raise _permerror(Failure.NO_KEY, f"no key record at {name}")
    found: list[PublicKey] = []
    problem: _Verdict | None = None
    for record in records:
        try:
            found.append(parse_key_record(record, signature, minimum_bits))
        except _Verdict as verdict:
            problem = problem or verdict
    distinct = {_key_bytes(k.key) for k in found}
    if len(distinct) > 1:
        raise _permerror(Failure.KEY_UNUSABLE, f"{len(records)} different key records at {name}")
    if not found:
        assert problem is not None
        raise problem
    return found[0]


def _key_bytes(key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# -- canonicalization and hashing (RFC 6376 §3.4, §3.7) -----------------------------


def canonical_header(name: bytes, value: bytes, relaxed: bool) -> bytes:
    """One header field, canonicalized, ending in CRLF (``value`` follows the colon)."""
    if not relaxed:
        return name + b":" + value
    unfolded = value.replace(b"\r\n", b"")
    return name.strip(b" \t").lower() + b":" + _WSP_RUN.sub(b" ", unfolded).strip(b" \t") + b"\r\n"


def _without_b_value(value: bytes) -> bytes:
    """The field value with the ``b=`` tag's value (and its surrounding FWS) deleted (§3.7)."""
    specs = value.split(b";")
    for i, spec in enumerate(specs):
        name, equals, _ = spec.partition(b"=")
        if equals and _strip_fws(name) == b"b":
            specs[i] = spec[: spec.index(b"=") + 1]
    return b";".join(specs)


def header_hash(headers: Sequence[Header], signature: Signature, field_name: bytes) -> bytes:
    """The SHA-256 of the signed header fields and the signature field itself (§3.7).

    Fields named in ``h=`` are taken from the bottom up, one per mention; a
    name with no instance left contributes nothing (§5.4.2).
    """
    relaxed = signature.header_canon == "relaxed"
    by_name: dict[bytes, list[Header]] = {}
    for name, value in headers:
        by_name.setdefault(name.strip(b" \t").lower(), []).append((name, value))
    digest = hashlib.sha256()
    for wanted in signature.headers:
        instances = by_name.get(wanted)
        if instances:
            digest.update(canonical_header(*instances.pop(), relaxed))
    own = canonical_header(
        field_name, _without_b_value(signature_value(headers, signature)), relaxed
    )
    digest.update(own[:-2] if own.endswith(b"\r\n") else own)
    return digest.digest()


def signature_value(headers: Sequence[Header], signature: Signature) -> bytes:
    return headers[signature.index][1]


def _check(
    signature: Signature, key: PublicKey, headers: Sequence[Header], bodies: _Bodies
) -> tuple[DkimResult, Failure, str]:
    """Body hash, then the signature over the header hash (RFC 6376 §6.1.3)."""
    body = bodies.canonical(signature.body_canon == "relaxed")
    if signature.length is not None and signature.length > len(body):
        raise _permerror(
            Failure.SYNTAX, f"l={signature.length} is longer than the body ({len(body)} octets)"
        )
    covered = len(body) if signature.length is None else signature.length
    if bodies.digest(signature.body_canon, covered) != signature.body_hash:
        return DkimResult.FAIL, Failure.BODY_HASH, "body hash mismatch (the body was changed)"
    digest = header_hash(headers, signature, headers[signature.index][0])
    try:
        if isinstance(key.key, ed25519.Ed25519PublicKey):
            # RFC 8463 §3: Ed25519 signs the SHA-256 hash of the header data.
            key.key.verify(signature.signature, digest)
        else:
            key.key.verify(
                signature.signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())
            )
    except (InvalidSignature, ValueError):
        return DkimResult.FAIL, Failure.BAD_SIGNATURE, "signature did not verify (header changed?)"
    unsigned_from = _unsigned_from(signature, headers)
    if unsigned_from:
        return DkimResult.POLICY, Failure.UNSIGNED_FROM, unsigned_from
    if covered < len(body):
        # RFC 6376 §8.2 and the 2024 l= disclosures: unsigned content can be appended.
        return (
            DkimResult.POLICY,
            Failure.PARTIAL_BODY,
            f"l={covered} leaves {len(body) - covered} octets of the body unsigned",
        )
    return DkimResult.PASS, Failure.NONE, ""


def _unsigned_from(signature: Signature, headers: Sequence[Header]) -> str:
    """Why a signature that verifies still does not vouch for the author; "" when it does.

    RFC 5322 §3.6 allows one From field.  A signature covers as many From
    fields as ``h=`` names, from the bottom up (RFC 6376 §5.4.2), so a From
    field added above the signed one leaves the signature intact, and many
    readers show the added one (§8.15).  Such a message, and one with no From
    field at all, is reported as ``policy``: a DMARC evaluator downstream
    must not read it as an author signature that passed.  The reason goes into
    Authentication-Results, so it is ASCII.
    """
    present = sum(1 for name, _ in headers if name.strip(b" \t").lower() == b"from")
    if present == 0:
        return "the message has no From field (RFC 5322 3.6): the signature vouches for no author"
    signed = signature.headers.count(b"from")
    if present > signed:
        return (
            f"the message has {present} From fields and h= covers {signed}; "
            "an unsigned one can be read as the author (RFC 6376 8.15, RFC 5322 3.6)"
        )
    return ""


class _Bodies:
    """Canonical bodies and their hashes, each computed once per message."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._canonical: dict[bool, bytes] = {}
        self._digests: dict[tuple[str, int], bytes] = {}

    def canonical(self, relaxed: bool) -> bytes:
        if relaxed not in self._canonical:
            self._canonical[relaxed] = canonical_body(self._body, relaxed=relaxed)
        return self._canonical[relaxed]

    def digest(self, canon: str, length: int) -> bytes:
        key = (canon, length)
        if key not in self._digests:
            body = self.canonical(canon == "relaxed")
            self._digests[key] = hashlib.sha256(memoryview(body)[:length]).digest()
        return self._digests[key]


# -- key lookups under one deadline ------------------------------------------------

_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """One pool per process (a forked worker starts its own)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            workers = MAX_SIGNATURES  # every key of one message can be asked at once
            _pool = (os.getpid(), ThreadPoolExecutor(workers, thread_name_prefix="ldapdkim-dns"))
        return _pool[1]


def _records(answer: bytes | Sequence[bytes] | None) -> list[bytes]:
    if answer is None:
        return []
    if isinstance(answer, bytes):
        return [answer]
    return list(answer)


def fetch_keys(
    names: Iterable[str], lookup: KeyLookup, timeout: float
) -> dict[str, list[bytes] | DnsTemporaryError]:
    """The records at each name, asked concurrently; what has not answered by ``timeout``
    seconds after the first question is a temporary error."""
    futures: dict[str, Future[bytes | Sequence[bytes] | None]] = {
        name: _executor().submit(lookup, name) for name in dict.fromkeys(names)
    }
    wait(futures.values(), timeout=timeout)
    answers: dict[str, list[bytes] | DnsTemporaryError] = {}
    for name, future in futures.items():
        if not future.done():
            future.cancel()
            answers[name] = DnsTemporaryError(f"no answer for {name} within {timeout:g} s")
            continue
        error = future.exception()
        if error is None:
            answers[name] = _records(future.result())
        elif isinstance(error, DnsTemporaryError):
            answers[name] = error
        else:
            answers[name] = DnsTemporaryError(f"DNS query for {name} failed: {error}")
    return answers


# -- the message ------------------------------------------------------------------


def _priority(author: str | None) -> Callable[[Signature], tuple[int, int]]:
    """Author signatures first (d= the From domain or a parent of it), then by position."""

    def key(signature: Signature) -> tuple[int, int]:
        aligned = author is not None and (
            author == signature.domain or author.endswith("." + signature.domain)
        )
        return (0 if aligned else 1, signature.index)

    return key


def verify(
    headers: Sequence[Header],
    body: bytes,
    lookup: KeyLookup,
    *,
    author_domain: str | None = None,
    max_signatures: int = 3,
    minimum_key_bits: int = 1024,
    timeout: float = 5.0,
    now: datetime | None = None,
) -> list[VerifyResult]:
    """One result per signature considered, in header order; [] when there is none.

    ``headers`` are the fields as the message holds them (name, and the value
    after the colon with its CRLF), ``body`` the body as received.
    ``author_domain`` (the From domain, when it could be read) puts author
    signatures first.  Never raises for anything the message holds.
    """
    moment = int((now or datetime.now(UTC)).timestamp())
    fields = [i for i, (name, _) in enumerate(headers) if name.strip().lower() == b"dkim-signature"]
    results: dict[int, VerifyResult] = {}
    parsed: list[Signature] = []
    for index in fields:
        try:
            parsed.append(parse_signature(index, headers[index][1], moment))
        except _Verdict as verdict:
            results[index] = _result(
                headers[index][1], verdict.result, verdict.failure, verdict.reason
            )
    parsed.sort(key=_priority(author_domain))
    parsed = parsed[:MAX_SIGNATURES]  # the rest are not reported, as if absent
    answers = fetch_keys((s.key_name for s in parsed), lookup, timeout)
    bodies = _Bodies(body)
    checked = 0
    for signature in parsed:
        answer = answers[signature.key_name]
        try:
            if isinstance(answer, DnsTemporaryError):
                raise _Verdict(DkimResult.TEMPERROR, Failure.DNS_ERROR, f"key lookup: {answer}")
            if signature.obsolete:
                # After the key fetch, so that a DNS failure still reads temperror.
                raise _permerror(Failure.ALGORITHM, signature.obsolete)
            key = _choose_record(answer, signature, minimum_key_bits)
            if checked >= max_signatures:
                continue  # MaximumSignaturesToVerify: not reported, as OpenDKIM does
            checked += 1
            result, failure, reason = _check(signature, key, headers, bodies)
        except _Verdict as verdict:
            result, failure, reason = verdict.result, verdict.failure, verdict.reason
            key = None
        results[signature.index] = _verdict_of(
            signature, result, failure, reason, testing=key is not None and key.testing
        )
    return [results[i] for i in sorted(results)]


def _verdict_of(
    signature: Signature,
    result: DkimResult,
    failure: Failure,
    reason: str,
    *,
    testing: bool = False,
) -> VerifyResult:
    return VerifyResult(
        result,
        signature.domain,
        signature.selector,
        signature.algorithm,
        reason,
        _FWS.sub(b"", signature.tags["b"]).decode("ascii")[:8],
        signature.identity,
        failure=failure,
        testing=testing,
    )


def _known_algorithm(value: bytes) -> None:
    if _plain(value).lower() not in _ALGORITHMS and _plain(value).lower() not in _OBSOLETE:
        raise _permerror(Failure.ALGORITHM, "unknown algorithm")


def _result(value: bytes, result: DkimResult, failure: Failure, reason: str) -> VerifyResult:
    """The result of a signature that did not parse: what can be read of d=, s=, a=."""
    try:
        tags = parse_tag_list(value[:MAX_SIGNATURE_FIELD], SIGNATURE_TAGS)
    except ValueError:
        tags = {}

    def tag(name: str, check: Callable[[bytes], object]) -> str:
        """The tag's value when it passes ``check``, else "" (it goes into a header field)."""
        value = tags.get(name)
        if value is None:
            return ""
        try:
            check(value)
        except _Verdict:
            return ""
        return _plain(value).lower() if name in ("d", "s") else _plain(value)

    domain = tag("d", lambda v: _domain(_plain(v), "d="))
    selector = tag("s", _selector)
    algorithm = tag("a", _known_algorithm)
    prefix = tag("b", lambda v: _base64(v, "b="))[:8]
    return VerifyResult(result, domain, selector, algorithm, reason, prefix, failure=failure)


def split_message(message: bytes) -> tuple[list[Header], bytes]:
    """Header fields and body of a message in bytes (CRLF or LF line ends).

    As an MTA reads it: the header ends at the first empty line, or at the
    first line that is neither a field nor the continuation of one (that line
    starts the body).
    """
    message = crlf_line_ends(message)
    headers: list[Header] = []
    position = 0
    while position < len(message):
        end = message.find(b"\r\n", position)
        end = len(message) if end < 0 else end
        line = message[position:end]
        if not line:
            return headers, message[end + 2 :]
        if line[:1] in (b" ", b"\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + line + b"\r\n")
        else:
            name, colon, value = line.partition(b":")
            if not colon or not name.strip() or line[:1] in (b" ", b"\t"):
                return headers, message[position:]
            headers.append((name, value + b"\r\n"))
        position = end + 2
    return headers, b""


def verify_message(
    message: bytes,
    lookup: KeyLookup,
    *,
    author_domain: str | None = None,
    max_signatures: int = 3,
    minimum_key_bits: int = 1024,
    timeout: float = 5.0,
    now: datetime | None = None,
) -> list[VerifyResult]:
    """:func:`verify` for a whole message in bytes."""
    headers, body = split_message(message)
    return verify(
        headers,
        body,
        lookup,
        author_domain=author_domain,
        max_signatures=max_signatures,
        minimum_key_bits=minimum_key_bits,
        timeout=timeout,
        now=now,
    )
