"""ARC through a real Postfix: ldapdkim seals list mail, and its chains interoperate.

A mailing list at lists.example.com relays Carol's DKIM-signed mail from
example.org: its envelope sender is the list's, so ``ARCSealDomain
envelope-sender`` picks lists.example.com, whose directory entry names the
sealing key (``dkimSignArcSelector``).  The message goes through Postfix and
``ldapdkim run``; what Postfix delivers is checked by dkimpy's ``arc_verify``
and Perl Mail::DKIM's ARC verifier, one hop and three hops (ldapdkim after
each of the others, each of them after ldapdkim).  ldapdkim's own check of
their chains is the ``arc=`` of its Authentication-Results; a chain broken on
the way is sealed ``cv=fail`` and fails everywhere.  Postfix, the
milter, slapd and DNS start once for the module.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import dkim
import ldap
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from harness import arcpeers, forge
from harness.dnsserver import DnsServer
from harness.mailsite import AUTHSERV_ID, MailSite
from harness.mta import PostfixMta, milter_behind
from harness.slapd import Slapd
from harness.smtp import header_values
from harness.verifiers import require_mail_dkim

from ldapdkim import schema

LIST_DOMAIN = "lists.example.com"
OUTSIDE = "127.0.0.2"


@dataclass
class Peer:
    """Another ADMD's ARC sealer: its domain, selector and key (published in the DNS)."""

    domain: str
    selector: str
    key: rsa.RSAPrivateKey
    srv_id: str


@dataclass
class ArcSite:
    site: MailSite
    postfix: PostfixMta
    milter_log: Path
    author: Peer
    """example.org, Carol's domain: signs her mail with DKIM and seals as dkimpy."""
    relay: Peer
    """relay.example.net: seals as Mail::DKIM."""

    def relay_through_list(self, msg: bytes, subject: str, sets: int) -> bytes:
        """``msg`` sent by the list (MAIL FROM the list's bounce address) from outside;
        the delivered copy, which must carry ``sets`` ARC-Seals (each subject is sent once)."""
        reply = self.postfix.send(
            msg,
            mail_from=f"list-bounces@{LIST_DOMAIN}",
            rcpt_to=["bob@example.net"],
            source_address=OUTSIDE,
        )
        assert reply.accepted, reply
        delivered = self.postfix.wait_for_message(subject)
        seals = header_values(delivered, "ARC-Seal")
        assert len(seals) == sets, (seals, self.milter_log.read_text())
        return delivered


def _peer(dns: DnsServer, domain: str, selector: str, srv_id: str) -> Peer:
    key = forge.rsa_key()
    dns.set_txt(f"{selector}._domainkey.{domain}", forge.key_record(key).decode())
    return Peer(domain, selector, key, srv_id)


def _seal_with_first_key(slapd: Slapd, base: str, domain: str) -> str:
    """Name the domain's (only) key as its sealing key in its entry; its selector."""
    conn = slapd.connect(slapd.admin_dn)
    [(key_dn, attrs)] = conn.search_s(
        base, ldap.SCOPE_SUBTREE, f"(&(objectClass={schema.KEY_CLASS}))", [schema.SELECTOR]
    )
    selector: bytes = attrs[schema.SELECTOR][0]
    conn.modify_s(key_dn.split(",", 1)[1], [(ldap.MOD_REPLACE, schema.ARC_SELECTOR, [selector])])
    conn.unbind_s()
    return selector.decode()


@pytest.fixture(scope="module")
def arc_site(slapd: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArcSite]:
    require_mail_dkim()
    workdir = tmp_path_factory.mktemp("arc")
    base = slapd.new_container()
    with DnsServer() as dns:
        site = MailSite(slapd, base, dns, workdir)
        site.add_domains([LIST_DOMAIN], "rsa-sha256")
        _seal_with_first_key(slapd, base, LIST_DOMAIN)
        author = _peer(dns, "example.org", "dkpy", "mx.example.org")
        relay = _peer(dns, "relay.example.net", "mdk", "mx.relay.example.net")
        postfix = PostfixMta(workdir / "postfix")
        config = (
            "ARCVerify yes",
            "ARCSeal yes",
            f"ARCSealHosts {OUTSIDE}",
            "ARCSealDomain envelope-sender",
        )
        with (
            closing(postfix),
            milter_behind(postfix, site, workdir / "milter", *config) as milter,
        ):
            yield ArcSite(site, postfix, milter.log_path, author, relay)


def _carols_mail(site: ArcSite, subject: str) -> bytes:
    """Carol's message, DKIM-signed by example.org as it leaves her site."""
    body = (
        f"From: Carol <carol@example.org>\r\nTo: list@{LIST_DOMAIN}\r\n"
        f"Subject: {subject}\r\nDate: Mon, 07 Dec 2026 12:00:00 +0000\r\n"
        f"Message-ID: <{abs(hash(subject))}@example.org>\r\n\r\nHello list.\r\n"
    ).encode()
    a = site.author
    pem = arcpeers._pem(a.key)
    signature: bytes = dkim.sign(body, a.selector.encode(), a.domain.encode(), pem)
    return signature + body


def _ours(message: bytes) -> str:
    """ldapdkim's Authentication-Results, the newest one it wrote."""
    return next(v for v in header_values(message, "Authentication-Results") if AUTHSERV_ID in v)


