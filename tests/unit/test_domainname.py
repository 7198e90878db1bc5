"""A From domain is validated before it can reach a directory filter or DN."""

from __future__ import annotations

from pathlib import Path

import pytest

from ldapdkim import config
from ldapdkim.config.hostlist import HostList
from ldapdkim.domainname import (
    domain_of_address,
    normalize_domain,
    normalize_host_name,
    normalize_selector,
    parent_domains,
)
from ldapdkim.errors import ConfigError, InvalidDomain, InvalidSelector
from ldapdkim.lifecycle import migrate


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


# -- one answer for every kind of name ----------------------------------------------


def test_a_domain_and_a_host_name_become_the_same_idna_2008_a_label() -> None:
    """IDNA 2008 keeps ß (IDNA 2003 mapped it to ss): faß.de and fass.de are two domains."""
    assert normalize_domain("faß.de") == "xn--fa-hia.de"
    assert normalize_host_name("faß.de") == "xn--fa-hia.de"
    assert HostList.parse("faß.de").matches(None, "xn--fa-hia.de")
    assert not HostList.parse("faß.de").matches(None, "fass.de")


def test_a_host_name_may_hold_an_underscore_a_domain_and_a_selector_may_not() -> None:
    assert normalize_host_name("mx_1.example.com") == "mx_1.example.com"
    with pytest.raises(InvalidDomain):
        normalize_domain("mx_1.example.com")
    with pytest.raises(InvalidSelector, match="RFC 6376"):
        normalize_selector("s_1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("s1", "s1"), ("Mail2024", "mail2024"), ("2024-01.east", "2024-01.east")],
)
def test_selectors_are_rfc_6376_sub_domains(text: str, expected: str) -> None:
    assert normalize_selector(text) == expected


@pytest.mark.parametrize("text", ["", "s_1", "-s1", "s1-", "s 1", "s1..x", "*", "s1)(cn=*"])
def test_malformed_selectors_are_refused(text: str) -> None:
    with pytest.raises(InvalidSelector):
        normalize_selector(text)


def test_the_config_reader_and_migrate_refuse_the_selector_that_genkey_refuses(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"<string>:1: Selector 's_1' is not a valid selector"):
        config.parse("Selector s_1\n")
    key = tmp_path / "k.private"
    key.write_text("unused\n")
    conf = tmp_path / "opendkim.conf"
    conf.write_text(f"Domain example.com\nSelector s_1\nKeyFile {key}\n")
    with pytest.raises(ConfigError, match=r"opendkim.conf:2: Selector"):
        migrate.from_opendkim_conf(conf, "ou=dkim,dc=example,dc=com")
