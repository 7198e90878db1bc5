"""Provision test directories with the project's own commands (``genkey``, ``provision``).

Tests seed slapd and LDIF files with exactly what an administrator would run,
so provisioning is tested end to end along with resolution.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path

from ldapdkim import cli


def run_cli(*argv: str, stdin: bytes | None = None) -> tuple[int, bytes, str]:
    """``ldapdkim ARGV`` in-process: (exit status, stdout bytes, stderr text)."""
    out, err = io.BytesIO(), io.StringIO()
    stdout = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    stdin_stream = io.TextIOWrapper(io.BytesIO(stdin or b""), encoding="utf-8")
    with (
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(err),
        _replace_stdin(stdin_stream),
    ):
        status = cli.main(list(argv))
    stdout.flush()
    return status, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def _replace_stdin(stream: io.TextIOWrapper):  # type: ignore[no-untyped-def]
    import sys

    saved = sys.stdin
    sys.stdin = stream
    try:
        yield
    finally:
        sys.stdin = saved


def genkey(
    domain: str,
    selector: str,
    base: str,
    *,
    algorithm: str = "rsa-sha256",
    with_domain: bool = False,
    state: str = "active",
    bits: int = 2048,
    domain_dn: str | None = None,
    not_before: str | None = None,
    not_after: str | None = None,
    delegation: Sequence[str] = (),
) -> str:
    """The LDIF that ``ldapdkim genkey`` prints for one key; ``delegation`` adds options
    such as ``--allowed-network 192.0.2.0/24`` (with ``with_domain``)."""
    argv = [
        "genkey",
        "-d",
        domain,
        "-s",
        selector,
        "-a",
        algorithm,
        "--base",
        base,
        "--state",
        state,
        "-b",
        str(bits),
    ]
    if with_domain:
        argv.append("--with-domain")
    if domain_dn:
        argv += ["--domain-dn", domain_dn]
    if not_before:
        argv += ["--not-before", not_before]
    if not_after:
        argv += ["--not-after", not_after]
    argv += list(delegation)
    status, out, err = run_cli(*argv)
    assert status == 0, err
    return out.decode()


def provision(domains: Sequence[str], base: str, tmp: Path, *algorithms: str) -> str:
    """The LDIF that ``ldapdkim provision`` writes for ``domains``."""
    listing = tmp / "domains.txt"
    listing.write_text("\n".join(domains) + "\n")
    output = tmp / "provision.ldif"
    argv = ["provision", "--base", base, "--domains", str(listing), "-o", str(output), "-j", "1"]
    for algorithm in algorithms or ("rsa-sha256",):
        argv += ["-a", algorithm]
    status, _, err = run_cli(*argv)
    assert status == 0, err
    return output.read_text()


def without_version_line(ldif_text: str) -> str:
    """LDIF fragments concatenate only without their ``version: 1`` lines."""
    return "\n".join(line for line in ldif_text.splitlines() if line != "version: 1") + "\n"
