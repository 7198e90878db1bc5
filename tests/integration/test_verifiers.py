"""Self-test of the verifier harness: the DNS server and both independent verifiers.

Before end-to-end tests may trust "Mail::DKIM says pass" about ldapdkim's
signatures, the harness must be shown able to say pass and fail. Messages here
are signed directly with dkimpy (not through ldapdkim) for rsa-sha256 (RFC
6376) and ed25519-sha256 (RFC 8463), simple and relaxed canonicalization, and
their keys served by ``DnsServer``. Then each failure mode (altered body,
altered header, missing key, DNS timeout, SERVFAIL) must produce the verdict
each verifier actually gives, asserted word for word. Finally Mail::DKIM's own
test corpus, with its fake DNS table served for real, must reproduce Mail::DKIM's
and OpenDKIM's known verdicts.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import dkim
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from harness.common import skip_or_fail
from harness.dnsserver import DnsServer, parse_zone_lines
from harness.verifiers import (
    REPO_ROOT,
    SignatureVerdict,
    mail_dkim_verify,
    opendkim_verify,
    require_mail_dkim,
    require_mail_dkim_ed25519,
    require_opendkim,
)

DOMAIN = "example.com"
RSA_SELECTOR = "rsa1"
ED_SELECTOR = "ed1"
CORPUS = REPO_ROOT / "tests" / "data" / "mail-dkim-corpus"

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: Harness   self-test\r\n"
    b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <selftest@example.com>\r\n"
    b"\r\n"
    b"Hello Bob,  \r\n"
    b"\r\n"
    b"this  body has   runs of spaces for relaxed canonicalization.\r\n"
    b"\r\n"
    b"\r\n"
)


class Verify(Protocol):
    def __call__(
        self, message: bytes, dns_port: int, timeout: int = ...
    ) -> list[SignatureVerdict]: ...


# -- keys and signing (dkimpy, not ldapdkim) -----------------------------------


@dataclass(frozen=True)
class Keys:
    rsa_pem: bytes
    rsa_record: str
    ed_seed_b64: bytes
    ed_record: str


@pytest.fixture(scope="module")
def keys() -> Keys:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_pub = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ed_key = ed25519.Ed25519PrivateKey.generate()
    seed = ed_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    ed_pub = ed_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return Keys(
        rsa_pem=rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        rsa_record=f"v=DKIM1; k=rsa; p={base64.b64encode(rsa_pub).decode()}",
        # dkimpy signs ed25519-sha256 with the base64 of the raw 32-byte seed,
        # and RFC 8463 section 4.2 publishes the raw 32-byte public key.
        ed_seed_b64=base64.b64encode(seed),
        ed_record=f"v=DKIM1; k=ed25519; p={base64.b64encode(ed_pub).decode()}",
    )


def sign(
    keys: Keys,
    algorithm: str,
    canonicalization: str = "relaxed",
    selector: str | None = None,
    domain: str = DOMAIN,
    message: bytes = MESSAGE,
) -> bytes:
    """``message`` with a dkimpy DKIM-Signature prepended."""
    rsa_alg = algorithm == "rsa-sha256"
    header = dkim.sign(
        message,
        (selector or (RSA_SELECTOR if rsa_alg else ED_SELECTOR)).encode(),
        domain.encode(),
        keys.rsa_pem if rsa_alg else keys.ed_seed_b64,
        canonicalize=(canonicalization.encode(), canonicalization.encode()),
        signature_algorithm=algorithm.encode(),
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    assert isinstance(header, bytes)
    return header + message


@pytest.fixture(scope="module")
def dns_server(keys: Keys) -> Iterator[DnsServer]:
    with DnsServer(
        {
            f"{RSA_SELECTOR}._domainkey.{DOMAIN}": [keys.rsa_record],
            f"{ED_SELECTOR}._domainkey.{DOMAIN}": [keys.ed_record],
        }
    ) as server:
        server.set_timeout(f"slow._domainkey.{DOMAIN}")
        server.set_servfail(f"broken._domainkey.{DOMAIN}")
        yield server
        assert server.errors == []


def check(verifier: str, algorithm: str) -> Verify:
    """The verifier function, after skipping (failing in CI) if it cannot run here."""
    if verifier == "mail-dkim":
        if algorithm == "ed25519-sha256":
            require_mail_dkim_ed25519()
        else:
            require_mail_dkim()
        return mail_dkim_verify
    require_opendkim()
    return opendkim_verify


ALGORITHMS = ["rsa-sha256", "ed25519-sha256"]
VERIFIERS = ["mail-dkim", "opendkim"]


# -- the DNS server itself -------------------------------------------------------


def query(server: DnsServer, name: str, tcp: bool = False) -> dns.message.Message:
    request = dns.message.make_query(name, "TXT")
    if tcp:
        return dns.query.tcp(request, "127.0.0.1", port=server.port, timeout=2)
    return dns.query.udp(request, "127.0.0.1", port=server.port, timeout=2)


def test_dns_answers_case_insensitively_with_255_byte_strings() -> None:
    long_text = "v=DKIM1; k=rsa; p=" + "A" * 600
    with DnsServer({"Sel._DomainKey.Example.COM.": [long_text]}) as server:
        answer = query(server, "sel._domainkey.example.com", tcp=True)
        strings = [s for rrset in answer.answer for rdata in rrset for s in rdata.strings]
        assert [len(s) for s in strings] == [255, 255, 108]
        assert b"".join(strings).decode() == long_text
        assert answer.flags & dns.flags.AA
        # Over UDP without EDNS0 the answer does not fit in 512 bytes.
        assert query(server, "sel._domainkey.example.com").flags & dns.flags.TC
        assert server.queries == ["sel._domainkey.example.com"] * 2


def test_dns_nxdomain_nodata_servfail_timeout_and_remove() -> None:
    with DnsServer({"s._domainkey.example.com": ["v=DKIM1; p="]}) as server:
        server.set_servfail("sf.example.com")
        server.set_timeout("slow.example.com")
        assert query(server, "nope.example.com").rcode() == dns.rcode.NXDOMAIN
        # A parent of a published name exists but has no data: NODATA.
        parent = query(server, "_domainkey.example.com")
        assert (parent.rcode(), parent.answer) == (dns.rcode.NOERROR, [])
        assert query(server, "sf.example.com").rcode() == dns.rcode.SERVFAIL
        with pytest.raises(dns.exception.Timeout):
            dns.query.udp(
                dns.message.make_query("slow.example.com", "TXT"),
                "127.0.0.1",
                port=server.port,
                timeout=0.3,
            )
        server.remove("s._domainkey.example.com")
        assert query(server, "s._domainkey.example.com").rcode() == dns.rcode.NXDOMAIN


def test_load_zone_lines_one_line_and_parenthesised() -> None:
    zone = """
