"""Key material: generate, parse, check and render DKIM keys.

RSA keys (``rsa-sha256``, RFC 6376, at least 1024 bits per RFC 8301) and
Ed25519 keys (``ed25519-sha256``, RFC 8463).  Private keys are stored as
PKCS#8 PEM; DNS records carry the SubjectPublicKeyInfo (RSA) or the raw 32
bytes of the public key (Ed25519, RFC 8463 §4.2), base64-encoded in ``p=``.

Nothing here talks to LDAP or DNS, and no function puts key material into an
exception message.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import math
import re
from typing import Any

import cryptography
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ldapdkim.errors import KeyFormatError
from ldapdkim.model import Algorithm, PrivateKey, SigningKey

DEFAULT_RSA_BITS = 2048
MIN_RSA_BITS = 1024
"""RFC 8301 §3.2: signers MUST use RSA keys of at least 1024 bits."""

_BASE64 = re.compile(rb"\A[A-Za-z0-9+/=\s]+\Z")
_PKCS8_PEM = re.compile(
    rb"\A-----BEGIN PRIVATE KEY-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END PRIVATE KEY-----\s*\Z"
)
_ED25519_PKCS8 = bytes.fromhex("302e020100300506032b657004220420")
"""An Ed25519 private key in PKCS #8 (RFC 8410 §7), up to the 32-byte seed that ends it."""


def _skip_openssl_rsa_check() -> dict[str, Any]:
    """Turn off OpenSSL's RSA key check when keys are read; :func:`_self_tested` replaces it.

    OpenSSL 3 proves p and q prime whenever an RSA key is loaded: 43 ms per
    RSA-2048 key here, paid once per key and worker, so a directory of 100 000
    domains with their own RSA keys would take over an hour of CPU per worker
    to warm.  cryptography 39 and later take ``unsafe_skip_rsa_key_validation``;
    Debian 12's cryptography 38 has only its backend's switch (the one its own
    test suite uses), which this process sets once: every private key ldapdkim
    reads goes through :func:`load_private_key` and so through the arithmetic
    check.  Returns the keyword arguments for the load functions.
    """
    if int(cryptography.__version__.split(".")[0]) >= 39:
        return {"unsafe_skip_rsa_key_validation": True}
    from cryptography.hazmat.backends.openssl.backend import backend

    if hasattr(backend, "_rsa_skip_check_key"):
        backend._rsa_skip_check_key = True
    return {}


_SKIP_OPENSSL_CHECK = _skip_openssl_rsa_check()


def generate(algorithm: Algorithm, bits: int = DEFAULT_RSA_BITS) -> PrivateKey:
    """Generate a new private key for ``algorithm`` (``bits`` applies to RSA only)."""
    if algorithm is Algorithm.ED25519_SHA256:
        return ed25519.Ed25519PrivateKey.generate()
    if bits < MIN_RSA_BITS:
        raise KeyFormatError(
            f"RSA keys of {bits} bits are refused; use at least {MIN_RSA_BITS} "
            f"(RFC 8301), {DEFAULT_RSA_BITS} is the default"
        )
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def algorithm_of(key: PrivateKey) -> Algorithm:
    """The DKIM algorithm a private key signs with."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return Algorithm.ED25519_SHA256
    return Algorithm.RSA_SHA256


def key_bits(key: PrivateKey) -> int:
    """Key size in bits (256 for Ed25519)."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.key_size
    return 256


