"""Sealed keys in a real slapd: ``keys seal``, ``keys rewrap``, ``check-config --connect``,
``RequireSealedKeys``, and the new keys of ``genkey``, ``provision`` and ``rotate``.

Every directory here is signed from with ``ldapdkim sign -c CONF`` and checked
with ``ldapdkim verify`` against a DNS server on loopback, so the domain a tool
seals a key for is proven to be the one the signing side opens it as.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ldap
import pytest
from harness.dnsserver import DnsServer
from harness.ldapserver import LdapServer
from harness.mailsite import MailSite, message
from harness.provisioning import genkey, provision, run_cli, without_version_line

DOMAINS = ["a.example", "b.example"]


@dataclass
class Site(MailSite):
    """slapd, DNS and two KEKs (k1, k2) made with ``ldapdkim keys new-kek``."""

    def kek(self, kek_id: str) -> Path:
        path = self.workdir / f"{kek_id}.kek"
        if not path.exists():
            status, _, err = run_cli("keys", "new-kek", str(path))
            assert status == 0, err
        return path

    def config(self, *lines: str, keks: tuple[str, ...] = ("k1",)) -> Path:
        password_file = self.workdir / "adminpw"
        password_file.write_text(self.slapd.admin_pw + "\n")
        password_file.chmod(0o600)
        return self.config_file(
            "Mode sv",
            f"LDAPAdminBindUser {self.slapd.admin_dn}",
            f"LDAPAdminBindPasswordFile {password_file}",
            "DNSTimeout 2",
            *(f"KeyEncryptionKey {k} {self.kek(k)}" for k in keks),
            *lines,
        )

    def run(self, *argv: str, config: Path) -> tuple[int, str, str]:
        command, *rest = argv
        if command == "keys":
            command, action, *rest = argv
            status, out, err = run_cli(command, action, "-c", str(config), *rest)
        else:
            status, out, err = run_cli(command, "-c", str(config), *rest)
        return status, out.decode(), err

    def stored(self) -> dict[str, bytes]:
        """Every key entry's dkimSignPrivateKey, by DN (read as the admin)."""
        conn = self.slapd.connect(self.slapd.admin_dn)
        try:
            found = conn.search_s(
                self.base, ldap.SCOPE_SUBTREE, "(objectClass=dkimSignKey)", ["dkimSignPrivateKey"]
            )
        finally:
            conn.unbind_s()
        # DNs as the server spells them may differ in case (Active Directory): lower case.
        return {dn.lower(): attrs.get("dkimSignPrivateKey", [b""])[0] for dn, attrs in found}

    def replace_key(self, dn: str, value: bytes) -> None:
        conn = self.slapd.connect(self.slapd.admin_dn)
        try:
            conn.modify_s(dn, [(ldap.MOD_REPLACE, "dkimSignPrivateKey", [value])])
        finally:
            conn.unbind_s()

    def sign(self, domain: str, config: Path) -> tuple[int, bytes, str]:
        return run_cli("sign", "-c", str(config), stdin=message(domain, subject=domain))

    def signs_and_verifies(self, domain: str, config: Path) -> list[str]:
        """Sign a message from ``domain``, verify it through DNS; the selectors that signed."""
        status, signed, err = self.sign(domain, config)
        assert status == 0, err
        selectors = re.findall(rb"DKIM-Signature:.*?\bs=([\w-]+);", signed, re.DOTALL)
        status, verdicts, _ = run_cli("verify", "-c", str(config), stdin=signed)
        assert status == 0, verdicts.decode()
        assert verdicts.decode().count(f"pass: d={domain}") == len(selectors) > 0
        return sorted(s.decode() for s in selectors)


@pytest.fixture
def site(directory_server: LdapServer, server_base: str, tmp_path: Path) -> Iterator[Site]:
    with DnsServer() as dns:
        yield Site(directory_server, server_base, dns, tmp_path)
        assert dns.errors == []


