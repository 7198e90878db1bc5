"""Active Directory (a Samba AD domain controller): schema, binding, access, change tracking.

Resolution, signing, the replica and the milter through Postfix run against
the DC in test_resolution.py, test_sign_verify_end_to_end.py and
test_replica.py (the ``samba_ad`` cases).  This module covers what only
Active Directory has: the LDF schema extension, binding as AD sites bind,
the confidential private key, the running milter reading keys from the DC
without a replica, and following changes by USN instead of RFC 4533.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import ldap
import ldap.filter
import pytest
from harness.common import wait_for
from harness.dnsserver import DnsServer
from harness.mailsite import MailSite, message
from harness.milterclient import Transaction, play
from harness.milterproc import MilterProcess
from harness.provisioning import genkey
from harness.samba_ad import SambaDC
from harness.verifiers import mail_dkim_verify, require_mail_dkim

from ldapdkim import config
from ldapdkim.directory.probe import probe
from ldapdkim.directory.replica.sync import ReplicaSettings, SyncReplica
from ldapdkim.directory.replica.usnpoll import parse_cookie
from ldapdkim.directory.resolution import open_directory
from ldapdkim.errors import DirectoryUnavailable
from ldapdkim.signing.policy import signing_keys

SCHEMA_NAMES = {
    # name: (attributeSyntax, oMSyntax, single-valued)
    "dkimSignDomainName": ("2.5.5.12", 64, False),
    "dkimSignEnabled": ("2.5.5.8", 1, True),
    "dkimSignExpireSeconds": ("2.5.5.9", 2, True),
    "dkimSignSelector": ("2.5.5.12", 64, True),
    "dkimSignPrivateKey": ("2.5.5.10", 4, True),
    "dkimSignPublicKey": ("2.5.5.5", 22, True),
    "dkimSignNotAfter": ("2.5.5.11", 24, True),
    "dkimSignArcSelector": ("2.5.5.12", 64, True),
    "dkimSignArcAddress": ("2.5.5.12", 64, False),
}
INDEXED, CONFIDENTIAL = 0x1, 0x80


def settings(dc: SambaDC, base: str, *lines: str, state: Path | None = None) -> config.Settings:
    text = ["Mode s", *dc.milter_lines(base), "LDAPTimeout 3", *lines]
    if state is not None:
        text.append(f"StateDirectory {state}")
    return config.parse("\n".join(text) + "\n", "test.conf")


def selectors(dc: SambaDC, base: str, domain: str, *lines: str) -> list[str]:
    resolution = open_directory(settings(dc, base, *lines)).resolve(domain)
    return sorted(k.selector for k in signing_keys(resolution, datetime.now(UTC)))


@pytest.fixture
def domain(samba_ad: SambaDC) -> str:
    """A new container holding example.com with an Ed25519 key (as genkey writes it)."""
    base = samba_ad.new_container()
    samba_ad.ldapadd(
        genkey("example.com", "s1", base, with_domain=True, algorithm="ed25519-sha256")
    )
    return base


# ---- the schema extension --------------------------------------------------------


def test_the_ldf_loads_with_active_directory_syntaxes_and_search_flags(samba_ad: SambaDC) -> None:
    conn = samba_ad.connect(samba_ad.root_dn)
    try:
        found = conn.search_s(
            f"CN=Schema,CN=Configuration,{samba_ad.suffix}", ldap.SCOPE_ONELEVEL,
            "(lDAPDisplayName=dkimSign*)",
            ["lDAPDisplayName", "attributeSyntax", "oMSyntax", "isSingleValued", "searchFlags",
             "objectClassCategory", "rDNAttID"],
        )  # fmt: skip
    finally:
        conn.unbind_s()
    schema = {a["lDAPDisplayName"][0].decode(): a for dn, a in found if dn}
    assert len(schema) == 22  # 20 attributes, 2 classes
    for name, (syntax, om, single) in SCHEMA_NAMES.items():
        entry = schema[name]
        assert entry["attributeSyntax"] == [syntax.encode()], name
        assert int(entry["oMSyntax"][0]) == om, name
        assert entry["isSingleValued"] == [b"TRUE" if single else b"FALSE"], name
    flags = {name: int(schema[name]["searchFlags"][0]) for name in SCHEMA_NAMES}
    assert flags["dkimSignDomainName"] & INDEXED and flags["dkimSignSelector"] & INDEXED
    assert flags["dkimSignPrivateKey"] & CONFIDENTIAL
    assert schema["dkimSignDomainPolicy"]["objectClassCategory"] == [b"3"]  # auxiliary
    assert schema["dkimSignKey"]["objectClassCategory"] == [b"1"]  # structural
    assert schema["dkimSignKey"]["rDNAttID"] == [b"dkimSignSelector"]


def test_genkey_output_loads_unchanged(samba_ad: SambaDC, domain: str) -> None:
    """The LDIF that works on OpenLDAP and 389-DS names key entries by selector and adds
    the policy class to an organizationalUnit: Active Directory takes it as it is."""
    conn = samba_ad.connect(samba_ad.root_dn)
    try:
        [(dn, attrs)] = [
            r for r in conn.search_s(domain, ldap.SCOPE_SUBTREE, "(objectClass=dkimSignKey)",
                                     ["objectClass", "dkimSignKeyState"]) if r[0]
        ]  # fmt: skip
    finally:
        conn.unbind_s()
    assert dn.lower().startswith("dkimsignselector=s1,ou=example.com,")
    assert attrs["dkimSignKeyState"] == [b"active"]


# ---- binding as AD sites bind --------------------------------------------------------


@pytest.mark.parametrize(
    "how",
    ["user@REALM over LDAPS", "full DN over LDAPS", "user@REALM with StartTLS"],
)
def test_the_milter_binds_as_active_directory_sites_do(
    samba_ad: SambaDC, domain: str, how: str
) -> None:
    lines = []
    if "full DN" in how:
        lines.append(f"LDAPBindUser {samba_ad.milter_full_dn}")
    if "StartTLS" in how:
        lines += [f"Directory {samba_ad.starttls_uri}/{domain}", "LDAPUseTLS yes"]
    assert selectors(samba_ad, domain, "example.com", *lines) == ["s1"]


def test_a_simple_bind_without_tls_is_refused_with_the_fix(samba_ad: SambaDC, domain: str) -> None:
    plain = settings(samba_ad, domain, f"Directory {samba_ad.starttls_uri}/{domain}")
    with pytest.raises(
        DirectoryUnavailable, match=r"refuses a simple bind without TLS.*LDAPUseTLS"
    ):
        open_directory(plain).resolve("example.com")


def test_a_certificate_from_another_ca_is_refused(
    samba_ad: SambaDC, domain: str, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.pem"
    other.write_text(Path("/etc/ssl/certs/ca-certificates.crt").read_text())
    wrong = settings(samba_ad, domain, f"LDAPTLSCACertFile {other}")
    with pytest.raises(DirectoryUnavailable, match=r"cannot reach ldaps://.*LDAPTLSCACertFile"):
        open_directory(wrong).resolve("example.com")


# ---- the private key ----------------------------------------------------------------


def test_only_the_milter_reads_or_filters_on_the_private_key(
    samba_ad: SambaDC, domain: str
) -> None:
    """The attribute is confidential; only the milter holds control access to it below the
    domains base (schema/ad/README.md).  Another account reads the rest."""
    key_filter = "(dkimSignPrivateKey=*)"
    seen = {}
    for who in (samba_ad.milter_dn, samba_ad.reader_dn):
        conn = samba_ad.connect(who)
        try:
            entries = [
                a for dn, a in conn.search_s(domain, ldap.SCOPE_SUBTREE,
                                             "(objectClass=dkimSignKey)", ["*"]) if dn
            ]  # fmt: skip
            probed = [dn for dn, _ in conn.search_s(domain, ldap.SCOPE_SUBTREE, key_filter) if dn]
        finally:
            conn.unbind_s()
        seen[who] = (entries, probed)
    milter_entries, milter_probe = seen[samba_ad.milter_dn]
    reader_entries, reader_probe = seen[samba_ad.reader_dn]
    assert [len(e.get("dkimSignPrivateKey", [])) for e in milter_entries] == [1]
    assert len(milter_probe) == 1
    assert len(reader_entries) == 1 and "dkimSignPublicKey" in reader_entries[0]
    assert "dkimSignPrivateKey" not in reader_entries[0]
    assert reader_probe == []
    # ... and so the other account, bound as the milter would be, has nothing to sign with.
    as_reader = [f"LDAPBindUser {samba_ad.reader_dn}", f"LDAPBindPassword {samba_ad.reader_pw}"]
    assert selectors(samba_ad, domain, "example.com", *as_reader) == []


# ---- the running milter -------------------------------------------------------------


def test_the_milter_in_lookup_mode_signs_with_a_key_from_the_dc_and_mail_dkim_verifies(
    samba_ad: SambaDC, tmp_path: Path
) -> None:
    """``ldapdkim run`` with ``DirectorySync no``, bound as user@REALM over LDAPS: the key
    comes from the DC at the first message, the public key from DNS, the verdict from
    Perl Mail::DKIM."""
    require_mail_dkim()
    with DnsServer() as dns:
        site = MailSite(samba_ad, samba_ad.new_container(), dns, tmp_path)
        site.add_domains(["example.com"], "rsa-sha256")
        lines = site.milter_config("DirectorySync no")
        with MilterProcess(tmp_path / "milter", lines) as milter:
            sent = message(subject="from the DC")
            answer = play(milter.socket, Transaction(sent))
            stats = milter.stats()
        [signature] = answer.values("DKIM-Signature")
        verdicts = mail_dkim_verify(b"DKIM-Signature: " + signature.encode() + b"\r\n" + sent,
                                    dns.port)  # fmt: skip
    assert [(v.result, v.domain) for v in verdicts] == [("pass", "example.com")], milter.log()
    assert stats is not None, milter.log()
    assert stats["directory_mode"] == "lookup"
    assert int(stats["ldap_searches"]) > 0
    assert "Traceback" not in milter.log(), milter.log()


# ---- change tracking without RFC 4533 -----------------------------------------------


@pytest.fixture
def replica_factory(tmp_path: Path) -> Iterator[Callable[..., SyncReplica]]:
    made: list[SyncReplica] = []

    def make(dc: SambaDC, base: str, *lines: str) -> SyncReplica:
        state = tmp_path / f"state{len(made)}"
        state.mkdir()
        replica = SyncReplica(ReplicaSettings.of(settings(dc, base, *lines, state=state)))
        made.append(replica)
        return replica

    yield make
    for replica in made:
        replica.close()


def key_states(replica: SyncReplica) -> dict[str, str]:
    assert replica.store is not None
    [(policy, _)] = replica.store.policies(["example.com"])
    return {
        a["dkimsignselector"][0].decode(): a["dkimsignkeystate"][0].decode()
        for _, a in replica.store.children(policy)
    }


def test_without_content_sync_the_replica_follows_uSNChanged_within_the_interval(
    samba_ad: SambaDC,
    domain: str,
    replica_factory: Callable[..., SyncReplica],
    caplog: pytest.LogCaptureFixture,
) -> None:
    interval = 1.5
    with caplog.at_level(logging.INFO, logger="ldapdkim"):
        replica = replica_factory(samba_ad, domain, f"DirectoryPollInterval {interval}")
        wait_for("first refresh", lambda: replica.loaded, 10)
    assert replica.mode == "sync"  # answers from the replica, DirectorySync auto
    assert "following its changes by uSNChanged every 1.5 s" in caplog.text
    assert replica.store is not None
    cookie = parse_cookie(replica.store.meta().cookie)
    assert cookie is not None and "CN=NTDS Settings" in cookie[1]

    samba_ad.ldapadd(
        genkey("example.com", "s2", domain, algorithm="ed25519-sha256", state="pending",
               domain_dn=f"ou=example.com,{domain}")
    )  # fmt: skip
    took = wait_for("new key", lambda: key_states(replica) == {"s1": "active", "s2": "pending"},
                    interval + 1.0)  # fmt: skip
    assert took <= interval + 1.0
    conn = samba_ad.connect(samba_ad.admin_dn)
    try:
        conn.delete_s(f"dkimSignSelector=s1,ou=example.com,{domain}")
    finally:
        conn.unbind_s()
    wait_for("deleted key", lambda: key_states(replica) == {"s2": "pending"}, interval + 1.0)


def test_with_access_to_tombstones_deletions_come_from_them(
    samba_ad: SambaDC, domain: str, replica_factory: Callable[..., SyncReplica]
) -> None:
    """An account that may list CN=Deleted Objects (schema/ad/README.md) learns of deletions
    from the tombstones, without listing the base."""
    account, password = "ldapdkim-sync", "Syn-" + "x7Kq2mPz9Lw4"
    full_dn = f"CN={account},{samba_ad.services_base}"
    if not samba_ad.has_entry(full_dn):
        samba_ad.samba_tool("user", "create", account, password)
        samba_ad.samba_tool(
            "dsacl", "set", f"--objectdn={samba_ad.domains_base}",
            f"--sddl={samba_ad.private_key_ace(full_dn)}",
        )  # fmt: skip
        samba_ad.allow_on_deleted_objects(samba_ad.sid_of(full_dn))
    replica = replica_factory(
        samba_ad, domain, "DirectoryPollInterval 0.2",
        f"LDAPBindUser {account}@{samba_ad.realm}", f"LDAPBindPassword {password}",
    )  # fmt: skip
    wait_for("first refresh", lambda: replica.loaded, 10)
    conn = samba_ad.connect(samba_ad.admin_dn)
    try:
        conn.delete_s(f"dkimSignSelector=s1,ou=example.com,{domain}")
    finally:
        conn.unbind_s()
    assert replica.store is not None
    wait_for("deleted key", lambda: replica.store.meta().entries == 1, 3)  # type: ignore[union-attr]
    poller = replica.consumer.poller  # which way the deletion came
    assert poller is not None and poller.tombstones_readable is True


def test_check_config_accepts_directory_sync_yes_against_active_directory(
    samba_ad: SambaDC, domain: str
) -> None:
    ldap_settings = settings(samba_ad, domain).ldap
    assert ldap_settings is not None
    assert probe(ldap_settings, sync_required=True) == []
