"""Key records (RFC 6376 §3.6.1, §3.6.2.2, RFC 8463 §4): the public key of a signature."""

from __future__ import annotations

import base64
import functools
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ldapdkim.model import DkimResult, Failure
from ldapdkim.signing.sigfield import Signature, _Verdict, base64_value, permerror
from ldapdkim.signing.taglist import colon_list, parse_tag_list, plain

RFC_8301_BITS = 1024
"""RFC 8301 §3.2: verifiers MUST NOT consider signatures with smaller RSA keys valid."""
MAX_RSA_BITS = 8192
"""Larger RSA keys are refused: their operations cost a verifier too much."""
MAX_KEY_RECORD = 8192
"""Octets of one key record."""
KEY_RECORD_TAGS = frozenset({"v", "h", "k", "p", "s", "t"})
"""The key record tags of RFC 6376 §3.6.1 that a verifier reads; any other (``n=``,
notes for people, among them) is ignored, however written."""


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
        raise permerror(Failure.KEY_UNUSABLE, f"key record at {name} is too long")
    fields = _record_fields(record)
    if fields.malformed is not None:
        raise permerror(
            Failure.KEY_UNUSABLE, f"key record at {name} is malformed: {fields.malformed}"
        )
    if not fields.dkim1:
        # §3.6.1: records with another version are discarded.  (That v= comes
        # first binds whoever publishes the record; a verifier gains nothing by
        # refusing a DKIM1 record that lists it later, and none of the others do.)
        raise permerror(Failure.KEY_UNUSABLE, f"key record at {name} is not v=DKIM1")
    if not fields.sha256:
        raise permerror(Failure.KEY_UNUSABLE, f"key record at {name} does not allow sha256 (h=)")
    key_type = fields.key_type
    if key_type != signature.key_type:
        raise permerror(
            Failure.KEY_UNUSABLE,
            f"key record at {name} is k={key_type}, the signature a={signature.algorithm}",
        )
    if not fields.email:
        raise permerror(Failure.KEY_UNUSABLE, f"key record at {name} is not for email (s=)")
    if fields.strict and signature.identity and signature.identity_domain != signature.domain:
        raise permerror(
            Failure.KEY_UNUSABLE, f"key record at {name} has t=s: i= must be in d= itself"
        )
    if fields.p is None:
        raise permerror(Failure.KEY_UNUSABLE, f"key record at {name} has no p=")
    data = fields.data
    if data is None:  # not base64: say so as for any other base64 value
        data = base64_value(fields.p, f"p= of the key record at {name}")
    if not data:
        raise permerror(Failure.KEY_UNUSABLE, f"key at {name} is revoked (empty p=)")
    key = _load_key(data, key_type, name, minimum_bits)
    return PublicKey(key, fields.testing)


@dataclass(frozen=True)
class _RecordFields:
    """What a key record says, whichever signature it is checked for."""

    malformed: str | None
    """Why the record is no tag list, or None."""
    dkim1: bool = True
    sha256: bool = True
    """Its ``h=`` (if any) allows sha256."""
    key_type: str = "rsa"
    email: bool = True
    """Its ``s=`` (if any) allows email."""
    strict: bool = False
    """``t=s``: ``i=`` must be in ``d=`` itself."""
    testing: bool = False
    p: bytes | None = None
    """``p=`` as written, None when the record has none."""
    data: bytes | None = None
    """``p=`` decoded, None when it is absent or not base64."""


