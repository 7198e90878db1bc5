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
* RSA keys above :data:`~ldapdkim.signing.keyrecord.MAX_RSA_BITS` bits,
  oversized signature fields and tag values are refused before any work is
  done with them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, utils

from ldapdkim.errors import DnsTemporaryError
from ldapdkim.model import DkimResult, Failure, Header, VerifyResult
from ldapdkim.signing.bodyhash import canonical_body
from ldapdkim.signing.canonicalization import hash_header_fields, split_message, without_b_value
from ldapdkim.signing.keyfetch import DnsLookup, fetch_keys
from ldapdkim.signing.keyrecord import PublicKey, choose_record
from ldapdkim.signing.sigfield import (
    ALGORITHMS,
    MAX_SIGNATURE_FIELD,
    MAX_SIGNATURES,
    OBSOLETE,
    SIGNATURE_TAGS,
    Signature,
    _Verdict,
    base64_value,
    checked_domain,
    checked_selector,
    parse_signature,
    permerror,
)
from ldapdkim.signing.taglist import parse_tag_list, plain

# -- canonicalization and hashing (RFC 6376 §3.4, §3.7) -----------------------------


def header_hash(headers: Sequence[Header], signature: Signature, field_name: bytes) -> bytes:
    """The SHA-256 of the signed header fields and the signature field itself (§3.7).

    Fields named in ``h=`` are taken from the bottom up, one per mention; a
    name with no instance left contributes nothing (§5.4.2).
    """
    own = (field_name, without_b_value(signature_value(headers, signature)))
    relaxed = signature.header_canon == "relaxed"
    return hash_header_fields(headers, signature.headers, own, relaxed=relaxed)


def signature_value(headers: Sequence[Header], signature: Signature) -> bytes:
    return headers[signature.index][1]


def _check(
    signature: Signature, key: PublicKey, headers: Sequence[Header], bodies: _Bodies
) -> tuple[DkimResult, Failure, str]:
    """Body hash, then the signature over the header hash (RFC 6376 §6.1.3)."""
    body = bodies.canonical(signature.body_canon == "relaxed")
    if signature.length is not None and signature.length > len(body):
        raise permerror(
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
    lookup: DnsLookup,
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
                raise permerror(Failure.ALGORITHM, signature.obsolete)
            key = choose_record(answer, signature, minimum_key_bits)
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
        # b= passed base64_value: base64 characters and FWS only.
        signature.tags["b"].translate(None, b" \t\r\n")[:8].decode("ascii"),
        signature.identity,
        failure=failure,
        testing=testing,
    )


def _known_algorithm(value: bytes) -> None:
    if plain(value).lower() not in ALGORITHMS and plain(value).lower() not in OBSOLETE:
        raise permerror(Failure.ALGORITHM, "unknown algorithm")


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
        return plain(value).lower() if name in ("d", "s") else plain(value)

    domain = tag("d", lambda v: checked_domain(plain(v), "d="))
    selector = tag("s", checked_selector)
    algorithm = tag("a", _known_algorithm)
    prefix = tag("b", lambda v: base64_value(v, "b="))[:8]
    return VerifyResult(result, domain, selector, algorithm, reason, prefix, failure=failure)


def verify_message(
    message: bytes,
    lookup: DnsLookup,
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
