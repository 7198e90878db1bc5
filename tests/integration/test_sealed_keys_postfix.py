"""Sealed private keys behind a real Postfix: they sign, and no copy of the directory holds them.

The keys are made by ``ldapdkim provision``, sealed with a key-encryption key
(:func:`sealed_ldif` stands in for an administrator's sealing step), loaded
into the session's slapd, and signed with by ``ldapdkim run`` behind Postfix;
Perl Mail::DKIM and OpenDKIM judge what leaves.  Then every copy of the keys
that exists outside the milter's memory (``slapcat``, an LDIF export by the
admin DN, the replica database and the rest of the state directory) is
searched for every form of every private key.
"""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ldif
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from harness.common import wait_for
from harness.dnsserver import DnsServer
from harness.mailsite import MailSite, message
from harness.milterproc import MilterProcess
from harness.postfix import Postfix, require_postfix
from harness.provisioning import provision, without_version_line
from harness.slapd import Slapd
from harness.verifiers import (
    mail_dkim_verify,
    opendkim_verify,
    require_mail_dkim,
    require_mail_dkim_ed25519,
    require_opendkim,
)

from ldapdkim import keys, schema, sealing
from ldapdkim.model import Algorithm

KEK_ID = "kek-test"


def sealed_ldif(text: str, kek: sealing.KeyEncryptionKey) -> tuple[str, list[bytes]]:
    """``text`` (provisioning LDIF) with every private key sealed, and the plaintext keys."""
    records = ldif.LDIFRecordList(io.StringIO(text))
    records.parse()
    domains = {
        dn.lower(): attrs[schema.DOMAIN_NAME][0].decode()
        for dn, attrs in records.all_records
        if schema.DOMAIN_NAME in attrs
    }
    out = io.StringIO()
    writer = ldif.LDIFWriter(out)
    plaintext: list[bytes] = []
    for dn, attrs in records.all_records:
        if schema.PRIVATE_KEY in attrs:
            pem = attrs[schema.PRIVATE_KEY][0]
            plaintext.append(pem)
            identity = sealing.KeyIdentity(
                domains[dn.split(",", 1)[1].lower()],
                attrs[schema.SELECTOR][0].decode(),
                Algorithm.parse(attrs[schema.ALGORITHM][0].decode()),
            )
            der = keys.private_der(keys.load_private_key(pem, where=dn))
            attrs = {**attrs, schema.PRIVATE_KEY: [sealing.seal(der, kek, identity)]}
        writer.unparse(dn, attrs)
    return out.getvalue(), plaintext


