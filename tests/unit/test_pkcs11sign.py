"""C_SignInit and C_Sign through ctypes, against a real SoftHSM2 token.

The binding alone: RSA and Ed25519 signatures that cryptography verifies,
the same bytes as PyKCS11's, a signature larger than the room first offered,
and the CK_RV of a refusal named as PyKCS11's errors are.  Then
:class:`~ldapdkim.signing.token.Pkcs11Token` on it: many threads at once, a
session broken behind its back (the same recovery as through PyKCS11), and
the fall back to PyKCS11 when the binding cannot be set up or the module
cannot lock for threads, each logged.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from harness.softhsm import PIN, TOKEN, SoftHsm

from ldapdkim.config.secret import Secret
from ldapdkim.errors import KeyUnavailable
from ldapdkim.model import Algorithm
from ldapdkim.pkcs11uri import Pkcs11Uri
from ldapdkim.signing import pkcs11lib, pkcs11sign
from ldapdkim.signing.pkcs11lib import (
    CKK_EC_EDWARDS,
    CKM_EC_EDWARDS_KEY_PAIR_GEN,
    CKM_EDDSA,
    CKM_RSA_PKCS,
    ED25519_OID,
    SHA256_DIGEST_INFO,
    _code,
)
from ldapdkim.signing.pkcs11sign import CKR_OK, DirectSigner
from ldapdkim.signing.token import STARTING_PAUSES, Pkcs11Token

DIGEST = hashlib.sha256(b"header fields").digest()


def p11() -> Any:
    import PyKCS11

    return PyKCS11


@dataclass
class Keys:
    """A logged-in session of PyKCS11's, and an RSA and an Ed25519 key pair in it."""

    direct: DirectSigner
    session: Any
    rsa: Any
    rsa_public: rsa.RSAPublicKey
    ed25519: Any
    ed25519_public: ed25519.Ed25519PublicKey

    @property
    def handle(self) -> int:
        return int(self.session.session.value())

    def sign(self, key: Any, mechanism: int, data: bytes) -> bytes:
        rv, signature = self.direct.sign(self.handle, key.value(), mechanism, data)
        assert rv == CKR_OK, _code(p11().PyKCS11Error(rv))
        return signature


@pytest.fixture
def hsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsm:
    found = SoftHsm(tmp_path / "softhsm")
    monkeypatch.setenv("SOFTHSM2_CONF", str(found.conf))
    return found


@pytest.fixture
def keys(hsm: SoftHsm) -> Iterator[Keys]:
    import PyKCS11 as p

    lib = p.PyKCS11Lib()
    lib.load(str(hsm.module))
    direct = DirectSigner(hsm.module)
    direct.finalize()
    assert direct.initialize() == CKR_OK
    slot = next(s for s in lib.getSlotList(True) if lib.getTokenInfo(s).label.strip() == TOKEN)
    session = lib.openSession(slot, p.CKF_RW_SESSION)
    session.login(PIN)
    common = [(p.CKA_TOKEN, False)]
    private = [*common, (p.CKA_PRIVATE, True), (p.CKA_SENSITIVE, True), (p.CKA_SIGN, True)]
    public = [*common, (p.CKA_VERIFY, True)]
    rsa_pub, rsa_key = session.generateKeyPair(
        [*public, (p.CKA_MODULUS_BITS, 2048), (p.CKA_PUBLIC_EXPONENT, (1, 0, 1))],
        private,
        mecha=p.Mechanism(p.CKM_RSA_PKCS_KEY_PAIR_GEN, None),
    )
    modulus, exponent = session.getAttributeValue(rsa_pub, [p.CKA_MODULUS, p.CKA_PUBLIC_EXPONENT])
    numbers = rsa.RSAPublicNumbers(
        int.from_bytes(bytes(exponent), "big"), int.from_bytes(bytes(modulus), "big")
    )
    ed_pub, ed_key = session.generateKeyPair(
        [*public, (p.CKA_KEY_TYPE, CKK_EC_EDWARDS), (p.CKA_EC_PARAMS, ED25519_OID)],
        [*private, (p.CKA_KEY_TYPE, CKK_EC_EDWARDS)],
        mecha=p.Mechanism(CKM_EC_EDWARDS_KEY_PAIR_GEN, None),
    )
    point = bytes(session.getAttributeValue(ed_pub, [p.CKA_EC_POINT])[0])
    try:
        yield Keys(
            direct, session, rsa_key, numbers.public_key(), ed_key,
            ed25519.Ed25519PublicKey.from_public_bytes(point[-32:]),
        )  # fmt: skip
    finally:
        session.closeSession()
        lib.lib.C_Finalize()


