"""The PKCS #11 module (PyKCS11) of a token, loaded and initialised once per process.

Also the PKCS #11 values PyKCS11 may lack, the names of its errors, and the
tests that tell whether a library, slot and token are the ones a ``pkcs11:``
URI (RFC 7512) names.  :mod:`ldapdkim.signing.token` signs and makes keys
with it.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from pathlib import Path
from typing import Any

from ldapdkim import pkcs11uri
from ldapdkim.errors import KeyFormatError, KeyUnavailable
from ldapdkim.pkcs11uri import Pkcs11Uri
from ldapdkim.signing.pkcs11sign import CKR_CANT_LOCK, CKR_OK, DirectSigner

log = logging.getLogger(__name__)

# PKCS #11 v3.0 values that PyKCS11 1.5 (Debian 12) may lack.
CKM_EC_EDWARDS_KEY_PAIR_GEN = 0x1055
CKM_EDDSA = 0x1057
CKM_RSA_PKCS = 0x0001
CKK_EC_EDWARDS = 0x40
CKF_TOKEN_INITIALIZED = 0x400
CKR_SESSION_HANDLE_INVALID = 0xB3
ED25519_OID = bytes.fromhex("06032b6570")
"""CKA_EC_PARAMS of Ed25519: the DER of the OID 1.3.101.112 (RFC 8410)."""
ED25519_NAME = b"\x13\x0cedwards25519"
"""... or the PrintableString ``edwards25519``, which some tokens want instead."""
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
"""The DER DigestInfo prefix of a SHA-256 digest (RFC 8017 §9.2, note 1)."""

_PIN_ERRORS = (
    "CKR_PIN_INCORRECT", "CKR_PIN_INVALID", "CKR_PIN_LEN_RANGE", "CKR_PIN_EXPIRED",
    "CKR_PIN_LOCKED",
)  # fmt: skip
_LOAD_ERRORS = {-1: "the library does not load", -4: "it has no C_GetFunctionList"}
"""PyKCS11's own codes of a failed load."""
_BINDING_MISSING = (
    "PKCS11Module is set but PyKCS11, the Python PKCS#11 binding, is not installed; "
    "install python3-pykcs11 (Debian) or PyKCS11"
)


def _binding() -> Any:
    """PyKCS11, imported at the first use of a token."""
    try:
        import PyKCS11  # only hosts with a token need it
    except ImportError:
        raise KeyUnavailable(_BINDING_MISSING, in_token=True) from None
    return PyKCS11


def _code(err: Exception) -> str:
    """The CKR_ name of a PyKCS11 error (``CKR_PIN_INCORRECT``), or its text."""
    value = getattr(err, "value", None)
    if isinstance(value, int):
        if value in _LOAD_ERRORS:
            return _LOAD_ERRORS[value]
        name = _binding().CKR.get(value)
        if isinstance(name, str):
            return name
        return f"error {value:#x}"
    return str(err)


def _text(value: object) -> str:
    """A blank-padded CK_*_INFO field, without its padding."""
    return str(value).rstrip(" \x00")


# -- the module, once per process -----------------------------------------------------


