"""What ``testkey`` says about a key, and how DNS records are compared; no network.

The same against slapd and a DNS server is tests/integration/test_testkey.py.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization

from ldapdkim import keys
from ldapdkim.errors import DnsTemporaryError
from ldapdkim.model import Algorithm, DomainPolicy, KeyState, SigningKey
from ldapdkim.publish.audit import AuditedKey, Level, assess_domain, assess_key
from ldapdkim.publish.dnscheck import DnsStatus, Published, check, compare, same_public_key

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
NAME = "s1._domainkey.example.com"
POLICY = DomainPolicy(dn="ou=example.com,ou=domains,dc=example,dc=com", names=("example.com",))
ED_KEY = keys.generate(Algorithm.ED25519_SHA256)
RSA_KEY = keys.generate(Algorithm.RSA_SHA256, 1024)


def key(state: KeyState = KeyState.ACTIVE, *, rsa: bool = False) -> SigningKey:
    private = RSA_KEY if rsa else ED_KEY
    return SigningKey(
        dn=f"dkimSignSelector=s1,{POLICY.dn}",
        selector="s1",
        algorithm=keys.algorithm_of(private),
        state=state,
        key_data=keys.private_pem(private),
        public_key=keys.public_key_b64(private),
    )


def assess(signing_key: SigningKey, status: DnsStatus) -> tuple[Level, list[str]]:
    """The verdict and the findings' texts for ``signing_key`` when DNS says ``status``."""
    report = assess_key("example.com", AuditedKey(signing_key), Published(NAME, status, "why"), NOW)
    return report.verdict, [f.text for f in report.findings]


# -- comparing records --------------------------------------------------------------------


def test_a_record_matches_whatever_its_spacing() -> None:
    p = keys.public_key_b64(ED_KEY)
    text = f"v=DKIM1;\tk=ed25519; p={p[:10]} {p[10:]} ;".encode()
    assert compare(text, Algorithm.ED25519_SHA256, p) == (DnsStatus.MATCH, "")


def test_an_rsa_key_in_pkcs1_form_is_the_same_key() -> None:
    pkcs1 = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    assert same_public_key(base64.b64encode(pkcs1).decode(), keys.public_key_b64(RSA_KEY))
    assert not same_public_key(keys.public_key_b64(ED_KEY), keys.public_key_b64(RSA_KEY))


@pytest.mark.parametrize(
    ("text", "status", "detail"),
    [
        (None, DnsStatus.MISSING, "no TXT record"),
        (b"v=DKIM1; k=ed25519; p=", DnsStatus.REVOKED, "p= is empty"),
        (b"v=DKIM1; k=rsa; p=AAAA", DnsStatus.MISMATCH, "k=rsa, but the key is ed25519"),
        (b"some text", DnsStatus.MISMATCH, "not a DKIM key record"),
        (b"v=DKIM2; p=AAAA", DnsStatus.MISMATCH, "v=DKIM2, not DKIM1"),
        (b"v=DKIM1; k=ed25519", DnsStatus.MISMATCH, "the record has no p= tag"),
        (b"v=DKIM1; k=ed25519; p=AAAA", DnsStatus.MISMATCH, "p= holds a different public key"),
    ],
)
def test_records_that_do_not_match(text: bytes | None, status: DnsStatus, detail: str) -> None:
    found, why = compare(text, Algorithm.ED25519_SHA256, keys.public_key_b64(ED_KEY))
    assert found is status
    assert why.startswith(detail)


def test_a_dns_failure_is_reported_not_raised() -> None:
    def lookup(name: str) -> list[bytes]:
        raise DnsTemporaryError(f"DNS query for {name} TXT timed out")

    assert check(lookup, NAME, Algorithm.ED25519_SHA256, "x") == Published(
        NAME, DnsStatus.ERROR, f"DNS query for {NAME} TXT timed out"
    )


# -- judging keys ---------------------------------------------------------------------------


def test_an_active_published_key_is_fine() -> None:
    assert assess(key(), DnsStatus.MATCH) == (Level.OK, [])


@pytest.mark.parametrize("status", [DnsStatus.MISSING, DnsStatus.MISMATCH, DnsStatus.REVOKED])
def test_an_active_key_dns_does_not_publish_is_bad(status: DnsStatus) -> None:
    verdict, findings = assess(key(), status)
    assert verdict is Level.BAD
    assert findings[0].startswith(f"active, but {NAME}") or findings[0].startswith(
        f"active, but DNS at {NAME} does not match"
    )


def test_a_dns_error_is_bad_because_nothing_was_checked() -> None:
    assert assess(key(KeyState.RETIRED), DnsStatus.ERROR) == (
        Level.BAD,
        [f"cannot check {NAME}: why"],
    )


def test_a_pending_key_not_yet_published_is_only_noted() -> None:
    assert assess(key(KeyState.PENDING), DnsStatus.MISSING) == (
        Level.NOTE,
        [f"pending, not published yet at {NAME}"],
    )


def test_a_revoked_key_still_in_dns_is_a_warning() -> None:
    verdict, findings = assess(key(KeyState.REVOKED), DnsStatus.MATCH)
    assert verdict is Level.WARN
    assert findings[0].startswith(f"revoked, but still published at {NAME}")
    assert assess(key(KeyState.REVOKED), DnsStatus.MISSING) == (Level.OK, [])


def test_rsa_under_2048_bits_is_weak() -> None:
    assert assess(key(rsa=True), DnsStatus.MATCH) == (
        Level.WARN,
        ["weak: RSA key of 1024 bits; rotate to a 2048-bit key"],
    )


def test_a_public_key_attribute_that_contradicts_the_private_key_is_bad() -> None:
    wrong = replace(key(), public_key=keys.public_key_b64(keys.generate(Algorithm.ED25519_SHA256)))
    verdict, findings = assess(wrong, DnsStatus.MATCH)
    assert verdict is Level.BAD
    assert findings[0].startswith("dkimSignPublicKey does not match dkimSignPrivateKey")


def test_age_comes_from_the_creation_time() -> None:
    created = NOW - timedelta(days=400)
    report = assess_key(
        "example.com", AuditedKey(key(), created), Published(NAME, DnsStatus.MATCH), NOW
    )
    assert report.as_json(NOW)["age_days"] == 400
    assert [(f.level, f.text) for f in report.findings] == [
        (Level.NOTE, "older than a year; consider 'ldapdkim rotate'")
    ]


def test_a_domain_without_a_signing_key_is_bad_unless_signing_is_off() -> None:
    report = assess_domain(POLICY, [key(KeyState.PENDING), key(KeyState.RETIRED)], NOW)
    assert report is not None and report.verdict is Level.BAD
    assert report.findings[0].text.startswith("no key signs now")
    off = assess_domain(replace(POLICY, enabled=False), [], NOW)
    assert off is not None and off.verdict is Level.NOTE
    assert assess_domain(POLICY, [key()], NOW) is None
