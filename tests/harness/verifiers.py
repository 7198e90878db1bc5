"""Independent DKIM verifiers for tests: Perl Mail::DKIM and OpenDKIM, keys from ``DnsServer``.

ldapdkim signs with dkimpy, so a test that verifies with dkimpy proves little.
These helpers hand a message to verifiers that share no code with it and
return one ``SignatureVerdict`` per DKIM-Signature (RFC 6376 section 6):

* ``mail_dkim_verify``: Perl Mail::DKIM through ``mail_dkim_verify.pl``. Debian
  12 ships 1.20230212, which has no ed25519-sha256 (RFC 8463); ``tests/setup.sh``
  unpacks Debian 13's pure-Perl 1.20240923 into ``tests/.cache/mail-dkim``
  and it is put first in ``PERL5LIB`` when present.
* ``opendkim_verify``: OpenDKIM 2.11 in test mode (``opendkim -t FILE``), with
  its libunbound resolver forwarding every query to the test DNS server.

Results are each verifier's own words, not normalised:

* Mail::DKIM: ``pass``, ``fail``, ``invalid``; DNS trouble (timeout,
  SERVFAIL) is ``invalid`` with detail ``invalid (public key: DNS error: ...)``,
  never ``temperror``, in both versions. ``detail`` is ``$sig->result_detail``.
* OpenDKIM: the ``dkim=`` results of the Authentication-Results field it would
  add (RFC 8601: ``pass``, ``fail``, ``policy``, ``neutral``, ``temperror``,
  ``permerror``), and ``noverdict`` when it gives up at end of header without
  any verdict (pre-RFC signatures without ``v=``).

A message without DKIM signatures gives an empty list from both.

Helpers for tests that need a verifier: ``skip_or_fail`` skips locally but
fails when the ``CI`` environment variable is non-empty (slapdtest's
``skip_unless_ci``), ``require_mail_dkim``, ``require_mail_dkim_ed25519``,
``require_opendkim``.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.common import skip_or_fail

__all__ = [
    "MAIL_DKIM_CACHE",
    "MAIL_DKIM_SCRIPT",
    "REPO_ROOT",
    "SignatureVerdict",
    "VerifierError",
    "mail_dkim_perl5lib",
    "mail_dkim_supports_ed25519",
    "mail_dkim_verify",
    "mail_dkim_version",
    "opendkim_binary",
    "opendkim_verify",
    "require_mail_dkim",
    "require_mail_dkim_ed25519",
    "require_opendkim",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
MAIL_DKIM_SCRIPT = Path(__file__).resolve().with_name("mail_dkim_verify.pl")
# Debian 13's libmail-dkim-perl, unpacked by tests/setup.sh (git-ignored).
MAIL_DKIM_CACHE = REPO_ROOT / "tests" / ".cache" / "mail-dkim"
_MAIL_DKIM_LIB = MAIL_DKIM_CACHE / "usr" / "share" / "perl5"

# Slower than any loopback answer, fast enough that a swallowed query
# (DnsServer.set_timeout) costs a test about this many seconds.
DEFAULT_DNS_TIMEOUT = 2

_SETUP_HINT = "run 'bash tests/setup.sh' (installs the verifiers and Debian 13's Mail::DKIM)"


@dataclass(frozen=True)
class SignatureVerdict:
    """One verifier's verdict on one DKIM-Signature.

    ``domain``, ``selector`` and ``algorithm`` are the signature's ``d=``,
    ``s=`` and ``a=`` ("" when the verifier could not tell).
    """

    result: str
    domain: str
    selector: str
    algorithm: str
    detail: str


class VerifierError(RuntimeError):
    """A verifier ran but its output could not be understood, or it crashed."""


# -- environment --------------------------------------------------------------


def mail_dkim_perl5lib() -> str:
    """The ``PERL5LIB`` to run Mail::DKIM with: the unpacked newer copy first, if any."""
    parts = [str(_MAIL_DKIM_LIB)] if _MAIL_DKIM_LIB.is_dir() else []
    if os.environ.get("PERL5LIB"):
        parts.append(os.environ["PERL5LIB"])
    return os.pathsep.join(parts)


def _perl_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PERL5LIB"] = mail_dkim_perl5lib()
    # Net::DNS would take these over our explicit resolver settings.
    for name in ("RES_NAMESERVERS", "RES_SEARCHLIST", "LOCALDOMAIN", "RES_OPTIONS"):
        env.pop(name, None)
    return env


def _perl(code: str) -> subprocess.CompletedProcess[str]:
    perl = shutil.which("perl")
    if perl is None:
        raise VerifierError(f"perl is not on PATH; {_SETUP_HINT}")
    return subprocess.run(
        [perl, "-e", code],
        env=_perl_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@functools.cache
def mail_dkim_version() -> str:
    """Version of the Mail::DKIM that ``mail_dkim_verify`` uses, or "" if none loads."""
    if shutil.which("perl") is None:
        return ""
    done = _perl("use Mail::DKIM; use Net::DNS::Resolver; print $Mail::DKIM::VERSION")
    return done.stdout.strip() if done.returncode == 0 else ""


@functools.cache
def mail_dkim_supports_ed25519() -> bool:
    """True when that Mail::DKIM can verify ed25519-sha256 (RFC 8463; needs CryptX)."""
    if not mail_dkim_version():
        return False
    done = _perl("use Mail::DKIM::Algorithm::ed25519_sha256; use Crypt::PK::Ed25519; print 1")
    return done.returncode == 0 and done.stdout == "1"


def require_mail_dkim() -> None:
    """Skip (fail in CI) unless perl with Mail::DKIM and Net::DNS is available."""
    if not mail_dkim_version():
        skip_or_fail(f"Perl Mail::DKIM is not installed; {_SETUP_HINT}")


def require_mail_dkim_ed25519() -> None:
    """Skip (fail in CI) unless the Mail::DKIM in use verifies ed25519-sha256."""
    require_mail_dkim()
    if not mail_dkim_supports_ed25519():
        skip_or_fail(
            f"Mail::DKIM {mail_dkim_version()} cannot verify ed25519-sha256 and "
            f"{_MAIL_DKIM_LIB} holds no newer copy; {_SETUP_HINT}"
        )


def opendkim_binary() -> str | None:
    """Path of the ``opendkim`` program; it lives in sbin, often not on a user's PATH."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
    return shutil.which("opendkim", path=search)


