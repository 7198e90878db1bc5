"""``ldapdkim rotate``: a key rotation as an administrator runs it, against slapd and DNS.

Keys live in a real slapd, key records are served by a DnsServer on loopback
that ``rotate --advance`` asks (``Nameservers``), writes bind as the
directory's admin DN (``LDAPAdminBindUser``), and after every step
``ldapdkim sign`` signs a message that ``ldapdkim verify`` checks through
the same DNS server: at no point is the domain without a working key.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import ldap
import pytest
from harness.dnsserver import DnsServer
from harness.mailsite import MailSite
from harness.provisioning import genkey, run_cli
from harness.slapd import Slapd

from ldapdkim import keys
from ldapdkim.directory.entries import parse_generalized_time
from ldapdkim.model import Algorithm

EXAMPLE_LDIF = Path(__file__).resolve().parents[2] / "conf" / "example.ldif"

MESSAGE = (
    b"From: Alice <alice@example.com>\n"
    b"To: Bob <bob@example.net>\n"
    b"Subject: rotation\n"
    b"Date: Tue, 01 Dec 2026 12:00:00 +0000\n"
    b"Message-ID: <rotation@example.com>\n"
    b"\n"
    b"Signed with whichever key is active.\n"
)


@dataclass
class Site(MailSite):
    """A directory container, a DNS server, and configurations that use both."""

    def config(self, *lines: str, admin: bool = True) -> Path:
        admin_lines: list[str] = []
        if admin:
            password_file = self.workdir / "adminpw"
            password_file.write_text(self.slapd.admin_pw + "\n")
            password_file.chmod(0o600)  # RequireSafeKeys
            admin_lines = [
                f"LDAPAdminBindUser {self.slapd.admin_dn}",
                f"LDAPAdminBindPasswordFile {password_file}",
            ]
        return self.config_file("Mode sv", *admin_lines, "DNSTimeout 2", *lines)

    def run(self, *argv: str, config: Path | None = None) -> tuple[int, str, str]:
        """``ldapdkim COMMAND -c CONFIG ARGS``: (status, stdout, stderr)."""
        command, *rest = argv
        status, out, err = run_cli(command, "-c", str(config or self.config()), *rest)
        return status, out.decode(), err

    def publish_directory(self) -> None:
        """Serve what ``ldapdkim dns-records`` says DNS should hold."""
        status, zone, err = self.run("dns-records")
        assert status == 0, err
        self.dns.load_zone_lines(zone)

    def keys(self) -> dict[str, dict[str, str]]:
        """Every key entry: selector -> {attribute: value} of state and window."""
        conn = self.slapd.connect(self.slapd.admin_dn)
        try:
            found = conn.search_s(
                self.base,
                ldap.SCOPE_SUBTREE,
                "(objectClass=dkimSignKey)",
                ["dkimSignSelector", "dkimSignKeyState", "dkimSignNotBefore", "dkimSignNotAfter"],
            )
        finally:
            conn.unbind_s()
        return {
            attrs["dkimSignSelector"][0].decode(): {
                name: values[0].decode() for name, values in attrs.items()
            }
            for _, attrs in found
        }

    def signing_selectors(self) -> list[str]:
        """Sign MESSAGE, verify it through the DNS server; the selectors that signed."""
        status, signed, err = run_cli("sign", "-c", str(self.config()), stdin=MESSAGE)
        assert status == 0, err
        selectors = re.findall(rb"DKIM-Signature:.*?\bs=([\w-]+);", signed, re.DOTALL)
        status, verdicts, _ = run_cli("verify", "-c", str(self.config()), stdin=signed)
        assert status == 0, verdicts.decode()
        assert verdicts.decode().count("pass: d=example.com") == len(selectors)
        return sorted(s.decode() for s in selectors)


@pytest.fixture
def site(slapd: Slapd, ldap_base: str, tmp_path: Path) -> Iterator[Site]:
    with DnsServer() as dns:
        yield Site(slapd, ldap_base, dns, tmp_path)
        assert dns.errors == []


def provisioned(site: Site, *algorithms: str) -> Site:
    """example.com with one active key per algorithm (s1, e1), published in DNS."""
    site.slapd.ldapadd(genkey("example.com", "s1", site.base, with_domain=True))
    if "ed25519-sha256" in algorithms:
        site.slapd.ldapadd(genkey("example.com", "e1", site.base, algorithm="ed25519-sha256"))
    site.publish_directory()
    return site


def new_selector(zone_line: str) -> str:
    return zone_line.split("._domainkey.", 1)[0]


def wait_until(moment: datetime) -> None:
    """Sleep until the wall clock has passed ``moment`` (dkimSignNotBefore is whole seconds)."""
    delay = (moment - datetime.now(UTC)).total_seconds()
    if delay > 0:
        time.sleep(delay + 0.05)


# -- the walk-through ----------------------------------------------------------------------


def test_a_rotation_from_pending_to_active_never_leaves_the_domain_without_a_key(
    site: Site,
) -> None:
    provisioned(site)
    conf = site.config("RotationOverlap 3s")
    assert site.signing_selectors() == ["s1"]

    # 1. A new pending key; its record is printed for DNS.
    status, out, err = site.run("rotate", "-d", "example.com", config=conf)
    assert status == 0, err
    [line] = out.splitlines()
    new = new_selector(line)
    assert re.fullmatch(r"s\d{6}", new)
    assert line.startswith(f'{new}._domainkey.example.com. IN TXT "v=DKIM1; k=rsa; p=')
    assert f"example.com: pending key {new} (rsa-sha256) added; publish:" in err
    assert site.keys()[new]["dkimSignKeyState"] == "pending"
    assert site.signing_selectors() == ["s1"]

    # 2. Not in DNS yet: nothing changes.
    before = site.keys()
    status, out, err = site.run("rotate", "--advance", config=conf)
    assert (status, err) == (0, "")
    assert out == f"example.com {new}: pending; no key record at {new}._domainkey.example.com yet\n"
    assert site.keys() == before

    # 3. Published: the first sighting starts the overlap; the key stays pending.
    site.dns.load_zone_lines(line)
    status, out, err = site.run("rotate", "--advance", config=conf)
    assert (status, err) == (0, "")
    assert out.startswith(f"example.com {new}: key record seen in DNS; activates from ")
    assert out.endswith(" (RotationOverlap 3s)\n")
    entries = site.keys()
    assert entries[new]["dkimSignKeyState"] == "pending"
    assert entries["s1"]["dkimSignKeyState"] == "active"
    start = parse_generalized_time(entries[new]["dkimSignNotBefore"])
    assert site.signing_selectors() == ["s1"]

    # 4. Before the overlap has passed: nothing changes.
    before = site.keys()
    status, out, err = site.run("rotate", "--advance", config=conf)
    assert status == 0, err
    assert out.startswith(f"example.com {new}: pending; key record in DNS, activates from ")
    assert site.keys() == before
    assert site.signing_selectors() == ["s1"]

    # 5. After it: the new key is active, then the old one retired.
    wait_until(start)
    status, out, err = site.run("rotate", "--advance", config=conf)
    assert (status, err) == (0, "")
    assert out == (
        f"example.com {new}: activated (rsa-sha256)\n"
        f"example.com s1: retired (replaced by {new}); its DNS record stays published until "
        "it is pruned\n"
    )
    entries = site.keys()
    assert entries[new]["dkimSignKeyState"] == "active"
    assert entries["s1"]["dkimSignKeyState"] == "retired"
    assert "dkimSignNotAfter" in entries["s1"]
    assert site.signing_selectors() == [new]
    _, zone, _ = site.run("dns-records")
    assert "s1._domainkey.example.com." in zone  # retired keys stay published

    # 6. Safe from cron: once done, another run does and says nothing.
    before = site.keys()
    assert site.run("rotate", "--advance", config=conf) == (0, "", "")
    assert site.keys() == before


def test_a_wrong_key_in_dns_is_not_activated_and_says_why(site: Site) -> None:
    provisioned(site)
    conf = site.config("RotationOverlap 0")
    _, out, _ = site.run("rotate", "-d", "example.com", config=conf)
    new = new_selector(out)
    other = keys.public_key_b64(keys.generate(Algorithm.RSA_SHA256))
    site.dns.set_txt(f"{new}._domainkey.example.com", f"v=DKIM1; k=rsa; p={other}")
    before = site.keys()

    status, out, err = site.run("rotate", "--advance", config=conf)
    assert (status, out) == (1, "")
    assert err == (
        f"ldapdkim: example.com {new}: not activated: DNS shows a different key at "
        f"{new}._domainkey.example.com (p= holds a different public key); publish the record "
        "that 'ldapdkim rotate' printed (or 'ldapdkim dns-records')\n"
    )
    assert site.keys() == before
    assert site.signing_selectors() == ["s1"]

    # Once DNS is right, the same command completes the rotation (no overlap here).
    site.publish_directory()
    status, out, _ = site.run("rotate", "--advance", config=conf)
    assert status == 0
    assert f"example.com {new}: activated (rsa-sha256)\n" in out
    assert site.signing_selectors() == [new]


def test_the_milters_bind_may_not_write_so_rotate_needs_the_admin_bind(site: Site) -> None:
    provisioned(site)
    milter_only = site.config("RotationOverlap 0", admin=False)
    before = site.keys()
    status, out, err = site.run("rotate", "-d", "example.com", config=milter_only)
    assert (status, out) == (1, "")
    assert err.startswith("ldapdkim: cannot add 'dkimSignSelector=s")
    assert "Insufficient access" in err
    assert err.endswith(
        f"; the bind DN {site.slapd.milter_dn!r} may not write; set "
        "LDAPAdminBindUser and LDAPAdminBindPasswordFile to a DN that may (the milter's own "
        "bind should only read)\n"
    )
    assert site.keys() == before

    # A pending key made with the admin bind cannot be activated with the milter's either.
    _, line, _ = site.run("rotate", "-d", "example.com", config=site.config("RotationOverlap 0"))
    site.dns.load_zone_lines(line)
    status, _, err = site.run("rotate", "--advance", config=milter_only)
    assert status == 1 and "may not write; set LDAPAdminBindUser" in err
    assert site.keys()[new_selector(line)]["dkimSignKeyState"] == "pending"


def test_rotate_all_makes_one_key_per_active_algorithm_and_only_once(site: Site) -> None:
    provisioned(site, "rsa-sha256", "ed25519-sha256")
    site.slapd.ldapadd(genkey("example.org", "s1", site.base, with_domain=True))
    status, out, err = site.run("rotate", "--all", "--selector-format", "s1")
    assert status == 0, err
    names = sorted(line.split(" IN TXT ")[0] for line in out.splitlines())
    assert names == [
        "s1-2._domainkey.example.org.",  # s1 is taken: a number is added
        "s1-ed25519._domainkey.example.com.",
        "s1-rsa._domainkey.example.com.",
    ]
    assert "k=ed25519" in next(line for line in out.splitlines() if "s1-ed25519" in line)

    status, out, err = site.run("rotate", "--all")
    assert (status, out) == (0, "")
    assert err.count("exists already") == 3


def test_prune_deletes_retired_keys_after_the_window(site: Site) -> None:
    provisioned(site)
    conf = site.config("RotationOverlap 0", "RotationRetireAfter 0")
    _, line, _ = site.run("rotate", "-d", "example.com", config=conf)
    site.dns.load_zone_lines(line)
    assert site.run("rotate", "--advance", config=conf)[0] == 0
    assert site.keys()["s1"]["dkimSignKeyState"] == "retired"

    status, out, _ = site.run("rotate", "--advance", "--prune", config=conf)
    assert status == 0
    assert out.startswith("example.com s1: deleted (retired since ")
    assert out.endswith("remove its DNS record s1._domainkey.example.com\n")
    assert sorted(site.keys()) == [new_selector(line)]
    assert site.signing_selectors() == [new_selector(line)]


def test_an_ldif_directory_cannot_be_rotated(tmp_path: Path) -> None:
    conf = tmp_path / "ldif.conf"
    conf.write_text(f"Directory ldif:{EXAMPLE_LDIF}\n")
    status, out, err = run_cli("rotate", "-c", str(conf), "--all")
    assert (status, out) == (2, b"")
    assert err == (
        f"ldapdkim: {conf}: key rotation writes to an LDAP directory, but Directory is "
        f"ldif:{EXAMPLE_LDIF}; point Directory at the LDAP server (an "
        "LDIF file is read-only: add keys to it with 'ldapdkim genkey')\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--all", "--prune"], "ldapdkim: --prune goes with --advance\n"),
        (
            ["--advance", "-a", "ed25519-sha256"],
            "ldapdkim: -a goes with -d or --all; --advance works on the pending keys\n",
        ),
        (
            ["-d", "example.com", "-b", "512"],
            "ldapdkim: RSA keys of 512 bits are refused; use at least 1024 (RFC 8301), "
            "2048 is the default\n",
        ),
    ],
)
def test_options_that_do_not_go_together_are_usage_errors(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    conf = tmp_path / "ldif.conf"
    conf.write_text(f"Directory ldif:{EXAMPLE_LDIF}\n")
    assert run_cli("rotate", "-c", str(conf), *argv) == (2, b"", message)