def test_an_rsa_signature_verifies_and_is_the_one_pykcs11_makes(keys: Keys) -> None:
    import PyKCS11 as p

    data = SHA256_DIGEST_INFO + DIGEST
    signature = keys.sign(keys.rsa, CKM_RSA_PKCS, data)
    assert len(signature) == 256
    keys.rsa_public.verify(
        signature, b"header fields", padding.PKCS1v15(), hashes.SHA256()
    )  # raises if not
    assert signature == bytes(keys.session.sign(keys.rsa, data, p.Mechanism(CKM_RSA_PKCS, None)))


def test_an_ed25519_signature_verifies(keys: Keys) -> None:
    signature = keys.sign(keys.ed25519, CKM_EDDSA, DIGEST)
    assert len(signature) == 64
    keys.ed25519_public.verify(signature, DIGEST)  # raises if not


def test_a_signature_larger_than_the_room_offered_is_asked_for_again(
    keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pkcs11sign, "SIGNATURE_ROOM", 16)
    data = SHA256_DIGEST_INFO + DIGEST
    signature = keys.sign(keys.rsa, CKM_RSA_PKCS, data)
    keys.rsa_public.verify(signature, b"header fields", padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ("session", "CKR_SESSION_HANDLE_INVALID"),
        ("key", "CKR_OBJECT_HANDLE_INVALID"),
        ("mechanism", "CKR_MECHANISM_INVALID"),
    ],
)
def test_a_refusal_answers_its_ck_rv_and_no_signature(keys: Keys, change: str, code: str) -> None:
    session, key, mechanism = keys.handle, int(keys.rsa.value()), CKM_RSA_PKCS
    if change == "session":
        session += 1000
    elif change == "key":
        key += 1000
    else:
        mechanism = 0x80001234  # a vendor's mechanism SoftHSM2 does not have
    rv, signature = keys.direct.sign(session, key, mechanism, SHA256_DIGEST_INFO + DIGEST)
    assert (_code(p11().PyKCS11Error(rv)), signature) == (code, b"")
    # The session is not left in a sign operation: it signs at once after.
    data = SHA256_DIGEST_INFO + DIGEST
    assert len(keys.sign(keys.rsa, CKM_RSA_PKCS, data)) == 256


def test_a_module_without_c_getfunctionlist_is_refused() -> None:
    with pytest.raises(OSError, match="has no C_GetFunctionList"):
        DirectSigner(Path("libc.so.6"))


# -- the token on it ------------------------------------------------------------------


@dataclass
class Made:
    """An RSA key made in the token (by a token closed since), and its public key."""

    uri: str
    public: rsa.RSAPublicKey

    def verify(self, signature: bytes, digest: bytes = DIGEST) -> None:
        """Raises unless ``signature`` is rsa-sha256's over ``digest``."""
        self.public.verify(signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))


@pytest.fixture
def made(hsm: SoftHsm, monkeypatch: pytest.MonkeyPatch) -> Made:
    monkeypatch.setattr(pkcs11lib, "_MODULES", {})  # no other test's module state
    maker = Pkcs11Token(hsm.module, Secret(PIN))
    try:
        where = Pkcs11Uri(token=TOKEN)
        uri, p_value = maker.generate(where, "k1", Algorithm.RSA_SHA256, 2048)
    finally:
        maker.close()
    public = serialization.load_der_public_key(base64.b64decode(p_value))
    assert isinstance(public, rsa.RSAPublicKey)
    return Made(str(uri), public)


@contextmanager
def opened(module: Path) -> Iterator[Pkcs11Token]:
    token = Pkcs11Token(module, Secret(PIN))
    try:
        yield token
    finally:
        token.close()