def require_opendkim() -> None:
    """Skip (fail in CI) unless OpenDKIM is installed."""
    if opendkim_binary() is None:
        skip_or_fail(f"opendkim is not installed; {_SETUP_HINT}")


def _to_crlf(message: bytes) -> bytes:
    """RFC 5322 line ends: bare LF becomes CRLF, CRLF stays."""
    return re.sub(rb"\r?\n", b"\r\n", message)


# -- Perl Mail::DKIM ------------------------------------------------------------

_PERL_LINE = re.compile(
    r"^(?P<result>\S+) domain=(?P<domain>\S+) selector=(?P<selector>\S+)"
    r" algorithm=(?P<algorithm>\S+) detail=(?P<detail>.*)$"
)


def mail_dkim_verify(
    message: bytes, dns_port: int, timeout: int = DEFAULT_DNS_TIMEOUT
) -> list[SignatureVerdict]:
    """Verify ``message`` with Perl Mail::DKIM, keys from 127.0.0.1:``dns_port``.

    Args:
        timeout: seconds before an unanswered key query counts as a DNS error.

    Returns:
        One verdict per DKIM-Signature, in header order; [] when there is none.

    Raises:
        VerifierError: perl or Mail::DKIM is missing, or the script failed.
    """
    perl = shutil.which("perl")
    if perl is None:
        raise VerifierError(f"perl is not on PATH; {_SETUP_HINT}")
    done = subprocess.run(
        [perl, str(MAIL_DKIM_SCRIPT), str(dns_port), str(timeout)],
        input=_to_crlf(message),
        env=_perl_env(),
        capture_output=True,
        timeout=30 + 4 * timeout,
        check=False,
    )
    stdout = done.stdout.decode("utf-8", "replace")
    stderr = done.stderr.decode("utf-8", "replace").strip()
    if done.returncode != 0:
        raise VerifierError(
            f"{MAIL_DKIM_SCRIPT.name} exited with status {done.returncode}: {stderr}"
        )
    verdicts: list[SignatureVerdict] = []
    for line in stdout.splitlines():
        if line == "none":
            continue
        match = _PERL_LINE.match(line)
        if match is None:
            raise VerifierError(f"{MAIL_DKIM_SCRIPT.name}: unexpected output line {line!r}")
        fields = {k: ("" if v == "-" else v) for k, v in match.groupdict().items()}
        verdicts.append(SignatureVerdict(**fields))
    return verdicts


