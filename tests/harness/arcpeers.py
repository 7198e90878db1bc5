"""Other ARC implementations (RFC 8617), to seal and verify chains that ldapdkim reads or makes.

* Perl Mail::DKIM: ``Mail::DKIM::ARC::Verifier`` through ``mail_dkim_verify.pl
  --arc``, keys from a ``DnsServer`` on loopback, and ``Mail::DKIM::ARC::Signer``
  through ``mail_dkim_arc_seal.pl``.  Its signer seals with rsa-sha256 only
  (1.20230212 and 1.20240923 refuse any other algorithm); its ARC verifier
  dies on an ed25519-sha256 set (1.20240923 asks the key for a size).
* dkimpy (``dkim.arc_sign``, ``dkim.arc_verify``), in process, keys from a
  table.  ``arc_sign`` seals with rsa-sha256 only, whatever it is asked;
  ``arc_verify`` fails an ed25519-sha256 set as an unknown algorithm (1.1.4).

Both sealers copy the results of the Authentication-Results field of their
authserv-id into the new ARC-Authentication-Results: a message handed to them
must carry one (:func:`with_results`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from harness.verifiers import MAIL_DKIM_SCRIPT, VerifierError, mail_dkim_perl5lib

Header = tuple[bytes, bytes]
SEAL_SCRIPT = Path(__file__).resolve().with_name("mail_dkim_arc_seal.pl")


@dataclass(frozen=True)
class PeerVerdict:
    """What another implementation said of a chain."""

    result: str
    """``pass``, ``fail`` or ``none`` (dkimpy's "chain ended" is reported as ``fail``)."""
    detail: str


def with_results(message: bytes, authserv_id: str, results: str) -> bytes:
    """``message`` with an Authentication-Results field of ``authserv_id`` on top."""
    return f"Authentication-Results: {authserv_id}; {results}\r\n".encode() + message


def prepend(fields: Sequence[Header], message: bytes) -> bytes:
    """``message`` with ``fields`` (values as a sealer returns them, no final CRLF) on top."""
    return (
        b"".join(name + b":" + value.rstrip(b"\r\n") + b"\r\n" for name, value in fields) + message
    )


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


# -- dkimpy ------------------------------------------------------------------------


def dkimpy_seal(
    message: bytes, *, domain: str, selector: str, authserv_id: str, key: rsa.RSAPrivateKey
) -> list[Header]:
    """dkimpy's new ARC set for ``message`` (which must carry our Authentication-Results)."""
    lines = dkim.arc_sign(
        message, selector.encode(), domain.encode(), _pem(key), authserv_id.encode()
    )
    if not lines:
        raise VerifierError("dkim.arc_sign sealed nothing (no Authentication-Results of ours?)")
    fields = []
    for line in lines:
        name, _, value = line.partition(b":")
        fields.append((name, value.rstrip(b"\r\n")))
    return fields


def dkimpy_verify(message: bytes, keys: Mapping[str, bytes]) -> PeerVerdict:
    """``dkim.arc_verify`` of ``message``, key records from ``keys`` (name -> record)."""

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes:
        return keys.get(name.decode().rstrip("."), b"")

    result, _, reason = dkim.arc_verify(message, dnsfunc=dnsfunc)
    return PeerVerdict(result.decode() if result else "fail", str(reason))


# -- Perl Mail::DKIM ---------------------------------------------------------------

_VERDICT = re.compile(r"^(?P<result>\S+) detail=(?P<detail>.*)$")


def _perl(script: Path, arguments: Sequence[str], message: bytes) -> str:
    perl = shutil.which("perl")
    if perl is None:
        raise VerifierError("perl is not on PATH; run 'bash tests/setup.sh'")
    env = {"PATH": "/usr/bin:/bin", "PERL5LIB": mail_dkim_perl5lib()}
    done = subprocess.run(
        [perl, str(script), *arguments],
        input=message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"),
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        stderr = done.stderr.decode("utf-8", "replace").strip()
        raise VerifierError(f"{script.name} exited with status {done.returncode}: {stderr}")
    return done.stdout.decode("utf-8", "replace")


def mail_dkim_verify(message: bytes, dns_port: int, timeout: int = 2) -> PeerVerdict:
    """Mail::DKIM's ARC verdict on ``message``, keys from 127.0.0.1:``dns_port``.

    Raises:
        VerifierError: perl or Mail::DKIM is missing, or the script died (1.20240923
            dies on an ed25519-sha256 ARC set: its ARC verifier asks the key's size).
    """
    output = _perl(MAIL_DKIM_SCRIPT, [str(dns_port), str(timeout), "--arc"], message)
    first = output.splitlines()[0] if output else ""
    match = _VERDICT.match(first)
    if match is None:
        raise VerifierError(f"{MAIL_DKIM_SCRIPT.name}: unexpected output {first!r}")
    return PeerVerdict(match["result"], match["detail"])


def mail_dkim_seal(
    message: bytes,
    *,
    domain: str,
    selector: str,
    authserv_id: str,
    key: rsa.RSAPrivateKey,
    chain: str = "ar",
) -> list[Header]:
    """Mail::DKIM's new ARC set for ``message``; ``chain`` is the ``cv=`` to write, or
    ``ar`` to take it from our Authentication-Results."""
    with tempfile.NamedTemporaryFile(suffix=".pem") as keyfile:
        keyfile.write(_pem(key))
        keyfile.flush()
        arguments = [domain, selector, authserv_id, keyfile.name, chain]
        text = _perl(SEAL_SCRIPT, arguments, message)
    fields: list[Header] = []
    for line in text.encode().split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] = (fields[-1][0], fields[-1][1] + b"\r\n" + line)
        elif line:
            name, _, value = line.partition(b":")
            fields.append((name, value))
    return fields


Sealer = Callable[[bytes], list[Header]]
"""A hop that seals a message: the message in, the new set's fields out."""
