"""Signing and verifying one message, with keys made here and a table for DNS."""

from __future__ import annotations

import base64
from collections.abc import Callable
from functools import cache

import pytest

from ldapdkim import keys
from ldapdkim.errors import DnsTemporaryError, KeyFormatError, MessageError
from ldapdkim.model import (
    Algorithm,
    Canonicalization,
    DkimResult,
    Failure,
    KeyState,
    SigningKey,
    SigningParams,
)
from ldapdkim.signing.keyring import Keyring, KeySigner
from ldapdkim.signing.signer import select_header_names, sign_message
from ldapdkim.signing.taglist import parse_tag_list
from ldapdkim.signing.verifier import verify_message

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: a subject   with  odd   spacing\r\n"
    b"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"Received: from somewhere\r\n"
    b"\r\n"
    b"Hello,  world \r\n\r\n\r\n"
)
NOW = 1_795_000_000


@cache
def _key(algorithm: Algorithm) -> SigningKey:
    private = keys.generate(algorithm)
    selector = "r1" if algorithm is Algorithm.RSA_SHA256 else "e1"
    return SigningKey("dn", selector, algorithm, KeyState.ACTIVE, keys.private_pem(private))


def _signers(*signing_keys: SigningKey) -> list[KeySigner]:
    return Keyring().signers(signing_keys, "example.com")


def _dns(*signing_keys: SigningKey) -> Callable[[str], list[bytes]]:
    table = {
        f"{k.selector}._domainkey.example.com": keys.txt_record(
            k.algorithm,
            keys.public_key_b64(keys.private_key_of(k)),  # type: ignore[arg-type]
        ).encode()
        for k in signing_keys
    }
    return lambda name: [table[name]] if name in table else []


def _signed(message: bytes, params: SigningParams, *signing_keys: SigningKey) -> bytes:
    values = sign_message(message, "example.com", _signers(*signing_keys), params, timestamp=NOW)
    return b"".join(b"DKIM-Signature:" + v + b"\r\n" for v in values) + message


@pytest.mark.parametrize("algorithm", list(Algorithm))
@pytest.mark.parametrize(
    "canon", ["simple/simple", "relaxed/relaxed", "relaxed/simple", "simple/relaxed"]
)
def test_signature_verifies_for_every_algorithm_and_canonicalization(
    algorithm: Algorithm, canon: str
) -> None:
    key = _key(algorithm)
    signed = _signed(MESSAGE, SigningParams(Canonicalization.parse(canon)), key)
    [result] = verify_message(signed, _dns(key))
    assert result.result is DkimResult.PASS, result.reason
    assert (result.domain, result.selector, result.algorithm) == (
        "example.com",
        key.selector,
        algorithm.value,
    )


def test_every_key_signs_so_rsa_and_ed25519_give_two_signatures() -> None:
    rsa, ed = _key(Algorithm.RSA_SHA256), _key(Algorithm.ED25519_SHA256)
    signed = _signed(MESSAGE, SigningParams(), rsa, ed)
    results = verify_message(signed, _dns(rsa, ed))
    assert [(r.algorithm, r.result) for r in results] == [
        ("rsa-sha256", DkimResult.PASS),
        ("ed25519-sha256", DkimResult.PASS),
    ]


def test_changed_body_or_signed_header_fails() -> None:
    key = _key(Algorithm.RSA_SHA256)
    signed = _signed(MESSAGE, SigningParams(), key)
    [body] = verify_message(signed.replace(b"Hello", b"Jello"), _dns(key))
    [header] = verify_message(signed.replace(b"a subject", b"b subject"), _dns(key))
    assert body.result is DkimResult.FAIL and "body" in body.reason
    assert header.result is DkimResult.FAIL


def test_from_is_oversigned_so_an_added_from_breaks_the_signature() -> None:
    key = _key(Algorithm.RSA_SHA256)
    signed = _signed(MESSAGE, SigningParams(), key)
    assert b"h=from:to:subject:date:message-id:from;" in signed
    forged = signed.replace(b"From: Alice", b"From: Mallory <m@evil.test>\r\nFrom: Alice")
    [result] = verify_message(forged, _dns(key))
    assert result.result is DkimResult.FAIL


