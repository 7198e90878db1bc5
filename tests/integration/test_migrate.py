"""``ldapdkim migrate``: what OpenDKIM signed before, ldapdkim signs after, from slapd.

"Before" is OpenDKIM 2.11 itself signing in test mode (``opendkim -t`` runs
the milter callbacks on a file as if from 127.0.0.1, an internal host, so it
signs; ``-vv`` prints the header field it would add).  "After" is
``ldapdkim migrate`` → ``ldapadd`` into slapd → ``ldapdkim sign``.  The DNS
records come from ``ldapdkim dns-records`` only, and Perl Mail::DKIM checks
both messages against them: both must pass with the same ``d=``, ``s=`` and
``a=``, which shows the key in the directory is the key OpenDKIM signed with.

OpenDKIM 2.11 chooses the algorithm from ``SignatureAlgorithm``, not from the
key (the key type is detected only in later development versions), so its
Ed25519 "before" signatures are made with that one line added; ldapdkim needs
no such line.
"""

from __future__ import annotations

import base64
import re
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness.common import skip_or_fail
from harness.dnsserver import DnsServer
from harness.mailsite import MailSite
from harness.provisioning import run_cli, without_version_line
from harness.slapd import Slapd
from harness.verifiers import (
    SignatureVerdict,
    mail_dkim_verify,
    opendkim_binary,
    require_mail_dkim_ed25519,
    require_opendkim,
)

from ldapdkim import keys
from ldapdkim.model import Algorithm, PrivateKey

OPENDKIM_LDIF_SCHEMA = Path("/usr/share/doc/opendkim/opendkim.ldif")
"""Debian's cn=config form of OpenDKIM's contrib schema (package opendkim)."""

MESSAGE = (
    "From: Alice <alice@{domain}>\r\n"
    "To: Bob <bob@example.net>\r\n"
    "Subject: migrated\r\n"
    "Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n"
    "Message-ID: <migrate-1@{domain}>\r\n"
    "\r\n"
    "Signed by OpenDKIM before, by ldapdkim after.\r\n"
)

_INSHEADER = re.compile(
    r"^### INSHEADER: idx=\d+ hname='DKIM-Signature' hvalue='(?P<value>.*?)'$",
    re.MULTILINE | re.DOTALL,
)


def message(domain: str) -> bytes:
    return MESSAGE.format(domain=domain).encode()


