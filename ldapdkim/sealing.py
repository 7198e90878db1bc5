"""Sealed private keys: a key entry's private key encrypted under a key-encryption key.

A sealed value is what ``dkimSignPrivateKey`` holds instead of a plaintext
key.  It is ASCII text of five fields joined by colons::

    sealed:v1:KEK-ID:NONCE:CIPHERTEXT

``sealed`` and ``v1`` say what it is and which version of this format;
``KEK-ID`` names the key-encryption key (KEK) that sealed it, as the
``KeyEncryptionKey`` lines of ldapdkim.conf name theirs (letters, digits,
``.``, ``_`` and ``-``, at most 64, starting with a letter or digit);
``NONCE`` is the 12-byte AES-GCM nonce and ``CIPHERTEXT`` the AES-256-GCM
encryption of the key's PKCS #8 DER followed by the 16-byte tag, both in
base64 (RFC 4648 §4, with padding).

The additional authenticated data binds the value to its key's identity::

    b"ldapdkim sealed key v1\\0" KEK-ID \\0 DOMAIN \\0 SELECTOR \\0 ALGORITHM

with the signing domain in lower-case A-labels, the selector in lower case
and the ``a=`` algorithm name.  A sealed value copied to another domain's
entry, to another selector, or presented as another algorithm does not
decrypt, and neither does one whose KEK id was edited.

The domain is one of the ``dkimSignDomainName`` values of the key's domain
entry: the tools seal under the first in sorted order (:func:`domain_of`),
and a value opens under any of them (:func:`unseal_as_any`), as a key signs
for every alias of its entry.

Nothing here reads configuration or the directory, and no error message
carries key material.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ldapdkim import keys
from ldapdkim.errors import KeyFormatError, KeyUnavailable
from ldapdkim.model import Algorithm, PrivateKey

PREFIX = b"sealed:v1:"
"""How every sealed value starts; no plaintext key form (PEM, DER, base64) can."""
KEK_BYTES = 32
"""A key-encryption key is 32 random bytes (AES-256)."""
NONCE_BYTES = 12
_TAG_BYTES = 16
_AAD_LABEL = b"ldapdkim sealed key v1\x00"
KEK_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
"""The syntax of a KEK id."""


@dataclass(frozen=True)
class KeyIdentity:
    """What a sealed value is bound to: the key it is, wherever its entry lives."""

    domain: str
    selector: str
    algorithm: Algorithm

    def aad(self, kek_id: str) -> bytes:
        """The AEAD additional data for this key sealed under ``kek_id``."""
        parts = (kek_id, self.domain.lower(), self.selector.lower(), self.algorithm.value)
        return _AAD_LABEL + b"\x00".join(part.encode("ascii") for part in parts)

    def __str__(self) -> str:
        return f"d={self.domain} s={self.selector} a={self.algorithm.value}"


@dataclass(frozen=True)
class KeyEncryptionKey:
    """One KEK: its id and its 32 bytes, which no ``repr`` shows."""

    kek_id: str
    key: bytes = field(repr=False, compare=False)
    origin: str = ""
    """Where it was read from (a file, a systemd credential), for messages."""

    def __post_init__(self) -> None:
        if KEK_ID.match(self.kek_id) is None:
            raise KeyFormatError(
                f"KEK id {self.kek_id!r} is not valid; use letters, digits, '.', '_' and '-' "
                "(at most 64, starting with a letter or digit)"
            )
        if len(self.key) != KEK_BYTES:
            raise KeyFormatError(
                f"KEK {self.kek_id!r}{self._where()} holds {len(self.key)} bytes, not "
                f"{KEK_BYTES}; make a new one with 'ldapdkim keys new-kek PATH'"
            )

    def _where(self) -> str:
        return f" ({self.origin})" if self.origin else ""


@dataclass(frozen=True)
class Sealed:
    """A sealed value taken apart (not yet opened)."""

    kek_id: str
    nonce: bytes
    ciphertext: bytes


def parse(value: bytes) -> Sealed:
    """Take a sealed value apart, checking its syntax (not whether it opens).

    Raises:
        KeyFormatError: not a well-formed sealed value of a version this ldapdkim reads.
    """
    text = value.strip()
    if not text.startswith(keys.SEALED_PREFIX):
        raise KeyFormatError("the value is not a sealed key")
    fields = text.split(b":")
    if len(fields) != 5 or fields[1] != b"v1":
        version = fields[1].decode("ascii", "replace") if len(fields) > 1 else "?"
        if len(fields) > 1 and fields[1] != b"v1":
            raise KeyFormatError(
                f"the sealed key is of version {version!r}, which this ldapdkim does not read; "
                "upgrade ldapdkim or seal the key again with 'ldapdkim keys rewrap'"
            )
        raise KeyFormatError("the sealed key is damaged (it does not have five fields)")
    kek_id = fields[2].decode("ascii", "replace")
    if KEK_ID.match(kek_id) is None:
        raise KeyFormatError("the sealed key is damaged (its KEK id is not valid)")
    try:
        nonce = base64.b64decode(fields[3], validate=True)
        ciphertext = base64.b64decode(fields[4], validate=True)
    except binascii.Error:
        raise KeyFormatError("the sealed key is damaged (its base64 is broken)") from None
    if len(nonce) != NONCE_BYTES or len(ciphertext) <= _TAG_BYTES:
        raise KeyFormatError("the sealed key is damaged (nonce or ciphertext has a wrong length)")
    return Sealed(kek_id, nonce, ciphertext)


def seal(der: bytes, kek: KeyEncryptionKey, identity: KeyIdentity) -> bytes:
    """The sealed value of a private key in PKCS #8 DER, for the key ``identity`` names."""
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(kek.key).encrypt(nonce, der, identity.aad(kek.kek_id))
    return b":".join(
        [PREFIX.rstrip(b":"), kek.kek_id.encode("ascii"), base64.b64encode(nonce),
         base64.b64encode(ciphertext)]
    )  # fmt: skip


