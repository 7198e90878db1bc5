"""What DNS publishes for the directory's keys, and how it is written for zones and nsupdate."""

from __future__ import annotations

import doctest
import logging

import pytest

from ldapdkim.model import Algorithm, DomainPolicy, KeyState, SigningKey
from ldapdkim.publish import dnsexport
from ldapdkim.publish.dnsexport import (
    Adsp,
    AdspRecord,
    KeyRecord,
    Publication,
    Withdrawal,
    nsupdate_lines,
    publication,
    zone_lines,
)

ED = Algorithm.ED25519_SHA256
RSA = Algorithm.RSA_SHA256
LONG_KEY = "M" * 392  # the length of an RSA-2048 public key in base64


def _key(selector: str, state: KeyState, public: str | None = "AAAA") -> SigningKey:
    return SigningKey(f"dkimSignSelector={selector},ou=x", selector, ED, state, public_key=public)


def _policy(*names: str) -> DomainPolicy:
    return DomainPolicy(f"ou={names[0]}", names)


def test_the_examples_in_the_docstring_hold() -> None:
    assert doctest.testmod(dnsexport).failed == 0


def test_pending_active_and_retired_keys_are_published_and_revoked_ones_withdrawn() -> None:
    walk = [
        (
            _policy("example.com"),
            (
                _key("p", KeyState.PENDING),
                _key("a", KeyState.ACTIVE),
                _key("r", KeyState.RETIRED),
                _key("x", KeyState.REVOKED),
            ),
        )
    ]

    result = publication(walk)

    assert [r.name for r in result.records] == [
        "a._domainkey.example.com.",
        "p._domainkey.example.com.",
        "r._domainkey.example.com.",
    ]
    assert result.withdrawals == (Withdrawal("example.com", "x"),)


def test_every_name_of_a_domain_entry_publishes_its_keys() -> None:
    result = publication([(_policy("example.com", "example.net"), (_key("s1", KeyState.ACTIVE),))])

    assert [r.name for r in result.records] == [
        "s1._domainkey.example.com.",
        "s1._domainkey.example.net.",
    ]


def test_a_revoked_name_that_another_entry_publishes_is_not_withdrawn() -> None:
    walk = [
        (_policy("example.com"), (_key("s1", KeyState.REVOKED),)),
        (_policy("example.com", "example.org"), (_key("s1", KeyState.ACTIVE),)),
    ]

    assert publication(walk).withdrawals == ()


def test_adsp_goes_to_every_domain_that_publishes_a_key_only() -> None:
    walk = [
        (_policy("example.com"), (_key("s1", KeyState.ACTIVE),)),
        (_policy("revoked.example"), (_key("s1", KeyState.REVOKED),)),
    ]

    records = publication(walk, Adsp.ALL).records

    assert [r for r in records if isinstance(r, AdspRecord)] == [
        AdspRecord("example.com", Adsp.ALL)
    ]


def test_a_key_without_a_public_key_is_left_out_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="ldapdkim"):
        result = publication([(_policy("example.com"), (_key("s1", KeyState.ACTIVE, None),))])

    assert result.records == ()
    assert caplog.messages == ["dkimSignSelector=s1,ou=x: no public key to publish"]


PUBLICATION = Publication(
    (
        KeyRecord("example.com", "e1", ED, "AAAA"),
        KeyRecord("example.com", "r1", RSA, LONG_KEY),
        AdspRecord("example.com", Adsp.DISCARDABLE),
        KeyRecord("example.org", "e1", ED, "BBBB"),
    ),
    (Withdrawal("example.org", "old"),),
)


def test_nsupdate_replaces_each_name_and_sends_once_per_domain_without_a_zone() -> None:
    rsa_text = f"v=DKIM1; k=rsa; p={LONG_KEY}"
    assert list(nsupdate_lines(PUBLICATION, 3600, server=("192.0.2.53", 5353))) == [
        "server 192.0.2.53 5353",
        "update delete e1._domainkey.example.com. TXT",
        'update add e1._domainkey.example.com. 3600 TXT "v=DKIM1; k=ed25519; p=AAAA"',
        "update delete r1._domainkey.example.com. TXT",
        f'update add r1._domainkey.example.com. 3600 TXT "{rsa_text[:255]}" "{rsa_text[255:]}"',
        "update delete _adsp._domainkey.example.com. TXT",
        'update add _adsp._domainkey.example.com. 3600 TXT "dkim=discardable"',
        "send",
        "update delete old._domainkey.example.org. TXT",
        "update delete e1._domainkey.example.org. TXT",
        'update add e1._domainkey.example.org. 3600 TXT "v=DKIM1; k=ed25519; p=BBBB"',
        "send",
    ]


def test_nsupdate_with_a_zone_names_it_and_sends_once_at_the_end() -> None:
    lines = list(nsupdate_lines(PUBLICATION, 60, zone="Example.COM"))

    assert lines[0] == "zone example.com."
    assert lines.count("send") == 1 and lines[-1] == "send"
    assert not any(line.startswith("server") for line in lines)
    assert 'update add e1._domainkey.example.org. 60 TXT "v=DKIM1; k=ed25519; p=BBBB"' in lines


def test_zone_lines_keep_their_form_and_leave_withdrawn_names_out() -> None:
    lines = list(zone_lines(PUBLICATION.records, 300))

    assert lines[0] == '_adsp._domainkey.example.com. 300 IN TXT "dkim=discardable"'
    assert lines[1] == 'e1._domainkey.example.com. 300 IN TXT "v=DKIM1; k=ed25519; p=AAAA"'
    assert len(lines) == 4 and not any("old._domainkey" in line for line in lines)


def test_names_outside_a_zone_are_found() -> None:
    assert PUBLICATION.outside("example.com") == [
        "e1._domainkey.example.org.",
        "old._domainkey.example.org.",
    ]
    assert PUBLICATION.outside("com.") == [
        "e1._domainkey.example.org.",
        "old._domainkey.example.org.",
    ]
    assert PUBLICATION.outside(".") == []