def test_header_selection_follows_sign_and_oversign_lists() -> None:
    headers = [
        (b"From", b" a\r\n"),
        (b"To", b" b\r\n"),
        (b"X-Custom", b" c\r\n"),
        (b"To", b" d\r\n"),
    ]
    params = SigningParams(sign_headers=("to", "x-custom"), oversign_headers=("to", "subject"))
    assert select_header_names(headers, params) == [
        b"from",
        b"to",
        b"x-custom",
        b"to",
        b"subject",
        b"to",
    ]


def test_identity_and_expiry_tags_are_set_when_configured() -> None:
    key = _key(Algorithm.ED25519_SHA256)
    params = SigningParams(identity="@mail.example.com", expire_seconds=3600)
    signed = _signed(MESSAGE, params, key)
    assert b"i=@mail.example.com;" in signed
    assert f"x={NOW + 3600};".encode() in signed.replace(b"\r\n\t", b" ")


def test_signature_lines_stay_short_enough_for_any_mta() -> None:
    key = _key(Algorithm.RSA_SHA256)
    signed = _signed(MESSAGE, SigningParams(sign_headers=tuple(f"x-h{i}" for i in range(40))), key)
    header_block = signed.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in header_block.split(b"\r\n")) <= 80


def test_lf_only_message_signs_as_its_crlf_form() -> None:
    key = _key(Algorithm.RSA_SHA256)
    lf = MESSAGE.replace(b"\r\n", b"\n")
    values = sign_message(lf, "example.com", _signers(key), SigningParams(), timestamp=NOW)
    signed = b"".join(b"DKIM-Signature:" + v + b"\r\n" for v in values) + MESSAGE
    [result] = verify_message(signed, _dns(key))
    assert result.result is DkimResult.PASS


def test_message_without_from_is_not_signed() -> None:
    with pytest.raises(MessageError, match="no From"):
        sign_message(
            b"To: b@example.net\r\n\r\nbody\r\n",
            "example.com",
            _signers(_key(Algorithm.RSA_SHA256)),
            SigningParams(),
            timestamp=NOW,
        )


def test_missing_key_is_permerror_and_dns_trouble_is_temperror_never_fail() -> None:
    key = _key(Algorithm.RSA_SHA256)
    signed = _signed(MESSAGE, SigningParams(), key)

    def timeout(name: str) -> list[bytes]:
        raise DnsTemporaryError(f"{name}: timed out")

    [missing] = verify_message(signed, lambda name: [])
    [trouble] = verify_message(signed, timeout)
    assert missing.result is DkimResult.PERMERROR and "no key record" in missing.reason
    assert trouble.result is DkimResult.TEMPERROR


def test_a_valid_key_shorter_than_minimum_key_bits_is_refused_by_policy() -> None:
    short = SigningKey(
        "dn",
        "r1",
        Algorithm.RSA_SHA256,
        KeyState.ACTIVE,
        keys.private_pem(keys.generate(Algorithm.RSA_SHA256, 1024)),
    )
    signed = _signed(MESSAGE, SigningParams(), short)
    [result] = verify_message(signed, _dns(short), minimum_key_bits=2048)
    assert (result.result, result.failure) == (DkimResult.POLICY, Failure.KEY_UNUSABLE)


def test_no_signature_gives_no_results() -> None:
    assert verify_message(MESSAGE, lambda name: []) == []


def test_only_the_configured_number_of_signatures_is_verified() -> None:
    key = _key(Algorithm.ED25519_SHA256)
    signed = MESSAGE
    for _ in range(5):
        signed = _signed(signed, SigningParams(), key)
    assert len(verify_message(signed, _dns(key), max_signatures=3)) == 3


def test_a_private_key_is_parsed_once_however_often_it_is_read() -> None:
    """RSA key validation costs ~100 signatures; a directory change must not pay it again."""
    pem = keys.private_pem(keys.generate(Algorithm.RSA_SHA256))
    first = keys.load_private_key(pem, where="entry A")
    again = keys.load_private_key(pem + b"\n", where="entry B")
    assert again is first


