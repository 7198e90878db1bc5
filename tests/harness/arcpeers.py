"""Other ARC implementations, for interoperability tests: dkimpy and Perl Mail::DKIM.

Each can verify a chain (the ``cv`` it finds) and seal a message as the next
hop (verify, then add its set with that result).  Keys come from the test
DNS server on 127.0.0.1:``dns_port``, as for :mod:`harness.verifiers`.
Sealing returns the whole message with the new set (and the hop's own
Authentication-Results, which the sealers read their ``cv`` from) on top.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import dkim
import dns.message
import dns.query
import dns.rdatatype

from harness.verifiers import VerifierError, _perl_env, _to_crlf

MAIL_DKIM_ARC_SCRIPT = Path(__file__).resolve().with_name("mail_dkim_arc.pl")


def _txt_from(dns_port: int):  # type: ignore[no-untyped-def]
    """dkimpy's ``dnsfunc``: the TXT record at a name, from the test DNS server."""

    def lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode() if isinstance(name, bytes) else name
        query = dns.message.make_query(text, dns.rdatatype.TXT)
        answer = dns.query.udp(query, "127.0.0.1", port=dns_port, timeout=timeout)
        for rrset in answer.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                return b"".join(next(iter(rrset)).strings)
        return None

    return lookup


def dkimpy_verify(message: bytes, dns_port: int) -> tuple[str, str]:
    """dkimpy's ``arc_verify``: (cv, reason)."""
    cv, _, reason = dkim.arc_verify(_to_crlf(message), dnsfunc=_txt_from(dns_port))
    return cv.decode(), str(reason)


def dkimpy_seal(
    message: bytes, dns_port: int, domain: str, selector: str, key_pem: bytes, srv_id: str
) -> bytes:
    """``message`` sealed by dkimpy's ``arc_sign`` as ``domain``, after its own check."""
    cv, _ = dkimpy_verify(message, dns_port)
    received = f"Authentication-Results: {srv_id}; arc={cv}\r\n".encode() + _to_crlf(message)
    lines = dkim.arc_sign(received, selector.encode(), domain.encode(), key_pem, srv_id.encode())
    if not lines:
        raise VerifierError(f"dkimpy did not seal (cv {cv})")
    return b"".join(lines) + received


def _mail_dkim_arc(message: bytes, *args: str) -> bytes:
    perl = shutil.which("perl")
    if perl is None:
        raise VerifierError("perl is not on PATH")
    done = subprocess.run(
        [perl, str(MAIL_DKIM_ARC_SCRIPT), *args],
        input=_to_crlf(message),
        env=_perl_env(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise VerifierError(
            f"{MAIL_DKIM_ARC_SCRIPT.name} {args[0]} exited with status {done.returncode}: "
            + done.stderr.decode("utf-8", "replace").strip()
        )
    return done.stdout


def mail_dkim_verify_arc(message: bytes, dns_port: int) -> str:
    """Mail::DKIM::ARC::Verifier's result and detail, e.g. ``pass`` or ``fail (...)``."""
    return _mail_dkim_arc(message, "verify", str(dns_port)).decode().strip()


def mail_dkim_seal(
    message: bytes, dns_port: int, domain: str, selector: str, key_file: Path, srv_id: str
) -> bytes:
    """``message`` sealed by Mail::DKIM::ARC::Signer as ``domain``, after its own check."""
    new_set = _mail_dkim_arc(
        message, "seal", str(dns_port), domain, selector, str(key_file), srv_id
    )
    cv = mail_dkim_verify_arc(message, dns_port).split()[0]
    own = f"Authentication-Results: {srv_id}; arc={cv}\r\n".encode()
    return new_set + own + _to_crlf(message)