def key_material(pem: bytes) -> dict[str, bytes]:
    """Every form a private key could take in a copy of the directory or the replica.

    The PEM itself, each of its body lines and its base64 (LDIF's form), the
    DER and its base64, and the secret numbers alone: an RSA key's
    primes and private exponent (the replica's compact form keeps the primes),
    an Ed25519 key's seed.
    """
    private = keys.load_private_key(pem, where="test key")
    der = keys.private_der(private)
    forms = {
        "PEM": pem.strip(),
        # LDIF's form of a value with line breaks: the middle of it, past the PEM header
        # and the PKCS #8 prefix that every key of a kind shares (from a multiple of 4, so
        # the stretch is the same whatever the value's end).
        "base64 PEM": _middle(base64.b64encode(pem)),
        "DER": der,
        "base64 DER": base64.b64encode(der),
    }
    body = [line for line in pem.splitlines() if line and not line.startswith(b"-----")]
    forms.update({f"PEM line {n}": line for n, line in enumerate(body) if len(line) >= 40})
    if isinstance(private, rsa.RSAPrivateKey):
        numbers = private.private_numbers()
        for name in ("p", "q", "d"):
            value: int = getattr(numbers, name)
            forms[f"RSA {name}"] = value.to_bytes((value.bit_length() + 7) // 8, "big")
    elif isinstance(private, ed25519.Ed25519PrivateKey):
        forms["Ed25519 seed"] = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
    assert all(len(needle) >= 32 for needle in forms.values()), forms.keys()
    return forms


def _middle(text: bytes, width: int = 64) -> bytes:
    start = (len(text) // 2 - width // 2) // 4 * 4
    return text[start : start + width]


def unfolded(ldif_text: bytes) -> bytes:
    """LDIF with its folded lines joined (RFC 2849: a line break and one space continue)."""
    return re.sub(rb"\r?\n ", b"", ldif_text)


def found_in(haystacks: dict[str, bytes], pems: list[bytes]) -> list[str]:
    """Which form of which key appears in which haystack."""
    return [
        f"{form} of key {number} in {where}"
        for number, pem in enumerate(pems)
        for form, needle in key_material(pem).items()
        for where, data in haystacks.items()
        if needle in data
    ]


@dataclass
class SealedSite:
    site: MailSite
    kek_line: str
    plaintext: list[bytes]


@pytest.fixture
def sealed_site(slapd: Slapd, ldap_base: str, tmp_path: Path) -> Iterator[SealedSite]:
    kek_path = tmp_path / "kek"
    kek_path.write_bytes(os.urandom(sealing.KEK_BYTES))
    kek_path.chmod(0o600)
    kek = sealing.KeyEncryptionKey(KEK_ID, kek_path.read_bytes())
    text = provision(
        ["example.com", "example.org"], ldap_base, tmp_path, "rsa-sha256", "ed25519-sha256"
    )
    sealed, plaintext = sealed_ldif(without_version_line(text), kek)
    slapd.ldapadd(sealed)
    with DnsServer() as dns:
        site = MailSite(slapd, ldap_base, dns, tmp_path)
        site.publish_keys()
        yield SealedSite(site, f"KeyEncryptionKey {KEK_ID} {kek_path}", plaintext)


def _postfix_and_milter(
    site: MailSite, tmp_path: Path, *lines: str
) -> Iterator[tuple[Postfix, MilterProcess]]:
    require_postfix()
    with Postfix(tmp_path / "postfix") as postfix:
        with MilterProcess(tmp_path / "milter", site.milter_config(*lines)) as milter:
            postfix.set_milter(milter.postfix_address)
            postfix.reload()
            yield postfix, milter
            assert "Traceback" not in milter.log(), milter.log()


def _send(postfix: Postfix, msg: bytes, sender: str = "alice@example.com") -> bool:
    subject = re.search(rb"Subject: ([^\r\n]*)", msg)
    assert subject is not None
    reply = postfix.send(msg, mail_from=sender, rcpt_to=["bob@example.net"])
    return reply.accepted


def test_sealed_keys_sign_through_postfix_and_verify_with_mail_dkim_and_opendkim(
    sealed_site: SealedSite, tmp_path: Path
) -> None:
    require_mail_dkim()
    require_mail_dkim_ed25519()
    require_opendkim()
    site = sealed_site.site
    for postfix, milter in _postfix_and_milter(site, tmp_path, sealed_site.kek_line):
        assert _send(postfix, message(subject="sealed a")), milter.log()
        delivered = postfix.wait_for_message("sealed a")
        by_mail_dkim = mail_dkim_verify(delivered, site.dns.port)
        assert sorted((v.result, v.algorithm) for v in by_mail_dkim) == [
            ("pass", "ed25519-sha256"),
            ("pass", "rsa-sha256"),
        ], (by_mail_dkim, milter.log())
        by_opendkim = opendkim_verify(delivered, site.dns.port)
        assert sorted((v.result, v.algorithm) for v in by_opendkim) == [
            ("pass", "ed25519-sha256"),
            ("pass", "rsa-sha256"),
        ], by_opendkim


def test_no_copy_outside_the_milter_holds_a_sealed_key(
    sealed_site: SealedSite, slapd: Slapd, ldap_base: str, tmp_path: Path
) -> None:
    """slapcat, an LDIF export by the admin DN, the replica database and the state
    directory hold no form of any private key, after the milter has signed with them."""
    site = sealed_site.site
    for postfix, milter in _postfix_and_milter(site, tmp_path, sealed_site.kek_line):
        assert _send(postfix, message(subject="sealed b")), milter.log()
        postfix.wait_for_message("sealed b")
        state = milter.workdir / "state"
        wait_for("the sealed keys in the replica", lambda: b"sealed:v1:" in _files(state))  # noqa: B023
    haystacks = {
        "slapcat": unfolded(_slapcat(slapd)),
        "ldapsearch export": unfolded(_export(slapd, ldap_base)),
    }
    state_files = [p for p in state.rglob("*") if p.is_file()]
    assert any(p.stat().st_size > 0 for p in state_files), "the milter kept no replica"
    haystacks.update({str(p): p.read_bytes() for p in state_files})
    assert b"sealed:v1:" in haystacks["ldapsearch export"]
    forms = sum(len(key_material(pem)) for pem in sealed_site.plaintext)
    assert forms >= 4 * 5
    assert found_in(haystacks, sealed_site.plaintext) == []
    print(
        f"searched {forms} forms of {len(sealed_site.plaintext)} keys in {len(haystacks)} "
        f"copies ({sum(len(h) for h in haystacks.values())} bytes): found 0"
    )


def test_the_search_finds_plaintext_keys_where_they_are(
    slapd: Slapd, ldap_base: str, tmp_path: Path
) -> None:
    """The search of the test above, on plaintext keys: it finds them in each copy."""
    text = provision(["plain.example"], ldap_base, tmp_path, "rsa-sha256", "ed25519-sha256")
    slapd.ldapadd(without_version_line(text))
    records = ldif.LDIFRecordList(io.StringIO(without_version_line(text)))
    records.parse()
    pems = [a[schema.PRIVATE_KEY][0] for _, a in records.all_records if schema.PRIVATE_KEY in a]
    with DnsServer() as dns:
        site = MailSite(slapd, ldap_base, dns, tmp_path)
        with MilterProcess(tmp_path / "milter", site.milter_config()) as milter:
            state = milter.workdir / "state"
            wait_for("the keys in the replica", lambda: b"plain.example" in _files(state))
    found = found_in(
        {
            "slapcat": unfolded(_slapcat(slapd)),
            "export": unfolded(_export(slapd, ldap_base)),
            "replica": _files(state),
        },
        pems,
    )
    assert any("in slapcat" in f for f in found), found
    assert any("in export" in f for f in found), found
    assert any("RSA p of key" in f and "in replica" in f for f in found), found


def test_a_sealed_value_copied_to_another_domain_does_not_sign_there(
    sealed_site: SealedSite, slapd: Slapd, ldap_base: str, tmp_path: Path
) -> None:
    """example.org's RSA key entry gets example.com's sealed RSA key: its mail is not
    signed (On-SignatureError: reject), the log names the entry and the cause, and
    example.com keeps signing."""
    conn = slapd.connect(slapd.admin_dn)
    found = conn.search_s(
        ldap_base, 2, f"(&(objectClass={schema.KEY_CLASS})({schema.ALGORITHM}=rsa-sha256))",
        [schema.PRIVATE_KEY],
    )  # fmt: skip
    by_domain = {dn.split(",")[1].lower(): (dn, attrs) for dn, attrs in found}
    com = next(v for k, v in by_domain.items() if "example.com" in k)
    org_dn = next(v for k, v in by_domain.items() if "example.org" in k)[0]
    conn.modify_s(org_dn, [(2, schema.PRIVATE_KEY, com[1][schema.PRIVATE_KEY])])
    conn.unbind_s()
    site = sealed_site.site
    lines = (sealed_site.kek_line, "On-SignatureError reject")
    for postfix, milter in _postfix_and_milter(site, tmp_path, *lines):
        # Wait until the replica has the change, then ask for example.org's key.
        assert _send(postfix, message(subject="sealed c")), milter.log()
        postfix.wait_for_message("sealed c")
        refused = not _send(
            postfix, message(domain="example.org", subject="swapped"), "alice@example.org"
        )
        log = milter.log()
        assert f"key {org_dn!r}" in log and "does not open" in log, log
        assert "copied from another key entry" in log, log
        # Ed25519 still signs for example.org, so the message may leave signed by it
        # alone; it never carries a signature by the swapped RSA key.
        if not refused:
            delivered = postfix.wait_for_message("swapped")
            verdicts = mail_dkim_verify(delivered, site.dns.port)
            assert [(v.result, v.algorithm) for v in verdicts] == [("pass", "ed25519-sha256")], (
                verdicts
            )
        assert _send(postfix, message(subject="sealed d")), milter.log()
        delivered = postfix.wait_for_message("sealed d")
        assert {v.result for v in mail_dkim_verify(delivered, site.dns.port)} == {"pass"}


def test_without_its_kek_a_sealed_key_does_not_sign_and_the_log_says_which_kek(
    sealed_site: SealedSite, tmp_path: Path
) -> None:
    site = sealed_site.site
    for postfix, milter in _postfix_and_milter(site, tmp_path, "On-SignatureError tempfail"):
        reply = postfix.send(
            message(subject="no kek"), mail_from="alice@example.com", rcpt_to=["bob@example.net"]
        )
        assert not reply.accepted and reply.code // 100 == 4, reply
        log = milter.log()
        assert f"sealed with KEK {KEK_ID!r}, which this host does not have" in log, log
        assert f"KeyEncryptionKey {KEK_ID} PATH" in log, log


def _slapcat(slapd: Slapd) -> bytes:
    result = subprocess.run(
        ["slapcat", "-F", str(slapd.config_dir), "-b", "dc=example,dc=test"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return result.stdout


def _export(slapd: Slapd, base: str) -> bytes:
    """What an administrator's ``ldapsearch -LLL`` export as the admin DN holds."""
    result = subprocess.run(
        ["ldapsearch", "-LLL", "-x", "-H", slapd.ldap_uri, "-D", slapd.admin_dn,
         "-w", slapd.admin_pw, "-b", base, "(objectClass=*)", "*"],
        capture_output=True, check=True, timeout=60, env=slapd.tool_env(),
    )  # fmt: skip
    return result.stdout


def _files(directory: Path) -> bytes:
    """Every file under ``directory``, one after the other."""
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())