def _key_dn(site: Site, domain: str, suffix: str = "") -> str:
    """The DN of the key of ``domain`` whose selector ends in ``suffix`` (``-rsa``)."""
    [dn] = [dn for dn in site.stored() if f"{suffix},ou={domain},".lower() in dn]
    return dn


def _plaintexts(site: Site) -> list[str]:
    """Text that gives each plaintext key away (the middle of its PEM)."""
    return [value.decode()[60:120] for value in site.stored().values() if b"PRIVATE KEY" in value]


def test_seal_rerun_rewrap_and_every_domain_still_signs(site: Site) -> None:
    site.add_domains(DOMAINS, "rsa-sha256", "ed25519-sha256")
    token_ldif = genkey("c.example", "t1", site.base, with_domain=True)
    site.slapd.ldapadd(token_ldif)
    token_dn = f"dkimSignSelector=t1,ou=c.example,{site.base}".lower()
    site.replace_key(token_dn, b"pkcs11:token=dkim;object=c-example-t1")
    secrets = _plaintexts(site)
    assert len(secrets) == 4
    conf = site.config()

    status, out, err = site.run("keys", "seal", "--dry-run", config=conf)
    assert (status, out, err) == (
        0,
        "would seal 4 with KEK k1, 0 already sealed, 1 in a token, 0 without a key, "
        "0 failed (5 key entries)\n",
        "",
    )
    assert len(_plaintexts(site)) == 4

    status, out, err = site.run("keys", "seal", config=conf)
    assert (status, err) == (0, "")
    assert out == (
        "sealed 4 with KEK k1, 0 already sealed, 1 in a token, 0 without a key, "
        "0 failed (5 key entries)\n"
    )
    stored = site.stored()
    assert stored.pop(token_dn) == b"pkcs11:token=dkim;object=c-example-t1"
    assert all(v.startswith(b"sealed:v1:k1:") for v in stored.values()), stored
    for domain in DOMAINS:
        assert len(site.signs_and_verifies(domain, conf)) == 2

    status, out, _ = site.run("keys", "seal", config=conf)
    assert (status, out) == (
        0,
        "sealed 0 with KEK k1, 4 already sealed, 1 in a token, 0 without a key, "
        "0 failed (5 key entries)\n",
    )

    both = site.config(keks=("k1", "k2"))
    status, out, err = site.run("keys", "rewrap", "--to", "k2", config=both)
    assert (status, err) == (0, "")
    assert out == (
        "rewrapped 4 to KEK k2, 0 already with it, 0 with an unknown KEK, 0 plaintext, "
        "1 in a token, 0 without a key, 0 failed (5 key entries)\n"
    )
    stored = site.stored()
    del stored[token_dn]
    assert all(v.startswith(b"sealed:v1:k2:") for v in stored.values()), stored
    status, out, _ = site.run("keys", "rewrap", "--to", "k2", config=both)
    assert (status, out.split(",")[:2]) == (0, ["rewrapped 0 to KEK k2", " 4 already with it"])

    only_k2 = site.config(keks=("k2",))
    for domain in DOMAINS:
        assert len(site.signs_and_verifies(domain, only_k2)) == 2
    status, _, err = site.sign("a.example", conf)
    assert status == 1
    assert "it is sealed with KEK 'k2', which this host does not have (configured: k1)" in err

    status, out, err = site.run("check-config", "--connect", config=both)
    assert (status, out.splitlines()[0]) == (
        0,
        "private keys: 4 sealed (k2 4), 0 plaintext, 1 in a token, "
        "0 sealed with a KEK not configured here",
    )
    assert not any(secret in out + err for secret in secrets)


# The server spells DNs as it likes (Active Directory: in upper case); the tests compare
# messages that name a DN in lower case, as Site.stored() gives DNs.


