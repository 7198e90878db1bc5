"""``ldapdkim dns-records --apply`` and ``--format nsupdate`` against a real Knot DNS.

The administrator's path: ``ldapdkim provision`` writes LDIF, ``ldapadd``
loads it into slapd, and ``ldapdkim dns-records --apply`` sends RFC 2136
updates signed with TSIG to the zones' primary server.  What the server then
serves is read back by zone transfer and compared with what the directory
holds, read with a plain LDAP search (not through ldapdkim).

Zones on the server: ``example.test.`` (holding the domains ``example.test``
and ``mail.example.test``, so a domain that is not a zone apex is covered)
and ``other.test.``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ldap
import pytest
from harness.authdns import KEY_NAME, Knot, require_knot, write_key_file
from harness.common import find_binary, skip_or_fail
from harness.provisioning import run_cli, without_version_line
from harness.slapd import Slapd

DOMAINS = ["example.test", "mail.example.test", "other.test"]
ZONES = ["example.test", "other.test"]
STALE = "v=DKIM1; k=rsa; p=stale"


@dataclass
class Site:
    """Keys in slapd, a Knot primary for their zones, and a configuration for both."""

    slapd: Slapd
    base: str
    knot: Knot
    workdir: Path

    def provision(self, domains: list[str], *algorithms: str) -> None:
        listing = self.workdir / "domains.txt"
        listing.write_text("\n".join(domains) + "\n")
        output = self.workdir / "provision.ldif"
        argv = ["provision", "--base", self.base, "--domains", str(listing)]
        argv += ["-o", str(output), "-j", "1", "-s", "k1"]
        for algorithm in algorithms:
            argv += ["-a", algorithm]
        status, _, err = run_cli(*argv)
        assert status == 0, err
        self.slapd.ldapadd(without_version_line(output.read_text()))

    def config(self) -> Path:
        path = self.workdir / "ldapdkim.conf"
        path.write_text(
            f"Directory {self.slapd.ldap_uri}/{self.base}\n"
            f"LDAPBindUser {self.slapd.milter_dn}\n"
            f"LDAPBindPassword {self.slapd.milter_pw}\n"
            "DNSTimeout 3\n"
        )
        return path

    def apply(self, *extra: str, key_file: Path | None = None) -> tuple[int, str, str]:
        status, out, err = run_cli(
            "dns-records",
            "-c",
            str(self.config()),
            "--apply",
            "--server",
            self.knot.server,
            "--tsig-key-file",
            str(key_file or self.knot.key_file),
            *extra,
        )
        return status, out.decode(), err

    def directory_records(self) -> dict[str, list[tuple[int, str]]]:
        """What the directory says DNS should hold, by a plain LDAP search."""
        conn = self.slapd.connect(self.slapd.admin_dn)
        try:
            domains = {
                dn: attrs["dkimSignDomainName"][0].decode()
                for dn, attrs in conn.search_s(
                    self.base, ldap.SCOPE_SUBTREE, "(objectClass=dkimSignDomainPolicy)"
                )
            }
            keys = conn.search_s(self.base, ldap.SCOPE_SUBTREE, "(objectClass=dkimSignKey)")
        finally:
            conn.unbind_s()
        expected: dict[str, list[tuple[int, str]]] = {}
        for dn, attrs in keys:
            if attrs["dkimSignKeyState"][0] == b"revoked":
                continue
            domain = domains[dn.split(",", 1)[1]]
            selector = attrs["dkimSignSelector"][0].decode()
            k = {b"rsa-sha256": "rsa", b"ed25519-sha256": "ed25519"}[attrs["dkimSignAlgorithm"][0]]
            public = attrs["dkimSignPublicKey"][0].decode()
            name = f"{selector}._domainkey.{domain}."
            expected[name] = [(3600, f"v=DKIM1; k={k}; p={public}")]
        return expected

    def served_records(self) -> dict[str, list[tuple[int, str]]]:
        """Every TXT RRset the server holds below a ``_domainkey`` name."""
        served: dict[str, list[tuple[int, str]]] = {}
        for zone in ZONES:
            for owner, records in self.knot.txt_records(zone).items():
                if "._domainkey." in owner:
                    served[owner] = records
        return served

    def revoke(self, domain: str, selector: str) -> None:
        self.slapd.ldapmodify(
            f"dn: dkimSignSelector={selector},ou={domain},{self.base}\n"
            "changetype: modify\n"
            "replace: dkimSignKeyState\n"
            "dkimSignKeyState: revoked\n"
        )


@pytest.fixture
def site(slapd: Slapd, ldap_base: str, tmp_path: Path) -> Iterator[Site]:
    require_knot()
    stale = {"k1-rsa._domainkey.example.test.": [STALE]}
    with Knot(tmp_path / "knot", ZONES, stale) as knot:
        yield Site(slapd, ldap_base, knot, tmp_path)


def test_apply_makes_the_zones_hold_exactly_the_keys_of_the_directory(site: Site) -> None:
    site.provision(DOMAINS, "rsa-sha256", "ed25519-sha256")
    assert site.served_records() == {"k1-rsa._domainkey.example.test.": [(300, STALE)]}

    status, out, err = site.apply()

    assert status == 0, err
    assert err == ""
    expected = site.directory_records()
    assert len(expected) == 6
    assert site.served_records() == expected
    assert sorted(out.splitlines()) == sorted(
        f"OK     replace {name} in zone {'other.test.' if 'other' in name else 'example.test.'}: "
        "NOERROR"
        for name in expected
    )


def test_a_second_apply_replaces_rather_than_adds(site: Site) -> None:
    site.provision(DOMAINS, "ed25519-sha256")
    assert site.apply()[0] == 0
    first = site.served_records()

    status, _, err = site.apply()

    assert status == 0, err
    assert site.served_records() == first
    assert all(len(records) == 1 for records in first.values())


def test_a_revoked_keys_record_disappears_and_the_others_stay(site: Site) -> None:
    site.provision(DOMAINS, "rsa-sha256", "ed25519-sha256")
    assert site.apply()[0] == 0
    site.revoke("mail.example.test", "k1-rsa")

    status, out, err = site.apply()

    assert status == 0, err
    assert (
        "OK     delete k1-rsa._domainkey.mail.example.test. in zone example.test.: NOERROR"
        in out.splitlines()
    )
    served = site.served_records()
    assert "k1-rsa._domainkey.mail.example.test." not in served
    assert served == site.directory_records()
    assert len(served) == 5


@pytest.mark.parametrize(
    ("key_name", "same_secret", "tsig_error"),
    [(KEY_NAME, False, "BADSIG"), ("someone-else.", True, "BADKEY")],
    ids=["wrong-secret", "unknown-key-name"],
)
def test_a_wrong_tsig_key_is_refused_with_a_clear_error_and_changes_nothing(
    site: Site, key_name: str, same_secret: bool, tsig_error: str
) -> None:
    site.provision(["example.test"], "ed25519-sha256")
    wrong_secret = site.knot.secret if same_secret else bytes(32)
    wrong = write_key_file(site.workdir / "wrong.key", key_name, wrong_secret)

    status, out, err = site.apply(key_file=wrong)

    assert status == 1
    assert out == (
        "FAILED replace k1._domainkey.example.test. in zone example.test.: "
        f"NOTAUTH (TSIG {tsig_error})\n"
    )
    assert err == (
        f"ldapdkim: 1 of 1 names not updated on {site.knot.server}: {site.knot.server} "
        f"does not accept TSIG key '{key_name}' ({tsig_error}); check that {wrong} holds "
        "the key the server has for updates (name, algorithm, secret)\n"
    )
    assert site.served_records() == {"k1-rsa._domainkey.example.test.": [(300, STALE)]}


def test_names_outside_the_servers_zones_fail_alone_and_the_run_exits_1(site: Site) -> None:
    site.provision(["example.test", "elsewhere.example"], "ed25519-sha256")

    status, out, err = site.apply()

    assert status == 1
    assert out.splitlines() == [
        "FAILED replace k1._domainkey.elsewhere.example.: REFUSED "
        "(no zone found by SOA query for _domainkey.elsewhere.example.)",
        "OK     replace k1._domainkey.example.test. in zone example.test.: NOERROR",
    ]
    assert err.startswith(f"ldapdkim: 1 of 2 names not updated on {site.knot.server}: ")
    assert "point --server at the primary server of their zones, or give --zone" in err
    assert set(site.served_records()) == {
        "k1._domainkey.example.test.",
        "k1-rsa._domainkey.example.test.",
    }


def test_an_explicit_zone_takes_every_name(site: Site) -> None:
    site.provision(["example.test", "mail.example.test"], "ed25519-sha256")

    status, out, err = site.apply("--zone", "example.test", "--ttl", "600")

    assert status == 0, err
    assert out.count("in zone example.test.: NOERROR\n") == 2
    served = site.served_records()
    assert served["k1._domainkey.mail.example.test."][0][0] == 600


def test_adsp_records_are_published_per_domain_on_request(site: Site) -> None:
    site.provision(["example.test", "other.test"], "ed25519-sha256")

    status, _, err = site.apply("--adsp", "discardable")

    assert status == 0, err
    served = site.served_records()
    assert served["_adsp._domainkey.example.test."] == [(3600, "dkim=discardable")]
    assert served["_adsp._domainkey.other.test."] == [(3600, "dkim=discardable")]


def test_nsupdate_format_fed_to_bind_nsupdate_publishes_the_same_records(site: Site) -> None:
    nsupdate = find_binary("nsupdate")
    if nsupdate is None:
        skip_or_fail("missing nsupdate; install bind9-dnsutils")
    site.provision(DOMAINS, "rsa-sha256", "ed25519-sha256")
    site.revoke("example.test", "k1-rsa")  # the stale record must go
    status, script, err = run_cli(
        "dns-records",
        "-c",
        str(site.config()),
        "--format",
        "nsupdate",
        "--server",
        site.knot.server,
    )
    assert status == 0, err

    result = subprocess.run(
        [nsupdate, "-k", str(site.knot.key_file)],
        input=script,
        capture_output=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 0, result.stderr.decode()
    assert site.served_records() == site.directory_records()
    assert len(site.served_records()) == 5
