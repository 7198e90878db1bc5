"""README's quick start: what its first command prints verifies with Perl Mail::DKIM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dnsserver import DnsServer
from verifiers import mail_dkim_verify, require_mail_dkim, require_mail_dkim_ed25519

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