def test_a_sealed_value_copied_onto_another_domains_entry_does_not_sign(site: Site) -> None:
    site.add_domains(DOMAINS, "rsa-sha256", "ed25519-sha256")
    conf = site.config()
    assert site.run("keys", "seal", config=conf)[0] == 0
    source, target = _key_dn(site, "a.example", "-rsa"), _key_dn(site, "b.example", "-rsa")
    assert source.split(",")[0] == target.split(",")[0]  # the same selector
    site.replace_key(target, site.stored()[source])

    status, signed, err = site.sign("b.example", conf)
    assert status == 1
    assert signed == message("b.example", subject="b.example")  # passed on unsigned
    assert (
        err.lower()
        == (
            f"ldapdkim: not signed: key {target!r}: it does not open with KEK 'k1' as the key "
            f"d=b.example s={target.split(',')[0].split('=')[1]} a=rsa-sha256: the value was "
            "damaged, copied from another key entry, or sealed with another KEK of that id; seal "
            "this entry's key again from its source\n"
        ).lower()
    )
    assert len(site.signs_and_verifies("a.example", conf)) == 2
    # rewrap cannot open it either, so it is left as it is and counted
    both = site.config(keks=("k1", "k2"))
    status, out, err = site.run("keys", "rewrap", "--to", "k2", config=both)
    assert status == 1
    assert f"ldapdkim: {target}: not rewrapped: it does not open with kek 'k1'" in err.lower()
    assert out.startswith("rewrapped 3 to KEK k2, ") and ", 1 failed (4 key entries)" in out


def test_damaged_values_unknown_keks_and_plaintext_under_require_sealed_keys(
    site: Site,
) -> None:
    site.add_domains(["a.example", "b.example", "c.example"], "rsa-sha256")
    [a_dn, b_dn, c_dn] = (_key_dn(site, d) for d in ("a.example", "b.example", "c.example"))
    site.replace_key(c_dn, b"sealed:v1:old:AAAAAAAAAAAAAAAA:" + b"A" * 64)
    conf = site.config("RequireSealedKeys yes")

    status, out, err = site.run("check-config", "--connect", config=conf)
    assert status == 2
    assert out.splitlines()[0] == (
        "private keys: 0 sealed, 2 plaintext, 0 in a token, 1 sealed with a KEK not configured here"
    )
    assert (
        f"ldapdkim: key {c_dn!r} is sealed with KEK 'old', which {conf} does not have; add "
        "'KeyEncryptionKey old PATH'"
    ).lower() in err.lower()
    assert (
        f"ldapdkim: key {a_dn!r} is stored in plaintext and RequireSealedKeys is yes, so it "
        f"does not sign; seal it with 'ldapdkim keys seal -c {conf}'"
    ).lower() in err.lower()

    status, _, err = site.sign("a.example", conf)
    assert (status, err.lower()) == (
        1,
        f"ldapdkim: not signed: key {a_dn!r}: it is stored in plaintext and RequireSealedKeys "
        "is yes; seal it with 'ldapdkim keys seal' (or set RequireSealedKeys no)\n".lower(),
    )

    assert site.run("keys", "seal", config=conf)[0] == 0
    assert site.signs_and_verifies("a.example", conf)

    status, _, err = site.sign("c.example", conf)
    assert status == 1 and "sealed with KEK 'old', which this host does not have" in err
    status, out, err = site.run("keys", "rewrap", "--to", "k1", config=conf)
    assert status == 1
    assert (
        err.lower()
        == (
            f"ldapdkim: {c_dn}: left as it is: sealed with KEK 'old', which the configuration "
            "does not have; add 'KeyEncryptionKey old PATH' and run again\n"
        ).lower()
    )
    assert out.startswith("rewrapped 0 to KEK k1, 2 already with it, 1 with an unknown KEK")

    site.replace_key(b_dn, site.stored()[b_dn][:-8] + b"!!!!!!!!")
    status, out, err = site.run("keys", "seal", config=conf)
    assert status == 1
    assert (
        err.lower()
        == (
            f"ldapdkim: {b_dn}: the sealed key is damaged (its base64 is broken); seal this "
            "entry's key again from its source\n"
        ).lower()
    )
    status, _, err = site.sign("b.example", conf)
    assert status == 1
    assert f"{b_dn!r}: the sealed key is damaged (its base64 is broken)" in err.lower()


