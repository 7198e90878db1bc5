"""Sealed private keys (:mod:`ldapdkim.sealing`) and the keyring that opens them."""

from __future__ import annotations

import base64
import os
from functools import cache

import pytest

from ldapdkim import keys, sealing
from ldapdkim.errors import KeyFormatError, KeyUnavailable
from ldapdkim.model import Algorithm, KeyState, PrivateKey, SigningKey, SigningParams
from ldapdkim.signing.keyring import Keyring
from ldapdkim.signing.signer import sign_message

KEK = sealing.KeyEncryptionKey("k1", bytes(range(32)), origin="/etc/ldapdkim/k1.kek")
OTHER_KEK = sealing.KeyEncryptionKey("k2", os.urandom(32))
KEKS = {"k1": KEK}
IDENTITY = sealing.KeyIdentity("example.com", "s1", Algorithm.RSA_SHA256)
MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: sealed\r\n"
    b"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n"
    b"\r\n"
    b"Hello.\r\n"
)
NOW = 1_795_000_000


@cache
def _private(algorithm: Algorithm) -> PrivateKey:
    return keys.generate(algorithm)


def _der(algorithm: Algorithm = Algorithm.RSA_SHA256) -> bytes:
    return keys.private_der(_private(algorithm))


def _secrets(algorithm: Algorithm) -> list[str]:
    """Text that would give the key away if a message carried it."""
    der = _der(algorithm)
    pem_body = b"".join(keys.private_pem(_private(algorithm)).splitlines()[1:-1]).decode()
    return [base64.b64encode(der).decode()[:40], pem_body[:40], der.hex()[:40]]


def _sealed(identity: sealing.KeyIdentity = IDENTITY) -> bytes:
    return sealing.seal(_der(identity.algorithm), KEK, identity)


def _replace_field(value: bytes, index: int, new: bytes) -> bytes:
    fields = value.split(b":")
    fields[index] = new
    return b":".join(fields)


def _flip_ciphertext(value: bytes) -> bytes:
    ciphertext = bytearray(base64.b64decode(value.split(b":")[4]))
    ciphertext[0] ^= 1
    return _replace_field(value, 4, base64.b64encode(bytes(ciphertext)))


# -- the format --------------------------------------------------------------------------


def test_a_sealed_value_opens_to_the_same_key() -> None:
    value = _sealed()
    assert value.startswith(b"sealed:v1:k1:")
    assert keys.stored_form(value) == "sealed"
    assert sealing.unseal(value, KEKS, IDENTITY) == _der()
    parsed = sealing.parse(value)
    assert (parsed.kek_id, len(parsed.nonce)) == ("k1", sealing.NONCE_BYTES)


def test_each_sealing_uses_a_new_nonce() -> None:
    assert _sealed() != _sealed()


@pytest.mark.parametrize(
    "identity",
    [
        sealing.KeyIdentity("example.org", "s1", Algorithm.RSA_SHA256),
        sealing.KeyIdentity("example.com", "s2", Algorithm.RSA_SHA256),
        sealing.KeyIdentity("example.com", "s1", Algorithm.ED25519_SHA256),
    ],
    ids=["other-domain", "other-selector", "other-algorithm"],
)
def test_a_value_does_not_open_as_another_key(identity: sealing.KeyIdentity) -> None:
    with pytest.raises(KeyUnavailable, match="copied from another key entry"):
        sealing.unseal(_sealed(), KEKS, identity)


def test_the_identity_ignores_case() -> None:
    shouted = sealing.KeyIdentity("EXAMPLE.com", "S1", Algorithm.RSA_SHA256)
    assert sealing.unseal(_sealed(), KEKS, shouted) == _der()


def test_an_edited_kek_id_does_not_open_even_with_the_same_bytes() -> None:
    twin = sealing.KeyEncryptionKey("k2", KEK.key)
    value = _replace_field(_sealed(), 2, b"k2")
    with pytest.raises(KeyUnavailable, match="does not open with KEK 'k2'"):
        sealing.unseal(value, {"k2": twin}, IDENTITY)