class _Module:
    """One PKCS #11 module in this process: loaded once, initialised again after a fork,
    after it failed, or after the last token that used it was closed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lib: Any = None
        self.pid = 0
        self.generation = 0
        """Counts initialisations; a session of an older one is gone."""
        self.stale = False
        self.users = 0
        self.lock = threading.Lock()
        self.direct: DirectSigner | None = None
        """C_Sign outside the interpreter lock, when the module was initialised for threads."""
        self._tried_direct = False
        self._without_direct = ""
        self._told = (0, "")
        """The process that logged how the module signs, and what it logged."""
        self._calls = 0
        """Direct calls in flight (the interpreter lock does not keep C_Finalize from them)."""
        self._no_calls = threading.Condition(self.lock)

    def library(self) -> tuple[Any, int]:
        """The module, initialised in this process, and its generation.

        Raises:
            KeyUnavailable: PyKCS11 is missing, or the module does not load or initialise.
        """
        with self.lock:
            pid = os.getpid()
            if self.lib is not None and self.pid == pid and not self.stale:
                return self.lib, self.generation
            pkcs11 = _binding()
            try:
                if self.lib is None or self.pid != pid:
                    self._load(pkcs11)
                else:
                    while self._calls:
                        self._no_calls.wait()
                    if not self._initialise_direct():
                        self._initialise(pkcs11)
            except pkcs11.PyKCS11Error as err:
                self.lib = None
                self._tried_direct = False
                raise KeyUnavailable(
                    f"cannot load PKCS11Module {self.path} ({_code(err)}): it is not a PKCS#11 "
                    "module, a library it needs is missing, or it cannot reach its token; "
                    "check the path and install the token's module (softhsm2, libtpm2-pkcs11-1, "
                    "your HSM's client)",
                    in_token=True,
                ) from None
            if self.direct is not None:
                self._say_how("through ctypes; other threads run while the token signs")
            else:
                self._say_how(
                    "through PyKCS11, which holds the interpreter lock while the token signs: "
                    + self._without_direct
                )
            self.pid = pid
            self.stale = False
            self.generation += 1
            return self.lib, self.generation

    def _load(self, pkcs11: Any) -> None:
        """Load the module in this process, initialised once: for threads through ctypes
        when it can (then PyKCS11's own C_Initialize finds it initialised), else by
        PyKCS11."""
        forked = self.lib is not None
        if forked:
            _ABANDONED.append(self.lib)  # the parent's: its destructor would finalize here
        self._calls = 0  # the parent's threads are not in this process
        if not self._tried_direct:
            self._tried_direct = True
            self.direct = self._find_direct()
        direct = self._initialise_direct()
        lib = pkcs11.PyKCS11Lib()
        lib.load(str(self.path))
        self.lib = lib
        if forked and not direct:
            self._initialise(pkcs11)

    def _find_direct(self) -> DirectSigner | None:
        """The module's C_Sign through ctypes, or None (then PyKCS11 signs)."""
        try:
            return DirectSigner(self.path)
        except OSError as err:
            self._without_direct = str(err)
            return None

    def _initialise_direct(self) -> bool:
        """C_Finalize (whatever state this process has) and C_Initialize for threads that
        call the module at once (:mod:`ldapdkim.signing.pkcs11sign`); False if it cannot
        sign directly.

        Raises:
            PyKCS11.PyKCS11Error: the module did not initialise.
        """
        if self.direct is None:
            return False
        self.direct.finalize()
        rv = self.direct.initialize()
        if rv == CKR_CANT_LOCK:
            self.direct = None
            self._without_direct = "it cannot lock for threads (CKR_CANT_LOCK)"
            return False
        if rv != CKR_OK:
            raise _binding().PyKCS11Error(rv)
        return True

    def _initialise(self, pkcs11: Any) -> None:
        """C_Finalize (whatever state this process has) and C_Initialize again, by PyKCS11."""
        self.lib.lib.C_Finalize()
        rv = self.lib.lib.C_Initialize()
        if rv != pkcs11.CKR_OK:
            raise pkcs11.PyKCS11Error(rv)

    def _say_how(self, how: str) -> None:
        """Log how it signs, once per process (and again if that changes)."""
        told = (os.getpid(), how)
        if self._told != told:
            self._told = told
            log.info("PKCS#11 module %s signs %s", self.path, how)

    def sign(self, generation: int, session: int, key: int, mechanism: int, data: bytes) -> bytes:
        """C_SignInit and C_Sign through :attr:`direct`, never while the module is finalized.

        Raises:
            PyKCS11.PyKCS11Error: as PyKCS11's own ``sign`` would: the module refused, or
                ``generation``'s sessions are gone (CKR_SESSION_HANDLE_INVALID).
        """
        with self.lock:
            direct = self.direct
            gone = generation != self.generation or self.stale or self.pid != os.getpid()
            if direct is None or gone:
                raise _binding().PyKCS11Error(CKR_SESSION_HANDLE_INVALID)
            self._calls += 1
        try:
            rv, signature = direct.sign(session, key, mechanism, data)
        finally:
            with self.lock:
                self._calls -= 1
                if not self._calls:
                    self._no_calls.notify_all()
        if rv != CKR_OK:
            raise _binding().PyKCS11Error(rv)
        return signature

    def fail(self, generation: int) -> None:
        """Sessions of ``generation`` broke: initialise the module again before the next one."""
        with self.lock:
            if generation == self.generation:
                self.stale = True

    def release(self) -> None:
        """A token that used the module is closed; the last one finalizes it."""
        with self.lock:
            self.users -= 1
            if self.users <= 0 and self.lib is not None and self.pid == os.getpid():
                while self._calls:
                    self._no_calls.wait()
                self.lib.lib.C_Finalize()
                self.stale = True


_MODULES: dict[Path, _Module] = {}
_MODULES_LOCK = threading.Lock()
_ABANDONED: list[Any] = []
"""A parent's module objects in a forked child, kept so that no destructor finalizes."""


def _module(path: Path) -> _Module:
    """The one :class:`_Module` of ``path`` in this process (two paths to one file share it)."""
    real = path.resolve()
    with _MODULES_LOCK:
        found = _MODULES.get(real)
        if found is None:
            found = _MODULES[real] = _Module(path)
        return found


@functools.lru_cache(maxsize=1024)
def _parse(uri: str) -> Pkcs11Uri:
    """The key entry's URI, parsed once (a token key is looked up for every message)."""
    try:
        return pkcs11uri.parse(uri)
    except KeyFormatError as err:
        raise KeyFormatError(f"dkimSignPrivateKey: {err}") from None


def _key_part(key: Pkcs11Uri) -> str:
    """The URI of just the key's own attributes, for messages."""
    return str(Pkcs11Uri(label=key.label, key_id=key.key_id, object_type=key.object_type))


def _int(value: Any) -> int:
    return int.from_bytes(bytes(value), "big")


def _close(session: Any) -> None:
    try:
        session.closeSession()
    except Exception as err:  # a session that is gone is closed enough
        log.debug("closing a PKCS#11 session: %s", err)


def _matches_token(token: Any, where: Pkcs11Uri) -> bool:
    pairs = (
        (where.token, token.label), (where.manufacturer, token.manufacturerID),
        (where.serial, token.serialNumber), (where.model, token.model),
    )  # fmt: skip
    return all(wanted is None or wanted == _text(have) for wanted, have in pairs)


def _matches_slot(slot: int, lib: Any, where: Pkcs11Uri) -> bool:
    if where.slot_id is not None and where.slot_id != slot:
        return False
    if where.slot_description is None and where.slot_manufacturer is None:
        return True
    info = lib.getSlotInfo(slot)
    pairs = (
        (where.slot_description, info.slotDescription),
        (where.slot_manufacturer, info.manufacturerID),
    )
    return all(wanted is None or wanted == _text(have) for wanted, have in pairs)


def _matches_library(info: Any, where: Pkcs11Uri) -> bool:
    version = "{}.{}".format(*info.libraryVersion)
    pairs = (
        (where.library_manufacturer, _text(info.manufacturerID)),
        (where.library_description, _text(info.libraryDescription)),
    )
    wanted_version = where.library_version
    if wanted_version is not None and wanted_version not in (version, version.removesuffix(".0")):
        return False
    return all(wanted is None or wanted == have for wanted, have in pairs)
