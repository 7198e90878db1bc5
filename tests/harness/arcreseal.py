"""Read and sign again the ARC sets of an existing chain, whatever its tags now say.

A mutated ARC set is only a test of the clause it breaks when everything else
about it still verifies: a ``cv=pass`` at ``i=1`` whose seal no longer
verifies proves nothing about the ``cv=`` rule.  :func:`reseal` signs the
ARC-Seals again, and :func:`resign_ams` an ARC-Message-Signature, over
whatever the fields now say.  The hashing is dkimpy's canonicalization and
header selection (as :mod:`harness.forge` does for DKIM), so a test of
ldapdkim's verifier does not seal with the code it is testing.

Header fields are ``(name, value)`` with the value as it follows the colon,
folds and the final CRLF included.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, utils
from dkim.canonicalization import CanonicalizationPolicy, Relaxed

from harness.forge import Header, PrivateKey, body_hash

AAR = b"arc-authentication-results"
AMS = b"arc-message-signature"
AS = b"arc-seal"
ARC_FIELDS = (AAR, AMS, AS)

KeyFor = Callable[[str, str], PrivateKey]
"""(d=, s=) -> the private key to sign with."""

_AAR_INSTANCE = re.compile(rb"^\s*i\s*=\s*(\d+)\s*;")


def tags(value: bytes) -> list[tuple[str, str]]:
    """The tag list of an AMS or AS value, names and values stripped of FWS at their ends."""
    out = []
    for spec in value.decode("utf-8", "replace").split(";"):
        name, equals, text = spec.partition("=")
        if equals:
            out.append(
                (
                    name.strip(),
                    re.sub(r"\s+", "", text) if name.strip() in ("b", "bh") else text.strip(),
                )
            )
    return out


def tag(value: bytes, name: str) -> str | None:
    for key, text in tags(value):
        if key == name:
            return text
    return None


def render(tag_list: Sequence[tuple[str, str]]) -> bytes:
    """A tag list as a field value: one space before, '; ' between, CRLF after."""
    return (" " + "; ".join(f"{k}={v}" for k, v in tag_list) + "\r\n").encode()


def instance(name: bytes, value: bytes) -> int | None:
    """The i= of an ARC field (the AAR's leading one), None when it has none readable."""
    if name.lower() == AAR:
        match = _AAR_INSTANCE.match(value)
        return int(match.group(1)) if match else None
    text = tag(value, "i")
    return int(text) if text is not None and text.isdigit() else None


def with_b(value: bytes, signature: str) -> bytes:
    """``value`` (a tag list ending in ``b=``) with the signature filled in after ``b=``."""
    head = value.rstrip(b"\r\n")
    return head + signature.encode() + b"\r\n"


def _sign(key: PrivateKey, digest: bytes) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(digest)
    else:
        signature = key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    return base64.b64encode(signature).decode()


def _empty_b(tag_list: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The tags with b= moved last and empty, ready to hash and then :func:`with_b`."""
    return [(k, v) for k, v in tag_list if k != "b"] + [("b", "")]


def _relaxed(name: bytes, value: bytes) -> bytes:
    [(n, v)] = Relaxed.canonicalize_headers([(name, value)])
    return bytes(n) + b":" + bytes(v)


def seal_signature(set_fields: Sequence[Header], key: PrivateKey) -> str:
    """The b= of the last field, an ARC-Seal whose own b= is empty: RFC 8617 §5.1.1
    hashes the fields of every set up to its own, in increasing instance order (AAR,
    AMS, AS within a set), relaxed, the seal's own last without its CRLF."""
    lines = [_relaxed(n, v) for n, v in set_fields]
    lines[-1] = lines[-1].rstrip(b"\r\n")
    digest = hashlib.sha256(b"".join(lines)).digest()
    return _sign(key, digest)


def ams_signature(
    headers: Sequence[Header], value: bytes, key: PrivateKey, canon: str = "relaxed/relaxed"
) -> str:
    """The b= of an ARC-Message-Signature ``value`` (b= empty, last) over ``headers``
    (the fields above which it is added), as DKIM hashes a DKIM-Signature."""
    h = tag(value, "h") or ""
    sign = [n.strip().lower().encode() for n in h.split(":") if n.strip()]
    policy = CanonicalizationPolicy.from_c_value(canon.encode())
    canonical = policy.canonicalize_headers([[n, v] for n, v in headers])
    hasher = hashlib.sha256()
    dkim.hash_headers(hasher, policy, canonical, sign, (b"ARC-Message-Signature", value), {})
    return _sign(key, hasher.digest())


def arc_sets(headers: Sequence[Header]) -> dict[int, dict[bytes, list[int]]]:
    """instance -> field name (lowercase) -> positions in ``headers``."""
    out: dict[int, dict[bytes, list[int]]] = {}
    for position, (name, value) in enumerate(headers):
        if name.lower() in ARC_FIELDS:
            i = instance(name, value)
            if i is not None:
                out.setdefault(i, {}).setdefault(name.lower(), []).append(position)
    return out


def reseal(headers: list[Header], key_for: KeyFor, start: int = 1) -> None:
    """Sign again, in place, every ARC-Seal of instance ``start`` and above, in increasing
    order, over the sets as they now are (the first field of each name in each set)."""
    sets = arc_sets(headers)
    covered: list[Header] = []
    for i in sorted(sets):
        fields = sets[i]
        for name in ARC_FIELDS:
            if name not in fields:
                continue
            position = fields[name][0]
            field_name, value = headers[position]
            if name == AS and i >= start:
                unsigned = render(_empty_b(tags(value)))
                d, s = tag(value, "d") or "", tag(value, "s") or ""
                signature = seal_signature([*covered, (field_name, unsigned)], key_for(d, s))
                value = with_b(unsigned, signature)
                headers[position] = (field_name, value)
            covered.append((field_name, value))


def resign_ams(
    headers: list[Header],
    body: bytes,
    position: int,
    key_for: KeyFor,
    *,
    canon: str | None = None,
    body_hash_too: bool = True,
) -> None:
    """Sign again, in place, the ARC-Message-Signature at ``position`` over the fields
    below it (those above were added later) and ``body``; ``canon`` is the
    canonicalization to hash with, when c= does not say it (default: what c= says,
    relaxed/relaxed when absent)."""
    name, value = headers[position]
    tag_list = tags(value)
    canon = canon or tag(value, "c") or "relaxed/relaxed"
    if body_hash_too:
        digest = body_hash(body, canon.partition("/")[2] or "simple")
        tag_list = [(k, digest if k == "bh" else v) for k, v in tag_list]
    unsigned = render(_empty_b(tag_list))
    d, s = tag(value, "d") or "", tag(value, "s") or ""
    below = list(headers[position + 1 :])
    signature = ams_signature(below, unsigned, key_for(d, s), canon)
    headers[position] = (name, with_b(unsigned, signature))


def key_lookup(keys: Mapping[tuple[str, str], PrivateKey], fallback: PrivateKey) -> KeyFor:
    """A :data:`KeyFor` over a table; ``fallback`` for a (d=, s=) a mutation made up."""
    return lambda d, s: keys.get((d.lower(), s), fallback)