$TTL 3600
; what `ldapdkim dns-records` and opendkim-genkey print
s1._domainkey.example.com. 3600 IN TXT "v=DKIM1; k=ed25519; " "p=AAAA"
s2._domainkey.example.com. IN TXT ( "v=DKIM1; k=rsa; "   ; key follows
        "p=MIIB"
        "IjAN" )
s3._domainkey IN TXT "h=sha256; p=X\\"Y\\059"
"""
    assert parse_zone_lines(zone, origin="example.org") == [
        ("s1._domainkey.example.com.", "v=DKIM1; k=ed25519; p=AAAA"),
        ("s2._domainkey.example.com.", "v=DKIM1; k=rsa; p=MIIBIjAN"),
        ("s3._domainkey.example.org.", 'h=sha256; p=X"Y;'),
    ]
    with DnsServer() as server:
        names = server.load_zone_lines(zone, origin="example.org")
        assert names == [
            "s1._domainkey.example.com",
            "s2._domainkey.example.com",
            "s3._domainkey.example.org",
        ]
        answer = query(server, "S2._domainkey.example.com.")
        assert [b"".join(r.strings) for rrset in answer.answer for r in rrset] == [
            b"v=DKIM1; k=rsa; p=MIIBIjAN"
        ]
    with pytest.raises(ValueError, match="line 1: expected a TXT record"):
        parse_zone_lines("example.com. IN A 192.0.2.1")


# -- both verifiers on dkimpy signatures -------------------------------------------

PASS_DETAIL = {
    ("mail-dkim", "rsa-sha256"): "pass",
    ("mail-dkim", "ed25519-sha256"): "pass",
    ("opendkim", "rsa-sha256"): "pass [2048-bit key; unprotected]",
    ("opendkim", "ed25519-sha256"): "pass",
}


@pytest.mark.parametrize("canonicalization", ["simple", "relaxed"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("verifier", VERIFIERS)
def test_good_signature_passes(
    verifier: str, algorithm: str, canonicalization: str, keys: Keys, dns_server: DnsServer
) -> None:
    verify = check(verifier, algorithm)
    message = sign(keys, algorithm, canonicalization)
    selector = RSA_SELECTOR if algorithm == "rsa-sha256" else ED_SELECTOR
    assert verify(message, dns_server.port) == [
        SignatureVerdict("pass", DOMAIN, selector, algorithm, PASS_DETAIL[verifier, algorithm])
    ]


BODY_ALTERED = {
    ("mail-dkim", "rsa-sha256"): ("fail", "fail (body has been altered)"),
    ("mail-dkim", "ed25519-sha256"): ("fail", "fail (body has been altered)"),
    ("opendkim", "rsa-sha256"): (
        "fail",
        "fail (signature verification failed) [2048-bit key; unprotected]",
    ),
    ("opendkim", "ed25519-sha256"): ("fail", "fail (signature verification failed)"),
}
HEADER_ALTERED = {
    ("mail-dkim", "rsa-sha256"): ("fail", "fail (message has been altered)"),
    ("mail-dkim", "ed25519-sha256"): ("fail", "fail (bad Ed25519 signature)"),
    ("opendkim", "rsa-sha256"): (
        "fail",
        "fail (signature verification failed) [2048-bit key; unprotected]",
    ),
    ("opendkim", "ed25519-sha256"): ("fail", "fail (signature verification failed)"),
}


@pytest.mark.parametrize("canonicalization", ["simple", "relaxed"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("verifier", VERIFIERS)
def test_altered_body_fails(
    verifier: str, algorithm: str, canonicalization: str, keys: Keys, dns_server: DnsServer
) -> None:
    verify = check(verifier, algorithm)
    message = sign(keys, algorithm, canonicalization).replace(b"Hello Bob", b"Hello Eve")
    [verdict] = verify(message, dns_server.port)
    assert (verdict.result, verdict.detail) == BODY_ALTERED[verifier, algorithm]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("verifier", VERIFIERS)
def test_altered_signed_header_fails(
    verifier: str, algorithm: str, keys: Keys, dns_server: DnsServer
) -> None:
    verify = check(verifier, algorithm)
    message = sign(keys, algorithm, "relaxed").replace(b"self-test", b"self-test!")
    [verdict] = verify(message, dns_server.port)
    assert (verdict.result, verdict.detail) == HEADER_ALTERED[verifier, algorithm]


# What each verifier says when the key cannot be had. Mail::DKIM (both
# versions) has no temperror for signatures: DNS trouble is "invalid".
# OpenDKIM calls a missing key "fail", not permerror.
KEY_TROUBLE = {
    ("mail-dkim", "missing"): ("invalid", "invalid (public key: not available)"),
    ("mail-dkim", "revoked"): ("invalid", "invalid (public key: revoked)"),
    ("mail-dkim", "slow"): ("invalid", "invalid (public key: DNS error: query timed out)"),
    ("mail-dkim", "broken"): ("invalid", "invalid (public key: DNS error: SERVFAIL)"),
    ("opendkim", "missing"): ("fail", "fail (key not found in DNS)"),
    ("opendkim", "revoked"): ("fail", "fail (key revoked)"),
    ("opendkim", "slow"): ("temperror", "temperror (key DNS query failed)"),
    ("opendkim", "broken"): ("temperror", "temperror (key DNS query failed)"),
}


@pytest.mark.parametrize("selector", ["missing", "revoked", "slow", "broken"])
@pytest.mark.parametrize("verifier", VERIFIERS)
def test_key_trouble(verifier: str, selector: str, keys: Keys, dns_server: DnsServer) -> None:
    verify = check(verifier, "rsa-sha256")
    dns_server.set_txt(f"revoked._domainkey.{DOMAIN}", "v=DKIM1; k=rsa; p=")
    message = sign(keys, "rsa-sha256", selector=selector)
    verdicts = verify(message, dns_server.port, timeout=1)
    result, detail = KEY_TROUBLE[verifier, selector]
    assert verdicts == [SignatureVerdict(result, DOMAIN, selector, "rsa-sha256", detail)]


@pytest.mark.parametrize("verifier", VERIFIERS)
def test_unsigned_message_has_no_verdicts(verifier: str, dns_server: DnsServer) -> None:
    verify = check(verifier, "rsa-sha256")
    assert verify(MESSAGE, dns_server.port) == []


@pytest.mark.parametrize("verifier", VERIFIERS)
def test_two_signatures_special_use_domain_and_tcp(
    verifier: str, keys: Keys, dns_server: DnsServer
) -> None:
    """Two signatures are reported in order; a .test domain (RFC 6761) resolves
    through OpenDKIM's unbound; a key record over 512 bytes arrives over TCP."""
    verify = check(verifier, "rsa-sha256")
    name = "big._domainkey.harness.test"
    # n= is the notes tag (RFC 6376 section 3.6.1); it pads the record past
    # 512 bytes, staying under OpenDKIM's 1024 (see the test below).
    dns_server.set_txt(name, keys.rsa_record.replace("k=rsa;", "k=rsa; n=" + "x" * 300 + ";"))
    first = sign(keys, "rsa-sha256", selector="big", domain="harness.test")
    both = sign(keys, "rsa-sha256", message=first)
    before = dns_server.queries.count(name)
    verdicts = verify(both, dns_server.port)
    assert [(v.result, v.domain, v.selector) for v in verdicts] == [
        ("pass", DOMAIN, RSA_SELECTOR),
        ("pass", "harness.test", "big"),
    ]
    if verifier == "mail-dkim":
        # Net::DNS sends no EDNS0: truncated over UDP, then again over TCP.
        assert dns_server.queries.count(name) - before == 2