@functools.lru_cache(maxsize=1024)
def _record_fields(record: bytes) -> _RecordFields:
    """The tags of ``record`` (at most MAX_KEY_RECORD octets), read once for the many
    messages signed with one key."""
    # A TXT record is no header field: a line break in it is a blank like any other.
    text = record.replace(b"\r\n", b" ").replace(b"\n", b" ").replace(b"\r", b" ")
    try:
        tags = parse_tag_list(text, KEY_RECORD_TAGS, strict_values=False)
    except ValueError as err:
        return _RecordFields(str(err))
    if "v" in tags and plain(tags["v"]).upper() != "DKIM1":
        return _RecordFields(None, dkim1=False)
    if "h" in tags and "sha256" not in colon_list(tags["h"]):
        return _RecordFields(None, sha256=False)
    key_type = plain(tags.get("k", b"rsa")).lower()
    services = colon_list(tags.get("s", b"*"))
    flags = colon_list(tags.get("t", b""))
    p = tags.get("p")
    data: bytes | None = None
    if p is not None:
        try:
            data = base64_value(p, "p=")
        except _Verdict:
            data = None
    return _RecordFields(
        None,
        key_type=key_type,
        email="*" in services or "email" in services,
        strict="s" in flags,
        testing="y" in flags,
        p=p,
        data=data,
    )


def _load_key(
    data: bytes, key_type: str, name: str, minimum_bits: int
) -> rsa.RSAPublicKey | ed25519.Ed25519PublicKey:
    loaded = _public_key(data, key_type)
    if loaded is None:
        what = "a 32-octet Ed25519 key" if key_type == "ed25519" else "an RSA key"
        raise permerror(Failure.KEY_UNUSABLE, f"key at {name} is not {what}")
    key, bits = loaded
    if bits:  # an RSA key
        if bits < minimum_bits:
            # RFC 8301 invalidates keys under 1024 bits; a larger one refused only by a
            # stricter MinimumKeyBits is this site's policy (RFC 8601 "policy", as OpenDKIM).
            result = DkimResult.POLICY if bits >= RFC_8301_BITS else DkimResult.PERMERROR
            raise _Verdict(
                result,
                Failure.KEY_UNUSABLE,
                f"key at {name} has {bits} bits, fewer than MinimumKeyBits {minimum_bits}",
            )
        if bits > MAX_RSA_BITS:
            raise permerror(
                Failure.KEY_UNUSABLE,
                f"key at {name} has {bits} bits, more than {MAX_RSA_BITS}",
            )
    return key


@functools.lru_cache(maxsize=1024)
def _public_key(
    data: bytes, key_type: str
) -> tuple[rsa.RSAPublicKey | ed25519.Ed25519PublicKey, int] | None:
    """The key ``p=`` holds and its bits (0 for Ed25519), or None; parsed once for the
    many signatures that share it."""
    if key_type == "ed25519":
        if len(data) != 32:
            return None
        return ed25519.Ed25519PublicKey.from_public_bytes(data), 0
    key: object
    try:
        key = serialization.load_der_public_key(data)
    except (ValueError, TypeError):
        key = _pkcs1_key(data)
    return (key, key.key_size) if isinstance(key, rsa.RSAPublicKey) else None


def _pkcs1_key(data: bytes) -> object:
    """Some records hold the bare PKCS#1 RSAPublicKey rather than SubjectPublicKeyInfo."""
    pem = b"-----BEGIN RSA PUBLIC KEY-----\n" + base64.encodebytes(data)
    try:
        return serialization.load_pem_public_key(pem + b"-----END RSA PUBLIC KEY-----\n")
    except (ValueError, TypeError):
        return None


def choose_record(records: Sequence[bytes], signature: Signature, minimum_bits: int) -> PublicKey:
    """RFC 6376 §3.6.2.2: several records at one name make the result undefined.

    One usable record among them is used; several different usable keys, or
    none, give PERMFAIL.
    """
    name = signature.key_name
    if not records:
        raise permerror(Failure.NO_KEY, f"no key record at {name}")
    found: list[PublicKey] = []
    problem: _Verdict | None = None
    for record in records:
        try:
            found.append(parse_key_record(record, signature, minimum_bits))
        except _Verdict as verdict:
            problem = problem or verdict
    # Records with the same p= share one parsed key (_public_key's cache); only
    # different encodings of one key need comparing as DER.
    distinct = {id(k.key) for k in found}
    if len(distinct) > 1 and len({_key_bytes(k.key) for k in found}) > 1:
        raise permerror(Failure.KEY_UNUSABLE, f"{len(records)} different key records at {name}")
    if not found:
        assert problem is not None
        raise problem
    return found[0]


def _key_bytes(key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
