"""Many MTA hosts: each milter reads its own nearby directory server, kept current by syncrepl.

One provider, one consumer (a syncrepl copy of it, as on a second MTA host),
two milters behind two Postfix instances: one milter syncs from the
provider, the other from the consumer.  A key change written on the
provider must sign mail on both hosts within a second, through the
directory's own replication and each milter's content-sync replica.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ldap
import pytest
from harness.dnsserver import DnsServer
from harness.mailsite import MailSite, message
from harness.milterproc import MilterProcess
from harness.postfix import Postfix, header_values, require_postfix
from harness.provisioning import genkey, without_version_line
from harness.slapd import SLAPD_BINARIES, Slapd, require_binaries
from harness.verifiers import mail_dkim_verify, require_mail_dkim

PROPAGATION_LIMIT = 1.0
"""Seconds from the write on the provider to mail signed with the new key, on every host."""


@dataclass
class Host:
    """One MTA host: its Postfix and its milter."""

    name: str
    postfix: Postfix
    milter: MilterProcess
    sent: int = 0

    def send(self) -> bytes:
        self.sent += 1
        subject = f"{self.name} {self.sent}"
        reply = self.postfix.send(
            message(subject=subject), mail_from="alice@example.com", rcpt_to=["bob@example.net"]
        )
        assert reply.accepted, (self.name, reply, self.milter.log())
        return self.postfix.wait_for_message(subject)


def selector(delivered: bytes) -> str:
    found = re.search(r"\bs=([^;\s]+)", " ".join(header_values(delivered, "DKIM-Signature")))
    assert found is not None, delivered[:500]
    return found.group(1)


@dataclass
class Fleet:
    provider: Slapd
    site: MailSite
    hosts: list[Host]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    require_binaries(*SLAPD_BINARIES)
    require_postfix()
    with (
        Slapd(tmp_path / "provider") as provider,
        Slapd(tmp_path / "consumer", provider=provider) as consumer,
        DnsServer() as dns,
        Postfix(tmp_path / "mta-a") as postfix_a,
        Postfix(tmp_path / "mta-b") as postfix_b,
    ):
        site = MailSite(provider, provider.domains_base, dns, tmp_path)
        base = provider.domains_base
        ldif = genkey("example.com", "s1", base, with_domain=True, bits=1024)
        ldif += without_version_line(
            genkey("example.com", "s2", base, state="pending", bits=1024,
                   domain_dn=f"ou=example.com,{base}")
        )  # fmt: skip
        provider.ldapadd(ldif)
        site.publish_keys()  # both keys in the DNS: s2 is published before it signs
        consumer.wait_in_sync()
        with contextlib.ExitStack() as milters:
            hosts = []
            for name, server, postfix in (("a", provider, postfix_a), ("b", consumer, postfix_b)):
                (tmp_path / name).mkdir()
                lines = site.milter_config(
                    "DirectorySync yes", f"StateDirectory {tmp_path / name}", uri=server.ldap_uri
                )
                milter = milters.enter_context(MilterProcess(tmp_path / f"milter-{name}", lines))
                postfix.set_milter(milter.postfix_address)
                postfix.reload()
                hosts.append(Host(name, postfix, milter))
            yield Fleet(provider, site, hosts)
            for host in hosts:
                assert "Traceback" not in host.milter.log(), host.milter.log()


def test_a_key_change_on_the_provider_signs_on_every_host_within_a_second(fleet: Fleet) -> None:
    require_mail_dkim()
    assert [selector(host.send()) for host in fleet.hosts] == ["s1", "s1"]

    conn = fleet.provider.connect(fleet.provider.admin_dn)
    key = "dkimSignSelector={},ou=example.com," + fleet.provider.domains_base
    written = time.monotonic()
    conn.modify_s(key.format("s2"), [(ldap.MOD_REPLACE, "dkimSignKeyState", [b"active"])])
    conn.modify_s(key.format("s1"), [(ldap.MOD_REPLACE, "dkimSignKeyState", [b"retired"])])
    conn.unbind_s()

    seen: dict[str, float] = {}
    last: dict[str, bytes] = {}
    while len(seen) < len(fleet.hosts) and time.monotonic() - written < 5:
        for host in fleet.hosts:
            if host.name not in seen:
                last[host.name] = host.send()
                if selector(last[host.name]) == "s2":
                    seen[host.name] = time.monotonic() - written
    assert set(seen) == {"a", "b"}, seen
    print(f"seconds from the write on the provider to mail signed with s2: {seen}")
    assert max(seen.values()) <= PROPAGATION_LIMIT, seen
    for name, delivered in last.items():
        verdicts = mail_dkim_verify(delivered, fleet.site.dns.port)
        assert [(v.result, v.selector) for v in verdicts] == [("pass", "s2")], name