def test_opendkim_quirks(keys: Keys, dns_server: DnsServer) -> None:
    """Pin two OpenDKIM 2.11 limits that are not the harness's fault.

    ``opendkim -t`` passes each header field on as the milter protocol does,
    minus one space after the colon, and rebuilds it with exactly one: under
    simple header canonicalization "Subject:  x" or "Subject:x" then fails.
    And it reads only the first 1024 bytes of a key record: a p= that ends
    beyond them is cut, "unable to apply public key" (RSA-8192 would be).
    Mail::DKIM passes all of these.
    """
    require_opendkim()
    require_mail_dkim()
    odd_spacing = MESSAGE.replace(b"Subject: ", b"Subject:  ")
    message = sign(keys, "rsa-sha256", "simple", message=odd_spacing)
    assert [v.detail for v in opendkim_verify(message, dns_server.port)] == [
        "fail (signature verification failed) [2048-bit key; unprotected]"
    ]
    assert [v.detail for v in mail_dkim_verify(message, dns_server.port)] == ["pass"]

    name = f"long._domainkey.{DOMAIN}"
    message = sign(keys, "rsa-sha256", selector="long")
    for length, expected in [
        (1024, "pass [2048-bit key; unprotected]"),
        (1025, "permerror (unable to apply public key)"),
    ]:
        padding = "x" * (length - len(keys.rsa_record) - len(" n=;"))
        record = keys.rsa_record.replace("k=rsa;", f"k=rsa; n={padding};")
        assert len(record) == length
        dns_server.set_txt(name, record)
        assert [v.detail for v in opendkim_verify(message, dns_server.port)] == [expected]
        assert [v.result for v in mail_dkim_verify(message, dns_server.port)] == ["pass"]


