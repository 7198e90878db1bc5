"""A From domain is validated before it can reach a directory filter or DN."""

from __future__ import annotations

import pytest

from ldapdkim.domainname import domain_of_address, normalize_domain, parent_domains
from ldapdkim.errors import InvalidDomain


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("mail-1.example.co.uk", "mail-1.example.co.uk"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ],
)
def test_valid_domains_are_normalized(text: str, expected: str) -> None:
    assert normalize_domain(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("*", "not letters, digits"),
        ("*)(objectClass=*", "not letters, digits"),
        ("x\0.example.com", "control character"),
        ("example.org\x00.attacker.test", "control character"),
        ("example.com,ou=x", "not letters, digits"),
        ("example.com\\2a", "not letters, digits"),
        ("a" * 64 + ".example.com", "label of 64 characters"),
        (("a" * 60 + ".") * 5 + "com", "characters; at most 253"),
        ("example..com", "empty label"),
        ("-example.com", "not letters, digits"),
        ("exa mple.com", "control character, space"),
        ("[192.0.2.1]", "address literal"),
        ("", "empty domain"),
        ("exa_mple.com", "not letters, digits"),
    ],
)
def test_hostile_or_malformed_domains_are_refused_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidDomain, match=reason):
        normalize_domain(text)


def test_error_text_shows_hostile_input_escaped_and_shortened() -> None:
    with pytest.raises(InvalidDomain) as caught:
        normalize_domain("x\0" + "y" * 300)
    message = str(caught.value)
    assert "\0" not in message
    assert "\\x00" in message
    assert len(message) < 200


def test_parent_domains_are_listed_most_specific_first_and_stop_above_the_tld() -> None:
    assert parent_domains("a.b.example.com") == ["a.b.example.com", "b.example.com", "example.com"]
    assert parent_domains("example.com") == ["example.com"]
    assert parent_domains("localhost") == ["localhost"]


def test_domain_of_address_takes_the_part_after_the_last_at() -> None:
    assert domain_of_address('"odd@local"@Example.COM') == "example.com"
    with pytest.raises(InvalidDomain, match="no domain part"):
        domain_of_address("postmaster")
