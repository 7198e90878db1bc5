"""OpenDKIM's milter and ldapdkim's, started from the same configuration lines, side by side.

:class:`MilterPair` writes one configuration text for both programs (the
lines under test), adds what only one of them needs (its socket, how it
reaches the test DNS server, ldapdkim's directory), starts ``opendkim -f``
and ``ldapdkim run``, and plays each transaction to both
(:mod:`harness.milterclient`).  :func:`decision` reduces an answer to what
the differential tests compare: how the MTA goes on, and for each
DKIM-Signature its d=, s=, c=, h=, the lifetime x= - t= and i=, and the DKIM
results of Authentication-Results.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from harness.common import accepts, free_port, start_and_wait
from harness.milterclient import Answer, Transaction, play
from harness.milterproc import MilterProcess
from harness.verifiers import opendkim_binary, write_unbound_conf

START_TIMEOUT = 15.0


@dataclass(frozen=True)
class Signature:
    d: str
    s: str
    c: str
    h: tuple[str, ...]
    lifetime: int | None
    i: str | None


@dataclass(frozen=True)
class Decision:
    outcome: str
    """accept, reject, tempfail or discard."""
    smtp_code: str
    """The SMTP code of a reply the milter set (550, 451), else empty."""
    signatures: tuple[Signature, ...]
    results: tuple[tuple[str, str], ...]
    """(DKIM result, header.d) of each result in Authentication-Results."""
    software_header: bool


def _tags(value: str) -> dict[str, str]:
    tags = {}
    for part in value.split(";"):
        name, sep, text = part.partition("=")
        if sep:
            tags[name.strip()] = "".join(text.split())
    return tags


def _canonicalization(text: str | None) -> str:
    header, _, body = (text or "simple").partition("/")
    return f"{header}/{body or 'simple'}"


def _without_comments(value: str) -> str:
    """An RFC 8601 field value without its (comments), which may hold ';'."""
    out, depth = [], 0
    for char in value:
        if char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif not depth:
            out.append(char)
    return "".join(out)


def decision(answer: Answer) -> Decision:
    signatures = []
    for value in answer.values("DKIM-Signature"):
        tags = _tags(value)
        identity = tags.get("i")
        if identity is not None and identity.lower() == "@" + tags.get("d", "").lower():
            identity = None  # RFC 6376 §3.5: no i= means "@d"; OpenDKIM writes it out at times
        lifetime = None
        if "x" in tags and "t" in tags:
            lifetime = int(tags["x"]) - int(tags["t"])
        signatures.append(
            Signature(
                d=tags.get("d", "").lower(),
                s=tags.get("s", ""),
                c=_canonicalization(tags.get("c")),
                h=tuple(name.lower() for name in tags.get("h", "").split(":") if name),
                lifetime=lifetime,
                i=identity,
            )
        )
    results = []
    for value in answer.values("Authentication-Results"):
        bare = _without_comments(value)
        for clause in bare.split(";")[1:]:
            method = re.match(r"\s*dkim=(\w+)", clause)
            if method is None:
                continue
            domain = re.search(r"header\.d=([^\s;]+)", clause)
            results.append((method.group(1), domain.group(1).lower() if domain else ""))
    code = answer.smtp.split(" ", 1)[0] if answer.smtp else ""
    return Decision(
        outcome=answer.outcome,
        smtp_code=code,
        signatures=tuple(sorted(signatures, key=repr)),
        results=tuple(sorted(results)),
        software_header=bool(answer.values("DKIM-Filter")),
    )


def start_opendkim(
    config_path: Path, log_path: Path, socket_spec: str, *args: str
) -> subprocess.Popen[bytes]:
    """``opendkim -f ARGS -x CONFIG``, returned once it listens on ``socket_spec``.

    Its output is appended to ``log_path``.
    """
    binary = opendkim_binary()
    if binary is None:
        raise RuntimeError("opendkim is not installed; run bash tests/setup.sh")
    return start_and_wait(
        [binary, "-f", *args, "-x", str(config_path)],
        name="opendkim",
        until=f"listening on {socket_spec}",
        ready=lambda: accepts(socket_spec),
        timeout=START_TIMEOUT,
        log_path=log_path,
    )


class OpenDkimMilter:
    """``opendkim -f -x FILE`` on a free loopback port."""

    def __init__(self, workdir: Path, lines: list[str]) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.address = f"inet:{self.port}@127.0.0.1"
        self.config_path = workdir / "opendkim.conf"
        self.config_path.write_text("\n".join([*lines, f"Socket {self.address}"]) + "\n")
        self.log_path = workdir / "opendkim.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = start_opendkim(self.config_path, self.log_path, self.address, "-l")

    def stop(self) -> None:
        """Killed: a polite stop waits 5 s for libmilter's listener, and it keeps no state."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class MilterPair:
    """Both milters on one configuration; a context manager."""

    def __init__(
        self,
        workdir: Path,
        lines: list[str],
        *,
        dns_port: int | None = None,
        opendkim_lines: list[str] | None = None,
        ldapdkim_lines: list[str] | None = None,
    ) -> None:
        """``lines`` go to both; ``opendkim_lines`` and ``ldapdkim_lines`` to one only
        (OpenDKIM's KeyTable, ldapdkim's ``Directory``)."""
        self.lines = lines
        only_odk = list(opendkim_lines or [])
        only_ld = list(ldapdkim_lines or [])
        if dns_port is not None:
            unbound = write_unbound_conf(workdir, dns_port)
            only_odk.append(f"ResolverConfiguration {unbound}")
            only_ld.append(f"Nameservers 127.0.0.1:{dns_port}")
        self.opendkim = OpenDkimMilter(workdir / "opendkim", [*lines, *only_odk])
        only_ld.append(f"StateDirectory {workdir}")
        self.ldapdkim = MilterProcess(workdir / "ldapdkim", [*lines, *only_ld])

    def __enter__(self) -> MilterPair:
        self.opendkim.start()
        try:
            self.ldapdkim.start()
        except BaseException:
            self.opendkim.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.opendkim.stop()
        self.ldapdkim.stop()

    def play(self, transaction: Transaction) -> tuple[Decision, Decision]:
        """(OpenDKIM's decision, ldapdkim's) on ``transaction``."""
        odk = decision(play(self.opendkim.address, transaction))
        ld = decision(play(self.ldapdkim.socket, transaction))
        return odk, ld

    def logs(self) -> str:
        return f"--- opendkim\n{self.opendkim.log()}\n--- ldapdkim\n{self.ldapdkim.log()}"