# -- OpenDKIM -------------------------------------------------------------------

# unbound serves RFC 6761 special-use names itself (NXDOMAIN) unless told not
# to; tests sign for domains such as example.test.
_SPECIAL_USE_ZONES = ("test.", "example.", "invalid.", "localhost.", "onion.", "home.arpa.")

_UNBOUND_CONF = """\
# libunbound configuration for opendkim -t: forward everything to the test
# DNS server (which answers with TTL 0), validate nothing.
server:
    do-not-query-localhost: no
{zones}
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@{port}
"""


def write_unbound_conf(directory: Path, dns_port: int) -> Path:
    """A libunbound configuration in ``directory`` that sends OpenDKIM's queries to the
    test DNS server on 127.0.0.1:``dns_port`` (OpenDKIM's ResolverConfiguration)."""
    path = directory / "unbound.conf"
    zones = "\n".join(f'    local-zone: "{zone}" nodefault' for zone in _SPECIAL_USE_ZONES)
    path.write_text(_UNBOUND_CONF.format(port=dns_port, zones=zones))
    return path


_OPENDKIM_CONF = """\
# opendkim -t in verify mode; every On-* set to accept so that a DNS failure
# is reported as a result instead of a tempfail reply.
Mode                    v
Syslog                  no
AuthservID              {authserv_id}
AlwaysAddARHeader       yes
DNSTimeout              {timeout}
On-Default              accept
On-DNSError             accept
On-InternalError        accept
On-KeyNotFound          accept
On-BadSignature         accept
On-NoSignature          accept
On-Security             accept
On-SignatureError       accept
ResolverConfiguration   {unbound_conf}
"""

_AUTHSERV_ID = "opendkim-verifier"
_EX_SOFTWARE = 70  # opendkim -t when the filter accepted the message before eom

_INSHEADER = re.compile(
    r"^### INSHEADER: idx=\d+ hname='Authentication-Results' hvalue='(?P<value>.*?)'$",
    re.MULTILINE | re.DOTALL,
)
_SUMMARY = re.compile(
    r"^opendkim: .*?: verification \((?P<inner>[^)]*)\) "
    r"(?:succeeded|failed: (?P<reason>.*))$",
    re.MULTILINE,
)
_SUMMARY_SD = re.compile(r"s=(?P<selector>[^ ,]*),? d=(?P<domain>[^ ,]*)")


def opendkim_verify(
    message: bytes, dns_port: int, timeout: int = DEFAULT_DNS_TIMEOUT
) -> list[SignatureVerdict]:
    """Verify ``message`` with ``opendkim -t``, keys from 127.0.0.1:``dns_port``.

    The verdicts come from the Authentication-Results field OpenDKIM would
    add (printed with ``-vv``). When the only signature hits a DNS failure,
    OpenDKIM adds no field and says so on its summary line; that becomes one
    ``temperror`` verdict.

    Returns:
        One verdict per DKIM-Signature; [] when there is none.

    Raises:
        VerifierError: opendkim is missing, failed, or printed something unknown.
    """
    binary = opendkim_binary()
    if binary is None:
        raise VerifierError(f"opendkim is not installed; {_SETUP_HINT}")
    message = _to_crlf(message)
    with tempfile.TemporaryDirectory(prefix="ldapdkim-opendkim-") as tmp:
        directory = Path(tmp)
        unbound_conf = write_unbound_conf(directory, dns_port)
        config = directory / "opendkim.conf"
        config.write_text(
            _OPENDKIM_CONF.format(
                authserv_id=_AUTHSERV_ID, timeout=timeout, unbound_conf=unbound_conf
            )
        )
        message_file = directory / "message.eml"
        message_file.write_bytes(message)
        done = subprocess.run(
            [binary, "-x", str(config), "-vv", "-t", str(message_file)],
            capture_output=True,
            timeout=30 + 4 * timeout,
            check=False,
        )
    stdout = done.stdout.decode("utf-8", "replace")
    stderr = "\n".join(
        line
        for line in done.stderr.decode("utf-8", "replace").splitlines()
        if "returned SMFIS_" not in line  # -vv traces every callback
    ).strip()
    if done.returncode == _EX_SOFTWARE and not stdout.strip() and not stderr:
        # The filter returned SMFIS_ACCEPT from eoh: libopendkim refused the
        # signature(s) before any verification, and test mode reports nothing.
        return [
            SignatureVerdict(
                "noverdict", "", "", "", "noverdict (opendkim -t accepted at end of header)"
            )
        ]
    if done.returncode != 0:
        raise VerifierError(f"opendkim -t exited with status {done.returncode}: {stderr}")
    return _parse_opendkim_output(stdout, message)


