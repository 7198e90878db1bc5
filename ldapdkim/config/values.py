"""Value converters: each turns the text of one configuration value into its typed form.

A converter takes a :class:`Context` (file, line and keyword, for messages)
and the value's text, and returns the typed value or fails through
:meth:`Context.fail` with ``FILE:LINE: what; how to fix``.  The keyword table
in :mod:`ldapdkim.config.settings` names one converter per keyword.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from ldapdkim.config.datasets import read_dataset
from ldapdkim.config.hostlist import HostList
from ldapdkim.config.secret import Secret, read_secret_file, unsafe
from ldapdkim.domainname import normalize_domain, normalize_host_name, normalize_selector
from ldapdkim.errors import ConfigError, InvalidDomain, InvalidSelector, KeyFormatError
from ldapdkim.model import Alignment, Canonicalization, DirectorySync
from ldapdkim.sealing import KEK_BYTES, KEK_ID, KeyEncryptionKey


@dataclass(frozen=True)
class Context:
    source: str
    line: int
    keyword: str
    require_safe: bool = False
    """RequireSafeKeys, for converters that read a secret file (KEKs, the PIN)."""

    def fail(self, what: str, fix: str) -> NoReturn:
        raise ConfigError(f"{self.source}:{self.line}: {what}; {fix}")

    def fail_from(self, err: ValueError) -> NoReturn:
        """Fail with a message (already "what; fix") from a lower-level parser."""
        raise ConfigError(f"{self.source}:{self.line}: {self.keyword}: {err}") from err


_BOOLEANS = {
    "yes": True, "true": True, "on": True, "1": True,
    "no": False, "false": False, "off": False, "0": False,
}  # fmt: skip


def boolean(ctx: Context, value: str) -> bool:
    try:
        return _BOOLEANS[value.lower()]
    except KeyError:
        ctx.fail(
            f"{ctx.keyword} {value!r} is not a boolean",
            "use yes or no (also true/false, on/off, 1/0)",
        )


def text(ctx: Context, value: str) -> str:
    return value


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)\Z", re.IGNORECASE)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(ctx: Context, value: str) -> float:
    match = _DURATION.match(value)
    if match is None:
        ctx.fail(
            f"{ctx.keyword} {value!r} is not a duration",
            "give seconds, or a number with s, m, h or d, e.g. 30, 5m, 1d",
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]


def positive_seconds(ctx: Context, value: str) -> float:
    seconds = duration(ctx, value)
    if seconds <= 0:
        ctx.fail(f"{ctx.keyword} {value!r} must be more than 0", "give e.g. 5 (seconds)")
    return seconds


def whole_seconds(ctx: Context, value: str) -> int:
    seconds = duration(ctx, value)
    if seconds != int(seconds):
        ctx.fail(f"{ctx.keyword} {value!r} is not a whole number of seconds", "e.g. 604800 or 7d")
    return int(seconds)


def _integer(ctx: Context, value: str, minimum: int, fix: str) -> int:
    if not re.fullmatch(r"\d+", value):
        ctx.fail(f"{ctx.keyword} {value!r} is not a whole number", fix)
    number = int(value)
    if number < minimum:
        ctx.fail(f"{ctx.keyword} {value!r} is less than {minimum}", fix)
    return number


def key_bits(ctx: Context, value: str) -> int:
    fix = (
        "use 1024 or more (RFC 8301); ldapdkim refuses keys under 512 bits, "
        "and OpenDKIM's 0 (any size) is not accepted"
    )
    return _integer(ctx, value, 512, fix)


def signature_count(ctx: Context, value: str) -> int:
    return _integer(ctx, value, 1, "give 1 or more (the default is 3); use 'Mode s' to verify none")


def mode(ctx: Context, value: str) -> str:
    letters = value.lower()
    if letters in ("s", "v"):
        return letters
    if letters in ("sv", "vs"):
        return "sv"
    ctx.fail(f"Mode {value!r} is not a mode", "use s (sign), v (verify) or sv (both)")


PORT = r"([1-9]\d{0,4})"


def socket(ctx: Context, value: str) -> str:
    forms = "use inet:PORT@HOST, inet:PORT, inet6:PORT@HOST, local:/PATH or unix:/PATH"
    kind, _, rest = value.partition(":")
    kind = kind.lower()
    if kind in ("local", "unix"):
        if not rest:
            ctx.fail(f"{ctx.keyword} {value!r} names no path", forms)
        return f"{kind}:{rest}"
    if kind not in ("inet", "inet6"):
        ctx.fail(f"{ctx.keyword} {value!r} is not a socket", forms)
    _inet(ctx, value, forms)
    return f"{kind}:{rest}"


def tcp_socket(ctx: Context, value: str) -> tuple[str, int]:
    """``inet:PORT@HOST`` or ``inet6:PORT@HOST`` (``Socket``'s syntax, TCP only), as
    (host, port); ``inet:PORT`` listens on every IPv4 address, ``inet6:PORT`` on every
    IPv6 one."""
    forms = "use inet:PORT@HOST or inet6:PORT@HOST, e.g. inet:9469@127.0.0.1"
    kind = value.partition(":")[0].lower()
    if kind not in ("inet", "inet6"):
        ctx.fail(f"{ctx.keyword} {value!r} is not a TCP socket", forms)
    host, port = _inet(ctx, value, forms)
    if host is None:
        host = "::" if kind == "inet6" else "0.0.0.0"  # noqa: S104 - what inet:PORT asks for
    return host.strip("[]"), port


def _inet(ctx: Context, value: str, forms: str) -> tuple[str | None, int]:
    """The host (None when not given) and port of an ``inet:``/``inet6:`` socket."""
    kind, _, rest = value.partition(":")
    kind = kind.lower()
    match = re.fullmatch(PORT + r"(?:@(.+))?", rest)
    if match is None or int(match.group(1)) > 65535:
        ctx.fail(f"{ctx.keyword} {value!r} has no valid port (1-65535)", forms)
    host = match.group(2)
    if host is not None:
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            address = ipaddress.ip_address(bare)
        except ValueError:
            try:
                normalize_host_name(bare)
            except InvalidDomain:
                ctx.fail(f"{ctx.keyword} {value!r} has a bad host {host!r}", forms)
        else:
            if (address.version == 6) != (kind == "inet6"):
                ctx.fail(
                    f"{ctx.keyword} {value!r} puts an IPv{address.version} address on {kind}:",
                    "use inet: for IPv4 and inet6: for IPv6",
                )
    return host, int(match.group(1))


def absolute_path(ctx: Context, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else Path.cwd() / path


def shown_path(value: str, path: Path) -> str:
    return repr(value) if value == str(path) else f"{value!r} ({path})"


def _existing_file(ctx: Context, value: str, fix: str) -> Path:
    path = absolute_path(ctx, value)
    if not path.exists():
        ctx.fail(f"{ctx.keyword} file {shown_path(value, path)} does not exist", fix)
    if not path.is_file():
        ctx.fail(f"{ctx.keyword} {shown_path(value, path)} is not a file", fix)
    return path


def key_file(ctx: Context, value: str) -> Path:
    return _existing_file(
        ctx, value, "fix the path, or create the key (ldapdkim genkey) and publish its DNS record"
    )


def ca_file(ctx: Context, value: str) -> Path:
    return _existing_file(
        ctx, value, "give the PEM file of the CA that signed the LDAP server's certificate"
    )


def password(ctx: Context, value: str) -> Secret:
    return Secret(value)


def password_file(ctx: Context, value: str) -> Secret:
    fix = (
        "create it with the bind password on its first line, readable by root only, or fix the path"
    )
    path = _existing_file(ctx, value, fix)
    try:
        secret = read_secret_file(path)
    except PermissionError:
        ctx.fail(
            f"{ctx.keyword} {shown_path(value, path)} cannot be read (permission denied)",
            "run ldapdkim as root (it reads the file before dropping privileges) "
            "or let its user read the file",
        )
    except (OSError, UnicodeDecodeError) as err:
        ctx.fail(f"{ctx.keyword} {shown_path(value, path)} cannot be read ({err})", fix)
    if secret is None:
        ctx.fail(f"{ctx.keyword} {shown_path(value, path)} has an empty first line", fix)
    return secret


CREDENTIAL = "credential:"
"""A value naming a systemd credential (``LoadCredential=``, ``LoadCredentialEncrypted=``)
instead of a file: ``credential:NAME`` is ``$CREDENTIALS_DIRECTORY/NAME``."""


def secret_source(ctx: Context, value: str, fix: str) -> tuple[Path, bool]:
    """The file a secret is read from, and whether it is a systemd credential.

    A credential's file is systemd's (in a directory only the service can read),
    so RequireSafeKeys does not judge it.
    """
    if not value.startswith(CREDENTIAL):
        return _existing_file(ctx, value, fix), False
    name = value[len(CREDENTIAL) :]
    if not name or "/" in name:
        ctx.fail(f"{ctx.keyword} {value!r} names no credential", "write credential:NAME")
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        ctx.fail(
            f"{ctx.keyword} {value!r}: CREDENTIALS_DIRECTORY is not set",
            f"start ldapdkim from systemd with LoadCredentialEncrypted={name}:PATH "
            "(or LoadCredential=), or give a file instead",
        )
    path = Path(directory) / name
    if not path.is_file():
        ctx.fail(
            f"{ctx.keyword} {value!r}: systemd passed no credential {name!r} ({path})",
            f"add LoadCredentialEncrypted={name}:PATH to the unit",
        )
    return path, True


def _read_secret_bytes(ctx: Context, value: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except PermissionError:
        ctx.fail(
            f"{ctx.keyword} {shown_path(value, path)} cannot be read (permission denied)",
            "run ldapdkim as root (it reads the file before dropping privileges) "
            "or let its user read the file",
        )
    except OSError as err:
        ctx.fail(f"{ctx.keyword} {shown_path(value, path)} cannot be read ({err.strerror})",
                 "fix the path")  # fmt: skip


def key_encryption_key(ctx: Context, value: str) -> KeyEncryptionKey:
    """``ID PATH`` or ``ID credential:NAME``: a KEK of exactly 32 bytes."""
    kek_id, _, where = value.partition(" ")
    where = where.strip()
    if not where or KEK_ID.match(kek_id) is None:
        ctx.fail(
            f"{ctx.keyword} {value!r} is not 'ID PATH'",
            "write 'KeyEncryptionKey ID PATH' with an id of letters, digits, '.', '_' and '-' "
            "(at most 64), e.g. 'KeyEncryptionKey kek2026 /etc/ldapdkim/kek2026'",
        )
    fix = (
        "create it with 'ldapdkim keys new-kek PATH' (32 random bytes, mode 0600), or fix the path"
    )
    path, credential = secret_source(ctx, where, fix)
    if not credential and ctx.require_safe:
        problem = unsafe(path)
        if problem is not None:
            ctx.fail(f"{ctx.keyword} {kek_id} {path} {problem}", "or set RequireSafeKeys no")
    key = _read_secret_bytes(ctx, where, path)
    if len(key) != KEK_BYTES:
        ctx.fail(
            f"{ctx.keyword} {kek_id}: {shown_path(where, path)} holds {len(key)} bytes, "
            f"not {KEK_BYTES}",
            "a KEK is 32 random bytes, nothing else: make one with 'ldapdkim keys new-kek PATH'",
        )
    try:
        return KeyEncryptionKey(kek_id, key, origin=str(path))
    except KeyFormatError as err:  # pragma: no cover - id and length are checked above
        ctx.fail(str(err), "fix the line")


def pin_file(ctx: Context, value: str) -> Secret:
    """A file (or ``credential:NAME``) whose first line is the token's user PIN."""
    fix = "create it with the PIN on its first line, readable by root only, or fix the path"
    path, credential = secret_source(ctx, value, fix)
    if not credential and ctx.require_safe:
        problem = unsafe(path)
        if problem is not None:
            ctx.fail(f"{ctx.keyword} {path} {problem}", "or set RequireSafeKeys no")
    try:
        secret = read_secret_file(path)
    except (OSError, UnicodeDecodeError) as err:
        ctx.fail(f"{ctx.keyword} {shown_path(value, path)} cannot be read ({err})", fix)
    if secret is None:
        ctx.fail(f"{ctx.keyword} {shown_path(value, path)} has an empty first line", fix)
    return secret


def pkcs11_module(ctx: Context, value: str) -> Path:
    return _existing_file(
        ctx,
        value,
        "name the token's PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so or "
        "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so.1",
    )


def sasl_mechanism(ctx: Context, value: str) -> str | None:
    name = value.upper()
    if name == "SIMPLE":
        return None
    if not re.fullmatch(r"[A-Z0-9_-]{1,20}", name):
        ctx.fail(
            f"LDAPAuthMechanism {value!r} is not a SASL mechanism name",
            "use SIMPLE (the default), EXTERNAL, or a SASL mechanism such as GSSAPI or DIGEST-MD5",
        )
    return name


def canonicalization(ctx: Context, value: str) -> Canonicalization:
    try:
        return Canonicalization.parse(value)
    except ValueError:
        ctx.fail(
            f"Canonicalization {value!r} is not valid",
            "use HEADER/BODY, each simple or relaxed, e.g. relaxed/simple",
        )


def _entries(ctx: Context, value: str) -> list[tuple[str, str]]:
    try:
        return [(e.text, e.where) for e in read_dataset(value)]
    except ValueError as err:
        ctx.fail_from(err)


_FIELD_NAME = re.compile(r"[!-9;-~]+\Z")  # RFC 5322 ftext: printable ASCII except ':'


def header_names(ctx: Context, value: str) -> tuple[str, ...]:
    names: list[str] = []
    for text, where in _entries(ctx, value):
        if text == "*":
            ctx.fail(
                f"{ctx.keyword} starts an OpenDKIM delta list ('*,+X,-Y')",
                "ldapdkim does not support those: list the header fields in full",
            )
        if not _FIELD_NAME.match(text):
            ctx.fail(
                f"{ctx.keyword} entry {text!r}{where} is not a header field name",
                "list names such as from, to, subject, separated by commas",
            )
        if text.lower() not in names:
            names.append(text.lower())
    return tuple(names)


def sign_headers(ctx: Context, value: str) -> tuple[str, ...]:
    names = header_names(ctx, value)
    # RFC 6376 §5.4: From MUST be signed; OpenDKIM adds it implicitly, so do we.
    return names if "from" in names else ("from", *names)


def domains(ctx: Context, value: str) -> tuple[str, ...]:
    domains: list[str] = []
    for text, where in _entries(ctx, value):
        try:
            # The same normalisation as From domains get, so that they compare equal.
            domain = normalize_domain(text)
        except InvalidDomain as err:
            ctx.fail(
                f"Domain entry {text!r}{where} is not a domain name ({err})",
                "list domains such as example.com, separated by commas",
            )
        if domain not in domains:
            domains.append(domain)
    if not domains:
        ctx.fail("Domain lists no domain", "name at least one, e.g. Domain example.com")
    return tuple(domains)


def selector(ctx: Context, value: str) -> str:
    try:
        return normalize_selector(value)
    except InvalidSelector as err:
        ctx.fail(
            f"Selector {value!r} is not a valid selector ({err})",
            "use letters, digits and '-', e.g. Selector mail2024",
        )


def host_list(ctx: Context, value: str) -> HostList:
    try:
        return HostList.parse(value)
    except ValueError as err:
        ctx.fail_from(err)


_MACRO_NAME = re.compile(r"(?:\{[A-Za-z0-9_]+\}|[A-Za-z0-9_]+)\Z")


def macros(ctx: Context, value: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    forms = "write NAME or NAME=VALUE1|VALUE2, e.g. {auth_authen}, {daemon_name}=ORIGINATING"
    macros: dict[str, tuple[str, ...]] = {}
    for text, where in _entries(ctx, value):
        if "=" in text:
            name, _, values_text = text.partition("=")
            has_values = True
        else:
            # A file line may also read "NAME VALUE1|VALUE2" (OpenDKIM's key/value form).
            name, blank, values_text = text.replace("\t", " ").partition(" ")
            has_values = bool(blank)
        name, values_text = name.strip(), values_text.strip()
        if not _MACRO_NAME.match(name):
            ctx.fail(f"MacroList entry {text!r}{where} has a bad macro name {name!r}", forms)
        if len(name) > 1 and not name.startswith("{"):
            name = "{" + name + "}"  # libmilter accepts both spellings; keep one
        values: tuple[str, ...] = ()
        if has_values:
            values = tuple(values_text.split("|"))
            if not all(values):
                ctx.fail(f"MacroList entry {text!r}{where} has an empty value", forms)
        if name in macros:
            ctx.fail(f"MacroList names macro {name} twice", "merge the values with |")
        macros[name] = values
    return tuple(macros.items())


def authserv_id(ctx: Context, value: str) -> str | None:
    if value == "HOSTNAME":  # OpenDKIM's spelling of "this host's name"
        return None
    if any(c.isspace() or c in ';()"\\' for c in value) or not value.isascii():
        ctx.fail(
            f"AuthservID {value!r} is not a valid authserv-id",
            "use a host name such as mail.example.com (RFC 8601 §2.5)",
        )
    return value


def nameservers(ctx: Context, value: str) -> tuple[tuple[str, int], ...]:
    forms = "use IPv4, IPv4:PORT, IPv6 or [IPv6]:PORT, separated by commas or blanks"
    servers: list[tuple[str, int]] = []
    for text in re.split(r"[,\s]+", value):
        if not text:
            continue
        host, port = text, "53"
        bracketed = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", text)
        if bracketed:
            host, port = bracketed.group(1), bracketed.group(2) or "53"
        elif text.count(":") == 1:
            host, port = text.split(":")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            ctx.fail(f"Nameservers entry {text!r} is not an IP address", forms)
        if not re.fullmatch(PORT, port) or int(port) > 65535:
            ctx.fail(f"Nameservers entry {text!r} has a bad port", forms)
        if bracketed and address.version != 6:
            ctx.fail(f"Nameservers entry {text!r} puts IPv4 in brackets", forms)
        servers.append((str(address), int(port)))
    return tuple(servers)


def user_id(ctx: Context, value: str) -> str:
    if not re.fullmatch(r"[^:\s]+(:[^:\s]+)?", value):
        ctx.fail(f"UserID {value!r} is not a user", "write USER or USER:GROUP, e.g. ldapdkim")
    return value


def umask(ctx: Context, value: str) -> int:
    digits = value.lower().removeprefix("0o")
    if not re.fullmatch(r"[0-7]{1,4}", digits) or int(digits, 8) > 0o777:
        ctx.fail(f"UMask {value!r} is not an octal mask", "write e.g. 007 or 022")
    return int(digits, 8)


_FACILITIES = frozenset(
    "auth authpriv cron daemon ftp kern lpr mail news syslog user uucp".split()
    + [f"local{n}" for n in range(8)]
)


def directory_sync(ctx: Context, value: str) -> DirectorySync:
    try:
        return DirectorySync(value.lower())
    except ValueError:
        ctx.fail(
            f"DirectorySync {value!r} is not a sync mode",
            "use auto (content sync when the server offers it), yes or no",
        )


def facility(ctx: Context, value: str) -> str:
    name = value.lower().removeprefix("log_")
    if name not in _FACILITIES:
        ctx.fail(
            f"SyslogFacility {value!r} is not a syslog facility",
            "use mail (the default), daemon, local0 ... local7 or another syslog.conf(5) name",
        )
    return name


_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9-]*\Z")
_FILTER_ESCAPE = re.compile(r"%(.)")


def login_filter(ctx: Context, value: str) -> str:
    """An LDAP filter template: ``%s`` the From address, ``%u`` its local part, ``%d`` its
    domain (each escaped by RFC 4515 when used), ``%%`` a percent sign."""
    forms = "e.g. (|(mail=%s)(mailAlternateAddress=%s)); %s, %u, %d and %% are replaced"
    unknown = {m.group(1) for m in _FILTER_ESCAPE.finditer(value)} - set("sud%")
    if unknown:
        ctx.fail(f"{ctx.keyword} {value!r} uses %{sorted(unknown)[0]}", forms)
    if not {m.group(1) for m in _FILTER_ESCAPE.finditer(value)} & set("sud"):
        ctx.fail(f"{ctx.keyword} {value!r} names no part of the address", forms)
    sample = value.replace("%%", "%25")
    for escape in ("%s", "%u", "%d"):
        sample = sample.replace(escape, "x")
    depth = 0
    for char in sample:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            break
    if not sample.startswith("(") or depth != 0:
        ctx.fail(f"{ctx.keyword} {value!r} is not an LDAP filter in parentheses", forms)
    return value


def attribute_names(ctx: Context, value: str) -> tuple[str, ...]:
    names = []
    for text, where in _entries(ctx, value):
        if not _ATTRIBUTE.match(text):
            ctx.fail(
                f"{ctx.keyword} entry {text!r}{where} is not an attribute name",
                "list names such as uid, separated by commas",
            )
        names.append(text)
    return tuple(names)


def alignment(ctx: Context, value: str) -> Alignment:
    try:
        return Alignment.parse(value)
    except ValueError:
        ctx.fail(
            f"{ctx.keyword} {value!r} is not a sender alignment",
            "use none, exact or organizational",
        )


ARC_SEAL_RULES = ("envelope-sender", "recipient")
"""The ``ARCSealDomain`` rules that are not a fixed domain (docs/arc.md, Which domain seals)."""


def arc_seal_domain(ctx: Context, value: str) -> str:
    """``envelope-sender``, ``recipient``, or a fixed domain name (normalised)."""
    text = value.strip().lower()
    if text in ARC_SEAL_RULES:
        return text
    try:
        return normalize_domain(text)
    except InvalidDomain as err:
        ctx.fail(
            f"{ctx.keyword} {value!r} is neither a rule nor a domain name ({err})",
            "use envelope-sender, recipient or a domain such as lists.example.org",
        )


def logins(ctx: Context, value: str) -> tuple[str, ...]:
    """SASL login names (``{auth_authen}``), lowercase."""
    names = [text.lower() for text, _ in _entries(ctx, value) if text]
    if not names:
        ctx.fail(f"{ctx.keyword} lists no login", "name logins separated by commas")
    return tuple(names)


MAX_WORKERS = 256


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which containers and
    ``taskset`` narrow), at most :data:`MAX_WORKERS`."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    return max(1, min(count, MAX_WORKERS))


def workers(ctx: Context, value: str) -> int:
    """A number of processes, or ``auto``: one per usable CPU."""
    if value.lower() == "auto":
        return usable_cpus()
    if not value.isdigit() or not 1 <= int(value) <= MAX_WORKERS:
        ctx.fail(
            f"{ctx.keyword} {value!r} is not a number of processes from 1 to {MAX_WORKERS}",
            "give e.g. 2, or auto for one per CPU",
        )
    return int(value)