def test_another_kek_of_the_same_id_does_not_open() -> None:
    impostor = sealing.KeyEncryptionKey("k1", OTHER_KEK.key)
    with pytest.raises(KeyUnavailable, match="another KEK of that id"):
        sealing.unseal(_sealed(), {"k1": impostor}, IDENTITY)


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        (lambda v: _replace_field(v, 3, base64.b64encode(b"\0" * 12)), KeyUnavailable, "damaged"),
        (_flip_ciphertext, KeyUnavailable, "damaged"),
        (lambda v: v[:-10] + b"!!!!" + v[-6:], KeyFormatError, "base64 is broken"),
        (lambda v: _replace_field(v, 3, base64.b64encode(b"\0" * 8)), KeyFormatError, "length"),
        (lambda v: v.rsplit(b":", 1)[0], KeyFormatError, "five fields"),
        (lambda v: v.replace(b":v1:", b":v2:"), KeyFormatError, "version 'v2'"),
        (lambda v: _replace_field(v, 2, b"-bad"), KeyFormatError, "KEK id is not valid"),
    ],
    ids=["nonce", "ciphertext", "base64", "nonce-length", "fields", "version", "kek-id"],
)
def test_a_damaged_value_is_refused_without_key_material(
    damage: object, error: type[Exception], message: str
) -> None:
    value = damage(_sealed())  # type: ignore[operator]
    with pytest.raises(error, match=message) as caught:
        sealing.unseal(value, KEKS, IDENTITY)
    for secret in _secrets(Algorithm.RSA_SHA256):
        assert secret not in str(caught.value)


def test_an_unknown_kek_is_named_with_the_fix() -> None:
    with pytest.raises(KeyUnavailable) as caught:
        sealing.unseal(_sealed(), {"k2": OTHER_KEK}, IDENTITY)
    assert str(caught.value) == (
        "it is sealed with KEK 'k1', which this host does not have (configured: k2); "
        "add 'KeyEncryptionKey k1 PATH' to ldapdkim.conf"
    )


def test_a_kek_never_shows_its_bytes() -> None:
    assert KEK.key.hex() not in repr(KEK)
    assert repr(KEK.key) not in repr(KEK)


def test_keys_are_sealed_for_the_first_name_of_their_domain_entry() -> None:
    assert sealing.domain_of(["mail.example.org", "Example.COM"]) == "example.com"
    assert sealing.domain_of([]) is None


def test_a_value_opens_as_any_alias_but_an_unknown_kek_fails_at_once() -> None:
    aliases = [
        sealing.KeyIdentity(name, "s1", Algorithm.RSA_SHA256)
        for name in ("example.net", "example.com")
    ]
    der, identity = sealing.unseal_as_any(_sealed(), KEKS, aliases)
    assert (der, identity.domain) == (_der(), "example.com")
    with pytest.raises(KeyUnavailable, match="which this host does not have"):
        sealing.unseal_as_any(_sealed(), {"k2": OTHER_KEK}, aliases)
    with pytest.raises(KeyUnavailable, match=r"as the key d=example\.net s=s1"):
        sealing.unseal_as_any(_sealed(), KEKS, aliases[:1])


# -- the keyring ----------------------------------------------------------------------------


def _entry(value: bytes, algorithm: Algorithm = Algorithm.RSA_SHA256) -> SigningKey:
    selector = "s1" if algorithm is Algorithm.RSA_SHA256 else "e1"
    dn = f"dkimSignSelector={selector},ou=example.com,ou=domains,dc=example,dc=test"
    return SigningKey(dn, selector, algorithm, KeyState.ACTIVE, value)


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_a_sealed_key_signs_byte_for_byte_as_its_plaintext(algorithm: Algorithm) -> None:
    identity = sealing.KeyIdentity("example.com", "s1" if algorithm.key_type == "rsa" else "e1",
                                   algorithm)  # fmt: skip
    plaintext = _entry(keys.private_pem(_private(algorithm)), algorithm)
    sealed = _entry(sealing.seal_key(_private(algorithm), KEK, identity), algorithm)
    signatures = [
        sign_message(
            MESSAGE,
            "example.com",
            Keyring([KEK]).signers([entry], "example.com"),
            SigningParams(),
            timestamp=NOW,
        )
        for entry in (plaintext, sealed)
    ]
    assert signatures[0] == signatures[1]


