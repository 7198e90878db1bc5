"""Canonicalization of header fields and splitting of messages (RFC 6376 §3.4, §3.7).

The signer and the verifier both split, canonicalize and hash through this
module, so the two directions cannot drift apart.  The body's
canonicalization is :mod:`ldapdkim.signing.bodyhash`'s.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from ldapdkim.model import Header
from ldapdkim.signing.bodyhash import crlf_line_ends
from ldapdkim.signing.taglist import strip_fws

_WSP_RUN = re.compile(rb"[ \t]+")


def canonical_header(name: bytes, value: bytes, relaxed: bool) -> bytes:
    """One header field, canonicalized, ending in CRLF (``value`` follows the colon)."""
    if not relaxed:
        return name + b":" + value
    unfolded = value.replace(b"\r\n", b"")
    if b"\t" in unfolded or b"  " in unfolded:  # else every run of WSP is one SP already
        unfolded = _WSP_RUN.sub(b" ", unfolded)
    return name.strip(b" \t").lower() + b":" + unfolded.strip(b" \t") + b"\r\n"


def hash_header_fields(
    headers: Sequence[Header], names: Sequence[bytes], signature_field: Header, *, relaxed: bool
) -> bytes:
    """The SHA-256 of the header fields ``names`` selects and of the signature field (§3.7).

    ``names`` are lowercase, as in ``h=``.  Each takes the bottom-most
    instance of its field not taken yet; a name with no instance left
    contributes nothing (§5.4.2).  ``signature_field`` has an empty ``b=``
    value and is hashed without its final CRLF.
    """
    named = set(names)
    by_name: dict[bytes, list[Header]] = {}
    for name, value in headers:
        key = name.strip(b" \t").lower()
        if key in named:
            by_name.setdefault(key, []).append((name, value))
    digest = hashlib.sha256()
    for wanted in names:
        instances = by_name.get(wanted)
        if instances:
            digest.update(canonical_header(*instances.pop(), relaxed))
    own = canonical_header(*signature_field, relaxed)
    digest.update(own[:-2] if own.endswith(b"\r\n") else own)
    return digest.digest()


def without_b_value(value: bytes) -> bytes:
    """The field value with the ``b=`` tag's value (and its surrounding FWS) deleted (§3.7)."""
    specs = value.split(b";")
    for i, spec in enumerate(specs):
        name, equals, _ = spec.partition(b"=")
        if equals and b"b" in name and strip_fws(name) == b"b":  # most names hold no b
            specs[i] = spec[: spec.index(b"=") + 1]
    return b";".join(specs)


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
