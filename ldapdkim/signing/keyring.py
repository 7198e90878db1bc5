"""The private-key step of signing, behind one interface, for the three kinds of key.

A :class:`KeySigner` signs the SHA-256 digest of a signature's header data
for one key (RSA PKCS #1 v1.5, RFC 6376 §3.3.1; Ed25519, RFC 8463 §3).  The
rest of signing (canonicalization, header selection, tags) never sees how:

- a key in memory: the plaintext key of ``dkimSignPrivateKey``, parsed
  (:class:`MemorySigner`);
- a sealed key: ``dkimSignPrivateKey`` holds a sealed value
  (:mod:`ldapdkim.sealing`), opened with a key-encryption key of
  ldapdkim.conf once per key and process, then a :class:`MemorySigner`;
- a key in a PKCS #11 token: ``dkimSignPrivateKey`` holds an RFC 7512
  ``pkcs11:`` URI, and the token signs (:mod:`ldapdkim.signing.token`).

:class:`Keyring` turns a key entry into its signer.  A key that cannot sign
here raises :class:`~ldapdkim.errors.KeyUnavailable` naming the entry, the
cause and the fix; the caller decides what that means for the message.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from cachetools import LRUCache
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, utils

from ldapdkim import keys, sealing
from ldapdkim.errors import KeyFormatError, KeyUnavailable
from ldapdkim.model import Algorithm, PrivateKey, SigningKey
from ldapdkim.signing.token import Pkcs11Token

if TYPE_CHECKING:
    from ldapdkim.config.settings import Settings


class KeySigner(Protocol):
    """One key's private-key step: the raw signature over a header-data digest."""

    @property
    def selector(self) -> str: ...

    @property
    def algorithm(self) -> Algorithm: ...

    def sign_digest(self, digest: bytes) -> bytes:
        """The signature (``b=`` before base64) over ``digest``, the SHA-256 of the
        canonicalized header data.

        Raises:
            KeyUnavailable: the key could not sign now (its token went away).
        """
        ...


class TokenKeys(Protocol):
    """Keys held in a PKCS #11 token (:class:`ldapdkim.signing.token.Pkcs11Token`)."""

    def signer(self, uri: str, selector: str, algorithm: Algorithm, *, where: str) -> KeySigner:
        """The signer of the token key ``uri``.

        Raises:
            KeyUnavailable: the token or the key cannot be reached now.
            KeyFormatError: ``uri`` is not a usable ``pkcs11:`` URI.
        """
        ...

    def close(self) -> None:
        """Close the sessions with the token (the process is done signing with it)."""
        ...


@dataclass(frozen=True)
class MemorySigner:
    """A key held in this process's memory (plaintext in the directory, or unsealed)."""

    selector: str
    algorithm: Algorithm
    private: PrivateKey = field(repr=False)

    def sign_digest(self, digest: bytes) -> bytes:
        if isinstance(self.private, ed25519.Ed25519PrivateKey):
            # RFC 8463 §3: Ed25519 signs the SHA-256 hash of the header data.
            return self.private.sign(digest)
        return self.private.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


UNSEALED_KEY_CACHE = keys.PARSED_KEY_CACHE
"""How many unsealed keys a process keeps (as parsed keys only, never their DER)."""


class Keyring:
    """Turns key entries into :class:`KeySigner` objects, for every kind of key.

    One per process (the milter's runtime, or a command): the unsealed keys it
    keeps are opened once per key and process, never per message.  Safe to
    use from several threads.
    """

    def __init__(
        self,
        keks: Iterable[sealing.KeyEncryptionKey] = (),
        *,
        require_sealed: bool = False,
        token: TokenKeys | None = None,
        minimum_bits: int = keys.MIN_RSA_BITS,
    ) -> None:
        self.keks = {kek.kek_id: kek for kek in keks}
        self.require_sealed = require_sealed
        self.token = token
        self.minimum_bits = minimum_bits
        self._unsealed: LRUCache = LRUCache(maxsize=UNSEALED_KEY_CACHE)
        self._lock = threading.Lock()

    @classmethod
    def configured(cls, settings: Settings) -> Keyring:
        """The keyring ldapdkim.conf describes (its KEKs, RequireSealedKeys, PKCS11Module)."""
        token: TokenKeys | None = None
        if settings.pkcs11_module is not None:
            token = Pkcs11Token(settings.pkcs11_module, settings.pkcs11_pin)
        return cls(
            settings.key_encryption_keys,
            require_sealed=settings.require_sealed_keys,
            token=token,
            minimum_bits=settings.minimum_key_bits,
        )

    def signer_for(self, key: SigningKey, domain: str, *, names: Sequence[str] = ()) -> KeySigner:
        """The signer of ``key``, a key entry of the signing domain ``domain``.

        ``names``: every ``dkimSignDomainName`` of the key's domain entry; a sealed
        key opens when it was sealed for ``domain`` or any of them (an alias).

        Raises:
            KeyUnavailable: the key cannot sign on this host now; the message names
                the entry, the cause and the fix.
        """
        stored = key.key_data
        where = f"key {key.dn!r}"
        if stored is None:
            raise KeyUnavailable(f"{where} has no private key")
        kind = keys.stored_form(stored)
        try:
            if kind == "sealed":
                identities = [
                    sealing.KeyIdentity(name, key.selector, key.algorithm)
                    for name in dict.fromkeys([domain.lower(), *(n.lower() for n in names)])
                ]
                return MemorySigner(key.selector, key.algorithm, self._open(stored, identities))
            if kind == "token":
                if self.token is None:
                    raise KeyUnavailable(
                        "it is held in a PKCS#11 token and PKCS11Module is not set; set "
                        "PKCS11Module and PKCS11PinFile in ldapdkim.conf"
                    )
                uri = stored.strip().decode("ascii", "replace")
                return self.token.signer(uri, key.selector, key.algorithm, where=where)
            if self.require_sealed:
                raise KeyUnavailable(
                    "it is stored in plaintext and RequireSealedKeys is yes; seal it with "
                    "'ldapdkim keys seal' (or set RequireSealedKeys no)"
                )
            private = keys.private_key_of(key)
            if private is None:  # pragma: no cover - key_data is not None above
                raise KeyUnavailable("it has no private key")
            return MemorySigner(key.selector, key.algorithm, private)
        except KeyUnavailable as err:
            raise KeyUnavailable(f"{where}: {err}", in_token=err.in_token) from None
        except KeyFormatError as err:
            raise KeyUnavailable(f"{where}: {err}") from None

    def _open(self, stored: bytes, identities: Sequence[sealing.KeyIdentity]) -> PrivateKey:
        """The parsed key a sealed value holds, opened once and kept (by value and the
        identities it may open as)."""
        cache_key = (stored.strip(), tuple(identities))
        with self._lock:
            private: PrivateKey | None = self._unsealed.get(cache_key)
        if private is not None:
            return private
        der, identity = sealing.unseal_as_any(stored, self.keks, identities)
        private = keys.load_private_key_once(der, where="the unsealed key")
        del der
        keys.check_key(private, identity.algorithm, self.minimum_bits, where="the unsealed key")
        with self._lock:
            self._unsealed[cache_key] = private
        return private

    def close(self) -> None:
        """Close what the keyring holds open (a token's sessions)."""
        if self.token is not None:
            self.token.close()

    def signers(
        self, signing_keys: Iterable[SigningKey], domain: str, *, names: Sequence[str] = ()
    ) -> list[KeySigner]:
        """:meth:`signer_for` of each key, in order (the first one that cannot sign raises)."""
        return [self.signer_for(key, domain, names=names) for key in signing_keys]