def test_load_zone_lines_record_verifies(keys: Keys) -> None:
    """A parenthesised zone-file record, as ``ldapdkim dns-records`` prints it, is servable."""
    require_mail_dkim()
    record = keys.rsa_record
    zone = (
        f"zone._domainkey.{DOMAIN}. 3600 IN TXT ( ; rsa key\n"
        + "".join(f'    "{record[i : i + 200]}"\n' for i in range(0, len(record), 200))
        + "    )\n"
    )
    with DnsServer() as server:
        server.load_zone_lines(zone)
        verdicts = mail_dkim_verify(sign(keys, "rsa-sha256", selector="zone"), server.port)
    assert [v.result for v in verdicts] == ["pass"]


# -- Mail::DKIM's corpus, its fake DNS table served for real ----------------------


def load_fake_dns(server: DnsServer, keys_txt: str) -> None:
    """Load the corpus's keys.txt: NAME VALUE, with NXDOMAIN / timeout / SERVFAIL markers."""
    for line in keys_txt.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, value = line.partition(" ")
        value = value.strip()
        if value == "NXDOMAIN":
            server.remove(name)
        elif value == "~~Query timed out~~":
            server.set_timeout(name)
        elif value == "~~SERVFAIL~~":
            server.set_servfail(name)
        else:
            server.set_txt(name, "" if value == '""' else value)


