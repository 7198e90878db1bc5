"""Verify the ARC chain of one message: RFC 8617 §5.2, the validator's steps in order.

1. No ARC field: ``cv=none``.
2-4. The structure (:mod:`ldapdkim.signing.arc.chain`): more than 50 sets,
   a set without exactly one field of each kind, a gap, ``cv=fail`` in the
   newest seal, a ``cv=`` other than ``none`` at instance 1 and ``pass``
   above it, an ARC-Seal with ``h=``: ``fail``.
5. The newest ARC-Message-Signature must verify, or ``fail``.
6. The older ones are checked from N-1 down; the instance above the first
   that does not verify is the oldest-pass (0 when all verify).
7. Every ARC-Seal must verify, from N down, or ``fail``.
8. ``pass``.

A key lookup that fails temporarily makes the AMS or seal it was for fail
(RFC 8617 results are none, pass and fail); the verdict says ``temporary``.
Cost is bounded like DKIM verification's: at most 150 ARC fields of 16 KB
each are read, every key of the chain is fetched concurrently under one
deadline, each ARC field is canonicalized once for all the seals that
cover it, and the body is canonicalized at most once per canonicalization.
Nothing the message holds raises out of :func:`verify_chain`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, utils

from ldapdkim.errors import DnsTemporaryError
from ldapdkim.model import Header
from ldapdkim.signing.arc.chain import (
    MAX_ARC_FIELDS,
    ArcField,
    ArcSet,
    _ChainBroken,
    arc_fields,
    beyond_limit,
    chain_sets,
    field_kind,
    newest_instance,
)
from ldapdkim.signing.arc.fields import message_signature, seal_signature
from ldapdkim.signing.arc.verdict import MAX_INSTANCES, ArcVerdict, ChainValidation
from ldapdkim.signing.bodyhash import BodyHasher
from ldapdkim.signing.canonicalization import canonical_header, without_b_value
from ldapdkim.signing.keyfetch import DnsLookup, fetch_keys
from ldapdkim.signing.keyrecord import PublicKey, choose_record
from ldapdkim.signing.sigfield import Signature, _Verdict
from ldapdkim.signing.taglist import plain
from ldapdkim.signing.verifier import header_hash

log = logging.getLogger(__name__)


class _Failed(Exception):
    """One AMS or seal did not verify; ``temporary`` when only DNS is to blame."""

    def __init__(self, reason: str, *, temporary: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.temporary = temporary


def verify_chain(
    headers: Sequence[Header],
    body: bytes,
    lookup: DnsLookup,
    *,
    timeout: float,
    minimum_key_bits: int = 1024,
    now: int | None = None,
) -> ArcVerdict:
    """The verdict on the ARC chain of a message (RFC 8617 §5.2); never raises.

    ``headers`` are all the message's fields as received (name, value after
    the colon with its CRLF), ``body`` its body.  ``timeout`` bounds all key
    lookups together; ``now`` (Unix time) is for AMS ``x=``.  Should a bug
    raise all the same, the chain fails and is marked ``at_limit``: a chain
    nobody could read is not sealed.
    """
    try:
        moment = int(datetime.now(UTC).timestamp()) if now is None else now
        return _verdict(headers, body, lookup, timeout, minimum_key_bits, moment)
    except Exception:  # the barrier: a hostile chain must never crash the caller
        log.exception("ARC verification failed unexpectedly; the chain is taken as failed")
        reason = "internal error while verifying the chain"
        return ArcVerdict(ChainValidation.FAIL, 0, 0, reason, None, True)


def _verdict(
    headers: Sequence[Header],
    body: bytes,
    lookup: DnsLookup,
    timeout: float,
    minimum_key_bits: int,
    now: int,
) -> ArcVerdict:
    count = sum(1 for name, _ in headers if field_kind(name) is not None)
    if count > MAX_ARC_FIELDS:
        # More than 50 sets hold: refused before any field is read.
        reason = f"{count} ARC fields: more than {MAX_INSTANCES} sets can hold"
        return ArcVerdict(ChainValidation.FAIL, MAX_INSTANCES, 0, reason, None, True)
    fields = arc_fields(headers)
    if not fields:
        return ArcVerdict(ChainValidation.NONE, 0, 0, "", None, False)
    newest = newest_instance(fields)
    at_limit = beyond_limit(fields)
    sealer = _sealer(fields, newest)
    try:
        sets = chain_sets(fields)
        oldest_pass = _Chain(headers, body, sets, now, minimum_key_bits).verify(lookup, timeout)
    except _ChainBroken as err:
        return ArcVerdict(ChainValidation.FAIL, newest, 0, str(err), sealer, at_limit)
    except _Failed as err:
        fail = ChainValidation.FAIL
        return ArcVerdict(fail, newest, 0, err.reason, sealer, at_limit, err.temporary)
    return ArcVerdict(ChainValidation.PASS, newest, oldest_pass, "", sealer, at_limit)


def _sealer(fields: Sequence[ArcField], newest: int) -> str | None:
    """``d=`` of the newest ARC-Seal, when it reads as a domain."""
    for f in fields:
        if f.kind == b"arc-seal" and f.instance == newest and f.tags and "d" in f.tags:
            text = plain(f.tags["d"]).lower()
            if text and all(c.isalnum() or c in ".-" for c in text) and len(text) <= 253:
                return text
    return None


class _Chain:
    """The checks of RFC 8617 §5.2 steps 5 to 7 on a chain of valid structure."""

    def __init__(
        self,
        headers: Sequence[Header],
        body: bytes,
        sets: list[ArcSet],
        now: int,
        minimum_key_bits: int,
    ) -> None:
        self.headers = headers
        self.body = body
        self.sets = sets
        self.now = now
        self.minimum_key_bits = minimum_key_bits
        self._body_hashes: dict[str, bytes] = {}
        self._keys: dict[tuple[str, str], PublicKey | str] = {}
        self.answers: dict[str, list[bytes] | DnsTemporaryError] = {}

    def verify(self, lookup: DnsLookup, timeout: float) -> int:
        """The oldest-pass of a chain that passes.

        Raises:
            _Failed: the chain fails (the newest AMS or any seal does not verify).
        """
        signatures = {
            s.instance: _parsed(functools.partial(message_signature, s.message_signature, self.now))
            for s in self.sets
        }
        seals = {s.instance: _parsed(functools.partial(seal_signature, s.seal)) for s in self.sets}
        names = [
            s.key_name for s in (*signatures.values(), *seals.values()) if isinstance(s, Signature)
        ]
        self.answers = fetch_keys(names, lookup, timeout)
        newest = len(self.sets)
        self._message_signature(newest, signatures[newest])  # step 5
        oldest_pass = 0
        for instance in range(newest - 1, 0, -1):  # step 6
            try:
                self._message_signature(instance, signatures[instance])
            except _Failed:
                oldest_pass = instance + 1
                break
        digests = self._seal_digests()
        for instance in range(newest, 0, -1):  # step 7
            self._seal(instance, seals[instance], digests[instance])
        return oldest_pass

    def _key(self, signature: Signature, what: str) -> PublicKey:
        """The key of ``signature``'s record, checked once per name and key type: a
        sealer's AMS and seal, and its sets at every hop, share one."""
        answer = self.answers[signature.key_name]
        if isinstance(answer, DnsTemporaryError):
            raise _Failed(f"{what}: key lookup failed: {answer}", temporary=True)
        cache_key = (signature.key_name, signature.key_type)
        if cache_key not in self._keys:
            try:
                self._keys[cache_key] = choose_record(answer, signature, self.minimum_key_bits)
            except _Verdict as verdict:
                self._keys[cache_key] = verdict.reason
        key = self._keys[cache_key]
        if isinstance(key, str):
            raise _Failed(f"{what}: {key}")
        return key

    def _message_signature(self, instance: int, parsed: Signature | _Verdict) -> None:
        what = f"ARC-Message-Signature of instance {instance}"
        if isinstance(parsed, _Verdict):
            raise _Failed(f"{what}: {parsed.reason}")
        key = self._key(parsed, what)
        if self._body_hash(parsed.body_canon) != parsed.body_hash:
            raise _Failed(f"{what}: body hash mismatch (the body was changed)")
        field_name = self.headers[parsed.index][0]
        if not _holds(key, parsed.signature, header_hash(self.headers, parsed, field_name)):
            raise _Failed(f"{what}: the signature did not verify (a header field changed?)")

    def _seal(self, instance: int, parsed: Signature | _Verdict, digest: bytes) -> None:
        what = f"ARC-Seal of instance {instance}"
        if isinstance(parsed, _Verdict):
            raise _Failed(f"{what}: {parsed.reason}")
        key = self._key(parsed, what)
        if not _holds(key, parsed.signature, digest):
            raise _Failed(f"{what}: the signature did not verify (an ARC field changed?)")

    def _body_hash(self, canon: str) -> bytes:
        if canon not in self._body_hashes:
            hasher = BodyHasher(relaxed=canon == "relaxed")
            hasher.update(self.body)
            self._body_hashes[canon] = hasher.digest()
        return self._body_hashes[canon]

    def _seal_digests(self) -> dict[int, bytes]:
        """The hash each ARC-Seal signs (RFC 8617 §5.1.1), every field canonicalized once.

        Seal i covers the sets 1..i in order, each AAR, AMS, AS, relaxed; its
        own field without the ``b=`` value and without the final CRLF.
        """
        running = hashlib.sha256()
        digests = {}
        for arc_set in self.sets:
            results, signature, seal = (self.headers[f.index] for f in arc_set.fields)
            for name, value in (results, signature):
                running.update(canonical_header(name, value, True))
            own = canonical_header(seal[0], without_b_value(seal[1]), True)
            digest = running.copy()
            digest.update(own[:-2])
            digests[arc_set.instance] = digest.digest()
            running.update(canonical_header(*seal, True))
        return digests


def _parsed(parse: Callable[[], Signature]) -> Signature | _Verdict:
    """The parsed signature, or the verdict that refused it (kept for its step)."""
    try:
        return parse()
    except _Verdict as verdict:
        return verdict


def _holds(key: PublicKey, signature: bytes, digest: bytes) -> bool:
    """The signature verifies over the SHA-256 ``digest`` (RFC 8463 §3 for Ed25519)."""
    try:
        if isinstance(key.key, ed25519.Ed25519PublicKey):
            key.key.verify(signature, digest)
        else:
            key.key.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True