def _parse_opendkim_output(stdout: str, message: bytes) -> list[SignatureVerdict]:
    summary = _SUMMARY.search(stdout)
    summary_reason = ""
    summary_sd: tuple[str, str] | None = None
    if summary is not None:
        summary_reason = summary.group("reason") or ""
        sd = _SUMMARY_SD.search(summary.group("inner"))
        if sd is not None:
            summary_sd = (sd.group("domain"), sd.group("selector"))

    header = _INSHEADER.search(stdout)
    if header is None:
        if summary is not None and summary_sd is not None and summary_reason:
            domain, selector = summary_sd
            result = "temperror" if "DNS" in summary_reason else "permerror"
            return [
                SignatureVerdict(
                    result,
                    domain,
                    selector,
                    _algorithm_of(message, domain, selector),
                    f"{result} ({summary_reason})",
                )
            ]
        raise VerifierError(f"opendkim -t printed no verdict: {stdout.strip()!r}")

    verdicts = []
    for resinfo in _split_outside_quotes(header.group("value"), ";")[1:]:
        words = _ar_words(resinfo)
        if not words or not words[0].lower().startswith("dkim="):
            continue
        result = words[0].split("=", 1)[1].lower()
        if result == "none":
            continue
        props: dict[str, str] = {}
        comments: list[str] = []
        for word in words[1:]:
            if word.startswith("("):
                comments.append(word[1:-1])
            elif "=" in word:
                key, value = word.split("=", 1)
                props[key.lower()] = value.strip('"')
        domain = props.get("header.d", "")
        selector = props.get("header.s", "")
        reason = props.get("reason", "")
        if not reason and summary_reason and summary_sd == (domain, selector):
            reason = summary_reason
        detail = result
        if reason:
            detail += f" ({reason})"
        if comments:
            detail += f" [{'; '.join(comments)}]"
        verdicts.append(
            SignatureVerdict(result, domain, selector, props.get("header.a", ""), detail)
        )
    return verdicts


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    """Split on ``separator`` where it is outside "quotes" and (comments)."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    quoted = False
    for char in text:
        if quoted:
            quoted = char != '"'
        elif char == '"':
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth = max(depth - 1, 0)
        elif char == separator and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _ar_words(resinfo: str) -> list[str]:
    """Words of one RFC 8601 resinfo; a (comment) is one word, parentheses kept."""
    words: list[str] = []
    i = 0
    while i < len(resinfo):
        if resinfo[i].isspace():
            i += 1
            continue
        if resinfo[i] == "(":
            depth = 0
            start = i
            while i < len(resinfo):
                depth += {"(": 1, ")": -1}.get(resinfo[i], 0)
                i += 1
                if depth == 0:
                    break
            words.append(resinfo[start:i])
            continue
        start = i
        quoted = False
        while i < len(resinfo) and (quoted or not (resinfo[i].isspace() or resinfo[i] == "(")):
            if resinfo[i] == '"':
                quoted = not quoted
            i += 1
        words.append(resinfo[start:i])
    return words


def _algorithm_of(message: bytes, domain: str, selector: str) -> str:
    """The a= of the message's DKIM-Signature for d=``domain`` s=``selector``, or ""."""
    head = message.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
    unfolded = re.sub(r"\r\n(?=[ \t])", "", head)
    for field in unfolded.split("\r\n"):
        name, _, value = field.partition(":")
        if name.strip().lower() != "dkim-signature":
            continue
        tags = {}
        for tag in value.split(";"):
            key, _, tag_value = tag.partition("=")
            tags[key.strip().lower()] = re.sub(r"\s+", "", tag_value)
        if tags.get("d", "").lower() == domain.lower() and tags.get("s", "") == selector:
            return tags.get("a", "")
    return ""