@pytest.fixture(scope="module")
def corpus_dns() -> Iterator[DnsServer]:
    if not (CORPUS / "keys.txt").is_file():
        skip_or_fail(f"Mail::DKIM test corpus not found at {CORPUS}")
    with DnsServer() as server:
        load_fake_dns(server, (CORPUS / "keys.txt").read_text())
        yield server
        assert server.errors == []


@functools.cache
def manifest() -> dict[str, dict[str, str]]:
    """file -> {"legacy": Mail::DKIM's verdict, "opendkim": OpenDKIM's}, from MANIFEST.tsv."""
    path = CORPUS / "MANIFEST.tsv"
    if not path.is_file():
        return {}
    rows = {}
    for line in path.read_text().splitlines()[1:]:
        file, _expected, note = line.split("\t")
        rows[file] = dict(re.findall(r"(legacy|opendkim)=(\w+)", note))
    return rows


# One of each kind: rsa-sha1/256 pass, ed25519 pass and fail, body/header/b=
# failures, key NXDOMAIN, revoked, timeout, SERVFAIL, DomainKeys only, several
# signatures of which one passes.
CORPUS_SAMPLE = [
    "mail-dkim/good_83176.txt",
    "mail-dkim/mine_ietf05_1.txt",
    "mail-dkim/goodkey_ed25519.txt",
    "mail-dkim/badkey3_ed25519.txt",
    "mail-dkim/bad_ietf01_1.txt",
    "mail-dkim/bad_ietf01_3.txt",
    "mail-dkim/badkey_1.txt",
    "mail-dkim/badkey_2.txt",
    "mail-dkim/badkey_14.txt",
    "mail-dkim/badkey_15.txt",
    "mail-dkim/good_dk_1.txt",
    "mail-dkim/multiple_2.txt",
]
# Mail::DKIM's overall result is its best signature result.
_RANK = ["pass", "fail", "invalid", "none"]


@pytest.mark.parametrize("file", CORPUS_SAMPLE)
def test_corpus_mail_dkim(file: str, corpus_dns: DnsServer) -> None:
    require_mail_dkim()
    if "ed25519" in file:
        require_mail_dkim_ed25519()
    expected = manifest()[file]["legacy"]
    verdicts = mail_dkim_verify((CORPUS / file).read_bytes(), corpus_dns.port, timeout=1)
    results = [v.result for v in verdicts] or ["none"]
    assert min(results, key=_RANK.index) == expected, verdicts


@pytest.mark.parametrize("file", [f for f in CORPUS_SAMPLE if "multiple" not in f])
def test_corpus_opendkim(file: str, corpus_dns: DnsServer) -> None:
    require_opendkim()
    expected = manifest()[file]["opendkim"]
    verdicts = opendkim_verify((CORPUS / file).read_bytes(), corpus_dns.port, timeout=1)
    assert ([v.result for v in verdicts] or ["none"]) == [expected], verdicts