def test_the_keyring_opens_a_sealed_key_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = sealing.unseal

    def counting(*args: object, **kwargs: object) -> bytes:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sealing, "unseal", counting)
    keyring = Keyring([KEK])
    entry = _entry(_sealed())
    for _ in range(50):
        keyring.signer_for(entry, "example.com").sign_digest(b"\0" * 32)
    assert len(calls) == 1


def test_the_keyring_opens_a_key_sealed_for_an_alias_of_its_entry() -> None:
    entry = _entry(_sealed())
    names = ("example.com", "example.net")
    signer = Keyring([KEK]).signer_for(entry, "example.net", names=names)
    assert signer.selector == "s1"
    with pytest.raises(KeyUnavailable, match="copied from another key entry"):
        Keyring([KEK]).signer_for(entry, "example.net", names=("example.net",))


@pytest.mark.parametrize(
    ("keyring", "value", "message"),
    [
        (Keyring([OTHER_KEK]), None, "sealed with KEK 'k1', which this host does not have"),
        (Keyring([KEK]), b"sealed:v1:k1:AAAA:AAAA", "nonce or ciphertext has a wrong length"),
        (
            Keyring(require_sealed=True),
            b"PLAINTEXT",
            "it is stored in plaintext and RequireSealedKeys is yes; seal it with "
            "'ldapdkim keys seal'",
        ),
    ],
    ids=["unknown-kek", "damaged", "require-sealed"],
)
def test_a_key_that_cannot_sign_is_named_with_the_reason(
    keyring: Keyring, value: bytes | None, message: str
) -> None:
    stored = _sealed() if value is None else value
    if value == b"PLAINTEXT":
        stored = keys.private_pem(_private(Algorithm.RSA_SHA256))
    entry = _entry(stored)
    with pytest.raises(KeyUnavailable) as caught:
        keyring.signer_for(entry, "example.com")
    assert str(caught.value).startswith(f"key {entry.dn!r}: ")
    assert message in str(caught.value)
    for secret in _secrets(Algorithm.RSA_SHA256):
        assert secret not in str(caught.value)


# -- the tools' bookkeeping ------------------------------------------------------------------


def test_progress_every_hundred_entries_and_each_problem_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ldapdkim.cli.keys import _follow
    from ldapdkim.lifecycle.sealkeys import Outcome, Step

    steps = [Step(f"dn{i}", Outcome.SEALED) for i in range(250)]
    steps[7] = Step("dn7", Outcome.FAILED, "cannot change 'dn7': it was changed meanwhile")
    counts = _follow(steps, len(steps))
    assert (counts[Outcome.SEALED], counts[Outcome.FAILED]) == (249, 1)
    assert capsys.readouterr().err == (
        "ldapdkim: dn7: cannot change 'dn7': it was changed meanwhile\n"
        "ldapdkim: 100 of 250 key entries done\n"
        "ldapdkim: 200 of 250 key entries done\n"
    )


def test_the_census_counts_each_stored_form() -> None:
    from ldapdkim.lifecycle.sealkeys import census

    pem = keys.private_pem(_private(Algorithm.RSA_SHA256))
    entries = [
        ("k1-key", {"dkimsignprivatekey": [_sealed()]}),
        ("old-key", {"dkimsignprivatekey": [_replace_field(_sealed(), 2, b"old")]}),
        ("plain-key", {"dkimsignprivatekey": [pem]}),
        ("token-key", {"dkimsignprivatekey": [b"pkcs11:object=k"]}),
        ("hidden-key", {}),
    ]
    counted = census(entries, {"k1"})
    assert counted.summary() == (
        "private keys: 1 sealed (k1 1), 1 plaintext, 1 in a token, "
        "1 sealed with a KEK not configured here, 1 unreadable or missing"
    )
    assert counted.problems(require_sealed=False, config="x.conf") == [
        "key 'old-key' is sealed with KEK 'old', which x.conf does not have; add "
        "'KeyEncryptionKey old PATH' (or run 'ldapdkim keys rewrap --to ID' where 'old' is)"
    ]
    assert len(counted.problems(require_sealed=True, config="x.conf")) == 2