def test_threads_sign_at_once_through_the_token(
    hsm: SoftHsm, made: Made, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(pkcs11lib, "_MODULES", {})  # one that has not logged yet
    caplog.set_level(logging.INFO, logger="ldapdkim.signing.pkcs11lib")
    results: list[tuple[bytes, bytes]] = []
    with opened(hsm.module) as token:
        signer = token.signer(made.uri, "k1", Algorithm.RSA_SHA256, where="key")
        signer.sign_digest(DIGEST)
        assert token._module.direct is not None

        def sign(number: int) -> None:
            for count in range(40):
                digest = hashlib.sha256(f"{number} {count}".encode()).digest()
                results.append((digest, signer.sign_digest(digest)))

        threads = [threading.Thread(target=sign, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert "signs through ctypes; other threads run while the token signs" in caplog.text
    assert len(results) == 240
    for digest, signature in results:
        made.verify(signature, digest)


@pytest.mark.parametrize("path", ["direct", "pykcs11"])
def test_a_session_broken_behind_its_back_is_dropped_and_the_signature_tried_again(
    hsm: SoftHsm,
    made: Made,
    path: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with opened(hsm.module) as token:
        signer = token.signer(made.uri, "k1", Algorithm.RSA_SHA256, where="key")
        signer.sign_digest(DIGEST)
        if path == "pykcs11":
            monkeypatch.setattr(token._module, "direct", None)
        (held,) = (s for idle in token._idle.values() for s in idle)
        held.session.closeSession()
        caplog.set_level(logging.INFO, logger="ldapdkim.signing.token")
        made.verify(signer.sign_digest(DIGEST))
    assert f"PKCS#11 token '{TOKEN}': CKR_SESSION_HANDLE_INVALID; trying again" in caplog.text


@pytest.mark.parametrize("why", ["no C_GetFunctionList", "CKR_CANT_LOCK"])
def test_pykcs11_signs_when_the_direct_way_cannot_and_the_log_says_why(
    hsm: SoftHsm,
    made: Made,
    why: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def refused(path: Path) -> DirectSigner:
        raise OSError(f"{path} has no C_GetFunctionList")

    if why == "CKR_CANT_LOCK":  # the module of 'made', which found the functions
        monkeypatch.setattr(DirectSigner, "initialize", lambda self: pkcs11sign.CKR_CANT_LOCK)
        said = "it cannot lock for threads (CKR_CANT_LOCK)"
    else:  # a module of its own, which looks for them
        monkeypatch.setattr(pkcs11lib, "_MODULES", {})
        monkeypatch.setattr(pkcs11lib, "DirectSigner", refused)
        said = f"{hsm.module} has no C_GetFunctionList"
    caplog.set_level(logging.INFO, logger="ldapdkim.signing.pkcs11lib")
    with opened(hsm.module) as token:
        signer = token.signer(made.uri, "k1", Algorithm.RSA_SHA256, where="k")
        made.verify(signer.sign_digest(DIGEST))
        assert token._module.direct is None
    assert (
        "signs through PyKCS11, which holds the interpreter lock while the token signs: " + said
    ) in caplog.text


def test_a_token_missing_for_a_moment_at_start_is_waited_for_not_reported_down(
    hsm: SoftHsm, made: Made, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that starts while another logs in can find SoftHSM2's store mid-update:
    before a process has signed once, a missing token is asked again for a moment."""
    monkeypatch.setattr(pkcs11lib, "_MODULES", {})
    hsm.remove()
    back = threading.Timer(0.1, hsm.restore)
    back.start()
    with opened(hsm.module) as token:
        signer = token.signer(made.uri, "k1", Algorithm.RSA_SHA256, where="key")
        made.verify(signer.sign_digest(DIGEST))
    back.join()


def test_a_token_still_missing_after_the_start_pauses_is_down_until_retry_after(
    hsm: SoftHsm, made: Made, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pkcs11lib, "_MODULES", {})
    hsm.remove()
    with opened(hsm.module) as token:
        signer = token.signer(made.uri, "k1", Algorithm.RSA_SHA256, where="key")
        started = time.monotonic()
        with pytest.raises(KeyUnavailable, match="no PKCS#11 token matching"):
            signer.sign_digest(DIGEST)
        assert time.monotonic() - started >= sum(STARTING_PAUSES)
        hsm.restore()
        started = time.monotonic()
        with pytest.raises(KeyUnavailable, match="tries the token again every 5 s"):
            signer.sign_digest(DIGEST)  # down: not asked again before RETRY_AFTER
        assert time.monotonic() - started < 0.05
