"""DKIM signatures for one message: create them (RFC 6376, RFC 8463).

Messages are split, and header fields canonicalized and hashed, by
:mod:`ldapdkim.signing.canonicalization`, the verifier's own, so that what is
signed is what the verifier checks.  The private-key step is a
:class:`~ldapdkim.signing.keyring.KeySigner`'s: a key in memory (OpenSSL
through ``cryptography``, which releases the GIL while signing), a sealed key
opened in memory, or a key in a PKCS #11 token.  This module does not know
which.

The signature header is folded before it is hashed, and ``b=`` starts a line
of its own, so the bytes that were hashed are exactly the bytes inserted: the
signature holds with ``simple`` header canonicalization too.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Sequence

from ldapdkim.errors import MessageError
from ldapdkim.model import Header, SigningParams
from ldapdkim.signing.bodyhash import BodyHasher
from ldapdkim.signing.canonicalization import hash_header_fields, split_message
from ldapdkim.signing.keyring import KeySigner

DEFAULT_SIGN_HEADERS: tuple[str, ...] = (
    # RFC 6376 §5.4.1 (From is REQUIRED, §5.4)
    "from",
    "sender",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "to",
    "cc",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-id",
    "content-description",
    "resent-date",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
    "resent-message-id",
    "in-reply-to",
    "references",
    "list-id",
    "list-help",
    "list-unsubscribe",
    "list-subscribe",
    "list-post",
    "list-owner",
    "list-archive",
)
"""The header fields signed when present, unless the policy lists its own.

RFC 4871 §5.5's list, in its order: the fields RFC 6376 §5.4.1 says SHOULD
be signed, with Sender, Message-ID, Resent-Sender, Resent-Message-ID and the
MIME fields that RFC 4871 also named (dkimpy signs the same list, so ``h=``
reads as it always did).
"""

_LINE = 78


def select_header_names(headers: Sequence[Header], params: SigningParams) -> list[bytes]:
    """The ``h=`` list: each wanted field once per occurrence, oversigned ones once more.

    From is always signed (RFC 6376 §5.4).
    """
    wanted, oversigned = _header_names(params.sign_headers, params.oversign_headers)
    return [n.lower() for n, _ in headers if n.lower() in wanted] + oversigned


@functools.lru_cache(maxsize=256)
def _header_names(
    sign_headers: tuple[str, ...] | None, oversign_headers: tuple[str, ...]
) -> tuple[frozenset[bytes], list[bytes]]:
    """The names to sign when present (lowercase, From among them) and the oversigned
    names in order, for a policy's lists: worked out once, not per message.

    A name that is not ASCII matches no field (field names are ASCII, RFC 5322 §2.2).
    """
    wanted = sign_headers if sign_headers is not None else DEFAULT_SIGN_HEADERS
    names = {w.lower() for w in wanted} | {"from"}
    oversigned = sorted({o.lower() for o in oversign_headers})
    return (
        frozenset(n.encode("ascii") for n in names if n.isascii()),
        [n.encode("ascii") for n in oversigned],
    )


def fold_tags(tags: Sequence[tuple[str, str]], field_name: str = "DKIM-Signature") -> bytes:
    """The value of a ``field_name`` field for ``tags``, folded near 78 columns, ending in
    an empty ``b=`` (ARC's fields are folded here too).

    ``b=`` comes last, on a line of its own, so that inserting the signature
    changes nothing before it.  ``h=`` may fold after a colon (RFC 6376 §3.5).
    """
    lines: list[str] = []
    current = ""
    indent = len(field_name) + 2

    def add(token: str, joiner: str) -> None:
        nonlocal current, indent
        if current and indent + len(current) + len(joiner) + len(token) + 1 > _LINE:
            lines.append(current)
            current, indent = token, 8
        else:
            current = f"{current}{joiner}{token}" if current else token

    for name, value in tags:
        if name == "h":
            parts = value.split(":")
            for i, part in enumerate(parts):
                token = part + (":" if i < len(parts) - 1 else "")
                add(f"h={token}" if i == 0 else token, " " if i == 0 else "")
        else:
            add(f"{name}={value}", " ")
        current += ";"
    lines.append(current)
    return (" " + "\r\n\t".join(lines) + "\r\n\tb=").encode("ascii")


def fold_signature(signature: bytes) -> bytes:
    """The base64 ``b=`` value in 72-character lines (FWS is allowed inside it)."""
    text = base64.b64encode(signature)
    return b"\r\n\t".join(text[i : i + 72] for i in range(0, len(text), 72))


def body_hasher(params: SigningParams) -> BodyHasher:
    """A :class:`BodyHasher` for the body canonicalization of ``params``."""
    return BodyHasher(relaxed=params.canonicalization.body == "relaxed")


def sign_parsed(
    headers: Sequence[Header],
    body: bytes | BodyHasher,
    domain: str,
    signers: Sequence[KeySigner],
    params: SigningParams,
    *,
    timestamp: int,
) -> list[bytes]:
    """One DKIM-Signature value per signer, each folded with CRLF and ending without one.

    The values follow ``DKIM-Signature:`` directly (they start with a space).
    ``body`` is the body itself, or a :func:`body_hasher` that was fed it.

    Raises:
        MessageError: the message cannot be signed (for instance, it has no From).
        KeyUnavailable: a signer could not sign (its token went away).
    """
    if not any(n.lower() == b"from" for n, _ in headers):
        raise MessageError("the message has no From header field")
    relaxed = params.canonicalization.header == "relaxed"
    include = select_header_names(headers, params)
    if isinstance(body, bytes):
        hasher = body_hasher(params)
        hasher.update(body)
    else:
        hasher = body
    body_hash = base64.b64encode(hasher.digest()).decode()
    values = []
    for signer in signers:
        tags = [
            ("v", "1"),
            ("a", signer.algorithm.value),
            ("c", str(params.canonicalization)),
            ("d", domain),
        ]
        if params.identity:
            tags.append(("i", params.identity))
        tags += [("s", signer.selector), ("t", str(timestamp))]
        if params.expire_seconds:
            tags.append(("x", str(timestamp + params.expire_seconds)))
        tags += [("h", ":".join(n.decode("ascii") for n in include)), ("bh", body_hash)]
        unsigned = fold_tags(tags)
        own = (b"DKIM-Signature", unsigned)
        digest = hash_header_fields(headers, include, own, relaxed=relaxed)
        values.append(unsigned + fold_signature(signer.sign_digest(digest)))
    return values


def sign_message(
    message: bytes,
    domain: str,
    signers: Sequence[KeySigner],
    params: SigningParams,
    *,
    timestamp: int,
) -> list[bytes]:
    """:func:`sign_parsed` for a whole message in bytes."""
    headers, body = split_message(message)
    return sign_parsed(headers, body, domain, signers, params, timestamp=timestamp)
