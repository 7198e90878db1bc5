"""README's quick start: what its first command prints verifies with Perl Mail::DKIM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.common import accepts, wait_until_ready
from harness.dnsserver import DnsServer
from harness.postfix import Postfix, require_postfix
from harness.verifiers import mail_dkim_verify, require_mail_dkim, require_mail_dkim_ed25519

REPO = Path(__file__).resolve().parents[2]


def _ldapdkim(*argv: str, stdin: bytes = b"") -> bytes:
    result = subprocess.run(
        [sys.executable, "-m", "ldapdkim", *argv],
        input=stdin,
        capture_output=True,
        cwd=REPO,
        check=True,
    )
    return result.stdout


def test_quickstart_signature_verifies_with_an_independent_verifier() -> None:
    require_mail_dkim()
    require_mail_dkim_ed25519()
    signed = _ldapdkim(
        "sign", "-c", "conf/quickstart.conf", stdin=(REPO / "conf" / "sample.eml").read_bytes()
    )
    zone = _ldapdkim("dns-records", "-c", "conf/quickstart.conf").decode()
    with DnsServer() as dns:
        dns.load_zone_lines(zone)
        verdicts = mail_dkim_verify(signed, dns.port)
    assert sorted((v.result, v.algorithm, v.domain) for v in verdicts) == [
        ("pass", "ed25519-sha256", "example.com"),
        ("pass", "rsa-sha256", "example.com"),
    ]


def test_quickstart_milter_signs_what_postfix_sends(tmp_path: Path) -> None:
    """README's first command: ``ldapdkim run -c conf/quickstart.conf`` behind Postfix."""
    require_mail_dkim()
    require_mail_dkim_ed25519()
    require_postfix()
    zone = _ldapdkim("dns-records", "-c", "conf/quickstart.conf").decode()
    milter = subprocess.Popen(
        [sys.executable, "-m", "ldapdkim", "run", "-c", "conf/quickstart.conf"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(8891, milter)
        with (
            Postfix(tmp_path / "postfix", milter="inet:127.0.0.1:8891") as postfix,
            DnsServer() as dns,
        ):
            dns.load_zone_lines(zone)
            sample = (REPO / "conf" / "sample.eml").read_bytes()
            reply = postfix.send(sample, mail_from="alice@example.com", rcpt_to=["bob@example.net"])
            assert reply.accepted, reply
            delivered = postfix.wait_for_message("ldapdkim quick start")
            verdicts = mail_dkim_verify(delivered, dns.port)
    finally:
        milter.terminate()
        milter.communicate(timeout=20)
    assert sorted((v.result, v.algorithm) for v in verdicts) == [
        ("pass", "ed25519-sha256"),
        ("pass", "rsa-sha256"),
    ]


def _stderr_once_ended(process: subprocess.Popen[bytes]) -> str:
    """What an ended process wrote to its standard error (reading a running one's would block)."""
    if process.poll() is None or process.stderr is None:
        return "(still running)"
    return process.stderr.read().decode(errors="replace")


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    wait_until_ready(
        "ldapdkim run",
        f"listening on 127.0.0.1:{port}",
        lambda: accepts(f"inet:{port}@127.0.0.1"),
        timeout=timeout,
        process=process,
        log=lambda: _stderr_once_ended(process),
        error=AssertionError,
    )