def unseal(value: bytes, keks: Mapping[str, KeyEncryptionKey], identity: KeyIdentity) -> bytes:
    """The PKCS #8 DER a sealed value holds, for the key ``identity`` names.

    Raises:
        KeyFormatError: the value is not a well-formed sealed value.
        KeyUnavailable: its KEK is not among ``keks``, or it does not open with it
            (damaged, sealed for another key entry, or another KEK of the same id).
    """
    sealed = parse(value)
    kek = keks.get(sealed.kek_id)
    if kek is None:
        known = ", ".join(sorted(keks)) or "none"
        raise KeyUnavailable(
            f"it is sealed with KEK {sealed.kek_id!r}, which this host does not have "
            f"(configured: {known}); add 'KeyEncryptionKey {sealed.kek_id} PATH' to "
            "ldapdkim.conf"
        )
    try:
        return AESGCM(kek.key).decrypt(sealed.nonce, sealed.ciphertext, identity.aad(kek.kek_id))
    except InvalidTag:
        raise KeyUnavailable(
            f"it does not open with KEK {sealed.kek_id!r} as the key {identity}: the value "
            "was damaged, copied from another key entry, or sealed with another KEK of that "
            "id; seal this entry's key again from its source"
        ) from None


def domain_of(names: Sequence[str]) -> str | None:
    """The domain a key of a domain entry with these ``dkimSignDomainName`` values is
    sealed for: the first in sorted order (None for an entry without a name)."""
    return min((name.lower() for name in names), default=None)


def seal_key(private: PrivateKey, kek: KeyEncryptionKey, identity: KeyIdentity) -> bytes:
    """The sealed value of a parsed private key (its PKCS #8 DER is sealed)."""
    return seal(keys.private_der(private), kek, identity)


def stored_value(
    private: PrivateKey, kek: KeyEncryptionKey | None, domain: str, selector: str
) -> bytes:
    """What ``dkimSignPrivateKey`` of a new key entry holds: the key sealed with ``kek``
    for ``domain`` and ``selector``, or without a KEK its PEM."""
    if kek is None:
        return keys.private_pem(private)
    return seal_key(private, kek, KeyIdentity(domain, selector, keys.algorithm_of(private)))


def unseal_as_any(
    value: bytes, keks: Mapping[str, KeyEncryptionKey], identities: Sequence[KeyIdentity]
) -> tuple[bytes, KeyIdentity]:
    """:func:`unseal` under the first of ``identities`` it opens as (a key's entry may have
    several domain names); the PKCS #8 DER and that identity.

    Raises:
        KeyFormatError: the value is not a well-formed sealed value.
        KeyUnavailable: as :func:`unseal` for the first identity, when none opens it.
    """
    first: KeyUnavailable | None = None
    for identity in identities:
        try:
            return unseal(value, keks, identity), identity
        except KeyUnavailable as err:
            if parse(value).kek_id not in keks:
                raise
            first = first or err
    raise first or KeyUnavailable("it names no domain to open it as")
