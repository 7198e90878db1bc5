"""ARC chains (RFC 8617) across implementations: ldapdkim, Perl Mail::DKIM and dkimpy.

Each hop verifies the chain it receives and seals it: ldapdkim with
:mod:`ldapdkim.signing.arc`, the others with their own sealers
(``harness.arcpeers``), each with its own domain and key served by a DNS
server on loopback.  Chains of one and three hops, ldapdkim sealing after
each of the others and they after ldapdkim, must verify with all three.

Ed25519: neither peer seals with it (both sign rsa-sha256 only), and
neither verifies it (dkimpy 1.1.4 calls it an unknown algorithm, Mail::DKIM
1.20230212 an unsupported one, and 1.20240923's ARC verifier dies on it); the
Ed25519 cases show that, so
they fail once a peer learns it and the case can be made a real one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from harness.arcpeers import (
    PeerVerdict,
    dkimpy_seal,
    dkimpy_verify,
    mail_dkim_seal,
    mail_dkim_verify,
    prepend,
    with_results,
)
from harness.dnsserver import DnsServer
from harness.forge import BODY, HEADERS, PrivateKey, ed25519_key, key_record, rsa_key
from harness.verifiers import VerifierError, require_mail_dkim

from ldapdkim.model import Algorithm
from ldapdkim.signing.arc import ArcVerdict, ChainValidation, seal, verify_chain
from ldapdkim.signing.canonicalization import split_message
from ldapdkim.signing.keyring import MemorySigner

OURS_RSA = ("example.org", "ours")
OURS_ED25519 = ("example.org", "ours-ed")
MAIL_DKIM = ("example.net", "perl")
DKIMPY = ("example.com", "py")
MESSAGE = b"".join(n + b":" + v for n, v in HEADERS) + b"\r\n" + BODY


def _records() -> dict[str, bytes]:
    keys: dict[tuple[str, str], PrivateKey] = {
        OURS_RSA: rsa_key(),
        OURS_ED25519: ed25519_key(),
        MAIL_DKIM: rsa_key(),
        DKIMPY: rsa_key(),
    }
    return {f"{s}._domainkey.{d}": key_record(k) for (d, s), k in keys.items()}


RECORDS = _records()


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    require_mail_dkim()
    with DnsServer({name: [record.decode()] for name, record in RECORDS.items()}) as server:
        yield server


def ours_verify(message: bytes) -> ArcVerdict:
    headers, body = split_message(message)
    return verify_chain(headers, body, _lookup, timeout=2)


def _lookup(name: str) -> list[bytes]:
    return [RECORDS[name]] if name in RECORDS else []


Hop = Callable[[bytes, DnsServer], bytes]


def ldapdkim_hop(ed25519: bool = False) -> Hop:
    domain, selector = OURS_ED25519 if ed25519 else OURS_RSA
    key = ed25519_key() if ed25519 else rsa_key()
    algorithm = Algorithm("ed25519-sha256" if ed25519 else "rsa-sha256")

    def hop(message: bytes, dns: DnsServer) -> bytes:
        headers, body = split_message(message)
        verdict = ours_verify(message)
        fields = seal(
            headers,
            body,
            verdict,
            domain=domain,
            signer=MemorySigner(selector, algorithm, key),
            authserv_id=f"mx.{domain}",
            results=f"arc={verdict.cv.value}",
        )
        return prepend(fields, message)

    return hop


def _authserv_id(message: bytes, domain: str) -> str:
    """One per hop: a sealer copies every Authentication-Results of its authserv-id, and
    two arc= results in them make it seal cv=fail."""
    headers, _ = split_message(message)
    hop = 1 + sum(name.lower() == b"arc-seal" for name, _ in headers)
    return f"mx{hop}.{domain}"


def mail_dkim_hop(message: bytes, dns: DnsServer) -> bytes:
    domain, selector = MAIL_DKIM
    verdict = mail_dkim_verify(message, dns.port)
    authserv_id = _authserv_id(message, domain)
    message = with_results(message, authserv_id, f"arc={verdict.result}")
    fields = mail_dkim_seal(
        message, domain=domain, selector=selector, authserv_id=authserv_id, key=rsa_key()
    )
    return prepend(fields, message)


def dkimpy_hop(message: bytes, dns: DnsServer) -> bytes:
    domain, selector = DKIMPY
    verdict = dkimpy_verify(message, RECORDS)
    authserv_id = _authserv_id(message, domain)
    message = with_results(message, authserv_id, f"arc={verdict.result}")
    fields = dkimpy_seal(
        message, domain=domain, selector=selector, authserv_id=authserv_id, key=rsa_key()
    )
    return prepend(fields, message)


HOPS: dict[str, Hop] = {
    "ldapdkim": ldapdkim_hop(),
    "maildkim": mail_dkim_hop,
    "dkimpy": dkimpy_hop,
}


def run(path: str, dns: DnsServer) -> bytes:
    message = MESSAGE
    for name in path.split("-"):
        message = HOPS[name](message, dns)
    return message


def all_three(message: bytes, dns: DnsServer) -> tuple[str, str, str]:
    return (
        ours_verify(message).cv.value,
        mail_dkim_verify(message, dns.port).result,
        dkimpy_verify(message, RECORDS).result,
    )


THROUGH_LDAPDKIM = [
    "ldapdkim",
    "ldapdkim-ldapdkim-ldapdkim",
    "dkimpy-ldapdkim",
    "maildkim-ldapdkim",
    "ldapdkim-dkimpy",
    "ldapdkim-maildkim",
    "dkimpy-maildkim-ldapdkim",
    "maildkim-dkimpy-ldapdkim",
    "ldapdkim-maildkim-dkimpy",
    "ldapdkim-dkimpy-ldapdkim",
    "maildkim-ldapdkim-dkimpy",
]
"""Paths with an ldapdkim hop: one and three hops, ldapdkim after each peer and before."""
SEALED_BY_THE_OTHERS = [
    "maildkim",
    "dkimpy",
    "maildkim-maildkim-maildkim",
    "dkimpy-dkimpy-dkimpy",
    "dkimpy-maildkim-dkimpy",
]
"""Paths without one: ldapdkim only verifies what the others sealed."""


@pytest.mark.parametrize("path", THROUGH_LDAPDKIM + SEALED_BY_THE_OTHERS)
def test_rsa_chains_verify_with_all_three(path: str, dns: DnsServer) -> None:
    message = run(path, dns)
    assert all_three(message, dns) == ("pass", "pass", "pass"), path
    verdict = ours_verify(message)
    assert (verdict.instances, verdict.oldest_pass) == (path.count("-") + 1, 0)


def test_a_broken_chain_sealed_by_ldapdkim_fails_everywhere(dns: DnsServer) -> None:
    message = run("maildkim-dkimpy", dns).replace(b"the figures.", b"the figures changed.")
    verdict = ours_verify(message)
    assert verdict.cv is ChainValidation.FAIL
    sealed = ldapdkim_hop()(message, dns)
    assert b"cv=fail" in sealed.split(b"\r\n")[0]
    assert all_three(sealed, dns) == ("fail", "fail", "fail")


@pytest.mark.parametrize("hops", [1, 3])
def test_ed25519_chains_verify_with_ldapdkim_and_neither_peer_knows_them(
    hops: int, dns: DnsServer
) -> None:
    hop = ldapdkim_hop(ed25519=True)
    message = MESSAGE
    for _ in range(hops):
        message = hop(message, dns)
    verdict = ours_verify(message)
    assert (verdict.cv, verdict.instances) == (ChainValidation.PASS, hops)
    assert dkimpy_verify(message, RECORDS) == PeerVerdict(
        "fail", "unknown signature algorithm: b'ed25519-sha256'"
    )
    try:
        perl = mail_dkim_verify(message, dns.port)
    except VerifierError as err:  # 1.20240923 dies asking an Ed25519 key for its size
        assert "Crypt::PK::Ed25519" in str(err)
    else:  # 1.20230212 knows no ed25519-sha256
        assert perl.result != "pass" and "unsupported algorithm ed25519-sha256" in perl.detail


def test_ldapdkim_seals_with_ed25519_after_rsa_peers(dns: DnsServer) -> None:
    message = ldapdkim_hop(ed25519=True)(run("maildkim-dkimpy", dns), dns)
    verdict = ours_verify(message)
    assert (verdict.cv, verdict.instances, verdict.oldest_pass) == (ChainValidation.PASS, 3, 0)
