"""``ldapdkim check-config --connect`` asks the real slapd and DNS server what the milter will
need, and reports every problem it finds (exit status 2), never the password."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.dnsserver import DnsServer
from harness.provisioning import genkey, run_cli
from harness.slapd import SLAPD_BINARIES, Slapd, require_binaries


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


def _check(tmp_path: Path, *lines: str) -> tuple[int, str]:
    conf = tmp_path / "ldapdkim.conf"
    conf.write_text("\n".join(["Mode sv", *lines]) + "\n")
    status, out, err = run_cli("check-config", "-c", str(conf), "--connect")
    return status, out.decode() + err


def _directory(slapd: Slapd, base: str, user: str, password: str) -> list[str]:
    return [
        f"Directory {slapd.ldap_uri}/{base}",
        f"LDAPBindUser {user}",
        f"LDAPBindPassword {password}",
    ]


def test_a_sound_set_up_is_ok(slapd: Slapd, ldap_base: str, dns: DnsServer, tmp_path: Path) -> None:
    slapd.ldapadd(genkey("example.com", "s1", ldap_base, with_domain=True))
    lines = _directory(slapd, ldap_base, slapd.milter_dn, slapd.milter_pw)
    status, text = _check(
        tmp_path, *lines, f"Nameservers 127.0.0.1:{dns.port}", "DirectorySync yes"
    )
    assert (status, text) == (
        0,
        "private keys: 0 sealed, 1 plaintext, 0 in a token, "
        "0 sealed with a KEK not configured here\n"
        f"{tmp_path / 'ldapdkim.conf'}: OK\n",
    )


def test_a_wrong_password_is_named_not_shown(
    slapd: Slapd, ldap_base: str, dns: DnsServer, tmp_path: Path
) -> None:
    lines = _directory(slapd, ldap_base, slapd.milter_dn, "Wr0ngSecret")
    status, text = _check(tmp_path, *lines, f"Nameservers 127.0.0.1:{dns.port}")
    assert status == 2
    assert "invalid credentials" in text and "LDAPBindPassword" in text
    assert "Wr0ngSecret" not in text


def test_a_bind_that_may_not_read_private_keys_and_silent_nameservers_are_both_reported(
    slapd: Slapd, ldap_base: str, tmp_path: Path
) -> None:
    slapd.ldapadd(genkey("example.com", "s1", ldap_base, with_domain=True))
    lines = _directory(slapd, ldap_base, slapd.reader_dn, slapd.reader_pw)
    status, text = _check(tmp_path, *lines, "Nameservers 127.0.0.1:9", "DNSTimeout 1")
    assert status == 2
    problems = [line for line in text.splitlines() if line.startswith("ldapdkim: ")]
    assert len(problems) == 2, text
    assert "private keys: 0 sealed, 0 plaintext" in text and "1 unreadable or missing" in text
    assert f"{slapd.reader_dn} cannot read dkimSignPrivateKey" in problems[0]
    assert "the nameservers do not answer" in problems[1]


def test_a_missing_base_and_a_server_without_the_schema_are_reported(
    dns: DnsServer, tmp_path: Path
) -> None:
    require_binaries(*SLAPD_BINARIES)
    with Slapd(tmp_path / "bare", with_project_schema=False) as bare:
        base = f"ou=nowhere,{bare.domains_base}"
        lines = _directory(bare, base, bare.admin_dn, bare.admin_pw)
        status, text = _check(tmp_path, *lines, f"Nameservers 127.0.0.1:{dns.port}")
    assert status == 2
    assert f"base DN {base!r} does not exist" in text
    assert "does not know object class dkimSignDomainPolicy" in text
    assert "does not know object class dkimSignKey" in text


def test_a_sender_login_base_that_does_not_exist_is_reported(
    slapd: Slapd, ldap_base: str, dns: DnsServer, tmp_path: Path
) -> None:
    slapd.ldapadd(genkey("example.com", "s1", ldap_base, with_domain=True))
    lines = _directory(slapd, ldap_base, slapd.milter_dn, slapd.milter_pw)
    people = f"ou=people,{ldap_base}"
    sender_lines = [
        f"SenderLoginBase {people}",
        "SenderLoginFilter (mail=%s)",
        "SenderLoginAttribute uid",
    ]
    status, text = _check(tmp_path, *lines, *sender_lines, f"Nameservers 127.0.0.1:{dns.port}")
    assert (status, text.strip()) == (
        2,
        "private keys: 0 sealed, 1 plaintext, 0 in a token, "
        "0 sealed with a KEK not configured here\n"
        f"ldapdkim: SenderLoginBase {people!r} does not exist; fix SenderLoginBase",
    )
