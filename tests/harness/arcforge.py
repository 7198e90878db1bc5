"""Make ARC chains (RFC 8617) with any tags, valid or not, to test a verifier clause by clause.

Each set is signed with ``harness.forge`` (dkimpy's canonicalization and
header selection), so ldapdkim's verifier is not checked against its own
sealer.  ``forge_chain(n)`` stacks n valid sets; its ``tweak`` rewrites the
tag text of any field before it is signed, to break one rule at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from harness.forge import (
    BODY,
    HEADERS,
    Forged,
    Header,
    PrivateKey,
    ed25519_key,
    forge,
    key_record,
)

DOMAIN = "example.org"
SELECTOR = "arc"
KEY_NAME = f"{SELECTOR}._domainkey.{DOMAIN}"
TIMESTAMP = 1796644800  # 2026-12-07

Tweak = Callable[[int, str, str], str]
"""``tweak(instance, kind, text)``: the text to sign for field ``kind`` ("aar", "ams", "as")."""


def _same(instance: int, kind: str, text: str) -> str:
    return text


@dataclass(frozen=True)
class Chain(Forged):
    """A message with an ARC chain: its header fields, newest set on top, and its body."""

    def field(self, name: str, instance: int) -> int:
        """The position of ``name``'s field of ``instance``."""
        for index, (field_name, value) in enumerate(self.headers):
            if field_name.lower() == name.lower().encode() and f"i={instance};" in value.decode():
                return index
        raise LookupError(f"no {name} of instance {instance}")


def ams_tags(instance: int, algorithm: str) -> str:
    return (
        f"i={instance}; a={algorithm}; c=relaxed/relaxed; d={DOMAIN}; s={SELECTOR}; "
        f"t={TIMESTAMP}; h=from:to:subject:date; bh=@; b="
    )


def seal_tags(instance: int, algorithm: str, cv: str) -> str:
    return f"i={instance}; a={algorithm}; cv={cv}; d={DOMAIN}; s={SELECTOR}; t={TIMESTAMP}; b="


def add_set(
    chain: Chain,
    key: PrivateKey,
    instance: int,
    *,
    cv: str | None = None,
    tweak: Tweak = _same,
    seal_scope: Sequence[Header] | None = None,
) -> Chain:
    """``chain`` with set ``instance`` on top; the seal covers ``seal_scope`` (the earlier
    ARC fields, oldest first) when given, else every earlier set in instance order."""
    algorithm = "ed25519-sha256" if key is ed25519_key() else "rsa-sha256"
    cv = cv or ("none" if instance == 1 else "pass")
    aar_text = tweak(instance, "aar", f"i={instance}; mx.{DOMAIN}; dkim=pass header.d=example.com")
    aar: Header = (b"ARC-Authentication-Results", f" {aar_text}\r\n".encode())
    text = tweak(instance, "ams", ams_tags(instance, algorithm))
    signed = forge(text, key, headers=chain.headers, body=chain.body, name=b"ARC-Message-Signature")
    ams = signed.headers[0]
    if seal_scope is None:
        kinds = ("ARC-Authentication-Results", "ARC-Message-Signature", "ARC-Seal")
        seal_scope = [chain.headers[chain.field(k, i)] for i in range(1, instance) for k in kinds]
    scope = [*seal_scope, aar, ams]
    names = [name.decode().lower() for name, _ in scope]
    text = tweak(instance, "as", seal_tags(instance, algorithm, cv))
    # forge takes fields from the bottom up: hand them newest first.
    sealed = forge(text, key, headers=scope[::-1], body=b"", sign=names, name=b"ARC-Seal")
    return Chain([sealed.headers[0], ams, aar, *chain.headers], chain.body)


def forge_chain(
    sets: int,
    key: PrivateKey | None = None,
    *,
    tweak: Tweak = _same,
    headers: Sequence[Header] = HEADERS,
    body: bytes = BODY,
) -> Chain:
    """A chain of ``sets`` sets over ``headers`` and ``body``, each sealed by ``key``."""
    key = key or ed25519_key()
    chain = Chain(list(headers), body)
    for instance in range(1, sets + 1):
        chain = add_set(chain, key, instance, tweak=tweak)
    return chain


def keys(
    key: PrivateKey | None = None, tags: str = "v=DKIM1; k={k}; p={p}"
) -> Callable[[str], list[bytes]]:
    """A lookup that answers the chain's key name with ``key``'s record."""
    record = key_record(key or ed25519_key(), tags)
    return lambda name: [record] if name == KEY_NAME else []
