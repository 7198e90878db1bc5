"""Failover between two directory servers, in lookup mode, behind a real Postfix.

``Directory PROVIDER/BASE CONSUMER/BASE``: the second server is a syncrepl
consumer of the first (see :mod:`slapd`).  ``DirectorySync no`` keeps the
milter in lookup mode (no content-sync replica), ``LDAPCacheTTL 0`` and
``LDAPNegativeCacheTTL 0`` make every message ask the directory, and
``DirectoryMaxStale 0`` switches off the last-known-good answers, so a
signature after a server went away can only come from the other server.

What "the milter returns to the provider" means here: libldap tries the URIs
in order only when a connection is (re)made, and the milter keeps its one
connection for as long as it works.  So after the provider comes back, the
milter stays on the consumer (nothing is broken, nothing is retried); it
goes back to the provider at the next reconnect, which the test forces by
stopping the consumer.  Which server the connection is on is read from
``/proc`` (the milter process's established TCP connections), and every
step also checks that the delivered mail is signed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness.dnsserver import DnsServer
from harness.mailsite import MailSite, message
from harness.milterproc import MilterProcess
from harness.netpeers import established_remote_ports
from harness.postfix import Postfix, header_values, require_postfix
from harness.slapd import SLAPD_BINARIES, Slapd, require_binaries


@dataclass
class Failover:
    provider: Slapd
    consumer: Slapd
    site: MailSite
    milter: MilterProcess
    postfix: Postfix
    sent: int = 0

    def send_signed(self, label: str) -> str:
        """Send one message through Postfix; return the d= of its DKIM-Signature."""
        self.sent += 1
        subject = f"failover {self.sent} {label}"
        reply = self.postfix.send(
            message(subject=subject), mail_from="alice@example.com", rcpt_to=["bob@example.net"]
        )
        assert reply.accepted, (label, reply, self.milter.log())
        delivered = self.postfix.wait_for_message(subject)
        signatures = header_values(delivered, "DKIM-Signature")
        assert signatures, (label, delivered[:400], self.milter.log())
        match = re.search(r"\bd=([^;\s]+)", signatures[0])
        assert match is not None, signatures
        return match.group(1)

    def ldap_ports(self) -> set[int]:
        """Which of the two servers the milter has a connection to (their ports)."""
        assert self.milter.process is not None
        held = established_remote_ports(self.milter.process.pid)
        return held & {self.provider.port, self.consumer.port}


@pytest.fixture
def failover(tmp_path: Path) -> Iterator[Failover]:
    require_binaries(*SLAPD_BINARIES)
    require_postfix()
    with (
        Slapd(tmp_path / "provider") as provider,
        Slapd(tmp_path / "consumer", provider=provider) as consumer,
        DnsServer() as dns,
    ):
        site = MailSite(provider, provider.domains_base, dns, tmp_path)
        site.add_domains(["example.com"], "rsa-sha256")
        consumer.wait_in_sync()
        both = f"Directory {provider.ldap_uri}/{site.base} {consumer.ldap_uri}/{site.base}"
        lines = [
            both if line.startswith("Directory ") else line
            for line in site.milter_config(
                "DirectorySync no",
                "LDAPCacheTTL 0",
                "LDAPNegativeCacheTTL 0",
                "DirectoryMaxStale 0",
            )
        ]
        with Postfix(tmp_path / "postfix") as postfix:
            with MilterProcess(tmp_path / "milter", lines) as milter:
                postfix.set_milter(milter.postfix_address)
                postfix.reload()
                yield Failover(provider, consumer, site, milter, postfix)
                assert "Traceback" not in milter.log(), milter.log()


def test_mail_stays_signed_while_the_provider_goes_away_and_comes_back(
    failover: Failover,
) -> None:
    f = failover
    assert f.send_signed("both up") == "example.com"
    assert f.ldap_ports() == {f.provider.port}

    f.provider.stop()
    for n in range(3):
        assert f.send_signed(f"provider down {n}") == "example.com"
    assert f.ldap_ports() == {f.consumer.port}

    f.provider.start()
    for n in range(3):
        assert f.send_signed(f"provider back {n}") == "example.com"
    # A working connection is kept: no fail-back while the consumer answers.
    assert f.ldap_ports() == {f.consumer.port}

    # The next reconnect tries the URIs in order again: the provider first.
    f.consumer.stop()
    for n in range(3):
        assert f.send_signed(f"consumer down {n}") == "example.com"
    assert f.ldap_ports() == {f.provider.port}

    log = f.milter.log()
    assert log.count("directory connection lost") == 2, log
    assert "using what it said" not in log, "a stale answer was served: " + log


def test_with_both_servers_down_mail_is_tempfailed(failover: Failover) -> None:
    """The other side of DirectoryMaxStale 0: no server, no signature, no lost mail."""
    f = failover
    assert f.send_signed("before") == "example.com"
    f.provider.stop()
    f.consumer.stop()
    reply = f.postfix.send(
        message(subject="failover nowhere"),
        mail_from="alice@example.com",
        rcpt_to=["bob@example.net"],
    )
    assert reply.temporary, (reply, f.milter.log())
