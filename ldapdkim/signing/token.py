"""Keys held in a PKCS #11 token (RFC 7512 ``pkcs11:`` URIs): signing, and making key pairs.

A key entry whose private key never leaves a token holds the key's
``pkcs11:`` URI (:mod:`ldapdkim.pkcs11uri`) in ``dkimSignPrivateKey`` and its
public key in ``dkimSignPublicKey``.  :class:`Pkcs11Token` is the token of
``PKCS11Module``, logged in with the user PIN of ``PKCS11PinFile``; the
token signs: CKM_RSA_PKCS over the SHA-256 DigestInfo and digest for
rsa-sha256 (RFC 6376 §3.3.1), CKM_EDDSA over the digest for ed25519-sha256
(RFC 8463 §3).  The binding is PyKCS11 (Debian: python3-pykcs11), imported
only when a token is used.

Processes and threads.  The module is loaded and initialised in the process
that signs, at its first signature: a worker process does it after the
fork.  A process forked from one that had the module initialised
initialises it again before use (PKCS #11 v2.40 §6.7.7) and never touches
the parent's sessions.  The module is initialised for threads that call it
at once (``CKF_OS_LOCKING_OK``) and C_SignInit and C_Sign are called
through ctypes, outside the interpreter lock, so that other threads run
while the token signs (:mod:`ldapdkim.signing.pkcs11sign`); a module that
cannot lock is initialised without, and PyKCS11, which holds the
interpreter lock through each call, signs so that calls never overlap.
Each signature takes a session of its own from a small pool
(:data:`MAX_SESSIONS` per token and process), so no two threads share a
session's sign operation; each session keeps the handles of the keys it
found, so a key is looked up once per session, not per message.

Trouble.  A token that cannot sign raises
:class:`~ldapdkim.errors.KeyUnavailable` with ``in_token`` set, naming the
cause and the fix, never the PIN; the milter then answers with
On-InternalError.  A session that breaks is dropped, the module is
initialised again and the signature tried once more at once; if that fails
too, no further attempt is made for :data:`RETRY_AFTER` seconds (each
message meanwhile fails at once with the same reason), then the next
message tries again, so signing resumes by itself when the token is back.
Until a process has signed once, a token that is not there is asked again
after short pauses (:data:`STARTING_PAUSES`, 0.35 s in all) before it counts
as down, so workers that start together do not trip over each other's login.
A PIN the token refuses is not tried again by this :class:`Pkcs11Token`:
repeated logins with a wrong PIN would lock the token.  A reload
(``SIGHUP``, which reads ``PKCS11PinFile`` again) or a restart tries once
more.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ldapdkim.config.secret import Secret
from ldapdkim.errors import KeyFormatError, KeyUnavailable
from ldapdkim.model import Algorithm
from ldapdkim.pkcs11uri import Pkcs11Uri
from ldapdkim.signing.pkcs11lib import (
    _PIN_ERRORS,
    CKF_TOKEN_INITIALIZED,
    CKK_EC_EDWARDS,
    CKM_EC_EDWARDS_KEY_PAIR_GEN,
    CKM_EDDSA,
    CKM_RSA_PKCS,
    ED25519_NAME,
    ED25519_OID,
    SHA256_DIGEST_INFO,
    _binding,
    _close,
    _code,
    _int,
    _key_part,
    _matches_library,
    _matches_slot,
    _matches_token,
    _module,
    _parse,
    _text,
)

log = logging.getLogger(__name__)

RETRY_AFTER = 5.0
"""Seconds after a token failure before a message tries the token again."""
STARTING_PAUSES = (0.05, 0.1, 0.2)
"""Pauses (seconds) between the first attempts of a process, before its token has
signed once: a worker that starts while another logs in can find SoftHSM2's
file store mid-update (no token, or CKR_GENERAL_ERROR) for a moment."""
MAX_SESSIONS = 8
"""Sessions a process keeps open with one token at most (signatures in flight)."""


# -- sessions -------------------------------------------------------------------------


@dataclass
class _Session:
    """An open session with one token, used by one signature at a time."""

    session: Any
    generation: int
    token_label: str
    handles: dict[Pkcs11Uri, Any] = field(default_factory=dict)
    signed: bool = False
    """It has made a signature (so a failure now means that something changed)."""


@dataclass(frozen=True)
class TokenSigner:
    """A key in a token (a :class:`~ldapdkim.signing.keyring.KeySigner`)."""

    selector: str
    algorithm: Algorithm
    key: Pkcs11Uri
    token: Pkcs11Token = field(repr=False, compare=False)
    where: str = ""
    """The key entry, for messages (``key 'dkimSignSelector=...'``)."""

    def sign_digest(self, digest: bytes) -> bytes:
        try:
            return self.token.sign(self.key, self.algorithm, digest)
        except KeyUnavailable as err:
            raise KeyUnavailable(f"{self.where}: {err}", in_token=err.in_token) from None


class Pkcs11Token:
    """The token of ``PKCS11Module``, logged in with the PIN of ``PKCS11PinFile``.

    Safe to use from several threads; see the module's docstring for processes.
    """

    def __init__(
        self,
        module: Path,
        pin: Secret | None,
        *,
        retry_after: float = RETRY_AFTER,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self.module = module
        self.pin = pin
        self.retry_after = retry_after
        self.max_sessions = max_sessions
        self._module = _module(module)
        self._registered = False
        self._cond = threading.Condition()
        self._idle: dict[Pkcs11Uri, list[_Session]] = {}
        self._busy = 0
        self._down: KeyUnavailable | None = None
        self._down_until = 0.0
        self._pin_refused: KeyUnavailable | None = None
        self._has_signed = False

    def signer(self, uri: str, selector: str, algorithm: Algorithm, *, where: str) -> TokenSigner:
        """The signer of the token key ``uri`` (the token is asked when it signs).

        Raises:
            KeyFormatError: ``uri`` is not a usable ``pkcs11:`` URI.
        """
        return TokenSigner(selector, algorithm, _parse(uri), self, where)

    # -- signing

    def sign(self, key: Pkcs11Uri, algorithm: Algorithm, digest: bytes) -> bytes:
        """The signature of ``key`` over ``digest`` (see the module's docstring).

        Raises:
            KeyUnavailable: the token cannot sign now; ``in_token`` is set unless the
                key itself is wrong for the entry (another algorithm, ambiguous).
        """
        pauses = iter(() if self._has_signed else STARTING_PAUSES)
        while True:
            try:
                return self._sign(key, algorithm, digest)
            except KeyUnavailable as err:
                if err is not self._down:
                    raise
                pause = next(pauses, None)
                if pause is None or self._pin_refused is not None:
                    raise KeyUnavailable(f"{err}{self._retry_note()}", in_token=True) from None
                log.info("PKCS#11 token not ready yet (%s); trying again in %g s", err, pause)
                with self._cond:
                    self._down = None
                time.sleep(pause)

    def _retry_note(self) -> str:
        return (
            f"; ldapdkim tries the token again every {self.retry_after:g} s and signs as soon "
            "as it answers"
        )

    def _sign(self, key: Pkcs11Uri, algorithm: Algorithm, digest: bytes) -> bytes:
        self._check_up()
        for attempt in (1, 2):
            with self._session(key) as held:
                try:
                    handle = self._find_key(held, key, algorithm)
                    if algorithm is Algorithm.ED25519_SHA256:
                        data, mechanism = digest, CKM_EDDSA
                    else:
                        data, mechanism = SHA256_DIGEST_INFO + digest, CKM_RSA_PKCS
                    signature = self._sign_in(held, handle, mechanism, data)
                except _binding().PyKCS11Error as err:
                    held.session = None  # broken: not back into the pool
                    self._module.fail(held.generation)
                    if attempt == 1 and held.signed:
                        log.info("PKCS#11 token %r: %s; trying again", held.token_label, _code(err))
                        continue
                    raise self._went_down(
                        f"the PKCS#11 token {held.token_label!r} failed to sign ({_code(err)}); "
                        "check the token and its module"
                    ) from None
                held.signed = True
            self._came_up()
            return signature
        raise AssertionError("unreachable")  # pragma: no cover

    def _sign_in(self, held: _Session, handle: Any, mechanism: int, data: bytes) -> bytes:
        """C_SignInit and C_Sign in ``held``: outside the interpreter lock when the module
        allows it (:mod:`ldapdkim.signing.pkcs11sign`), else through PyKCS11."""
        module = self._module
        if module.direct is not None:
            return module.sign(
                held.generation, held.session.session.value(), handle.value(), mechanism, data
            )
        return bytes(held.session.sign(handle, data, _binding().Mechanism(mechanism, None)))

    def _check_up(self) -> None:
        if self._pin_refused is not None:
            raise KeyUnavailable(str(self._pin_refused), in_token=True)
        down = self._down
        if down is not None and time.monotonic() < self._down_until:
            raise KeyUnavailable(f"{down}{self._retry_note()}", in_token=True)

    def _went_down(self, cause: str) -> KeyUnavailable:
        """Remember a token failure: no new attempt to sign before :attr:`retry_after`
        seconds."""
        err = KeyUnavailable(cause, in_token=True)
        with self._cond:
            self._down = err
            self._down_until = time.monotonic() + self.retry_after
        return err

    def _came_up(self) -> None:
        self._has_signed = True
        if self._down is not None:
            with self._cond:
                was, self._down = self._down, None
            if was is not None:
                log.info("PKCS#11 token of %s answers again; signing resumed", self.module)

    @contextmanager
    def _session(self, key: Pkcs11Uri) -> Iterator[_Session]:
        """A session with ``key``'s token for this thread alone, back to the pool after."""
        where = key.token_part()
        with self._cond:
            while not self._idle.get(where) and self._busy >= self.max_sessions:
                self._cond.wait()
            idle = self._idle.get(where)
            held = idle.pop() if idle else None
            self._busy += 1
        try:
            if held is not None and held.generation != self._current_generation():
                held = None  # the module was initialised again: the session is gone
            if held is None:
                held = self._open(where)
            yield held
        finally:
            with self._cond:
                self._busy -= 1
                if held is not None and held.session is not None:
                    self._idle.setdefault(where, []).append(held)
                self._cond.notify()

    def _current_generation(self) -> int:
        module = self._module
        return module.generation if not module.stale and module.pid == os.getpid() else -1

    def _open(self, where: Pkcs11Uri, *, read_write: bool = False) -> _Session:
        """A new session with the token ``where`` names, logged in.

        Raises:
            KeyUnavailable: no such token, or it refused the session or the PIN.
        """
        pkcs11 = _binding()
        if not self._registered:
            self._registered = True
            with self._module.lock:
                self._module.users += 1
        try:
            lib, generation = self._module.library()
        except KeyUnavailable as err:
            raise self._went_down(str(err)) from None
        try:
            slot, label = self._find_slot(lib, where)
            flags = pkcs11.CKF_RW_SESSION if read_write else 0
            session = lib.openSession(slot, flags)
        except KeyUnavailable:
            # Some modules (SoftHSM) see a token that came back only when initialised again.
            self._module.fail(generation)
            raise
        except pkcs11.PyKCS11Error as err:
            self._module.fail(generation)
            raise self._went_down(
                f"the PKCS#11 module {self.module} cannot open a session ({_code(err)}); "
                "check the token"
            ) from None
        self._login(session, label, generation)
        return _Session(session, generation, label)

    def _find_slot(self, lib: Any, where: Pkcs11Uri) -> tuple[int, str]:
        """The slot of the one present token that ``where`` matches, and the token's label."""
        found, present = [], []
        if not _matches_library(lib.getInfo(), where):
            info = lib.getInfo()
            raise self._went_down(
                f"PKCS11Module {self.module} is {_text(info.libraryDescription)!r} by "
                f"{_text(info.manufacturerID)!r}, not the library the pkcs11: URI names; "
                "fix its library-* attributes or PKCS11Module"
            )
        for slot in lib.getSlotList(tokenPresent=True):
            token = lib.getTokenInfo(slot)
            if not token.flags & CKF_TOKEN_INITIALIZED:
                continue  # an empty slot's blank token (SoftHSM always has one)
            label = _text(token.label)
            present.append(label)
            if _matches_token(token, where) and _matches_slot(slot, lib, where):
                found.append((slot, label))
        if len(found) == 1:
            return found[0]
        shown = ", ".join(repr(t) for t in present) or "none"
        wanted = str(where) if where.names_token() else "pkcs11:"
        if not found:
            raise self._went_down(
                f"no PKCS#11 token matching {wanted!r} is present in PKCS11Module {self.module} "
                f"(tokens present: {shown}); insert or restore the token, or fix the URI"
            )
        raise self._went_down(
            f"{len(found)} PKCS#11 tokens match {wanted!r} in PKCS11Module {self.module} "
            f"(tokens present: {shown}); name one with token= (or serial=) in the URI"
        )

    def _login(self, session: Any, label: str, generation: int) -> None:
        pkcs11 = _binding()
        if self.pin is None:
            return
        try:
            session.login(self.pin.reveal())
        except pkcs11.PyKCS11Error as err:
            code = _code(err)
            if code == "CKR_USER_ALREADY_LOGGED_IN":
                return
            _close(session)
            if code in _PIN_ERRORS:
                fix = (
                    "unlock it with the SO PIN (the token's tool, e.g. 'softhsm2-util "
                    "--init-pin'), then reload ldapdkim"
                    if code == "CKR_PIN_LOCKED"
                    else "put the token's user PIN in PKCS11PinFile, then reload ldapdkim"
                )
                refused = KeyUnavailable(
                    f"the PKCS#11 token {label!r} refused the PIN of PKCS11PinFile ({code}); "
                    f"{fix}; until then that PIN is not tried again, so as not to lock the token",
                    in_token=True,
                )
                self._pin_refused = refused
                raise refused from None
            self._module.fail(generation)
            raise self._went_down(
                f"the PKCS#11 token {label!r} did not log in ({code}); check the token"
            ) from None

    def _find_key(self, held: _Session, key: Pkcs11Uri, algorithm: Algorithm) -> Any:
        """The handle of ``key``'s private key in this session, found once per session."""
        handle = held.handles.get(key)
        if handle is not None:
            return handle
        pkcs11 = _binding()
        template: list[tuple[int, Any]] = [(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY)]
        if key.label is not None:
            template.append((pkcs11.CKA_LABEL, key.label))
        if key.key_id is not None:
            template.append((pkcs11.CKA_ID, tuple(key.key_id)))
        found = held.session.findObjects(template)
        if not found:
            login = "" if self.pin is not None else " (no PKCS11PinFile: private keys need a login)"
            raise KeyUnavailable(
                f"the PKCS#11 token {held.token_label!r} holds no private key matching "
                f"{_key_part(key)!r}{login}; fix the pkcs11: URI or make the key with "
                "'ldapdkim genkey --pkcs11'",
                in_token=True,
            )
        if len(found) > 1:
            raise KeyUnavailable(
                f"the PKCS#11 token {held.token_label!r} holds {len(found)} private keys "
                f"matching {_key_part(key)!r}; give both object= and id= in the URI"
            )
        kind = held.session.getAttributeValue(found[0], [pkcs11.CKA_KEY_TYPE])[0]
        wanted = CKK_EC_EDWARDS if algorithm is Algorithm.ED25519_SHA256 else pkcs11.CKK_RSA
        if kind != wanted:
            raise KeyUnavailable(
                f"the token key {_key_part(key)!r} is not an {algorithm.value} key "
                "(dkimSignAlgorithm of the entry); fix the entry or its URI"
            )
        held.handles[key] = found[0]
        return found[0]

    # -- making keys

    def generate(
        self, where: Pkcs11Uri, label: str, algorithm: Algorithm, bits: int
    ) -> tuple[Pkcs11Uri, str]:
        """Make a key pair in the token ``where`` names: the private key sensitive and not
        extractable, both labelled ``label`` with a new random CKA_ID.  Returns the
        private key's URI and the ``p=`` value of its DNS record.

        Raises:
            KeyUnavailable: the token cannot be used, or it refused the key pair.
            KeyFormatError: it already holds a key labelled ``label``.
        """
        pkcs11 = _binding()
        held = self._open(where.token_part(), read_write=True)
        try:
            session = held.session
            taken = session.findObjects([(pkcs11.CKA_LABEL, label)])
            if taken:
                raise KeyFormatError(
                    f"the PKCS#11 token {held.token_label!r} already holds an object labelled "
                    f"{label!r}; choose another selector or delete that object"
                )
            key_id = secrets.token_bytes(8)
            common = [
                (pkcs11.CKA_TOKEN, True), (pkcs11.CKA_LABEL, label),
                (pkcs11.CKA_ID, tuple(key_id)),
            ]  # fmt: skip
            private = [
                *common, (pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), (pkcs11.CKA_PRIVATE, True),
                (pkcs11.CKA_SENSITIVE, True), (pkcs11.CKA_EXTRACTABLE, False),
                (pkcs11.CKA_SIGN, True), (pkcs11.CKA_DECRYPT, False), (pkcs11.CKA_UNWRAP, False),
            ]  # fmt: skip
            public = [
                *common, (pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY), (pkcs11.CKA_VERIFY, True),
                (pkcs11.CKA_ENCRYPT, False), (pkcs11.CKA_WRAP, False),
            ]  # fmt: skip
            try:
                if algorithm is Algorithm.ED25519_SHA256:
                    p_value = self._make_ed25519(session, public, private)
                else:
                    p_value = self._make_rsa(session, public, private, bits)
            except pkcs11.PyKCS11Error as err:
                raise KeyUnavailable(
                    f"the PKCS#11 token {held.token_label!r} did not make an "
                    f"{algorithm.value} key pair ({_code(err)}); check that it supports "
                    "the mechanism",
                    in_token=True,
                ) from None
        finally:
            _close(held.session)
        made = Pkcs11Uri(token=held.token_label, label=label, key_id=key_id, object_type="private")
        return made, p_value

    @staticmethod
    def _make_rsa(session: Any, public: list[Any], private: list[Any], bits: int) -> str:
        pkcs11 = _binding()
        public = [
            *public, (pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA), (pkcs11.CKA_MODULUS_BITS, bits),
            (pkcs11.CKA_PUBLIC_EXPONENT, (1, 0, 1)),
        ]  # fmt: skip
        private = [*private, (pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA)]
        pub, _ = session.generateKeyPair(
            public, private, mecha=pkcs11.Mechanism(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, None)
        )
        modulus, exponent = session.getAttributeValue(
            pub, [pkcs11.CKA_MODULUS, pkcs11.CKA_PUBLIC_EXPONENT]
        )
        numbers = rsa.RSAPublicNumbers(_int(exponent), _int(modulus))
        der = numbers.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode("ascii")

    @staticmethod
    def _make_ed25519(session: Any, public: list[Any], private: list[Any]) -> str:
        pkcs11 = _binding()
        mechanism = pkcs11.Mechanism(CKM_EC_EDWARDS_KEY_PAIR_GEN, None)
        private = [*private, (pkcs11.CKA_KEY_TYPE, CKK_EC_EDWARDS)]
        for params in (ED25519_OID, ED25519_NAME):
            template = [
                *public, (pkcs11.CKA_KEY_TYPE, CKK_EC_EDWARDS), (pkcs11.CKA_EC_PARAMS, params),
            ]  # fmt: skip
            try:
                pub, _ = session.generateKeyPair(template, private, mecha=mechanism)
                break
            except pkcs11.PyKCS11Error as err:
                if params == ED25519_NAME or _code(err) not in (
                    "CKR_CURVE_NOT_SUPPORTED", "CKR_ATTRIBUTE_VALUE_INVALID",
                    "CKR_TEMPLATE_INCONSISTENT", "CKR_DOMAIN_PARAMS_INVALID",
                ):  # fmt: skip
                    raise
        point = bytes(session.getAttributeValue(pub, [pkcs11.CKA_EC_POINT])[0])
        # CKA_EC_POINT: the 32 bytes, most often wrapped in a DER OCTET STRING.
        raw = point[2:] if len(point) == 34 and point[:2] == b"\x04\x20" else point
        if len(raw) != 32:
            raise KeyFormatError("the token gave an Ed25519 public key that is not 32 bytes")
        return base64.b64encode(raw).decode("ascii")

    def close(self) -> None:
        """Close this token's sessions; the last token of its module finalizes the module."""
        with self._cond:
            sessions = [s for idle in self._idle.values() for s in idle]
            self._idle.clear()
        for held in sessions:
            if held.generation == self._current_generation():
                _close(held.session)
        if self._registered:
            self._registered = False
            self._module.release()
