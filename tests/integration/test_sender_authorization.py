"""Who may sign as whom, behind a real Postfix with SMTP AUTH, two tenants in slapd.

Tenant A (a.example) lets its relay at 127.0.0.1 sign without a login; tenant
B (b.example) names group ``b-senders`` (Carol, one of A's users) on its
domain entry.  People live in ``ou=people``: Alice owns alice@ and sales@
a.example, Bob owns bob@b.example.  The milter finds owners with
``SenderLoginFilter (mail=%s)`` and logins in ``uid``.  What is signed is
checked by Mail::DKIM; what is not, by the milter's log line naming the rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness.dnsserver import DnsServer
from harness.mailsite import MailSite, message
from harness.milterproc import MilterProcess
from harness.postfix import Postfix, header_values, require_postfix
from harness.provisioning import genkey, without_version_line
from harness.slapd import SLAPD_BINARIES, Slapd, require_binaries, stock_schema_dir
from harness.verifiers import mail_dkim_verify, require_mail_dkim

PASSWORD = "wonderland"
LOGINS = ("alice", "bob", "carol", "*", "alice)(uid=*")


@dataclass
class Tenants:
    slapd: Slapd
    site: MailSite
    postfix: Postfix
    milter: MilterProcess
    workdir: Path
    sent: int = 0

    def send(self, author: str, login: str | None) -> tuple[bytes | None, str]:
        """Send a message From ``author`` (logged in as ``login``): the delivered copy (None
        when refused) and the SMTP reply."""
        self.sent += 1
        subject = f"tenant {self.sent}"
        text = message(subject=subject).replace(b"alice@example.com", author.encode())
        reply = self.postfix.send(
            text,
            mail_from=author,
            rcpt_to=["rcpt@example.net"],
            auth=(login, PASSWORD) if login else None,
        )
        if not reply.accepted:
            return None, str(reply)
        return self.postfix.wait_for_message(subject), str(reply)

    def signed_by(self, delivered: bytes | None) -> list[str]:
        """The d= of every signature that Mail::DKIM finds good."""
        assert delivered is not None
        verdicts = mail_dkim_verify(delivered, self.site.dns.port)
        return [v.domain for v in verdicts if v.result == "pass"]

    def restart(self, *lines: str) -> None:
        self.milter.stop()
        self.milter.write_config(self._config(*lines))
        self.milter.start()

    def _config(self, *lines: str) -> list[str]:
        return _milter_lines(self.site, self.workdir, *lines)


def _milter_lines(site: MailSite, workdir: Path, *lines: str) -> list[str]:
    people = f"ou=people,{site.base}"
    return site.milter_config(
        f"SenderLoginBase {people}",
        "SenderLoginFilter (mail=%s)",
        "SenderLoginAttribute uid",
        f"StateDirectory {workdir}",
        *lines,
    )


def _directory(slapd: Slapd, base: str) -> str:
    people, groups = f"ou=people,{base}", f"ou=groups,{base}"

    def person(uid: str, *mails: str) -> str:
        lines = [f"dn: uid={uid},{people}", "objectClass: inetOrgPerson", f"uid: {uid}"]
        lines += [f"cn: {uid}", f"sn: {uid}", *(f"mail: {m}" for m in mails)]
        return "\n".join(lines) + "\n\n"

    return (
        f"dn: {people}\nobjectClass: organizationalUnit\nou: people\n\n"
        f"dn: {groups}\nobjectClass: organizationalUnit\nou: groups\n\n"
        + person("alice", "alice@a.example", "sales@a.example")
        + person("bob", "bob@b.example")
        + person("carol", "carol@a.example")
        + f"dn: cn=b-senders,{groups}\nobjectClass: groupOfNames\ncn: b-senders\n"
        f"member: uid=carol,{people}\n\n"
    )


@pytest.fixture
def tenants(tmp_path: Path) -> Iterator[Tenants]:
    require_binaries(*SLAPD_BINARIES)
    require_postfix()
    require_mail_dkim()
    schema = [stock_schema_dir() / "inetorgperson.ldif"]
    users = dict.fromkeys(LOGINS, PASSWORD)
    with (
        Slapd(tmp_path / "slapd", extra_schemas=schema) as slapd,
        DnsServer() as dns,
        Postfix(tmp_path / "postfix", sasl_users=users) as postfix,
    ):
        base = slapd.domains_base
        ldif = genkey(
            "a.example", "s1", base, with_domain=True, bits=1024,
            delegation=["--allowed-network", "127.0.0.1"],
        )  # fmt: skip
        group = f"cn=b-senders,ou=groups,{base}"
        ldif += without_version_line(
            genkey(
                "b.example", "s1", base, with_domain=True, bits=1024,
                delegation=["--allowed-sender", group, "--allowed-network", "192.0.2.0/24"],
            )
        )  # fmt: skip
        slapd.ldapadd(ldif + "\n" + _directory(slapd, base))
        site = MailSite(slapd, base, dns, tmp_path)
        site.publish_keys()
        with MilterProcess(tmp_path / "milter", _milter_lines(site, tmp_path)) as milter:
            postfix.set_milter(milter.postfix_address)
            postfix.reload()
            yield Tenants(slapd, site, postfix, milter, tmp_path)
            assert "Traceback" not in milter.log(), milter.log()


def test_a_login_signs_for_its_own_address_and_its_alias(tenants: Tenants) -> None:
    own, _ = tenants.send("alice@a.example", "alice")
    alias, _ = tenants.send("sales@a.example", "alice")
    assert tenants.signed_by(own) == ["a.example"], tenants.milter.log()
    assert tenants.signed_by(alias) == ["a.example"]


def test_a_login_sending_as_another_tenant_is_not_signed_and_the_log_says_why(
    tenants: Tenants,
) -> None:
    delivered, _ = tenants.send("bob@b.example", "alice")
    assert delivered is not None and header_values(delivered, "DKIM-Signature") == []
    assert (
        "not signed: login 'alice' may not send as bob@b.example: it does not own the "
        "address and the domain entry does not allow it"
    ) in tenants.milter.log()


def test_a_login_granted_the_domain_by_group_signs_for_any_of_its_addresses(
    tenants: Tenants,
) -> None:
    delivered, _ = tenants.send("press@b.example", "carol")
    assert tenants.signed_by(delivered) == ["b.example"], tenants.milter.log()


def test_unauthenticated_mail_signs_only_for_the_tenant_that_delegates_the_network(
    tenants: Tenants,
) -> None:
    for_a, _ = tenants.send("relay@a.example", None)
    for_b, _ = tenants.send("relay@b.example", None)
    assert tenants.signed_by(for_a) == ["a.example"]
    assert for_b is not None and header_values(for_b, "DKIM-Signature") == []


def test_on_sender_mismatch_reject_refuses_it_at_smtp(tenants: Tenants) -> None:
    tenants.restart("On-SenderMismatch reject")
    delivered, reply = tenants.send("bob@b.example", "alice")
    assert delivered is None and reply.startswith("550"), reply
    assert "sender may not sign as From" in reply


@pytest.mark.parametrize(
    ("author", "login"),
    [
        ("alice@a.example", "*"),  # a login that is a filter wildcard
        ("alice@a.example", "alice)(uid=*"),  # a login that would close the filter
        ("*@a.example", "alice"),  # an address that is a wildcard
        ('"*)(uid=*"@a.example', "alice"),  # a quoted local part that would widen it
        (f"{'a' * 300}@a.example", "alice"),  # longer than any address
    ],
    ids=["login-star", "login-injection", "address-star", "address-injection", "overlong"],
)
def test_hostile_logins_and_addresses_are_never_signed(
    tenants: Tenants, author: str, login: str
) -> None:
    signed_before = tenants.milter.log().count(" signed d=")
    delivered, reply = tenants.send(author, login)
    assert delivered is not None, reply  # authenticated, accepted, passed on unsigned
    assert header_values(delivered, "DKIM-Signature") == [], (author, login)
    assert tenants.milter.log().count(" signed d=") == signed_before
    assert f"not signed: login {login!r} may not send as" in tenants.milter.log()


def test_warm_signing_asks_the_directory_nothing(tenants: Tenants) -> None:
    tenants.send("alice@a.example", "alice")  # warms the caches
    before = tenants.milter.stats()
    assert before is not None
    for _ in range(3):
        tenants.send("alice@a.example", "alice")
    after = tenants.milter.stats()
    assert after is not None
    assert after["sender_searches"] == before["sender_searches"], (before, after)
    assert int(after["signed"]) == int(before["signed"]) + 3