def test_a_key_sealed_for_its_entry_signs_for_every_alias(site: Site) -> None:
    site.slapd.ldapadd(genkey("b.example", "s1", site.base, with_domain=True))
    conn = site.slapd.connect(site.slapd.admin_dn)
    try:
        conn.modify_s(
            f"ou=b.example,{site.base}", [(ldap.MOD_ADD, "dkimSignDomainName", [b"a.example"])]
        )
    finally:
        conn.unbind_s()
    site.publish_keys()
    conf = site.config()
    assert site.run("keys", "seal", config=conf)[0] == 0
    assert site.signs_and_verifies("a.example", conf) == ["s1"]
    assert site.signs_and_verifies("b.example", conf) == ["s1"]


def test_genkey_provision_and_rotate_write_sealed_keys_with_a_kek(site: Site) -> None:
    conf = site.config("RequireSealedKeys yes", keks=("k1", "k2"))
    status, ldif, err = run_cli(
        "genkey", "-d", "a.example", "-s", "s1", "--base", site.base, "--with-domain",
        "-c", str(conf), "--kek", "k2",
    )  # fmt: skip
    assert status == 0, err
    site.slapd.ldapadd(ldif.decode())
    listing = site.workdir / "domains.txt"
    listing.write_text("b.example\n")
    output = site.workdir / "provision.ldif"
    status, _, err = run_cli(
        "provision", "--base", site.base, "--domains", str(listing), "-o", str(output),
        "-a", "rsa-sha256", "-a", "ed25519-sha256", "-j", "1", "-c", str(conf),
    )  # fmt: skip
    assert status == 0, err
    site.slapd.ldapadd(without_version_line(output.read_text()))
    stored = site.stored()
    assert sorted(v[:13] for v in stored.values()) == [b"sealed:v1:k1:"] * 2 + [b"sealed:v1:k2:"]
    site.publish_keys()
    assert site.signs_and_verifies("a.example", conf) == ["s1"]
    assert len(site.signs_and_verifies("b.example", conf)) == 2

    status, _, err = site.run("rotate", "-d", "a.example", config=conf)
    assert status == 0, err
    [pending] = set(site.stored()) - set(stored)
    assert site.stored()[pending].startswith(b"sealed:v1:k1:")
    # the pending key opens as the key it is: the public key it was published with
    status, out, err = site.run("check-config", "--connect", config=conf)
    assert out.startswith("private keys: 4 sealed (k1 3, k2 1), 0 plaintext"), out + err
    plaintext = "dkimSignPrivateKey:: LS0tLS1CRUdJTi"  # base64 of -----BEGIN
    assert plaintext in provision(["c.example"], site.base, site.workdir)  # no -c


def test_kek_choice_is_checked(site: Site) -> None:
    conf = site.config()
    status, _, err = run_cli("genkey", "-d", "a.example", "-s", "s1", "--base", site.base,
                             "--kek", "k1")  # fmt: skip
    assert (status, err) == (
        2,
        "ldapdkim: --kek needs -c FILE, the configuration with its KeyEncryptionKey\n",
    )
    status, _, err = site.run("keys", "rewrap", "--to", "k9", config=conf)
    assert (status, err) == (
        2,
        f"ldapdkim: {conf} has no KEK 'k9' (KeyEncryptionKey lines: k1); add "
        "'KeyEncryptionKey k9 PATH' or name another\n",
    )
    bare = site.config(keks=())
    status, _, err = site.run("keys", "seal", config=bare)
    assert (status, err) == (
        2,
        f"ldapdkim: {bare} has no KeyEncryptionKey to seal with; make one with "
        "'ldapdkim keys new-kek PATH' and add 'KeyEncryptionKey ID PATH'\n",
    )
    strict = site.config("RequireSealedKeys yes", keks=())
    status, _, err = site.run("rotate", "-d", "a.example", config=strict)
    assert (status, err) == (
        2,
        f"ldapdkim: {strict}: RequireSealedKeys is yes but no KeyEncryptionKey seals new "
        "keys; make one with 'ldapdkim keys new-kek PATH' and add 'KeyEncryptionKey ID PATH'\n",
    )
