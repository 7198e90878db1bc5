"""A provisioned mail site for end-to-end milter tests: directory, DNS, milter configuration.

Keys are provisioned with ``ldapdkim provision`` into a test LDAP server,
and the DNS server serves what ``ldapdkim dns-records`` prints: the same
path an administrator takes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from harness.dnsserver import DnsServer
from harness.ldapserver import LdapServer
from harness.provisioning import provision, run_cli, without_version_line

AUTHSERV_ID = "mx.ldapdkim.test"


@dataclass
class MailSite:
    slapd: LdapServer
    base: str
    dns: DnsServer
    workdir: Path
    extra: list[str] = field(default_factory=list)

    def site_lines(self, uri: str | None = None) -> list[str]:
        """What every configuration against this site says: the directory, its bind, the DNS."""
        directory = self.slapd.milter_lines(self.base)
        if uri is not None:
            directory[0] = f"Directory {uri}/{self.base}"
        return [*directory, f"Nameservers 127.0.0.1:{self.dns.port}"]

    def config_file(self, *lines: str) -> Path:
        """A new configuration file in ``workdir``: :meth:`site_lines` and ``lines``."""
        path = self.workdir / f"ldapdkim-{len(list(self.workdir.glob('ldapdkim-*.conf')))}.conf"
        path.write_text("\n".join([*self.site_lines(), *lines]) + "\n")
        return path

    def milter_config(self, *lines: str, uri: str | None = None) -> list[str]:
        """Configuration lines for ``ldapdkim run`` against this site (Socket is added later)."""
        return [
            "Mode sv",
            *self.site_lines(uri),
            "LDAPTimeout 2",
            "DNSTimeout 2",
            f"AuthservID {AUTHSERV_ID}",
            "InternalHosts 127.0.0.1",
            "MacroList {auth_authen}, {daemon_name}=ORIGINATING|MSA",
            "Canonicalization relaxed/simple",
            "LogWhy yes",
            "SyslogSuccess yes",
            *self.extra,
            *lines,
        ]

    def signed_elsewhere(self, subject: str) -> bytes:
        """A message signed by ldapdkim's own command, as another site's signer would."""
        config = self.workdir / "signer.conf"
        config.write_text("\n".join(self.milter_config()) + "\n")
        status, signed, err = run_cli("sign", "-c", str(config), stdin=message(subject=subject))
        assert status == 0, err
        return signed

    def add_domains(self, domains: list[str], *algorithms: str) -> None:
        ldif = provision(domains, self.base, self.workdir, *algorithms)
        self.slapd.ldapadd(without_version_line(ldif))
        self.publish_keys()

    def publish_keys(self) -> None:
        """Load the DNS server with the key records of every key in the directory."""
        config = self.workdir / "dns-records.conf"
        config.write_text("\n".join(self.milter_config()) + "\n")
        status, zone, err = run_cli("dns-records", "-c", str(config))
        assert status == 0, err
        self.dns.load_zone_lines(zone.decode())


@contextmanager
def example_site(slapd: LdapServer, base: str, workdir: Path) -> Iterator[MailSite]:
    """example.com with an RSA and an Ed25519 key under *base*, on a DNS server of its own."""
    with DnsServer() as dns:
        site = MailSite(slapd, base, dns, workdir)
        site.add_domains(["example.com"], "rsa-sha256", "ed25519-sha256")
        yield site


def message(
    domain: str = "example.com",
    subject: str = "end to end",
    body: str = "Hello Bob,\r\n\r\nthe figures.\r\n",
) -> bytes:
    return (
        f"From: Alice <alice@{domain}>\r\n"
        f"To: Bob <bob@example.net>\r\n"
        f"Subject: {subject}\r\n"
        f"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n"
        f"Message-ID: <{abs(hash(subject))}@{domain}>\r\n"
        f"MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n"
        f"\r\n{body}"
    ).encode()
