"""``keys seal`` and then ``keys rewrap`` on a directory whose keys sign a steady stream of mail.

The milter (Workers 2, its replica kept current by content sync) signs
message after message from two domains while an administrator seals every
key in place and then moves every sealed key to a second KEK.  Every message
must leave signed by both keys, and every signature must verify: a key is
plaintext, sealed with the first KEK, or sealed with the second, and each of
those signs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import milterclient
from harness.common import wait_for
from harness.dnsserver import DnsServer
from harness.mailsite import MailSite, message
from harness.milterproc import MilterProcess
from harness.provisioning import run_cli
from harness.slapd import Slapd
from harness.verifiers import mail_dkim_verify, require_mail_dkim, require_mail_dkim_ed25519

from ldapdkim import schema, sealing
from ldapdkim.model import DkimResult
from ldapdkim.signing.dnslookup import TxtLookup
from ldapdkim.signing.verifier import verify_message

DOMAINS = ["example.com", "example.org"]


class Load:
    """Messages sent one after another from a thread, each answer kept with its message."""

    def __init__(self, socket: str) -> None:
        self.socket = socket
        self.results: list[tuple[bytes, milterclient.Answer]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            domain = DOMAINS[number % len(DOMAINS)]
            sent = message(domain=domain, subject=f"load {number}")
            transaction = milterclient.Transaction(sent, mail_from=f"alice@{domain}")
            self.results.append((sent, milterclient.play(self.socket, transaction)))
            number += 1

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.fixture
def site(slapd: Slapd, ldap_base: str, tmp_path: Path) -> Iterator[MailSite]:
    with DnsServer() as dns:
        site = MailSite(slapd, ldap_base, dns, tmp_path)
        site.add_domains(DOMAINS, "rsa-sha256", "ed25519-sha256")
        yield site


def _kek(tmp_path: Path, name: str) -> str:
    status, _, err = run_cli("keys", "new-kek", str(tmp_path / name))
    assert status == 0, err
    return f"KeyEncryptionKey {name} {tmp_path / name}"


def _stored_keys(slapd: Slapd, base: str) -> list[bytes]:
    conn = slapd.connect(slapd.admin_dn)
    try:
        found = conn.search_s(base, 2, f"(objectClass={schema.KEY_CLASS})", [schema.PRIVATE_KEY])
    finally:
        conn.unbind_s()
    return [attrs[schema.PRIVATE_KEY][0] for _, attrs in found]


def _signs(socket: str) -> bool:
    answer = milterclient.play(socket, milterclient.Transaction(message(subject="first")))
    return len(answer.values("DKIM-Signature")) == 2


def _seal_and_rewrap(slapd: Slapd, ldap_base: str, tool_config: Path) -> None:
    time.sleep(1.0)  # plaintext keys sign first
    status, out, err = run_cli("keys", "seal", "-c", str(tool_config))
    assert status == 0, err
    assert b"sealed 4 with KEK kek1" in out, out
    sealed = _stored_keys(slapd, ldap_base)
    assert len(sealed) == 4 and all(sealing.parse(v).kek_id == "kek1" for v in sealed)
    time.sleep(1.0)  # the replicas now hold sealed values: they sign
    status, out, err = run_cli("keys", "rewrap", "--to", "kek2", "-c", str(tool_config))
    assert status == 0, err
    assert b"rewrapped 4 to KEK kek2" in out, out
    rewrapped = _stored_keys(slapd, ldap_base)
    assert len(rewrapped) == 4 and all(sealing.parse(v).kek_id == "kek2" for v in rewrapped)
    time.sleep(1.5)


def test_seal_then_rewrap_under_steady_load_leaves_no_message_unsigned(
    site: MailSite, slapd: Slapd, ldap_base: str, tmp_path: Path
) -> None:
    first, second = _kek(tmp_path, "kek1"), _kek(tmp_path, "kek2")
    password_file = tmp_path / "admin-password"
    password_file.write_text(slapd.admin_pw + "\n")
    password_file.chmod(0o600)
    admin = [f"LDAPAdminBindUser {slapd.admin_dn}", f"LDAPAdminBindPasswordFile {password_file}"]
    tool_config = site.config_file(first, second, *admin)
    lines = site.milter_config(first, second, "Workers 2", "DirectorySync yes")
    with MilterProcess(tmp_path / "milter", lines) as milter:
        wait_for("the replica to load", lambda: _signs(milter.socket))
        with Load(milter.socket) as load:
            _seal_and_rewrap(slapd, ldap_base, tool_config)
            state = milter.workdir / "state"
            replica = b"".join(p.read_bytes() for p in state.rglob("*") if p.is_file())
            # The milter signed from the rewrapped values: its replica holds them.
            assert replica.count(b"sealed:v1:kek2:") >= 4
    assert "Traceback" not in milter.log(), milter.log()
    results = load.results
    assert len(results) >= 50, f"only {len(results)} messages in the run"
    unsigned = [
        (sent, answer) for sent, answer in results
        if answer.outcome != "accept" or len(answer.values("DKIM-Signature")) != 2
    ]  # fmt: skip
    assert unsigned == [], (len(unsigned), unsigned[:2], milter.log()[-3000:])
    lookup = TxtLookup((("127.0.0.1", site.dns.port),), timeout=2)
    failed = []
    for sent, answer in results:
        signed = b"".join(
            b"DKIM-Signature: " + value.encode() + b"\r\n"
            for value in answer.values("DKIM-Signature")
        )
        verdicts = verify_message(signed + sent, lookup)
        if [v.result for v in verdicts] != [DkimResult.PASS, DkimResult.PASS]:
            failed.append(verdicts)
    assert failed == [], failed[:3]
    # An outside verifier on the last messages, signed with keys sealed under kek2.
    require_mail_dkim()
    require_mail_dkim_ed25519()
    for sent, answer in results[-4:]:
        signed = b"".join(
            b"DKIM-Signature: " + value.encode() + b"\r\n"
            for value in answer.values("DKIM-Signature")
        )
        outside = mail_dkim_verify(signed + sent, site.dns.port)
        assert sorted(v.result for v in outside) == ["pass", "pass"], outside
    print(f"seal and rewrap under load: {len(results)} messages, 0 unsigned")
