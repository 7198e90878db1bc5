"""Keys in a PKCS #11 token (SoftHSM2): made there, signed with there, never out of it.

Each test has a SoftHSM2 token of its own (:mod:`harness.softhsm`).  Keys are
made with ``ldapdkim genkey --pkcs11``, the LDIF it prints goes into the
session's slapd, and the DNS server serves what ``ldapdkim dns-records``
prints.  Signatures are judged by ldapdkim's verifier, Perl Mail::DKIM and
OpenDKIM, behind a real Postfix.  Then the token's trouble: a module that
does not load, a PIN the token refuses, the token taken away and put back:
the message is not signed, the log says why, the metric counts it, the
configured action applies, and signing resumes without a restart.
"""

from __future__ import annotations

import os
import re
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from threading import Lock

import pytest
from harness.common import free_port, wait_for
from harness.dnsserver import DnsServer
from harness.mailsite import MailSite, message
from harness.milterproc import MilterProcess
from harness.postfix import Postfix, header_values, require_postfix
from harness.provisioning import run_cli, without_version_line
from harness.slapd import Slapd
from harness.softhsm import PIN, TOKEN, SoftHsm
from harness.verifiers import (
    mail_dkim_verify,
    opendkim_verify,
    require_mail_dkim,
    require_mail_dkim_ed25519,
    require_opendkim,
)

from ldapdkim import schema
from ldapdkim.config.secret import Secret
from ldapdkim.directory import ldifout
from ldapdkim.errors import KeyUnavailable
from ldapdkim.model import Algorithm
from ldapdkim.signing.token import Pkcs11Token

ALGORITHMS = ("rsa-sha256", "ed25519-sha256")


@pytest.fixture
def hsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsm:
    """A SoftHSM2 token for this test; this process finds it through SOFTHSM2_CONF too."""
    found = SoftHsm(tmp_path / "softhsm")
    monkeypatch.setenv("SOFTHSM2_CONF", str(found.conf))
    return found


def genkey_pkcs11(hsm: SoftHsm, domain: str, selector: str, algorithm: str, base: str) -> str:
    """The LDIF of ``ldapdkim genkey --pkcs11`` (with the domain entry for RSA keys)."""
    status, out, err = run_cli(
        "genkey", "-d", domain, "-s", selector, "-a", algorithm, "--base", base,
        *(["--with-domain"] if algorithm == "rsa-sha256" else []),
        "--pkcs11", "--token", TOKEN, "--pkcs11-module", str(hsm.module),
        "--pin-file", str(hsm.pin_file),
    )  # fmt: skip
    assert status == 0, err
    return out.decode()


def key_attrs(ldif_text: str) -> dict[str, list[bytes]]:
    records = ldifout.parse(ldif_text)
    return next(dict(attrs) for _, attrs in records if schema.SELECTOR in attrs)


@pytest.fixture
def token_site(hsm: SoftHsm, slapd: Slapd, ldap_base: str, tmp_path: Path) -> Iterator[MailSite]:
    """example.com with an RSA and an Ed25519 key in the token, keys in DNS."""
    for number, algorithm in enumerate(ALGORITHMS):
        text = genkey_pkcs11(hsm, "example.com", f"tok{number}", algorithm, ldap_base)
        slapd.ldapadd(without_version_line(text))
    with DnsServer() as dns:
        site = MailSite(slapd, ldap_base, dns, tmp_path)
        site.extra = hsm.config_lines()
        site.publish_keys()
        yield site


# -- made in the token --------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_genkey_pkcs11_makes_a_key_that_never_leaves_the_token(
    hsm: SoftHsm, algorithm: str
) -> None:
    text = genkey_pkcs11(hsm, "example.com", "s2026", algorithm, "ou=domains,dc=example,dc=test")
    attrs = key_attrs(text)
    uri = attrs[schema.PRIVATE_KEY][0].decode()
    assert re.fullmatch(
        rf"pkcs11:token={TOKEN};object=example\.com-s2026;id=(%[0-9A-F]{{2}}){{8}};type=private",
        uri,
    ), uri
    assert attrs[schema.ALGORITHM] == [algorithm.encode()]
    assert b"PRIVATE KEY" not in text.encode() and "BEGIN" not in text
    access = hsm.private_keys()
    assert set(access) == {"example.com-s2026"}, access
    for flag in ("sensitive", "always sensitive", "never extractable"):
        assert flag in access["example.com-s2026"].split(", "), access
    # Asked for the secret value itself, the token gives nothing.
    secret = "CKA_VALUE" if algorithm == "ed25519-sha256" else "CKA_PRIVATE_EXPONENT"
    assert hsm.private_attributes(
        "example.com-s2026", "CKA_EXTRACTABLE", "CKA_SENSITIVE", secret
    ) == [False, True, None]
    # A second key under the same label is refused, naming the label.
    status, _, err = run_cli(
        "genkey", "-d", "example.com", "-s", "s2026", "-a", algorithm, "--base", "dc=x",
        "--pkcs11", "--pkcs11-module", str(hsm.module), "--pin-file", str(hsm.pin_file),
    )  # fmt: skip
    assert status == 2 and "already holds an object labelled 'example.com-s2026'" in err, err


