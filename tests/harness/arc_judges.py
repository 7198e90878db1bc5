"""The three ARC validators of the differential, each over a batch of messages.

ldapdkim's ``verify_chain`` and dkimpy's ``arc_verify`` run in this process;
Perl Mail::DKIM's ``ARC::Verifier`` runs in one long-running perl process
(``mail_dkim_arc.pl``), which also seals hops with ``ARC::Signer``.  Each
verdict is the chain validation status of RFC 8617 §5.2 (none, pass, fail),
or the validator's own word when it gives none of them (``died``,
``temperror``, ``crash:...``).
"""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import dkim

from harness import verifiers
from harness.forge import Header
from ldapdkim.errors import DnsTemporaryError
from ldapdkim.signing.arc import verify_chain
from ldapdkim.signing.canonicalization import split_message
from ldapdkim.signing.dnslookup import TxtLookup

# -- Mail::DKIM, one long-running process ------------------------------------------

MAIL_DKIM_ARC_SCRIPT = Path(__file__).resolve().with_name("mail_dkim_arc.pl")


class MailDkimArc:
    """``mail_dkim_arc.pl`` started once; requests are written by a thread while the
    answers are read, so a batch never fills both pipes at once."""

    def __init__(self, dns_port: int, log: Path, timeout: int = 2) -> None:
        with log.open("wb") as stderr:  # perl's warnings, never read while it runs
            self._process = subprocess.Popen(
                ["perl", str(MAIL_DKIM_ARC_SCRIPT), str(dns_port), str(timeout)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=verifiers._perl_env(),
            )
        _, stdout = self._pipes()
        self.version = stdout.readline().decode().strip().removeprefix("version ")

    def close(self) -> None:
        stdin, stdout = self._pipes()
        stdin.close()
        self._process.wait(timeout=30)
        stdout.close()

    def _pipes(self) -> tuple[IO[bytes], IO[bytes]]:
        assert self._process.stdin is not None and self._process.stdout is not None
        return self._process.stdin, self._process.stdout

    def _answer(self, stdout: IO[bytes]) -> list[bytes]:
        lines: list[bytes] = []
        while True:
            line = stdout.readline()
            if not line:
                raise verifiers.VerifierError(f"{MAIL_DKIM_ARC_SCRIPT.name} ended early")
            if line == b"end\n":
                return lines
            lines.append(line)

    def verify_many(self, messages: Sequence[bytes]) -> list[str]:
        """Mail::DKIM's result for each message: pass, fail, invalid, none, ..."""
        stdin, stdout = self._pipes()

        def write() -> None:
            for message in messages:
                stdin.write(b"verify %d\n" % len(message) + message)
            stdin.flush()

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        results = [self._answer(stdout)[0].decode("utf-8", "replace") for _ in messages]
        writer.join()
        return [r.split(" ", 1)[0] for r in results]

    def seal(
        self, message: bytes, domain: str, selector: str, srvid: str, key: Path, t: int
    ) -> list[Header]:
        stdin, stdout = self._pipes()
        stdin.write(
            f"seal {len(message)} {domain} {selector} {srvid} {key} {t}\n".encode() + message
        )
        stdin.flush()
        fields: list[bytes] = []
        while True:
            line = stdout.readline()
            if line == b"end\n":
                return sealed_fields(fields)
            if line.startswith(b"error"):
                raise verifiers.VerifierError(f"Mail::DKIM did not seal: {line!r}")
            fields.append(stdout.read(int(line)))
            stdout.readline()


def sealed_fields(lines: Sequence[bytes]) -> list[Header]:
    """'Name: value' fields (as sealers return them) as (name, value) with a CRLF end."""
    out = []
    for line in lines:
        name, _, value = line.partition(b":")
        value = value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        out.append((name.strip(), value.rstrip(b"\r\n") + b"\r\n"))
    return out


# -- the three validators -------------------------------------------------------------


_QUIET = logging.getLogger("harness.arc_judges.dkimpy")
"""dkimpy logs every chain it fails at level ERROR; the differential counts them instead."""
_QUIET.setLevel(logging.CRITICAL)
_QUIET.propagate = False


def dkimpy_verdicts(messages: Sequence[bytes], lookup: TxtLookup) -> list[str]:
    """dkimpy's ``arc_verify``: CV_Pass, CV_Fail, CV_None, or None for "a seal said
    cv=fail", which RFC 8617 §5.2 step 2 calls fail."""

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            records = lookup(name.decode().rstrip("."))
        except DnsTemporaryError as err:  # dkimpy fails the signature on a DKIMException
            raise dkim.KeyFormatError(str(err)) from None
        return records[0] if records else None

    out = []
    for message in messages:
        try:
            cv, _, _ = dkim.arc_verify(message, logger=_QUIET, dnsfunc=dnsfunc)
        except Exception as err:  # a crash is a verdict of its own here
            out.append(f"crash:{type(err).__name__}")
            continue
        out.append(
            {b"pass": "pass", b"fail": "fail", b"none": "none", None: "fail"}.get(cv, str(cv))
        )
    return out


def mail_dkim_verdicts(messages: Sequence[bytes], perl: MailDkimArc) -> list[str]:
    """Mail::DKIM's result; ``invalid`` (a seal or key it could not use) is fail."""
    words = {
        "pass": "pass",
        "fail": "fail",
        "invalid": "fail",
        "none": "none",
        "temperror": "temperror",
    }
    return [words.get(r, r) for r in perl.verify_many(messages)]


def ldapdkim_verdicts(messages: Sequence[bytes], lookup: TxtLookup) -> list[str]:
    """``verify_chain``'s cv; ``crash:...`` if it raised, which it must never do."""
    out = []
    for message in messages:
        headers, body = split_message(message)
        try:
            verdict = verify_chain(headers, body, lookup, timeout=2)
        except Exception as err:  # verify_chain must never raise
            out.append(f"crash:{type(err).__name__}")
            continue
        out.append(verdict.cv.value)
    return out