def _dkimpy_verify(message: bytes, site: ArcSite) -> arcpeers.PeerVerdict:
    """dkimpy's verdict, with the key records the test DNS server publishes."""
    keys = {name: "".join(texts).encode() for name, texts in site.site.dns.records().items()}
    return arcpeers.dkimpy_verify(message, keys)


def _both_pass(message: bytes, site: ArcSite) -> None:
    by_dkimpy = _dkimpy_verify(message, site)
    assert by_dkimpy.result == "pass", (by_dkimpy, message.decode(errors="replace"))
    by_mail_dkim = arcpeers.mail_dkim_verify(message, site.site.dns.port)
    assert by_mail_dkim.result == "pass", (by_mail_dkim, message.decode(errors="replace"))


def _seal_by(message: bytes) -> list[str]:
    """d= of each ARC-Seal, newest first."""
    domains = []
    for value in header_values(message, "ARC-Seal"):
        tags = dict(t.strip().split("=", 1) for t in value.split(";") if "=" in t)
        domains.append(tags["d"].strip())
    return domains


def test_one_hop_sealed_by_ldapdkim_verifies_with_dkimpy_and_mail_dkim(arc_site: ArcSite) -> None:
    delivered = arc_site.relay_through_list(_carols_mail(arc_site, "arc one"), "arc one", 1)
    assert _seal_by(delivered) == [LIST_DOMAIN]
    ours = _ours(delivered)
    assert "dkim=pass" in ours and f"arc=none smtp.remote-ip={OUTSIDE}" in ours, ours
    [aar] = header_values(delivered, "ARC-Authentication-Results")
    assert aar.startswith(f"i=1; {AUTHSERV_ID};") and "dkim=pass" in aar, aar
    assert "(" not in aar  # no comments by default
    _both_pass(delivered, arc_site)


def _sealed_by(site: ArcSite, sealer: str, message: bytes, srv_id: str | None = None) -> bytes:
    """``message`` as the next hop passes it on: ``sealer`` (dkimpy as example.org,
    Mail::DKIM as the relay) checks the chain, writes its Authentication-Results
    with that ``arc=`` result, and seals."""
    if sealer == "dkimpy":
        peer, seal, cv = site.author, arcpeers.dkimpy_seal, _dkimpy_verify(message, site)
    else:
        peer, seal = site.relay, arcpeers.mail_dkim_seal
        cv = arcpeers.mail_dkim_verify(message, site.site.dns.port)
    srv_id = srv_id or peer.srv_id
    received = arcpeers.with_results(message, srv_id, f"arc={cv.result}")
    fields = seal(
        received, domain=peer.domain, selector=peer.selector, authserv_id=srv_id, key=peer.key
    )
    return arcpeers.prepend(fields, received)


@pytest.mark.parametrize(("first", "last"), [("dkimpy", "mail-dkim"), ("mail-dkim", "dkimpy")])
def test_ldapdkim_seals_between_the_others(arc_site: ArcSite, first: str, last: str) -> None:
    """Hop 1 and hop 3 by the others, hop 2 by ldapdkim through Postfix, which verifies
    hop 1's chain (arc=pass); all three sets verify with both."""
    subject = f"arc {first} {last}"
    hop1 = _sealed_by(arc_site, first, _carols_mail(arc_site, subject))
    hop2 = arc_site.relay_through_list(hop1, subject, 2)
    assert "arc=pass" in _ours(hop2), _ours(hop2)
    hop3 = _sealed_by(arc_site, last, hop2)
    domains = {"dkimpy": arc_site.author.domain, "mail-dkim": arc_site.relay.domain}
    assert _seal_by(hop3) == [domains[last], LIST_DOMAIN, domains[first]]
    _both_pass(hop3, arc_site)


def test_ldapdkim_verifies_and_extends_a_three_hop_chain_of_the_others(arc_site: ArcSite) -> None:
    """dkimpy, Mail::DKIM, dkimpy: ldapdkim says arc=pass and seals i=4, which both accept."""
    chain = _carols_mail(arc_site, "arc others")
    chain = _sealed_by(arc_site, "dkimpy", chain)
    chain = _sealed_by(arc_site, "mail-dkim", chain)
    chain = _sealed_by(arc_site, "dkimpy", chain, "mx2.example.org")
    delivered = arc_site.relay_through_list(chain, "arc others", 4)
    assert "arc=pass" in _ours(delivered), _ours(delivered)
    assert _seal_by(delivered)[0] == LIST_DOMAIN
    _both_pass(delivered, arc_site)


def test_a_broken_chain_is_sealed_failed_and_fails_everywhere(arc_site: ArcSite) -> None:
    """dkimpy's set no longer matches the body (a list footer added after it sealed):
    ldapdkim says arc=fail and seals cv=fail over its own set only; both others fail it."""
    sealed = _sealed_by(arc_site, "dkimpy", _carols_mail(arc_site, "arc broken"))
    footer = sealed + b"-- \r\nlist footer\r\n"
    delivered = arc_site.relay_through_list(footer, "arc broken", 2)
    assert "arc=fail" in _ours(delivered), _ours(delivered)
    [newest, _] = header_values(delivered, "ARC-Seal")
    assert "cv=fail" in newest.replace(" ", "") and "i=2" in newest.replace(" ", ""), newest
    assert _dkimpy_verify(delivered, arc_site).result == "fail"
    by_mail_dkim = arcpeers.mail_dkim_verify(delivered, arc_site.site.dns.port)
    assert by_mail_dkim.result == "fail", by_mail_dkim