def test_genkey_pkcs11_takes_module_and_pin_from_the_configuration(
    hsm: SoftHsm, tmp_path: Path
) -> None:
    config = tmp_path / "ldapdkim.conf"
    config.write_text("\n".join(["Mode v", *hsm.config_lines()]) + "\n")
    status, out, err = run_cli(
        "genkey", "-c", str(config), "-d", "example.org", "-s", "s1", "-a", "ed25519-sha256",
        "--base", "dc=x", "--pkcs11",
    )  # fmt: skip
    assert status == 0, err
    assert key_attrs(out.decode())[schema.PRIVATE_KEY][0].startswith(b"pkcs11:token=ldapdkim;")
    assert 'IN TXT "v=DKIM1; k=ed25519; p=' in err
    status, _, err = run_cli(
        "genkey", "-c", str(tmp_path / "none.conf"), "-d", "example.org", "-s", "s2",
        "--base", "dc=x", "--pkcs11",
    )  # fmt: skip
    assert status == 2 and "give --pkcs11-module and --pin-file, or -c CONFIG" in err, err


def test_token_keys_sign_and_verify_with_ldapdkim_and_mail_dkim(token_site: MailSite) -> None:
    require_mail_dkim()
    require_mail_dkim_ed25519()
    signed = token_site.signed_elsewhere("signed by ldapdkim sign")
    config = token_site.config_file()
    status, out, _ = run_cli("verify", "-c", str(config), stdin=signed)
    assert status == 0 and out.decode().count("pass: d=example.com") == 2, out
    verdicts = mail_dkim_verify(signed, token_site.dns.port)
    assert sorted((v.result, v.algorithm) for v in verdicts) == [
        ("pass", "ed25519-sha256"),
        ("pass", "rsa-sha256"),
    ], verdicts


# -- the token, in one process ----------------------------------------------------------


@pytest.fixture
def rsa_key(hsm: SoftHsm) -> str:
    text = genkey_pkcs11(hsm, "example.com", "k1", "rsa-sha256", "dc=x")
    return key_attrs(text)[schema.PRIVATE_KEY][0].decode()