def private_pem(key: PrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM, the form the directory stores."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_b64(key: PrivateKey) -> str:
    """The ``p=`` value of the DNS key record for ``key``."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    else:
        raw = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return base64.b64encode(raw).decode("ascii")


def txt_record(algorithm: Algorithm, public_b64: str) -> str:
    """The DKIM key record text (RFC 6376 §3.6.1).

    >>> txt_record(Algorithm.ED25519_SHA256, "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
    'v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo='
    """
    return f"v=DKIM1; k={algorithm.key_type}; p={public_b64}"


PARSED_KEY_CACHE = 16_384
"""How many parsed private keys are kept, keyed by their stored bytes.

A parsed RSA-2048 key that has signed takes 8.8 kB (OpenSSL's precomputed
values), so this bounds them to about 145 MB.  A key used after it fell out
is parsed again: an RSA-2048 key in 0.06 ms from DER or 0.15 ms from the
primes the replica keeps, an Ed25519 key in less, plus 0.2 ms of set-up at
an RSA key's first signature."""


SEALED_PREFIX = b"sealed:"
"""How a sealed value starts, whatever its version (:mod:`ldapdkim.sealing`)."""
PKCS11_PREFIX = b"pkcs11:"
"""How a reference to a key in a PKCS #11 token starts (RFC 7512)."""


def stored_form(value: bytes) -> str:
    """What a ``dkimSignPrivateKey`` value holds: ``sealed``, ``token`` (a ``pkcs11:``
    URI) or ``plaintext`` (a key form :func:`load_private_key` reads; none starts as the
    other two do)."""
    head = value.lstrip()
    if head.startswith(SEALED_PREFIX):
        return "sealed"
    if head.startswith(PKCS11_PREFIX):
        return "token"
    return "plaintext"


def private_key_of(key: SigningKey) -> PrivateKey | None:
    """The parsed private key of a key entry, through the cache; None if it has none in
    plaintext (none readable, or it is sealed or in a token: its public key is then taken
    from ``dkimSignPublicKey``).

    Raises:
        KeyFormatError: the stored key does not parse (the directory's entry reader
            checks it first, so only a key built by hand can get here).
    """
    if key.key_data is None or stored_form(key.key_data) != "plaintext":
        return None
    return load_private_key(key.key_data, where=f"entry {key.dn!r}")


def load_private_key(data: bytes, *, where: str) -> PrivateKey:
    """Parse a private key held as PEM, DER, base64 DER, or a raw Ed25519 seed in base64.

    ``where`` names the key's origin (an entry DN, a file name) for the error
    message; the key itself is never quoted.  The same bytes are parsed once
    (see :data:`PARSED_KEY_CACHE`).

    Raises:
        KeyFormatError: not a key, encrypted, or of a type DKIM cannot use.
    """
    text = data.strip()
    # Text (PEM, base64) may carry surrounding white space; binary (DER, a
    # raw seed) is taken as it is: its first or last byte may well be 0x20.
    textual = text.startswith(b"-----BEGIN") or _BASE64.match(text) is not None
    try:
        return _parse_private_key(text if textual else data)
    except _Unusable as problem:
        raise KeyFormatError(f"{where}: {problem}") from None


def load_private_key_once(der: bytes, *, where: str) -> PrivateKey:
    """:func:`load_private_key` for a key that must not be cached by its bytes.

    A key that was unsealed is held only as the parsed key its caller keeps:
    the plaintext DER must not become a cache key that outlives it.

    Raises:
        KeyFormatError: as :func:`load_private_key`.
    """
    try:
        return _self_tested(_decode_private_key(der))
    except _Unusable as problem:
        raise KeyFormatError(f"{where}: {problem}") from None


def private_der(key: PrivateKey) -> bytes:
    """The key as unencrypted PKCS #8 DER, the plaintext a sealed value holds."""
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class _Unusable(Exception):
    """A key that cannot be used; the text completes ``WHERE: ...``."""


@functools.lru_cache(maxsize=PARSED_KEY_CACHE)
def _parse_private_key(data: bytes) -> PrivateKey:
    """:func:`load_private_key` without the origin; failures raise :class:`_Unusable`."""
    return _self_tested(_decode_private_key(data))


_PKCS1_PEM = re.compile(
    rb"\A-----BEGIN RSA PRIVATE KEY-----\s*"
    rb"([A-Za-z0-9+/=\s]+?)\s*-----END RSA PRIVATE KEY-----\s*\Z"
)


def compact_private_key(data: bytes) -> bytes:
    """A private key in the smallest form :func:`load_private_key` reads; anything else as it is.

    Unencrypted PEM becomes its DER bytes (a third smaller), and an RSA key
    then its primes and public exponent (:data:`_RSA_PRIMES`, 265 bytes for
    RSA-2048 instead of 1 192): the rest of a PKCS #1 key follows from them.
    The replica stores keys so, which keeps an RSA key entry to a quarter of
    a database page.
    """
    pem, der = _pem_der(data.strip())
    if pem and der is None:
        return data
    der = der or data
    numbers = _rsa_numbers(der)
    if numbers is None:
        return der
    _n, e, _d, p, q = numbers[:5]
    e_bytes = e.to_bytes((e.bit_length() + 7) // 8, "big")
    p_bytes = p.to_bytes((p.bit_length() + 7) // 8, "big")
    q_bytes = q.to_bytes((q.bit_length() + 7) // 8, "big")
    if len(e_bytes) > 255 or len(p_bytes) > 0xFFFF:
        return der
    body = b"".join([bytes([len(e_bytes)]), e_bytes, len(p_bytes).to_bytes(2, "big"), p_bytes])
    body += q_bytes
    return _RSA_PRIMES + body + hashlib.sha256(body).digest()[:_CHECK]


_RSA_PRIMES = b"\x00rsa-pq\x00"
"""The start of an RSA key kept as its public exponent and primes (by :func:`compact_private_key`):
then one byte the length of e, e, two bytes the length of p, p, q, all unsigned big-endian, and
the first :data:`_CHECK` bytes of the SHA-256 of what lies between, since a damaged prime still
makes a key, only the wrong one.  It can be neither DER (0x30), PEM, base64 nor an Ed25519 seed."""
_CHECK = 8


def _rsa_from_primes(data: bytes) -> rsa.RSAPrivateKey:
    """The RSA key of :data:`_RSA_PRIMES` form: n, d and the CRT values computed again."""
    body, check = data[len(_RSA_PRIMES) : -_CHECK], data[-_CHECK:]
    if len(data) < len(_RSA_PRIMES) + _CHECK or hashlib.sha256(body).digest()[:_CHECK] != check:
        raise _Unusable(_DAMAGED)
    try:
        e_end = 1 + body[0]
        e = int.from_bytes(body[1:e_end], "big")
        p_end = e_end + 2 + int.from_bytes(body[e_end : e_end + 2], "big")
        p = int.from_bytes(body[e_end + 2 : p_end], "big")
        q = int.from_bytes(body[p_end:], "big")
        if p_end >= len(body) or e < 3 or p < 3 or q < 3 or p == q:
            raise ValueError("out of range")
        d = pow(e, -1, (p - 1) * (q - 1) // math.gcd(p - 1, q - 1))
        numbers = rsa.RSAPrivateNumbers(
            p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q),
            rsa.RSAPublicNumbers(e, p * q),
        )  # fmt: skip
        return numbers.private_key()
    except (IndexError, ValueError):
        raise _Unusable(_INCONSISTENT) from None


def _pem_der(data: bytes) -> tuple[bool, bytes | None]:
    """Whether ``data`` is an unencrypted PKCS #8 or PKCS #1 PEM key, and its DER bytes
    (None if its base64 is broken)."""
    match = _PKCS8_PEM.match(data) or _PKCS1_PEM.match(data)
    if match is None:
        return False, None
    try:
        return True, base64.b64decode(b"".join(match.group(1).split()), validate=True)
    except binascii.Error:
        return True, None


def _ed25519_seed(der: bytes) -> bytes | None:
    """The seed of an Ed25519 key in PKCS #8 DER; None for anything else."""
    if len(der) == len(_ED25519_PKCS8) + 32 and der.startswith(_ED25519_PKCS8):
        return der[len(_ED25519_PKCS8) :]
    return None


def _decode_private_key(data: bytes) -> PrivateKey:
    if data.startswith(_RSA_PRIMES):
        return _rsa_from_primes(data)
    candidates: list[bytes] = []
    pem, pem_der = _pem_der(data)
    if pem:
        if pem_der is not None:
            candidates.append(pem_der)
    elif data.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(data, password=None, **_SKIP_OPENSSL_CHECK)
        except (ValueError, TypeError) as err:
            _raise_if_inconsistent(err)
            raise _Unusable("the private key is not a readable, unencrypted PEM key") from None
        return _usable(key)
    elif _BASE64.match(data):
        try:
            candidates.append(base64.b64decode(b"".join(data.split()), validate=True))
        except binascii.Error:
            pass
    candidates.append(data)
    for der in candidates:
        if len(der) == 32:
            return ed25519.Ed25519PrivateKey.from_private_bytes(der)
        seed = _ed25519_seed(der)
        if seed is not None:
            return ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        fast = _rsa_from_der(der)
        if fast is not None:
            return fast
        try:
            key = serialization.load_der_private_key(der, password=None, **_SKIP_OPENSSL_CHECK)
        except (ValueError, TypeError) as err:
            _raise_if_inconsistent(err)
            continue
        return _usable(key)
    if pem:
        raise _Unusable("the private key is not a readable, unencrypted PEM key")
    raise _Unusable(
        "the private key is neither PEM, DER, base64 DER nor an Ed25519 seed; "
        "regenerate it with 'ldapdkim genkey'"
    )


_RSA_ENCRYPTION = bytes.fromhex("06092a864886f70d0101010500")
"""The contents of rsaEncryption's AlgorithmIdentifier (OID 1.2.840.113549.1.1.1, NULL)."""


def _rsa_from_der(der: bytes) -> rsa.RSAPrivateKey | None:
    """An RSA key in PKCS #1 or PKCS #8 DER, read without OpenSSL's decoder; None if not one.

    OpenSSL 3 reads a key through its generic decoder chain: 0.42 ms for an
    RSA-2048 key, where building it from its numbers takes 0.05 ms, and a
    directory of many domains pays that once per domain and worker.  Anything
    this strict reader does not recognise (other versions, multi-prime keys,
    non-minimal encodings) goes to OpenSSL as before.
    """
    found = _rsa_numbers(der)
    if found is None:
        return None
    n, e, d, p, q, dmp1, dmq1, iqmp = found
    numbers = rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp, rsa.RSAPublicNumbers(e, n))
    try:
        return numbers.private_key()
    except ValueError:
        raise _Unusable(_INCONSISTENT) from None


def _rsa_numbers(der: bytes) -> tuple[int, ...] | None:
    """n, e, d, p, q, dmp1, dmq1 and iqmp of a two-prime RSA key in PKCS #1 or #8 DER."""
    outer = _der_items(der)
    if outer is None:
        return None
    if len(outer) == 3 and outer[0] == (0x02, b"\x00") and outer[2][0] == 0x04:
        # PKCS #8: version 0, rsaEncryption, the PKCS #1 key in an OCTET STRING.
        if outer[1] != (0x30, _RSA_ENCRYPTION):
            return None
        outer = _der_items(outer[2][1])
        if outer is None:
            return None
    if len(outer) != 9 or any(tag != 0x02 for tag, _ in outer) or outer[0][1] != b"\x00":
        return None
    if any(
        body[0] & 0x80 or (body[0] == 0 and len(body) > 1 and not body[1] & 0x80)
        for _, body in outer
    ):
        return None  # negative, or not minimal
    return tuple(int.from_bytes(body, "big") for _, body in outer[1:])


def _der_items(der: bytes) -> list[tuple[int, bytes]] | None:
    """The (tag, contents) items of a DER SEQUENCE that is all of ``der``; None if it is not one."""
    top = _der_item(der, 0)
    if top is None or top[0] != 0x30 or top[2] != len(der):
        return None
    items: list[tuple[int, bytes]] = []
    body, pos = top[1], 0
    while pos < len(body):
        item = _der_item(body, pos)
        if item is None:
            return None
        items.append((item[0], item[1]))
        pos = item[2]
    return items


def _der_item(buf: bytes, pos: int) -> tuple[int, bytes, int] | None:
    """The tag, contents and end of the DER item at ``pos`` (low tag numbers, definite lengths)."""
    if pos + 2 > len(buf):
        return None
    tag, size = buf[pos], buf[pos + 1]
    pos += 2
    if size & 0x80:
        count = size & 0x7F
        if not 1 <= count <= 4 or pos + count > len(buf) or buf[pos] == 0:
            return None
        size = int.from_bytes(buf[pos : pos + count], "big")
        if size < 0x80:
            return None
        pos += count
    end = pos + size
    if end > len(buf) or (tag == 0x02 and size == 0):
        return None
    return tag, buf[pos:end], end


_DAMAGED = (
    "the private key is damaged (its check sum does not match); the replica database "
    "holding it is corrupt: remove StateDirectory/replica.mdb for a full refresh"
)
_INCONSISTENT = (
    "the private key's parts do not belong together (n, d and the CRT "
    "values disagree); regenerate it with 'ldapdkim genkey'"
)


def _raise_if_inconsistent(err: Exception) -> None:
    """Where OpenSSL checked the key itself (no way to skip it), say why it refused it."""
    if err.args and err.args[0] == "Invalid private key":
        raise _Unusable(_INCONSISTENT) from None


def _self_tested(key: PrivateKey) -> PrivateKey:
    """Check that an RSA key's parts belong together, by arithmetic (13 µs).

    OpenSSL's own RSA key validation (primality of p and q) costs about 43 ms
    per RSA-2048 key, a hundred signatures, and is skipped when loading (see
    :func:`_skip_openssl_rsa_check`).  A key
    whose parts do not match would sign mail that fails everywhere, so the
    relations signing relies on are checked instead: n = pq, ed = 1 modulo
    p-1 and q-1, and the CRT values.  An Ed25519 private key is a 32-byte
    seed from which everything else is derived: nothing there can mismatch.
    """
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.private_numbers()
        p, q, d = numbers.p, numbers.q, numbers.d
        public = numbers.public_numbers
        consistent = (
            p * q == public.n
            and public.e * d % (p - 1) == 1
            and public.e * d % (q - 1) == 1
            and numbers.dmp1 == d % (p - 1)
            and numbers.dmq1 == d % (q - 1)
            and numbers.iqmp * q % p == 1
        )
        if not consistent:
            raise _Unusable(_INCONSISTENT)
    return key


def _usable(key: object) -> PrivateKey:
    if isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        return key
    raise _Unusable(f"a {type(key).__name__} cannot sign DKIM; use an RSA or Ed25519 key")


def check_key(key: PrivateKey, algorithm: Algorithm, minimum_bits: int, *, where: str) -> None:
    """Raise :class:`KeyFormatError` when ``key`` does not fit ``algorithm`` or is too short."""
    actual = algorithm_of(key)
    if actual is not algorithm:
        raise KeyFormatError(
            f"{where}: the entry says {algorithm.value} but holds a {actual.key_type} key; "
            f"set the algorithm to {actual.value}"
        )
    bits = key_bits(key)
    if isinstance(key, rsa.RSAPrivateKey) and bits < minimum_bits:
        raise KeyFormatError(
            f"{where}: RSA key of {bits} bits is shorter than MinimumKeyBits {minimum_bits}; "
            "generate a longer one with 'ldapdkim genkey -b 2048'"
        )
