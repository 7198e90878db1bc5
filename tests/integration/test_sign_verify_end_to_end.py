"""``ldapdkim sign`` with keys from real directories, judged by verifiers that are not dkimpy.

Every test runs against OpenLDAP and against 389 Directory Server.  The
whole path an administrator takes: ``ldapdkim provision`` writes LDIF,
``ldapadd`` loads it into the server, ``ldapdkim dns-records`` gives the zone
lines that a loopback DNS server serves, ``ldapdkim sign`` signs, and Perl
Mail::DKIM and OpenDKIM verify the result.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness.dnsserver import DnsServer
from harness.ldapserver import LdapServer
from harness.mailsite import MailSite
from harness.provisioning import provision, run_cli, without_version_line
from harness.verifiers import (
    mail_dkim_verify,
    opendkim_verify,
    require_mail_dkim,
    require_mail_dkim_ed25519,
    require_opendkim,
)

MESSAGE = (
    "From: Alice Example <alice@{domain}>\n"
    "To: Bob <bob@example.net>\n"
    "Subject: quarterly  report\t(draft)\n"
    "Date: Sat, 28 Nov 2026 12:00:00 +0000\n"
    "Message-ID: <e2e-1@{domain}>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "\n"
    "Hello Bob,  \n"
    "\n"
    "the figures are attached.\n"
    "\n\n"
)


@dataclass
class Site(MailSite):
    """A provisioned directory, its DNS, and a configuration that uses both."""

    def config(self, *lines: str) -> Path:
        return self.config_file("Mode sv", *lines)

    def sign(
        self, message: bytes, *lines: str, sender: str | None = None
    ) -> tuple[int, bytes, str]:
        argv = ["sign", "-c", str(self.config(*lines))]
        if sender:
            argv += ["--sender", sender]
        return run_cli(*argv, stdin=message)


@pytest.fixture
def site(directory_server: LdapServer, server_base: str, tmp_path: Path) -> Iterator[Site]:
    slapd, ldap_base = directory_server, server_base
    ldif = provision(
        ["example.com", "example.org"], ldap_base, tmp_path, "rsa-sha256", "ed25519-sha256"
    )
    ldif += provision(["rsa-only.example"], ldap_base, tmp_path, "rsa-sha256")
    slapd.ldapadd(without_version_line(ldif))
    with DnsServer() as dns:
        site = Site(slapd, ldap_base, dns, tmp_path)
        status, zone, err = run_cli("dns-records", "-c", str(site.config()))
        assert status == 0, err
        dns.load_zone_lines(zone.decode())
        yield site


def _message(domain: str = "example.com") -> bytes:
    return MESSAGE.format(domain=domain).encode()


def test_dns_records_lists_every_key_split_into_255_byte_strings(site: Site) -> None:
    status, out, _ = run_cli("dns-records", "-c", str(site.config()))
    lines = out.decode().splitlines()
    assert status == 0 and len(lines) == 5
    rsa = next(line for line in lines if "k=rsa" in line and "example.com" in line)
    assert rsa.startswith("s") and "._domainkey.example.com. IN TXT " in rsa
    strings = rsa.split(" IN TXT ", 1)[1].split('" "')
    assert len(strings) == 2 and all(len(s.strip('"')) <= 255 for s in strings)


@pytest.mark.parametrize("canonicalization", ["simple/simple", "relaxed/relaxed", "relaxed/simple"])
def test_rsa_and_ed25519_signatures_verify_with_perl_mail_dkim(
    site: Site, canonicalization: str
) -> None:
    require_mail_dkim()
    require_mail_dkim_ed25519()
    status, signed, err = site.sign(_message(), f"Canonicalization {canonicalization}")
    assert status == 0, err
    verdicts = mail_dkim_verify(signed, site.dns.port)
    assert sorted((v.result, v.algorithm, v.domain) for v in verdicts) == [
        ("pass", "ed25519-sha256", "example.com"),
        ("pass", "rsa-sha256", "example.com"),
    ], verdicts
    assert f"c={canonicalization}".encode() in signed


def test_signatures_verify_with_opendkim(site: Site) -> None:
    require_opendkim()
    status, signed, err = site.sign(_message("example.org"), "Canonicalization relaxed/simple")
    assert status == 0, err
    verdicts = opendkim_verify(signed, site.dns.port)
    assert sorted((v.result, v.algorithm) for v in verdicts) == [
        ("pass", "ed25519-sha256"),
        ("pass", "rsa-sha256"),
    ], verdicts


def test_a_changed_message_fails_with_the_independent_verifier(site: Site) -> None:
    require_mail_dkim()
    _, signed, _ = site.sign(_message("rsa-only.example"))
    [verdict] = mail_dkim_verify(signed.replace(b"figures", b"numbers"), site.dns.port)
    assert verdict.result == "fail"


def test_ldapdkim_verify_reports_each_signature(site: Site) -> None:
    _, signed, _ = site.sign(_message(), "Canonicalization relaxed/relaxed")
    status, out, _ = run_cli("verify", "-c", str(site.config()), stdin=signed)
    lines = sorted(out.decode().splitlines())
    assert status == 0
    assert [line.split(" s=")[0] for line in lines] == [
        "pass: d=example.com",
        "pass: d=example.com",
    ]
    status, out, _ = run_cli(
        "verify", "-c", str(site.config()), stdin=signed.replace(b"Bob,", b"Rob,")
    )
    assert status == 1 and out.decode().count("fail: d=example.com") == 2


@pytest.mark.parametrize(
    ("from_domain", "reason"),
    [
        ("*", "not letters, digits"),
        ("*)(objectClass=*", "')' that closes no comment"),  # '(' never reaches a filter
        ("example.com,ou=x", "From holds several addresses"),
        ("x\x00.example.com", "control character"),
        ("a" * 300 + ".example.com", "characters"),
        ("nowhere.example", "no policy entry for nowhere.example"),
    ],
)
def test_hostile_or_unknown_from_domains_are_printed_unsigned_with_the_reason(
    site: Site, from_domain: str, reason: str
) -> None:
    message = _message().replace(b"alice@example.com", f"alice@{from_domain}".encode())
    status, out, err = site.sign(message)
    assert status == 1
    assert out == message
    assert "not signed:" in err and reason in err


@pytest.mark.parametrize(
    "hostile", ["*", "*)(objectClass=*", "example.com,ou=x", "x\x00.example.com"]
)
def test_hostile_sender_domains_are_refused_before_any_lookup(site: Site, hostile: str) -> None:
    status, out, err = site.sign(_message(), sender=f"bounce@{hostile}")
    assert status == 1 and b"DKIM-Signature" not in out
    assert "not signed:" in err


def test_utf8_from_domain_signs_with_its_a_label(site: Site) -> None:
    require_mail_dkim()
    ldif = provision(["bücher.example"], site.base, site.workdir, "rsa-sha256")
    site.slapd.ldapadd(without_version_line(ldif))
    _, zone, _ = run_cli("dns-records", "-c", str(site.config()))
    site.dns.load_zone_lines(zone.decode())
    message = _message().replace(b"alice@example.com", "alice@bücher.example".encode())
    status, signed, err = site.sign(message)
    assert status == 0, err
    [verdict] = mail_dkim_verify(signed, site.dns.port)
    assert (verdict.result, verdict.domain) == ("pass", "xn--bcher-kva.example")


def test_two_from_fields_or_none_are_not_signed(site: Site) -> None:
    two = _message().replace(b"To: Bob", b"From: Mallory <m@example.com>\nTo: Bob")
    none = _message().replace(b"From: Alice Example <alice@example.com>\n", b"")
    status_two, out_two, err_two = site.sign(two)
    status_none, _, err_none = site.sign(none)
    assert (status_two, out_two) == (1, two) and "2 From header fields" in err_two
    assert status_none == 1 and "no From header field" in err_none


def test_the_installed_command_signs_from_the_shell(site: Site) -> None:
    """The console entry point, as README's commands use it."""
    result = subprocess.run(
        [sys.executable, "-m", "ldapdkim", "sign", "-c", str(site.config())],
        input=_message(),
        capture_output=True,
        check=False,
        env=os.environ.copy(),
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.count(b"DKIM-Signature:") == 2