def test_a_refused_pin_is_tried_once(
    hsm: SoftHsm, rsa_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Logging in again and again with a wrong PIN would lock a real token."""
    import PyKCS11

    logins: list[str] = []
    login = PyKCS11.Session.login

    def counting(session: object, pin: str, *args: object) -> object:
        logins.append(pin)
        return login(session, pin, *args)

    monkeypatch.setattr(PyKCS11.Session, "login", counting)
    token = Pkcs11Token(hsm.module, Secret("9999"), retry_after=0)
    signer = token.signer(rsa_key, "k1", Algorithm.RSA_SHA256, where="key")
    try:
        for _ in range(3):
            with pytest.raises(KeyUnavailable) as caught:
                signer.sign_digest(b"\1" * 32)
            assert caught.value.in_token
            assert "refused the PIN of PKCS11PinFile (CKR_PIN_INCORRECT)" in str(caught.value)
            assert "9999" not in str(caught.value)
    finally:
        token.close()
    assert logins == ["9999"]
    right = Pkcs11Token(hsm.module, Secret(PIN))
    try:
        assert len(right.signer(rsa_key, "k1", Algorithm.RSA_SHA256, where="k").sign_digest(
            b"\1" * 32
        )) == 256  # fmt: skip
    finally:
        right.close()


def test_a_forked_child_signs_with_its_own_session(hsm: SoftHsm, rsa_key: str) -> None:
    """The parent signed first (module initialised, a session in the pool); the child
    initialises the module again and opens its own session; the parent goes on."""
    token = Pkcs11Token(hsm.module, Secret(PIN))
    signer = token.signer(rsa_key, "k1", Algorithm.RSA_SHA256, where="key")
    try:
        signer.sign_digest(b"\2" * 32)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                ok = len(signer.sign_digest(b"\3" * 32)) == 256
                os.write(write, f"{ok} {token._module.pid == os.getpid()}".encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        _, status = os.waitpid(pid, 0)
        assert os.read(read, 100) == b"True True" and status == 0
        os.close(read)
        assert len(signer.sign_digest(b"\4" * 32)) == 256
    finally:
        token.close()


def test_the_token_goes_away_and_comes_back(hsm: SoftHsm, rsa_key: str) -> None:
    token = Pkcs11Token(hsm.module, Secret(PIN), retry_after=0.5)
    signer = token.signer(rsa_key, "k1", Algorithm.RSA_SHA256, where="key")
    try:
        signer.sign_digest(b"\5" * 32)
        hsm.remove()
        with pytest.raises(KeyUnavailable) as caught:
            signer.sign_digest(b"\5" * 32)
        assert caught.value.in_token
        assert f"no PKCS#11 token matching 'pkcs11:token={TOKEN}' is present" in str(caught.value)
        assert "tries the token again every 0.5 s" in str(caught.value)
        hsm.restore()
        wait_for("signing again", lambda: _signs(signer), timeout=10, interval=0.2)
    finally:
        token.close()


def _signs(signer: object) -> bool:
    try:
        signer.sign_digest(b"\6" * 32)  # type: ignore[attr-defined]
    except KeyUnavailable:
        return False
    return True


# -- behind Postfix -----------------------------------------------------------------


@dataclass
class Mta:
    site: MailSite
    milter: MilterProcess
    postfix: Postfix
    metrics_port: int
    sent: int = 0

    def send(self, subject: str) -> tuple[bool, int, bytes | None]:
        """(accepted, SMTP code, the delivered copy if accepted)."""
        reply = self.postfix.send(
            message(subject=subject), mail_from="alice@example.com", rcpt_to=["bob@example.net"]
        )
        if not reply.accepted:
            return False, reply.code, None
        return True, reply.code, self.postfix.wait_for_message(subject)

    def not_signed(self, reason: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
        pattern = rf'^ldapdkim_messages_not_signed_total{{reason="{reason}"}} (\S+)$'
        found = re.search(pattern, text, re.M)
        assert found is not None, text
        return float(found.group(1))


def _mta(site: MailSite, hsm: SoftHsm, tmp_path: Path, *lines: str) -> Iterator[Mta]:
    require_postfix()
    port = free_port()
    config = site.milter_config(f"MetricsSocket inet:{port}@127.0.0.1", *lines)
    with Postfix(tmp_path / "postfix") as postfix:
        with MilterProcess(tmp_path / "milter", config, env=hsm.env) as milter:
            postfix.set_milter(milter.postfix_address)
            postfix.reload()
            yield Mta(site, milter, postfix, port)
            assert "Traceback" not in milter.log(), milter.log()


def test_token_keys_sign_behind_postfix_and_verify_with_mail_dkim_and_opendkim(
    token_site: MailSite, hsm: SoftHsm, tmp_path: Path
) -> None:
    require_mail_dkim()
    require_mail_dkim_ed25519()
    require_opendkim()
    for mta in _mta(token_site, hsm, tmp_path):
        accepted, _, delivered = mta.send("token a")
        assert accepted and delivered is not None, mta.milter.log()
        by_mail_dkim = mail_dkim_verify(delivered, token_site.dns.port)
        assert sorted((v.result, v.algorithm) for v in by_mail_dkim) == [
            ("pass", "ed25519-sha256"),
            ("pass", "rsa-sha256"),
        ], (by_mail_dkim, mta.milter.log())
        by_opendkim = opendkim_verify(delivered, token_site.dns.port)
        assert sorted((v.result, v.algorithm) for v in by_opendkim) == [
            ("pass", "ed25519-sha256"),
            ("pass", "rsa-sha256"),
        ], by_opendkim


def test_both_workers_sign_through_the_token(
    token_site: MailSite, hsm: SoftHsm, tmp_path: Path
) -> None:
    """Workers 2: each worker opens its own session after the fork; mail sent from four
    connections at once is signed by both, and every copy verifies."""
    require_mail_dkim()
    require_mail_dkim_ed25519()
    for mta in _mta(token_site, hsm, tmp_path, "Workers 2"):
        delivered: list[bytes] = []
        lock: Lock = threading.Lock()

        def sender(
            number: int, mta: Mta = mta, into: list[bytes] = delivered, lock: Lock = lock
        ) -> None:
            for i in range(8):
                accepted, _, copy = mta.send(f"workers {number}-{i}")
                assert accepted and copy is not None
                with lock:
                    into.append(copy)

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert len(delivered) == 32, mta.milter.log()
        signers = set(re.findall(r"ldapdkim\[(\d+)\]: INFO: \w+: signed d=", mta.milter.log()))
        assert len(signers) == 2, mta.milter.log()
        for copy in delivered[:4]:
            verdicts = mail_dkim_verify(copy, token_site.dns.port)
            assert [v.result for v in verdicts] == ["pass", "pass"], verdicts


def _refused(mta: Mta, subject: str, code_class: int) -> None:
    accepted, code, _ = mta.send(subject)
    assert not accepted and code // 100 == code_class, (code, mta.milter.log())


def test_a_token_taken_away_tempfails_and_signing_resumes_when_it_is_back(
    token_site: MailSite, hsm: SoftHsm, tmp_path: Path
) -> None:
    for mta in _mta(token_site, hsm, tmp_path):
        assert mta.send("before")[0], mta.milter.log()
        hsm.remove()
        _refused(mta, "while away", 4)  # On-InternalError: tempfail (the default)
        log = mta.milter.log()
        assert "not signed: key 'dkimSignSelector=tok" in log, log
        assert f"no PKCS#11 token matching 'pkcs11:token={TOKEN}' is present" in log, log
        assert "insert or restore the token" in log, log
        _refused(mta, "still away", 4)
        assert mta.not_signed("token_unavailable") == 2
        hsm.restore()

        def signs_again(mta: Mta = mta) -> bool:
            accepted, _, delivered = mta.send(f"back {mta.sent}")
            mta.sent += 1
            return (
                accepted
                and delivered is not None
                and bool(header_values(delivered, "DKIM-Signature"))
            )

        wait_for("signing after the token is back", signs_again, timeout=30, interval=1)
        assert "signing resumed" in mta.milter.log()


def test_a_wrong_pin_takes_the_configured_action_and_a_reload_with_the_right_one_signs(
    token_site: MailSite, hsm: SoftHsm, tmp_path: Path
) -> None:
    hsm.write_pin("9999")
    lines = ("On-InternalError reject",)
    for mta in _mta(token_site, hsm, tmp_path, *lines):
        _refused(mta, "wrong pin", 5)
        _refused(mta, "wrong pin again", 5)
        log = mta.milter.log()
        assert f"the PKCS#11 token '{TOKEN}' refused the PIN of PKCS11PinFile" in log, log
        assert "(CKR_PIN_INCORRECT)" in log and "9999" not in log, log
        assert "that PIN is not tried again, so as not to lock the token" in log, log
        assert mta.not_signed("token_unavailable") == 2
        hsm.write_pin(PIN)
        metrics = f"MetricsSocket inet:{mta.metrics_port}@127.0.0.1"
        mta.milter.reload(token_site.milter_config(metrics, *lines))
        accepted, _, delivered = mta.send("right pin")
        assert accepted and delivered is not None, mta.milter.log()
        assert len(header_values(delivered, "DKIM-Signature")) == 2


def test_a_module_that_does_not_load_tempfails_and_says_so(
    token_site: MailSite, hsm: SoftHsm, tmp_path: Path
) -> None:
    not_a_module = tmp_path / "libnot-pkcs11.so"
    not_a_module.write_bytes(b"\x7fELF but not really\n")
    token_site.extra = [f"PKCS11Module {not_a_module}", f"PKCS11PinFile {hsm.pin_file}"]
    for mta in _mta(token_site, hsm, tmp_path):
        _refused(mta, "no module", 4)
        log = mta.milter.log()
        assert f"cannot load PKCS11Module {not_a_module} (the library does not load)" in log, log
        assert "install the token's module" in log, log
        assert mta.not_signed("token_unavailable") == 1