def test_an_ed25519_key_reads_the_same_in_every_form_it_may_be_stored_in() -> None:
    """PKCS #8 PEM and DER are read by the fast path; the result is OpenSSL's own."""
    from cryptography.hazmat.primitives import serialization

    key = keys.generate(Algorithm.ED25519_SHA256)
    pem = keys.private_pem(key)
    der = serialization.load_pem_private_key(pem, None).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    wanted = keys.public_key_b64(key)
    for stored in (pem, b"  " + pem.replace(b"\n", b"\r\n"), der, base64.b64encode(der)):
        assert keys.public_key_b64(keys.load_private_key(stored, where="entry E")) == wanted
    damaged = pem.replace(pem.split(b"\n")[1], pem.split(b"\n")[1][:-4] + b"!!!!")
    with pytest.raises(KeyFormatError, match="entry E"):
        keys.load_private_key(damaged, where="entry E")


@pytest.mark.parametrize("bits", [1024, 2048, 4096])
def test_an_rsa_key_reads_the_same_in_every_form_it_may_be_stored_in(bits: int) -> None:
    """PKCS #1 and PKCS #8, PEM, DER and base64 DER: ldapdkim's own DER reader takes them
    (0.06 ms instead of 0.4 ms through OpenSSL 3's decoder), and the key is the one stored."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    for layout in (ser.PrivateFormat.PKCS8, ser.PrivateFormat.TraditionalOpenSSL):
        der = key.private_bytes(ser.Encoding.DER, layout, ser.NoEncryption())
        pem = key.private_bytes(ser.Encoding.PEM, layout, ser.NoEncryption())
        assert keys._rsa_from_der(der) is not None
        for stored in (der, pem, base64.b64encode(der), b" " + pem.replace(b"\n", b"\r\n")):
            loaded = keys.load_private_key(stored, where="entry R")
            assert isinstance(loaded, rsa.RSAPrivateKey)
            assert loaded.private_numbers() == key.private_numbers()


@pytest.mark.parametrize("bits", [1024, 2048, 4096])
def test_the_replica_keeps_an_rsa_key_as_its_primes_and_it_signs_the_same(bits: int) -> None:
    """compact_private_key: p, q and e are the key; n, d and the CRT values are computed
    again when it is read.  RSA-2048 takes 265 bytes instead of 1 192 (PKCS #1 DER)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    compact = keys.compact_private_key(pem)
    assert len(compact) < bits // 8 + 30
    loaded = keys.load_private_key(compact, where="entry R")
    assert isinstance(loaded, rsa.RSAPrivateKey)
    mine, theirs = loaded.private_numbers(), key.private_numbers()
    assert mine.public_numbers == theirs.public_numbers
    assert (mine.p, mine.q, mine.dmp1, mine.dmq1, mine.iqmp) == (
        theirs.p, theirs.q, theirs.dmp1, theirs.dmq1, theirs.iqmp,
    )  # fmt: skip
    message = b"the same bytes"
    signature = loaded.sign(message, padding.PKCS1v15(), hashes.SHA256())
    assert signature == key.sign(message, padding.PKCS1v15(), hashes.SHA256())


def test_a_damaged_prime_form_is_refused_not_a_crash() -> None:
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.private_bytes(ser.Encoding.DER, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    compact = keys.compact_private_key(der)
    assert keys.compact_private_key(compact) == compact  # already as small as it gets
    flipped = compact[:100] + bytes([compact[100] ^ 1]) + compact[101:]
    for damaged in (compact[:12], compact[:-70], compact + b"\x01", compact[:8], flipped):
        with pytest.raises(KeyFormatError, match="entry R: the private key is damaged"):
            keys.load_private_key(damaged, where="entry R")
    ed = keys.compact_private_key(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            ser.Encoding.DER, ser.PrivateFormat.PKCS8, ser.NoEncryption()
        )
    )
    assert len(ed) == 48  # Ed25519 PKCS #8 stays as it is


def test_the_own_der_reader_declines_what_it_does_not_know_and_openssl_decides() -> None:
    """Truncated, padded or differently encoded DER is left to OpenSSL, which refuses
    what is not a key and reads what is."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.private_bytes(ser.Encoding.DER, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    for odd in (der[:-1], der + b"\x00", der[:4] + b"\x02\x01\x01" + der[7:], b"\x30\x00"):
        assert keys._rsa_from_der(odd) is None
    with pytest.raises(KeyFormatError, match="entry T"):
        keys.load_private_key(der[:-1], where="entry T")
    # An ec key: not RSA, declined by the reader, refused for DKIM with the reason.
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        ser.Encoding.DER, ser.PrivateFormat.PKCS8, ser.NoEncryption()
    )
    assert keys._rsa_from_der(other) is None
    with pytest.raises(KeyFormatError, match="cannot sign DKIM"):
        keys.load_private_key(other, where="entry T")


def test_openssls_primality_proof_is_not_run_when_a_key_is_read() -> None:
    """OpenSSL 3 proves p and q prime at every RSA key load (43 ms for RSA-2048); a
    directory of 100 000 domains would pay it per key and worker.  ldapdkim's arithmetic
    check replaces it (the test above with damaged parts); on cryptography 38 the
    backend's switch is the only way to say so."""
    import cryptography
    from cryptography.hazmat.backends.openssl.backend import backend

    if int(cryptography.__version__.split(".")[0]) >= 39:
        assert keys._SKIP_OPENSSL_CHECK == {"unsafe_skip_rsa_key_validation": True}
    else:
        assert backend._rsa_skip_check_key is True


@pytest.mark.parametrize("edge", [b" ", b"\n", b"\t", b"\r"])
def test_a_binary_key_ending_or_starting_in_a_white_space_byte_is_read_whole(edge: bytes) -> None:
    """DER and raw seeds are bytes, not text: nothing may be stripped from them."""
    import os

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    for seed in (os.urandom(31) + edge, edge + os.urandom(31)):
        key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        for stored in (der, seed):
            loaded = keys.load_private_key(stored, where="entry E")
            assert keys.public_key_b64(loaded) == keys.public_key_b64(key)


@pytest.mark.parametrize(
    "damage",
    [
        {"d": 2, "dmp1": 2, "dmq1": 2},  # d no longer inverts e
        {"iqmp": 1},  # the CRT coefficient is wrong
        {"dmq1": 2},  # one CRT exponent is wrong
    ],
    ids=["private-exponent", "crt-coefficient", "crt-exponent"],
)
def test_a_key_whose_parts_do_not_belong_together_is_refused(damage: dict[str, int]) -> None:
    """Whoever checks the key (ldapdkim's arithmetic, or OpenSSL under cryptography 38),
    a broken key is refused, and the error says why."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    good = keys.generate(Algorithm.RSA_SHA256)
    assert isinstance(good, rsa.RSAPrivateKey)
    numbers = good.private_numbers()
    parts = {name: getattr(numbers, name) for name in ("d", "p", "q", "dmp1", "dmq1", "iqmp")}
    for name, delta in damage.items():
        parts[name] += delta
    public = numbers.public_numbers
    # PKCS#1 RSAPrivateKey, written out by hand: cryptography will not build a broken key.
    der = _der_sequence(0, public.n, public.e, *parts.values())
    pem = b"-----BEGIN RSA PRIVATE KEY-----\n" + base64.encodebytes(der)
    pem += b"-----END RSA PRIVATE KEY-----\n"
    with pytest.raises(KeyFormatError, match="parts do not belong together"):
        keys.load_private_key(pem, where="entry X")


def _der_sequence(*integers: int) -> bytes:
    """A DER SEQUENCE of non-negative INTEGERs."""

    def tlv(tag: int, body: bytes) -> bytes:
        if len(body) < 0x80:
            return bytes([tag, len(body)]) + body
        size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
        return bytes([tag, 0x80 | len(size)]) + size + body

    return tlv(
        0x30, b"".join(tlv(0x02, i.to_bytes(i.bit_length() // 8 + 1, "big")) for i in integers)
    )


def test_signatures_never_carry_l_and_use_only_current_algorithms() -> None:
    """RFC 6376 §8.2 (and the 2024 l= disclosures); RFC 8301 §3.1."""
    rsa, ed = _key(Algorithm.RSA_SHA256), _key(Algorithm.ED25519_SHA256)
    values = sign_message(MESSAGE, "example.com", _signers(rsa, ed), SigningParams(), timestamp=NOW)
    for value in values:
        tags = parse_tag_list(value)
        assert "l" not in tags
        assert tags["a"] in (b"rsa-sha256", b"ed25519-sha256")
        assert b"from" in tags["h"].replace(b"\r\n\t", b"").split(b":")
