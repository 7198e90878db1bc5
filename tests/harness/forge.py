"""Make DKIM signatures with any tags, valid or not, to test a verifier clause by clause.

The hashing is dkimpy's (its canonicalization and header selection), so a
test of ldapdkim's verifier does not sign with the code it is testing.  The
caller writes the tag list; ``bh=`` and ``b=`` are filled in (``bh`` only
when the text holds ``bh=@``, so that a test can also give its own).
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils
from dkim.canonicalization import CanonicalizationPolicy

Header = tuple[bytes, bytes]
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

HEADERS: list[Header] = [
    (b"From", b" Alice <alice@example.com>\r\n"),
    (b"To", b" Bob <bob@example.net>\r\n"),
    (b"Subject", b" a test\r\n"),
    (b"Date", b" Sat, 28 Nov 2026 12:00:00 +0000\r\n"),
    (b"Message-ID", b" <forge-1@example.com>\r\n"),
]
BODY = b"Hello Bob,\r\n\r\nthe figures.\r\n"


@cache
def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """An RSA key; below 1024 bits (which cryptography will not make) through openssl."""
    if bits >= 1024:
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}"],
        check=True,
        capture_output=True,
    ).stdout
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def rsa_public_record(bits: int) -> bytes:
    """A key record for an RSA public key of ``bits`` bits that no one holds the private key
    of: for size checks, without generating (minutes for 8192 bits and more)."""
    modulus = (1 << (bits - 1)) | 0x10001  # odd, exactly ``bits`` long
    public = rsa.RSAPublicNumbers(65537, modulus).public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


@cache
def ed25519_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def key_record(key: PrivateKey, tags: str = "v=DKIM1; k={k}; p={p}") -> bytes:
    """A DNS key record for ``key``; ``{k}`` and ``{p}`` in ``tags`` are filled in."""
    public = key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        k, data = (
            "ed25519",
            public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        )
    else:
        k, data = (
            "rsa",
            public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
    return tags.format(k=k, p=base64.b64encode(data).decode()).encode()


def body_hash(body: bytes, canon: str = "simple", length: int | None = None) -> str:
    policy = CanonicalizationPolicy.from_c_value(f"simple/{canon}".encode())
    # The body travels with CRLF: a bare LF in what a test gives is a line end.
    canonical = policy.canonicalize_body(body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    if length is not None:
        canonical = canonical[:length]
    return base64.b64encode(hashlib.sha256(canonical).digest()).decode()


@dataclass(frozen=True)
class Forged:
    headers: list[Header]
    body: bytes

    @property
    def message(self) -> bytes:
        return b"".join(n + b":" + v for n, v in self.headers) + b"\r\n" + self.body


def forge(
    tags: str,
    key: PrivateKey,
    *,
    headers: Sequence[Header] = HEADERS,
    body: bytes = BODY,
    sign: Sequence[str] | None = None,
    canon: str = "relaxed/relaxed",
    name: bytes = b"DKIM-Signature",
) -> Forged:
    """Prepend a DKIM-Signature whose tag list is ``tags`` (``bh=@`` and ``b=`` filled in).

    ``sign`` names the header fields hashed, in order (default: what ``h=``
    says, parsed naively from ``tags``); ``canon`` the canonicalization used
    to hash, whatever ``c=`` says.
    """
    body_canon = canon.partition("/")[2]
    if "bh=@" in tags:
        length = None
        for part in tags.split(";"):
            if part.strip().startswith("l="):
                length = int(part.strip()[2:])
        tags = tags.replace("bh=@", f"bh={body_hash(body, body_canon or 'simple', length)}")
    if sign is None:
        h = next(p.strip()[2:] for p in tags.split(";") if p.strip().startswith("h="))
        sign = [n.strip() for n in h.split(":")]
    value = (" " + tags).encode()
    policy = CanonicalizationPolicy.from_c_value(canon.encode())
    canonical = policy.canonicalize_headers([[n, v] for n, v in headers])
    hasher = hashlib.sha256()
    dkim.hash_headers(
        hasher, policy, canonical, [s.lower().encode() for s in sign], (name, value), {}
    )
    digest = hasher.digest()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(digest)
    else:
        signature = key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    signed = value + base64.b64encode(signature) + b"\r\n"
    return Forged([(name, signed), *headers], body)
