"""``ldapdkim testkey``: every key in slapd against what a real DNS server publishes.

Each test builds one situation (a mismatch, a missing record, a weak key, a
DNS timeout, ...) with the project's own ``genkey`` and ``dns-records``,
and checks the report and the exit status: 1 when anything is bad, 0 when
there are at most warnings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from harness.dnsserver import DnsServer
from harness.mailsite import MailSite
from harness.provisioning import genkey, run_cli
from harness.slapd import Slapd

from ldapdkim import keys
from ldapdkim.model import Algorithm


@dataclass
class Site(MailSite):
    domains: list[str] = field(default_factory=list)

    def config(self) -> Path:
        return self.config_file("Mode sv", "DNSTimeout 1")

    def key(self, domain: str, selector: str, **options: object) -> None:
        """Add a key (and its domain entry if new) with ``ldapdkim genkey``."""
        first = domain not in self.domains
        self.domains.append(domain)
        ldif = genkey(domain, selector, self.base, with_domain=first, **options)  # type: ignore[arg-type]
        self.slapd.ldapadd(ldif)

    def publish(self) -> None:
        status, zone, err = run_cli("dns-records", "-c", str(self.config()))
        assert status == 0, err
        self.dns.load_zone_lines(zone.decode())

    def testkey(self, *args: str) -> tuple[int, str, str]:
        status, out, err = run_cli("testkey", "-c", str(self.config()), *args)
        return status, out.decode(), err

    def reports(self, *args: str) -> tuple[int, list[dict[str, object]]]:
        status, out, _ = self.testkey("--json", *args)
        return status, [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def site(slapd: Slapd, ldap_base: str, tmp_path: Path) -> Iterator[Site]:
    with DnsServer() as dns:
        site = Site(slapd, ldap_base, dns, tmp_path)
        yield site
        assert dns.errors == []


def findings(report: dict[str, object]) -> list[str]:
    listed = report["findings"]
    assert isinstance(listed, list)
    return [f"{f['level']}: {f['text']}" for f in listed]


def test_a_published_active_key_passes_and_the_table_says_so(site: Site) -> None:
    site.key("example.com", "s1")
    site.publish()
    status, out, err = site.testkey()
    assert status == 0
    head, row = out.splitlines()
    assert head.split() == ["DOMAIN", "SELECTOR", "ALG", "STATE", "BITS", "AGE", "DNS", "VERDICT"]
    assert row.split() == ["example.com", "s1", "rsa", "active", "2048", "0d", "match", "ok"]
    assert err == "ldapdkim: 1 checked: 0 bad, 0 warn, 0 note, 1 ok\n"


def test_a_different_key_in_dns_is_a_mismatch(site: Site) -> None:
    site.key("example.com", "s1", algorithm="ed25519-sha256")
    other = keys.public_key_b64(keys.generate(Algorithm.ED25519_SHA256))
    site.dns.set_txt("s1._domainkey.example.com", f"v=DKIM1; k=ed25519; p={other}")
    status, out, _ = site.testkey()
    assert status == 1
    assert (
        "    bad: active, but DNS at s1._domainkey.example.com does not match: p= holds a " in out
    )
    assert out.splitlines()[1].split()[-2:] == ["mismatch", "bad"]


def test_an_active_key_without_a_record_is_bad_a_pending_one_only_noted(site: Site) -> None:
    site.key("example.com", "s1", algorithm="ed25519-sha256")
    site.key("example.com", "s2", algorithm="ed25519-sha256", state="pending")
    status, reports = site.reports()
    assert status == 1
    by_selector = {r["selector"]: r for r in reports}
    assert (by_selector["s1"]["dns"], by_selector["s1"]["verdict"]) == ("missing", "bad")
    assert findings(by_selector["s1"]) == [
        "bad: active, but s1._domainkey.example.com has no key record: its signatures fail; "
        "publish the record that 'ldapdkim dns-records' prints"
    ]
    assert (by_selector["s2"]["dns"], by_selector["s2"]["verdict"]) == ("missing", "note")


def test_a_weak_key_is_a_warning_and_does_not_fail_the_run(site: Site) -> None:
    site.key("example.com", "s1", bits=1024)
    site.publish()
    status, reports = site.reports()
    assert status == 0
    [report] = reports
    assert (report["bits"], report["verdict"]) == (1024, "warn")
    assert findings(report) == ["warn: weak: RSA key of 1024 bits; rotate to a 2048-bit key"]


def test_a_dns_timeout_is_reported_and_fails_the_run(site: Site) -> None:
    site.key("example.com", "s1", algorithm="ed25519-sha256")
    site.dns.set_timeout("s1._domainkey.example.com")
    status, reports = site.reports()
    assert status == 1
    [report] = reports
    assert (report["dns"], report["verdict"]) == ("dns-error", "bad")
    assert findings(report) == [
        "bad: cannot check s1._domainkey.example.com: DNS query for "
        "s1._domainkey.example.com TXT timed out"
    ]


def test_a_domain_whose_keys_are_all_retired_is_bad(site: Site) -> None:
    site.key("example.com", "s1", algorithm="ed25519-sha256")
    site.key("example.org", "s1", algorithm="ed25519-sha256", state="retired")
    site.publish()
    status, reports = site.reports()
    assert status == 1
    verdicts = {(r["domain"], r["selector"]): (r["dns"], r["verdict"]) for r in reports}
    assert verdicts == {
        ("example.com", "s1"): ("match", "ok"),
        ("example.org", "s1"): ("match", "ok"),
        ("example.org", None): (None, "bad"),
    }
    lone = next(r for r in reports if r["selector"] is None)
    assert findings(lone)[0].startswith("bad: no key signs now: mail from this domain leaves")


def test_a_revoked_key_still_in_dns_is_a_warning(site: Site) -> None:
    site.key("example.com", "s1", algorithm="ed25519-sha256")
    site.key("example.com", "old", algorithm="ed25519-sha256", state="retired")
    site.publish()
    site.slapd.ldapmodify(
        f"dn: dkimSignSelector=old,ou=example.com,{site.base}\nchangetype: modify\n"
        "replace: dkimSignKeyState\ndkimSignKeyState: revoked\n"
    )
    status, reports = site.reports()
    assert status == 0
    old = next(r for r in reports if r["selector"] == "old")
    assert old["verdict"] == "warn"
    assert findings(old)[0].startswith(
        "warn: revoked, but still published at old._domainkey.example.com"
    )


def test_a_public_key_attribute_that_contradicts_the_private_key_is_bad(site: Site) -> None:
    site.key("example.com", "s1", algorithm="ed25519-sha256")
    site.publish()
    other = keys.public_key_b64(keys.generate(Algorithm.ED25519_SHA256))
    site.slapd.ldapmodify(
        f"dn: dkimSignSelector=s1,ou=example.com,{site.base}\nchangetype: modify\n"
        f"replace: dkimSignPublicKey\ndkimSignPublicKey: {other}\n"
    )
    status, reports = site.reports()
    assert status == 1
    [report] = reports
    assert report["dns"] == "match"  # DNS holds the private key's public half
    assert findings(report) == [
        "bad: dkimSignPublicKey does not match dkimSignPrivateKey; replace it with the "
        "public key that 'ldapdkim dns-records' prints"
    ]


def test_json_has_one_object_per_key_and_the_age_from_the_directory(site: Site) -> None:
    site.key("example.com", "s1")
    site.key("example.com", "e1", algorithm="ed25519-sha256")
    site.key("example.org", "s1", algorithm="ed25519-sha256")
    site.publish()
    status, reports = site.reports("-d", "example.com")
    assert status == 0
    assert [(r["domain"], r["selector"], r["algorithm"], r["bits"]) for r in reports] == [
        ("example.com", "e1", "ed25519-sha256", 256),
        ("example.com", "s1", "rsa-sha256", 2048),
    ]
    for report in reports:
        assert report["age_days"] == 0 and isinstance(report["created"], str)
        assert report["record"] == f"{report['selector']}._domainkey.example.com"
        assert report["dn"] == f"dkimSignSelector={report['selector']},ou=example.com,{site.base}"


def test_an_unknown_domain_is_an_error(site: Site) -> None:
    status, out, err = site.testkey("-d", "nowhere.example")
    assert (status, out) == (1, "")
    assert err.startswith("ldapdkim: no domain entry names nowhere.example (dkimSignDomainName)")