def opendkim_sign(msg: bytes, conf_lines: Sequence[str], workdir: Path) -> bytes:
    """``msg`` with the DKIM-Signature that OpenDKIM adds under the given configuration."""
    conf = workdir / "opendkim-sign.conf"
    conf.write_text("\n".join(["Mode s", "Syslog no", *conf_lines]) + "\n")
    path = workdir / "message.eml"
    path.write_bytes(msg)
    binary = opendkim_binary()
    assert binary is not None
    done = subprocess.run(
        [binary, "-x", str(conf), "-vv", "-t", str(path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    output = done.stdout.decode("utf-8", "replace")
    match = _INSHEADER.search(output)
    assert match, f"opendkim did not sign: {output}{done.stderr.decode('utf-8', 'replace')}"
    value = match.group("value").replace("\r\n", "\n").replace("\n", "\r\n")
    return b"DKIM-Signature: " + value.encode() + b"\r\n" + msg


def write_key(path: Path, key: PrivateKey) -> Path:
    path.write_bytes(keys.private_pem(key))
    path.chmod(0o600)
    return path


@dataclass
class Directory(MailSite):
    """The project's slapd with migrated entries, its DNS records, and ldapdkim's view of it."""

    def load(self, ldif: str) -> None:
        self.slapd.ldapadd(without_version_line(ldif))
        status, zone, err = run_cli("dns-records", "-c", str(self.config()))
        assert status == 0, err
        self.dns.load_zone_lines(zone.decode())

    def config(self, *lines: str) -> Path:
        return self.config_file(*lines)

    def sign(self, msg: bytes, *lines: str) -> bytes:
        status, signed, err = run_cli("sign", "-c", str(self.config(*lines)), stdin=msg)
        assert status == 0, err
        return signed

    def verdict(self, signed: bytes) -> SignatureVerdict:
        [verdict] = mail_dkim_verify(signed, self.dns.port)
        return verdict


@pytest.fixture
def directory(slapd: Slapd, ldap_base: str, tmp_path: Path) -> Iterator[Directory]:
    require_opendkim()
    require_mail_dkim_ed25519()
    with DnsServer() as dns:
        yield Directory(slapd, ldap_base, dns, tmp_path)
        assert dns.errors == []


def migrate(*argv: str) -> tuple[str, str]:
    """``ldapdkim migrate ARGV``: (the LDIF it prints, its stderr)."""
    status, stdout, err = run_cli("migrate", *argv)
    assert status == 0, err
    return stdout.decode(), err


def dns_of(ldif: str) -> list[str]:
    return [line for line in ldif.splitlines() if line.startswith("dn:")]


def same_signer(before: SignatureVerdict, after: SignatureVerdict) -> tuple[str, str, str]:
    """Both pass, with one d=, s= and a=; returns them."""
    assert before.result == "pass", before
    assert after.result == "pass", after
    assert (after.domain, after.selector, after.algorithm) == (
        before.domain,
        before.selector.lower(),
        before.algorithm,
    )
    return after.domain, after.selector, after.algorithm


def test_tables_and_single_key_mode_sign_the_same_after_migration(
    directory: Directory, tmp_path: Path
) -> None:
    rsa = write_key(tmp_path / "example.com.private", keys.generate(Algorithm.RSA_SHA256))
    ed = write_key(tmp_path / "example.org.private", keys.generate(Algorithm.ED25519_SHA256))
    single = write_key(tmp_path / "example.net.private", keys.generate(Algorithm.RSA_SHA256))
    (tmp_path / "key.table").write_text(
        f"rsa  example.com:s2026:{rsa}\ned   example.org:ed2026:{ed}\n"
    )
    (tmp_path / "signing.table").write_text(
        "*@example.com     rsa\n*@*.example.com   rsa\n*@example.org     ed\n"
    )
    tables = [
        f"KeyTable file:{tmp_path}/key.table",
        f"SigningTable refile:{tmp_path}/signing.table",
        "Canonicalization relaxed/simple",
        "RequireSafeKeys no",  # pytest's tmp directories live in /tmp
    ]
    single_key = [
        "Domain example.net",
        "Selector single",
        f"KeyFile {single}",
        "Canonicalization relaxed/simple",
        "RequireSafeKeys no",  # pytest's tmp directories live in /tmp
    ]
    before = {
        "example.com": opendkim_sign(message("example.com"), tables, tmp_path),
        "news.example.com": opendkim_sign(message("news.example.com"), tables, tmp_path),
        "example.org": opendkim_sign(
            message("example.org"), [*tables, "SignatureAlgorithm ed25519-sha256"], tmp_path
        ),
        "example.net": opendkim_sign(message("example.net"), single_key, tmp_path),
    }

    tables_conf = tmp_path / "tables.conf"
    tables_conf.write_text("Mode s\n" + "\n".join(tables) + "\n")
    single_conf = tmp_path / "single.conf"
    single_conf.write_text("Mode s\n" + "\n".join(single_key) + "\n")
    ldif, err = migrate("--opendkim-conf", str(tables_conf), "--base", directory.base)
    assert "warning" not in err
    carry_over = "copy these lines into ldapdkim.conf, where they apply to every domain as in "
    assert f"ldapdkim: note: {carry_over}OpenDKIM: Canonicalization relaxed/simple\n" in err
    single_ldif, err = migrate("--opendkim-conf", str(single_conf), "--base", directory.base)
    assert "warning" not in err
    directory.load(ldif + without_version_line(single_ldif))

    signers = {
        domain: same_signer(
            directory.verdict(signed),
            directory.verdict(directory.sign(message(domain), "Canonicalization relaxed/simple")),
        )
        for domain, signed in before.items()
    }
    assert signers == {
        "example.com": ("example.com", "s2026", "rsa-sha256"),
        "news.example.com": ("example.com", "s2026", "rsa-sha256"),
        "example.org": ("example.org", "ed2026", "ed25519-sha256"),
        "example.net": ("example.net", "single", "rsa-sha256"),
    }


def test_a_domain_the_tables_do_not_sign_stays_unsigned(
    directory: Directory, tmp_path: Path
) -> None:
    rsa = write_key(tmp_path / "k.private", keys.generate(Algorithm.RSA_SHA256))
    conf = tmp_path / "opendkim.conf"
    conf.write_text(f"KeyTable csl:k=example.com:s1:{rsa}\nSigningTable csl:example.com=k\n")
    ldif, _ = migrate("--opendkim-conf", str(conf), "--base", directory.base)
    directory.load(ldif)
    status, out, err = run_cli(
        "sign", "-c", str(directory.config()), stdin=message("sub.example.com")
    )
    assert (status, out) == (1, message("sub.example.com"))
    assert "does not cover subdomains" in err


# -- OpenDKIM's contrib LDAP entries (Zimbra's form) ---------------------------------


@pytest.fixture
def contrib_slapd(tmp_path: Path) -> Iterator[Slapd]:
    """A second slapd that also knows Debian's OpenDKIM schema (DKIM, DKIMSelector, ...)."""
    if not OPENDKIM_LDIF_SCHEMA.is_file():
        skip_or_fail(f"{OPENDKIM_LDIF_SCHEMA} is missing; install Debian's opendkim package")
    with Slapd(tmp_path / "contrib-slapd", extra_schemas=[OPENDKIM_LDIF_SCHEMA]) as server:
        yield server


def contrib_entry(dn: str, domain: str, selector: str, key: PrivateKey) -> str:
    """A domain entry carrying OpenDKIM's auxiliary DKIM class, as Zimbra's zmdkimkeyutil adds."""
    pem = base64.b64encode(keys.private_pem(key)).decode()
    return (
        f"dn: {dn}\n"
        "objectClass: organizationalUnit\n"
        "objectClass: DKIM\n"
        f"ou: {domain}\n"
        f"DKIMDomain: {domain}\n"
        f"DKIMSelector: {selector}\n"
        f"DKIMIdentity: {domain}\n"
        f"DKIMKey:: {pem}\n\n"
    )


def test_contrib_ldap_entries_sign_the_same_after_migration(
    directory: Directory, contrib_slapd: Slapd, tmp_path: Path
) -> None:
    base = contrib_slapd.domains_base
    selector = "3F2504E0-4F89-11D3-9A0C-0305E82C3301"  # zmdkimkeyutil picks a UUID
    rsa = keys.generate(Algorithm.RSA_SHA256)
    ed = keys.generate(Algorithm.ED25519_SHA256)
    contrib_slapd.ldapadd(
        contrib_entry(f"ou=example.com,{base}", "example.com", selector, rsa)
        + contrib_entry(f"ou=example.org,{base}", "example.org", "ed1", ed)
    )
    ldap_tables = [
        f"KeyTable {contrib_slapd.ldap_uri}/{base}?DKIMDomain,DKIMSelector,DKIMKey?sub?"
        "(DKIMSelector=$d)",
        f"SigningTable {contrib_slapd.ldap_uri}/{base}?DKIMSelector?sub?(DKIMIdentity=$d)",
        f"LDAPBindUser {contrib_slapd.admin_dn}",
        f"LDAPBindPassword {contrib_slapd.admin_pw}",
    ]
    # OpenDKIM 2.11 cannot sign with an Ed25519 key held inline (in LDAP or a table):
    # base64 DER fails to load and PEM gives signatures that do not verify.  So only
    # the RSA entry has a "before"; the Ed25519 entry is checked against its attributes.
    before = opendkim_sign(message("example.com"), ldap_tables, tmp_path)

    password = tmp_path / "contrib.pw"
    password.write_text(contrib_slapd.admin_pw + "\n")
    ldif, err = migrate(
        "--from-ldap",
        f"{contrib_slapd.ldap_uri}/{base}",
        "--bind-dn",
        contrib_slapd.admin_dn,
        "--bind-password-file",
        str(password),
        "--base",
        directory.base,
    )
    assert "warning" not in err
    assert contrib_slapd.admin_pw not in err
    whole_tree, _ = migrate(
        "--from-ldap",
        contrib_slapd.ldap_uri,  # no base DN: every naming context is searched
        "--bind-dn",
        contrib_slapd.admin_dn,
        "--bind-password-file",
        str(password),
        "--base",
        directory.base,
    )
    assert dns_of(whole_tree) == dns_of(ldif)
    directory.load(ldif)

    after = directory.verdict(directory.sign(message("example.com")))
    assert same_signer(directory.verdict(before), after) == (
        "example.com",
        selector.lower(),
        "rsa-sha256",
    )
    verdict = directory.verdict(directory.sign(message("example.org")))
    assert (verdict.result, verdict.domain, verdict.selector, verdict.algorithm) == (
        "pass",
        "example.org",
        "ed1",
        "ed25519-sha256",
    )


def test_from_ldap_with_a_wrong_password_says_what_to_check(
    contrib_slapd: Slapd, tmp_path: Path
) -> None:
    password = tmp_path / "wrong.pw"
    password.write_text("not the password\n")
    status, out, err = run_cli(
        "migrate",
        "--from-ldap",
        f"{contrib_slapd.ldap_uri}/{contrib_slapd.domains_base}",
        "--bind-dn",
        contrib_slapd.admin_dn,
        "--bind-password-file",
        str(password),
        "--base",
        "ou=domains,dc=example,dc=com",
    )
    assert (status, out) == (1, b"")
    assert err == (
        f"ldapdkim: {contrib_slapd.ldap_uri}: bind as {contrib_slapd.admin_dn!r} refused "
        "(invalid credentials); check --bind-dn and --bind-password-file\n"
    )


def test_from_ldap_reads_over_starttls_and_with_sasl_external_as_over_a_simple_bind(
    contrib_slapd: Slapd, tmp_path: Path
) -> None:
    """migrate --from-ldap connects like the milter: StartTLS with a CA file, or SASL."""
    base = contrib_slapd.domains_base
    contrib_slapd.ldapadd(
        contrib_entry(
            f"ou=example.net,{base}", "example.net", "s1", keys.generate(Algorithm.ED25519_SHA256)
        )
    )
    password = tmp_path / "contrib.pw"
    password.write_text(contrib_slapd.admin_pw + "\n")
    simple = ["--bind-dn", contrib_slapd.admin_dn, "--bind-password-file", str(password)]
    target = ["--base", "ou=domains,dc=example,dc=com"]
    plain, _ = migrate("--from-ldap", f"{contrib_slapd.ldap_uri}/{base}", *simple, *target)
    assert "dn: ou=example.net,ou=domains,dc=example,dc=com" in dns_of(plain)
    tls, _ = migrate(
        "--from-ldap",
        f"{contrib_slapd.ldap_uri}/{base}",
        "--starttls",
        "--tls-ca-file",
        str(contrib_slapd.ca_cert),
        *simple,
        *target,
    )
    # ldapi:// as root: SASL EXTERNAL maps uid 0 to the rootdn, no password at all.
    external, _ = migrate(
        "--from-ldap", f"{contrib_slapd.ldapi_uri}/{base}", "--sasl-mechanism", "EXTERNAL", *target
    )
    assert dns_of(tls) == dns_of(external) == dns_of(plain)


def test_from_ldap_starttls_without_the_servers_ca_says_what_to_check(
    contrib_slapd: Slapd, tmp_path: Path
) -> None:
    untrusted = tmp_path / "other-ca.pem"
    untrusted.write_bytes(b"")
    status, out, err = run_cli(
        "migrate",
        "--from-ldap",
        f"{contrib_slapd.ldap_uri}/{contrib_slapd.domains_base}",
        "--starttls",
        "--tls-ca-file",
        str(untrusted),
        "--base",
        "ou=domains,dc=example,dc=com",
    )
    assert (status, out) == (1, b"")
    assert err.startswith(f"ldapdkim: cannot reach {contrib_slapd.ldap_uri} (")
    assert err.endswith("); check the URL, --starttls and --tls-ca-file\n")
