"""Read an opendkim.conf-syntax configuration file and validate it, whole, into :class:`Settings`.

The syntax is OpenDKIM's (opendkim.conf(5)):

- one ``Keyword value`` per line; the value is the rest of the line, stripped;
- ``#`` starts a comment that runs to the end of the line, wherever it stands
  (so a bind password containing ``#`` belongs in ``LDAPBindPasswordFile``);
- blank lines are ignored, keywords are case-insensitive, and a keyword given
  twice keeps its last value, silently, as in OpenDKIM;
- booleans are yes/no, true/false, on/off or 1/0; durations are seconds, or a
  number with the suffix s, m, h or d (``5m``);
- relative paths are taken from the current working directory, as OpenDKIM does,
  and stored as absolute paths, so a later change of directory does not move them.

Every keyword is declared once, in ``_KEYWORDS``, with its converter, its default
(as configuration text, converted like a value from the file) and a one-line
doc; :func:`keyword_reference` hands that table to the README.  OpenDKIM
keywords that ldapdkim deliberately lacks are listed in ``_UNSUPPORTED`` with
what to do instead.

Every problem is a :class:`~ldapdkim.errors.ConfigError` reading
``FILE:LINE: what; how to fix``.  No message and no ``repr`` shows the bind
password.
"""

from __future__ import annotations

import difflib
import enum
import ipaddress
import os
import re
import types
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import ldap.dn

from ldapdkim.config.datasets import keyword_lines, read_dataset
from ldapdkim.config.hostlist import HostList
from ldapdkim.config.ldap import ADMIN_BIND_KEYWORDS, LdapSettings
from ldapdkim.config.secret import Secret, read_secret_file
from ldapdkim.domainname import normalize_domain, normalize_host_name, normalize_selector
from ldapdkim.errors import ConfigError, InvalidDomain, InvalidSelector
from ldapdkim.model import Canonicalization


@enum.unique
class Action(enum.Enum):
    """What the milter tells the MTA for an outcome (OpenDKIM's ``On-*`` values)."""

    ACCEPT = "accept"
    DISCARD = "discard"
    QUARANTINE = "quarantine"
    REJECT = "reject"
    TEMPFAIL = "tempfail"

    @classmethod
    def parse(cls, text: str) -> Action:
        """Parse a full name or OpenDKIM's one-letter form (a, d, q, r, t), any case.

        Raises:
            ValueError: naming the accepted forms.
        """
        word = text.strip().lower()
        for action in cls:
            if word in (action.value, action.value[0]):
                return action
        raise ValueError(
            f"unknown action {text!r}; use accept (a), discard (d), quarantine (q), "
            "reject (r) or tempfail (t)"
        )


@dataclass(frozen=True)
class DirectorySource:
    """Where keys and per-domain policy are read from: LDAP servers or one LDIF file.

    For ``ldap``, ``uris`` holds each server as ``scheme://host:port`` (or
    ``ldapi://%2Fpath%2Fto%2Fsocket``) in failover order, and ``base_dn`` the
    one base DN all of them share.  For ``ldif``, ``uris`` is empty, ``base_dn``
    is ``""`` and ``ldif_path`` names the file.
    """

    kind: Literal["ldap", "ldif"]
    uris: tuple[str, ...] = ()
    base_dn: str = ""
    ldif_path: Path | None = None


# --------------------------------------------------------------------------
# Converters: each turns the text of one value into its typed form, or fails
# through ctx.fail() with "what; fix".


@dataclass(frozen=True)
class _Ctx:
    source: str
    line: int
    keyword: str

    def fail(self, what: str, fix: str) -> NoReturn:
        raise ConfigError(f"{self.source}:{self.line}: {what}; {fix}")

    def fail_from(self, err: ValueError) -> NoReturn:
        """Fail with a message (already "what; fix") from a lower-level parser."""
        raise ConfigError(f"{self.source}:{self.line}: {self.keyword}: {err}") from err


_BOOLEANS = {
    "yes": True, "true": True, "on": True, "1": True,
    "no": False, "false": False, "off": False, "0": False,
}  # fmt: skip


def _boolean(ctx: _Ctx, value: str) -> bool:
    try:
        return _BOOLEANS[value.lower()]
    except KeyError:
        ctx.fail(
            f"{ctx.keyword} {value!r} is not a boolean",
            "use yes or no (also true/false, on/off, 1/0)",
        )


def _text(ctx: _Ctx, value: str) -> str:
    return value


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)\Z", re.IGNORECASE)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(ctx: _Ctx, value: str) -> float:
    match = _DURATION.match(value)
    if match is None:
        ctx.fail(
            f"{ctx.keyword} {value!r} is not a duration",
            "give seconds, or a number with s, m, h or d, e.g. 30, 5m, 1d",
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]


def _positive_seconds(ctx: _Ctx, value: str) -> float:
    seconds = _seconds(ctx, value)
    if seconds <= 0:
        ctx.fail(f"{ctx.keyword} {value!r} must be more than 0", "give e.g. 5 (seconds)")
    return seconds


def _whole_seconds(ctx: _Ctx, value: str) -> int:
    seconds = _seconds(ctx, value)
    if seconds != int(seconds):
        ctx.fail(f"{ctx.keyword} {value!r} is not a whole number of seconds", "e.g. 604800 or 7d")
    return int(seconds)


def _integer(ctx: _Ctx, value: str, minimum: int, fix: str) -> int:
    if not re.fullmatch(r"\d+", value):
        ctx.fail(f"{ctx.keyword} {value!r} is not a whole number", fix)
    number = int(value)
    if number < minimum:
        ctx.fail(f"{ctx.keyword} {value!r} is less than {minimum}", fix)
    return number


def _key_bits(ctx: _Ctx, value: str) -> int:
    fix = (
        "use 1024 or more (RFC 8301); ldapdkim refuses keys under 512 bits, "
        "and OpenDKIM's 0 (any size) is not accepted"
    )
    return _integer(ctx, value, 512, fix)


def _signature_count(ctx: _Ctx, value: str) -> int:
    return _integer(ctx, value, 1, "give 1 or more (the default is 3); use 'Mode s' to verify none")


def _mode(ctx: _Ctx, value: str) -> str:
    letters = value.lower()
    if letters in ("s", "v"):
        return letters
    if letters in ("sv", "vs"):
        return "sv"
    ctx.fail(f"Mode {value!r} is not a mode", "use s (sign), v (verify) or sv (both)")


_PORT = r"([1-9]\d{0,4})"


def _socket(ctx: _Ctx, value: str) -> str:
    forms = "use inet:PORT@HOST, inet:PORT, inet6:PORT@HOST, local:/PATH or unix:/PATH"
    kind, _, rest = value.partition(":")
    kind = kind.lower()
    if kind in ("local", "unix"):
        if not rest:
            ctx.fail(f"Socket {value!r} names no path", forms)
        return f"{kind}:{rest}"
    if kind not in ("inet", "inet6"):
        ctx.fail(f"Socket {value!r} is not a socket", forms)
    match = re.fullmatch(_PORT + r"(?:@(.+))?", rest)
    if match is None or int(match.group(1)) > 65535:
        ctx.fail(f"Socket {value!r} has no valid port (1-65535)", forms)
    host = match.group(2)
    if host is not None:
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            address = ipaddress.ip_address(bare)
        except ValueError:
            try:
                normalize_host_name(bare)
            except InvalidDomain:
                ctx.fail(f"Socket {value!r} has a bad host {host!r}", forms)
        else:
            if (address.version == 6) != (kind == "inet6"):
                ctx.fail(
                    f"Socket {value!r} puts an IPv{address.version} address on {kind}:",
                    "use inet: for IPv4 and inet6: for IPv6",
                )
    return f"{kind}:{rest}"


def _path(ctx: _Ctx, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else Path.cwd() / path


def _shown_path(value: str, path: Path) -> str:
    return repr(value) if value == str(path) else f"{value!r} ({path})"


def _existing_file(ctx: _Ctx, value: str, fix: str) -> Path:
    path = _path(ctx, value)
    if not path.exists():
        ctx.fail(f"{ctx.keyword} file {_shown_path(value, path)} does not exist", fix)
    if not path.is_file():
        ctx.fail(f"{ctx.keyword} {_shown_path(value, path)} is not a file", fix)
    return path


def _key_file(ctx: _Ctx, value: str) -> Path:
    return _existing_file(
        ctx, value, "fix the path, or create the key (ldapdkim genkey) and publish its DNS record"
    )


def _ca_file(ctx: _Ctx, value: str) -> Path:
    return _existing_file(
        ctx, value, "give the PEM file of the CA that signed the LDAP server's certificate"
    )


def _password(ctx: _Ctx, value: str) -> Secret:
    return Secret(value)


def _password_file(ctx: _Ctx, value: str) -> Secret:
    fix = (
        "create it with the bind password on its first line, readable by root only, or fix the path"
    )
    path = _existing_file(ctx, value, fix)
    try:
        secret = read_secret_file(path)
    except PermissionError:
        ctx.fail(
            f"{ctx.keyword} {_shown_path(value, path)} cannot be read (permission denied)",
            "run ldapdkim as root (it reads the file before dropping privileges) "
            "or let its user read the file",
        )
    except (OSError, UnicodeDecodeError) as err:
        ctx.fail(f"{ctx.keyword} {_shown_path(value, path)} cannot be read ({err})", fix)
    if secret is None:
        ctx.fail(f"{ctx.keyword} {_shown_path(value, path)} has an empty first line", fix)
    return secret


def _sasl_mechanism(ctx: _Ctx, value: str) -> str | None:
    name = value.upper()
    if name == "SIMPLE":
        return None
    if not re.fullmatch(r"[A-Z0-9_-]{1,20}", name):
        ctx.fail(
            f"LDAPAuthMechanism {value!r} is not a SASL mechanism name",
            "use SIMPLE (the default), EXTERNAL, or a SASL mechanism such as GSSAPI or DIGEST-MD5",
        )
    return name


def _canonicalization(ctx: _Ctx, value: str) -> Canonicalization:
    try:
        return Canonicalization.parse(value)
    except ValueError:
        ctx.fail(
            f"Canonicalization {value!r} is not valid",
            "use HEADER/BODY, each simple or relaxed, e.g. relaxed/simple",
        )


def _entries(ctx: _Ctx, value: str) -> list[tuple[str, str]]:
    try:
        return [(e.text, e.where) for e in read_dataset(value)]
    except ValueError as err:
        ctx.fail_from(err)


_FIELD_NAME = re.compile(r"[!-9;-~]+\Z")  # RFC 5322 ftext: printable ASCII except ':'


def _header_names(ctx: _Ctx, value: str) -> tuple[str, ...]:
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


def _sign_headers(ctx: _Ctx, value: str) -> tuple[str, ...]:
    names = _header_names(ctx, value)
    # RFC 6376 §5.4: From MUST be signed; OpenDKIM adds it implicitly, so do we.
    return names if "from" in names else ("from", *names)


def _domains(ctx: _Ctx, value: str) -> tuple[str, ...]:
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


def _selector(ctx: _Ctx, value: str) -> str:
    try:
        return normalize_selector(value)
    except InvalidSelector as err:
        ctx.fail(
            f"Selector {value!r} is not a valid selector ({err})",
            "use letters, digits and '-', e.g. Selector mail2024",
        )


def _host_list(ctx: _Ctx, value: str) -> HostList:
    try:
        return HostList.parse(value)
    except ValueError as err:
        ctx.fail_from(err)


_MACRO_NAME = re.compile(r"(?:\{[A-Za-z0-9_]+\}|[A-Za-z0-9_]+)\Z")


def _macros(ctx: _Ctx, value: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
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


def _authserv_id(ctx: _Ctx, value: str) -> str | None:
    if value == "HOSTNAME":  # OpenDKIM's spelling of "this host's name"
        return None
    if any(c.isspace() or c in ';()"\\' for c in value) or not value.isascii():
        ctx.fail(
            f"AuthservID {value!r} is not a valid authserv-id",
            "use a host name such as mail.example.com (RFC 8601 §2.5)",
        )
    return value


def _nameservers(ctx: _Ctx, value: str) -> tuple[tuple[str, int], ...]:
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
        if not re.fullmatch(_PORT, port) or int(port) > 65535:
            ctx.fail(f"Nameservers entry {text!r} has a bad port", forms)
        if bracketed and address.version != 6:
            ctx.fail(f"Nameservers entry {text!r} puts IPv4 in brackets", forms)
        servers.append((str(address), int(port)))
    return tuple(servers)


def _user_id(ctx: _Ctx, value: str) -> str:
    if not re.fullmatch(r"[^:\s]+(:[^:\s]+)?", value):
        ctx.fail(f"UserID {value!r} is not a user", "write USER or USER:GROUP, e.g. ldapdkim")
    return value


def _umask(ctx: _Ctx, value: str) -> int:
    digits = value.lower().removeprefix("0o")
    if not re.fullmatch(r"[0-7]{1,4}", digits) or int(digits, 8) > 0o777:
        ctx.fail(f"UMask {value!r} is not an octal mask", "write e.g. 007 or 022")
    return int(digits, 8)


_FACILITIES = frozenset(
    "auth authpriv cron daemon ftp kern lpr mail news syslog user uucp".split()
    + [f"local{n}" for n in range(8)]
)


def _directory_sync(ctx: _Ctx, value: str) -> str:
    mode = value.lower()
    if mode not in ("auto", "yes", "no"):
        ctx.fail(
            f"DirectorySync {value!r} is not a sync mode",
            "use auto (content sync when the server offers it), yes or no",
        )
    return mode


def _facility(ctx: _Ctx, value: str) -> str:
    name = value.lower().removeprefix("log_")
    if name not in _FACILITIES:
        ctx.fail(
            f"SyslogFacility {value!r} is not a syslog facility",
            "use mail (the default), daemon, local0 ... local7 or another syslog.conf(5) name",
        )
    return name


def _action(ctx: _Ctx, value: str) -> Action:
    try:
        return Action.parse(value)
    except ValueError:
        ctx.fail(
            f"{ctx.keyword} {value!r} is not an action",
            "use accept (a), discard (d), quarantine (q), reject (r) or tempfail (t)",
        )


# Directory ----------------------------------------------------------------

_LDAP_URL = re.compile(r"(ldaps?|ldapi)://([^/?]*)(?:/([^?]*))?(\?.*)?\Z", re.IGNORECASE)
_DIRECTORY_FORMS = (
    "use ldap://HOST[:PORT]/BASE-DN, ldaps://HOST[:PORT]/BASE-DN, "
    "ldapi://%2Fpath%2Fto%2Fsocket/BASE-DN (several servers separated by blanks), "
    "or ldif:PATH"
)
_DEFAULT_PORTS = {"ldap": 389, "ldaps": 636}


def _directory(ctx: _Ctx, value: str) -> DirectorySource:
    if value.lower().startswith("ldif:"):
        return _ldif_source(ctx, value[len("ldif:") :].strip())
    uris: list[str] = []
    base_dn = ""
    base_key: object = None
    for url in value.split():
        if url.lower().startswith("ldif:"):
            ctx.fail(
                "Directory mixes an ldif: file with LDAP URLs",
                "give either LDAP URLs or one ldif:PATH",
            )
        uri, dn = _ldap_url(ctx, url)
        key = _dn_key(dn)
        if base_key is None:
            base_dn, base_key = dn, key
        elif key != base_key:
            ctx.fail(
                f"Directory URLs name different base DNs ({base_dn!r} and {dn!r})",
                "all servers are replicas of one tree: give every URL the same base DN",
            )
        if uri in uris:
            ctx.fail(f"Directory names server {uri} twice", "remove the duplicate")
        uris.append(uri)
    return DirectorySource("ldap", tuple(uris), base_dn, None)


def _ldif_source(ctx: _Ctx, path_text: str) -> DirectorySource:
    if not path_text:
        ctx.fail("Directory ldif: names no file", "write ldif:/path/to/keys.ldif")
    path = _path(ctx, path_text)
    if not path.is_file():
        problem = "is not a file" if path.exists() else "does not exist"
        ctx.fail(
            f"Directory file {_shown_path(path_text, path)} {problem}",
            "create the LDIF file (ldapdkim ldif) or fix the path; relative paths are "
            "taken from the directory ldapdkim is started in",
        )
    return DirectorySource("ldif", (), "", path)


def _ldap_url(ctx: _Ctx, url: str) -> tuple[str, str]:
    """Return (``scheme://host:port``, base DN) for one Directory URL."""
    match = _LDAP_URL.match(url)
    if match is None:
        ctx.fail(f"Directory {url!r} is not an LDAP URL", _DIRECTORY_FORMS)
    scheme, hostport, path, query = match.groups()
    scheme = scheme.lower()
    if query:
        ctx.fail(
            f"Directory URL {url!r} has attributes, scope or filter ({query!r})",
            "ldapdkim takes only the base DN from the URL: remove everything from '?' "
            "(OpenDKIM KeyTable/SigningTable URLs do not carry over)",
        )
    base_dn = urllib.parse.unquote(path or "")
    if not base_dn:
        ctx.fail(
            f"Directory URL {url!r} has no base DN",
            f"append the DN under which the DKIM entries live, "
            f"e.g. {scheme}://{hostport}/ou=dkim,dc=example,dc=com",
        )
    if "$" in base_dn:
        ctx.fail(
            f"Directory base DN {base_dn!r} holds an OpenDKIM placeholder ($d/$D)",
            "give the fixed DN under which the DKIM entries live, e.g. ou=dkim,dc=example,dc=com",
        )
    if not ldap.dn.is_dn(base_dn):
        ctx.fail(
            f"Directory base DN {base_dn!r} is not a valid DN",
            "write it like ou=dkim,dc=example,dc=com, with %20 for blanks",
        )
    if scheme == "ldapi":
        socket_path = urllib.parse.unquote(hostport)
        if socket_path and not socket_path.startswith("/"):
            ctx.fail(
                f"Directory URL {url!r} has a relative socket path {socket_path!r}",
                "write the absolute path with / as %2F, e.g. ldapi://%2Frun%2Fslapd%2Fldapi/"
                + path,
            )
        return "ldapi://" + urllib.parse.quote(socket_path, safe=""), base_dn
    return f"{scheme}://{_host_port(ctx, url, scheme, hostport)}", base_dn


def _host_port(ctx: _Ctx, url: str, scheme: str, hostport: str) -> str:
    ipv6 = re.fullmatch(r"\[([^\]]+)\](?::(\d*))?", hostport)
    if ipv6:
        host, port = ipv6.group(1), ipv6.group(2)
    elif hostport.count(":") > 1:
        ctx.fail(
            f"Directory URL {url!r} has an IPv6 address without brackets",
            f"write {scheme}://[2001:db8::1]:PORT/BASE-DN",
        )
    else:
        host, _, port = hostport.partition(":")
    if not host:
        ctx.fail(
            f"Directory URL {url!r} names no server",
            f"write {scheme}://HOST/BASE-DN; for the local socket use ldapi://",
        )
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            host = normalize_host_name(host)
        except InvalidDomain:
            ctx.fail(f"Directory URL {url!r} has a bad host {host!r}", _DIRECTORY_FORMS)
    else:
        if address.version == 4 and ipv6:
            ctx.fail(
                f"Directory URL {url!r} puts an IPv4 address in brackets",
                f"write {scheme}://{address}/BASE-DN",
            )
        host = f"[{address}]" if ipv6 else str(address)
    if port is None or port == "":
        port = str(_DEFAULT_PORTS[scheme])
    if not re.fullmatch(_PORT, port) or int(port) > 65535:
        ctx.fail(f"Directory URL {url!r} has a bad port {port!r}", "use a port from 1 to 65535")
    return f"{host}:{int(port)}"


def _dn_key(dn: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    """A DN in a form where equal DNs (as dc/ou/cn compare: case-insensitively) are equal."""
    return tuple(
        tuple((attr.lower(), val.lower()) for attr, val, _ in rdn) for rdn in ldap.dn.str2dn(dn)
    )


# --------------------------------------------------------------------------
# The keyword table: the single source of truth for names, types, defaults, docs.


@dataclass(frozen=True)
class _Keyword:
    name: str
    field: str
    convert: Callable[[_Ctx, str], Any]
    default: str | None
    """Default as configuration text, converted like a value from the file."""
    doc: str
    shown: str | None = None
    """How the default reads in the reference, when ``default`` is None."""
    empty: Any = None
    """The field value when ``default`` is None."""

    @property
    def action(self) -> str | None:
        """The ``on_actions`` key for an On-* keyword, else None."""
        lower = self.name.lower()
        return lower.removeprefix("on-") if lower.startswith("on-") else None

    @property
    def default_text(self) -> str:
        if self.default is not None:
            return self.default
        return self.shown or "(none)"


def _on(name: str, default: str, doc: str) -> _Keyword:
    return _Keyword(name, "on_actions", _action, default, doc)


_KEYWORDS: tuple[_Keyword, ...] = (
    # Operation
    _Keyword("Mode", "mode", _mode, "sv", "s to sign, v to verify, sv for both"),
    _Keyword("Socket", "socket", _socket, "inet:8891@127.0.0.1",
             "where the MTA connects: inet:PORT@HOST, inet6:PORT@HOST or local:/PATH"),
    # The directory
    _Keyword("Directory", "directory", _directory, None,
             "LDAP URLs with the base DN as path (failover order), or ldif:PATH",
             shown="(none)"),
    _Keyword("LDAPBindUser", "ldap_bind_user", _text, None,
             "DN to bind as with a simple bind", shown="(anonymous)"),
    _Keyword("LDAPBindPassword", "ldap_bind_password", _password, None,
             "bind password; prefer LDAPBindPasswordFile, which keeps it out of this file"),
    _Keyword("LDAPBindPasswordFile", "ldap_bind_password", _password_file, None,
             "file whose first line is the bind password, read before dropping root"),
    _Keyword("LDAPAdminBindUser", "ldap_admin_bind_user", _text, None,
             "DN that 'ldapdkim rotate' binds as to write keys (simple bind); the milter "
             "never uses it", shown="(LDAPBindUser)"),
    _Keyword("LDAPAdminBindPasswordFile", "ldap_admin_bind_password", _password_file, None,
             "file whose first line is the password of LDAPAdminBindUser"),
    _Keyword("LDAPAuthMechanism", "ldap_auth_mechanism", _sasl_mechanism, None,
             "SIMPLE, EXTERNAL (TLS client certificate or ldapi://) or another SASL mechanism",
             shown="SIMPLE"),
    _Keyword("LDAPAuthName", "ldap_auth_user", _text, None,
             "SASL user to authenticate as (authcid), e.g. for DIGEST-MD5"),
    _Keyword("LDAPAuthUser", "ldap_authz_id", _text, None,
             "SASL identity to act as (authzid), when not the authenticated user"),
    _Keyword("LDAPAuthRealm", "ldap_auth_realm", _text, None, "SASL realm"),
    _Keyword("LDAPUseTLS", "ldap_use_tls", _boolean, "no",
             "issue StartTLS on ldap:// connections"),
    _Keyword("LDAPTLSCACertFile", "ldap_tls_ca_cert_file", _ca_file, None,
             "PEM file of the CAs trusted for the LDAP server certificate",
             shown="(libldap's ldap.conf)"),
    _Keyword("LDAPTimeout", "ldap_timeout", _positive_seconds, "5",
             "seconds before an LDAP connect or search is abandoned"),
    _Keyword("LDAPCacheTTL", "ldap_cache_ttl", _seconds, "300",
             "how long a directory answer is reused (0 disables the cache)"),
    _Keyword("LDAPNegativeCacheTTL", "ldap_negative_cache_ttl", _seconds, "60",
             "how long a 'no such domain' answer is reused"),
    _Keyword("DirectoryMaxStale", "directory_max_stale", _seconds, "86400",
             "how long the last good answer is served while the directory is unreachable "
             "(0 disables)"),
    _Keyword("DirectorySync", "directory_sync", _directory_sync, "auto",
             "keep an in-memory replica current by RFC 4533 content sync: auto (when the "
             "server offers it, else cached lookups), yes (sync only) or no (lookups only)"),
    # Signing
    _Keyword("Canonicalization", "canonicalization", _canonicalization, "simple/simple",
             "header/body canonicalization when signing, each simple or relaxed"),
    _Keyword("SignHeaders", "sign_headers", _sign_headers, None,
             "header fields to sign (From is always added)", shown="(RFC 6376 §5.4 set)"),
    _Keyword("OversignHeaders", "oversign_headers", _header_names, "from",
             "header fields signed once more than present, so none can be added"),
    _Keyword("SignatureTTL", "signature_ttl", _whole_seconds, "0",
             "signature lifetime for x= in seconds (0: no x= tag)"),
    _Keyword("MinimumKeyBits", "minimum_key_bits", _key_bits, "1024",
             "smallest RSA key accepted when verifying (512 at least)"),
    _Keyword("SubDomains", "subdomains", _boolean, "no",
             "also sign for subdomains of the signing domains"),
    _Keyword("Domain", "domain", _domains, None,
             "single-key mode: domains to sign (list, csl: or file:)", empty=()),
    _Keyword("Selector", "selector", _selector, None, "single-key mode: selector of KeyFile"),
    _Keyword("KeyFile", "key_file", _key_file, None, "single-key mode: PEM private key file"),
    # Who is who
    _Keyword("InternalHosts", "internal_hosts", _host_list, "127.0.0.1, ::1",
             "clients whose mail is signed, not verified (replaces the default)"),
    _Keyword("ExternalIgnoreList", "external_ignore_list", _host_list, None,
             "outside clients allowed to send as signing domains without a log line",
             empty=HostList()),
    _Keyword("PeerList", "peer_list", _host_list, None,
             "clients whose mail is passed without any DKIM processing", empty=HostList()),
    _Keyword("MacroList", "macro_list", _macros, "{auth_authen}, {daemon_name}=ORIGINATING",
             "MTA macros that mark mail to sign: NAME or NAME=VALUE1|VALUE2"),
    # Verifying
    _Keyword("AuthservID", "authserv_id", _authserv_id, None,
             "authserv-id in Authentication-Results", shown="(host name)"),
    _Keyword("Nameservers", "nameservers", _nameservers, None,
             "DNS servers for key lookups: IP, IP:PORT or [IPv6]:PORT",
             shown="(system resolver)", empty=()),
    _Keyword("DNSTimeout", "dns_timeout", _positive_seconds, "5",
             "seconds before a key lookup counts as a temporary DNS error (temperror)"),
    _Keyword("MaximumSignaturesToVerify", "maximum_signatures_to_verify", _signature_count,
             "3", "how many signatures of one message are verified, from the top"),
    # Key rotation (ldapdkim rotate)
    _Keyword("RotationOverlap", "rotation_overlap", _seconds, "2d",
             "how long a new key's DNS record must have been seen before rotate --advance "
             "activates the key"),
    _Keyword("RotationRetireAfter", "rotation_retire_after", _seconds, "7d",
             "how long a retired key stays published before rotate --advance --prune "
             "deletes it"),
    # Process and logging
    _Keyword("UserID", "user_id", _user_id, None, "USER[:GROUP] to switch to after start",
             shown="(unchanged)"),
    _Keyword("PidFile", "pid_file", _path, None, "file to write the process ID to"),
    _Keyword("StateDirectory", "state_directory", _path, "/var/lib/ldapdkim",
             "where the milter keeps its directory replica and status.json; the replica "
             "holds the private keys (files mode 0600; keep the directory 0700, owned by "
             "UserID)"),
    _Keyword("UMask", "umask", _umask, None, "octal file creation mask (socket, PidFile)",
             shown="(inherited)"),
    _Keyword("Syslog", "syslog", _boolean, "yes", "log to syslog (else to standard error)"),
    _Keyword("SyslogFacility", "syslog_facility", _facility, "mail", "syslog facility"),
    _Keyword("SyslogSuccess", "syslog_success", _boolean, "no",
             "also log each successful signature and verification"),
    _Keyword("LogWhy", "log_why", _boolean, "no",
             "log why each message was signed, verified or skipped"),
    _Keyword("SoftwareHeader", "software_header", _boolean, "no",
             "add a DKIM-Filter header field naming ldapdkim"),
    # Actions
    _on("On-Default", "accept",
        "action for any outcome; when given, the default of every On-* not given"),
    _on("On-BadSignature", "accept", "action when a signature fails to verify"),
    _on("On-DNSError", "tempfail", "action when a key lookup fails temporarily"),
    _on("On-InternalError", "tempfail", "action when ldapdkim hits an internal error"),
    _on("On-KeyNotFound", "accept", "action when a signature's key is not in the DNS"),
    _on("On-NoSignature", "accept", "action for an unsigned message"),
    _on("On-SignatureError", "reject", "action when a message cannot be signed"),
    _on("On-DirectoryError", "tempfail",
        "action when the directory cannot be read and no cached answer is fresh enough"),
)  # fmt: skip

_BY_NAME = {kw.name.lower(): kw for kw in _KEYWORDS}

_DAEMON_HINT = (
    "ldapdkim runs in the foreground; let the service manager start and restart it "
    "(systemd: Restart=on-failure) and remove the line"
)
_TABLE_HINT = "keys live in the directory; see 'ldapdkim migrate' / README"

# OpenDKIM keywords that ldapdkim deliberately does not have, with what to do instead.
_UNSUPPORTED = {
    kw.lower(): (kw, hint)
    for kw, hint in (
        ("KeyTable", _TABLE_HINT),
        ("SigningTable", _TABLE_HINT),
        ("Include", "ldapdkim reads one file; copy the settings into it"),
        ("Background", _DAEMON_HINT),
        ("AutoRestart", _DAEMON_HINT),
        ("AutoRestartCount", _DAEMON_HINT),
        ("AutoRestartRate", _DAEMON_HINT),
        ("BaseDirectory", "write absolute paths, or start ldapdkim in that directory "
                          "(systemd: WorkingDirectory=)"),
        ("TemporaryDirectory", "ldapdkim keeps messages in memory; remove the line"),
        ("ResolverConfiguration", "ldapdkim uses the system resolver or Nameservers; "
                                  "remove the line"),
        ("TrustAnchorFile", "validate DNSSEC in a local resolver and point Nameservers at it; "
                            "remove the line"),
    )
}  # fmt: skip


def _default(keyword: _Keyword) -> Any:
    """The default value of a keyword's field, converted from the table's text."""
    if keyword.default is None:
        return keyword.empty
    return keyword.convert(_Ctx("<default>", 0, keyword.name), keyword.default)


# Settings field -> default; where two keywords share a field, the first one's default.
_DEFAULTS: dict[str, Any] = {}
for _keyword in _KEYWORDS:
    if not _keyword.action:
        _DEFAULTS.setdefault(_keyword.field, _default(_keyword))


def _default_actions() -> Mapping[str, Action]:
    return types.MappingProxyType(
        {
            str(kw.action): _action(_Ctx("<default>", 0, kw.name), str(kw.default))
            for kw in _KEYWORDS
            if kw.action
        }
    )


def keyword_reference() -> list[tuple[str, str, str]]:
    """Every keyword as (name, default as text, one-line doc), in documentation order."""
    return [(kw.name, kw.default_text, kw.doc) for kw in _KEYWORDS]


@dataclass(frozen=True)
class Settings:
    """The whole validated configuration.  Build it with :func:`load` or :func:`parse`.

    Fields hold the defaults of the keyword table; ``Settings()`` itself skips
    the cross-checks that :func:`parse` makes.
    """

    source: str = "<defaults>"
    mode: str = _DEFAULTS["mode"]
    socket: str = _DEFAULTS["socket"]
    directory: DirectorySource | None = _DEFAULTS["directory"]
    ldap_bind_user: str | None = _DEFAULTS["ldap_bind_user"]
    ldap_bind_password: Secret | None = _DEFAULTS["ldap_bind_password"]
    ldap_admin_bind_user: str | None = _DEFAULTS["ldap_admin_bind_user"]
    ldap_admin_bind_password: Secret | None = _DEFAULTS["ldap_admin_bind_password"]
    ldap_auth_mechanism: str | None = _DEFAULTS["ldap_auth_mechanism"]
    ldap_auth_user: str | None = _DEFAULTS["ldap_auth_user"]
    ldap_authz_id: str | None = _DEFAULTS["ldap_authz_id"]
    ldap_auth_realm: str | None = _DEFAULTS["ldap_auth_realm"]
    ldap_use_tls: bool = _DEFAULTS["ldap_use_tls"]
    ldap_tls_ca_cert_file: Path | None = _DEFAULTS["ldap_tls_ca_cert_file"]
    ldap_timeout: float = _DEFAULTS["ldap_timeout"]
    ldap_cache_ttl: float = _DEFAULTS["ldap_cache_ttl"]
    ldap_negative_cache_ttl: float = _DEFAULTS["ldap_negative_cache_ttl"]
    directory_max_stale: float = _DEFAULTS["directory_max_stale"]
    directory_sync: str = _DEFAULTS["directory_sync"]
    canonicalization: Canonicalization = _DEFAULTS["canonicalization"]
    sign_headers: tuple[str, ...] | None = _DEFAULTS["sign_headers"]
    oversign_headers: tuple[str, ...] = _DEFAULTS["oversign_headers"]
    signature_ttl: int = _DEFAULTS["signature_ttl"]
    minimum_key_bits: int = _DEFAULTS["minimum_key_bits"]
    subdomains: bool = _DEFAULTS["subdomains"]
    domain: tuple[str, ...] = _DEFAULTS["domain"]
    selector: str | None = _DEFAULTS["selector"]
    key_file: Path | None = _DEFAULTS["key_file"]
    internal_hosts: HostList = _DEFAULTS["internal_hosts"]
    external_ignore_list: HostList = _DEFAULTS["external_ignore_list"]
    peer_list: HostList = _DEFAULTS["peer_list"]
    macro_list: tuple[tuple[str, tuple[str, ...]], ...] = _DEFAULTS["macro_list"]
    authserv_id: str | None = _DEFAULTS["authserv_id"]
    nameservers: tuple[tuple[str, int], ...] = _DEFAULTS["nameservers"]
    dns_timeout: float = _DEFAULTS["dns_timeout"]
    maximum_signatures_to_verify: int = _DEFAULTS["maximum_signatures_to_verify"]
    rotation_overlap: float = _DEFAULTS["rotation_overlap"]
    rotation_retire_after: float = _DEFAULTS["rotation_retire_after"]
    user_id: str | None = _DEFAULTS["user_id"]
    pid_file: Path | None = _DEFAULTS["pid_file"]
    state_directory: Path = _DEFAULTS["state_directory"]
    umask: int | None = _DEFAULTS["umask"]
    syslog: bool = _DEFAULTS["syslog"]
    syslog_facility: str = _DEFAULTS["syslog_facility"]
    syslog_success: bool = _DEFAULTS["syslog_success"]
    log_why: bool = _DEFAULTS["log_why"]
    software_header: bool = _DEFAULTS["software_header"]
    on_actions: Mapping[str, Action] = field(default_factory=_default_actions, hash=False)

    @property
    def ldap(self) -> LdapSettings | None:
        """How the milter connects to the directory; None unless ``Directory`` is LDAP."""
        source = self.directory
        if source is None or source.kind != "ldap":
            return None
        return LdapSettings(
            uris=source.uris,
            base_dn=source.base_dn,
            bind_dn=self.ldap_bind_user,
            password=self.ldap_bind_password,
            sasl_mechanism=self.ldap_auth_mechanism,
            sasl_authcid=self.ldap_auth_user,
            sasl_authzid=self.ldap_authz_id,
            sasl_realm=self.ldap_auth_realm,
            start_tls=self.ldap_use_tls,
            ca_cert_file=self.ldap_tls_ca_cert_file,
            timeout=self.ldap_timeout,
        )

    @property
    def ldap_admin(self) -> LdapSettings | None:
        """How ``ldapdkim rotate`` connects to write: as LDAPAdminBindUser when it is set."""
        ldap = self.ldap
        if ldap is None or self.ldap_admin_bind_user is None:
            return ldap
        return ldap.binding_as(
            self.ldap_admin_bind_user, self.ldap_admin_bind_password, ADMIN_BIND_KEYWORDS
        )

    @property
    def signs(self) -> bool:
        return "s" in self.mode

    @property
    def verifies(self) -> bool:
        return "v" in self.mode

    def action_for(self, name: str) -> Action:
        """The action for an outcome: ``"badsignature"``, ``"On-BadSignature"``, any case.

        Raises:
            ValueError: an unknown outcome name, listing the known ones.
        """
        key = name.strip().lower().removeprefix("on-")
        try:
            return self.on_actions[key]
        except KeyError:
            known = ", ".join(sorted(self.on_actions))
            raise ValueError(f"unknown outcome {name!r}; use one of {known}") from None


# --------------------------------------------------------------------------
# Reading


def load(path: str | os.PathLike[str]) -> Settings:
    """Read and validate the configuration file at ``path``.

    Raises:
        ConfigError: the file cannot be read, or any problem :func:`parse` finds.
    """
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError(
            f"{source}: configuration file not found; check the path, or start from "
            "the commented sample conf/ldapdkim.conf"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{source}: is a directory; name the configuration file") from None
    except PermissionError:
        raise ConfigError(
            f"{source}: configuration file cannot be read (permission denied); "
            "run as a user who may read it, or fix its permissions"
        ) from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{source}: not UTF-8 text ({err.reason}); save it as UTF-8") from err
    except OSError as err:
        raise ConfigError(f"{source}: cannot be read ({err.strerror}); check the path") from err
    return parse(text, source)


def parse(text: str, source: str = "<string>") -> Settings:
    """Validate configuration ``text``; ``source`` names it in error messages.

    Relative paths in values are taken from the current working directory.

    Raises:
        ConfigError: ``source:LINE: what; fix`` for the first problem found.
    """
    given: dict[str, tuple[_Keyword, str, int]] = {}
    for number, name, value in keyword_lines(text):
        keyword = _BY_NAME.get(name.lower())
        if keyword is None:
            _reject_keyword(source, number, name)
        if not value:
            raise ConfigError(
                f"{source}:{number}: {keyword.name} needs a value; write "
                f"'{keyword.name} VALUE' or remove the line (default: {keyword.default_text})"
            )
        given[keyword.name] = (keyword, value, number)

    _check_one_password(source, given)
    values: dict[str, Any] = {}
    actions: dict[str, Action] = {}
    for keyword, value, number in sorted(given.values(), key=lambda item: item[2]):
        converted = keyword.convert(_Ctx(source, number, keyword.name), value)
        if keyword.action:
            actions[keyword.action] = converted
        else:
            values[keyword.field] = converted

    # OpenDKIM applies On-Default first, then the specific On-* keywords.
    final = dict(_default_actions())
    for key in final:
        if key in actions:
            final[key] = actions[key]
        elif "default" in actions:
            final[key] = actions["default"]
    settings = Settings(source=source, on_actions=types.MappingProxyType(final), **values)
    _cross_check(settings, {name: item[2] for name, item in given.items()})
    return settings


def _reject_keyword(source: str, number: int, name: str) -> NoReturn:
    lower = name.lower()
    if lower in _UNSUPPORTED:
        spelled, hint = _UNSUPPORTED[lower]
        raise ConfigError(
            f"{source}:{number}: OpenDKIM keyword {spelled!r} is not supported by ldapdkim; {hint}"
        )
    stem = re.split(r"[=:]", name, maxsplit=1)[0]
    if stem != name and stem.lower() in _BY_NAME:
        spelled = _BY_NAME[stem.lower()].name
        raise ConfigError(
            f"{source}:{number}: unknown keyword {name!r}; write '{spelled} VALUE' "
            "(keyword, blank, value)"
        )
    spellings = {kw.name.lower(): kw.name for kw in _KEYWORDS}
    spellings.update({key: spelled for key, (spelled, _) in _UNSUPPORTED.items()})
    close = difflib.get_close_matches(lower, list(spellings), n=1)
    if close:
        raise ConfigError(
            f"{source}:{number}: unknown keyword {name!r}; did you mean {spellings[close[0]]!r}?"
        )
    raise ConfigError(
        f"{source}:{number}: unknown keyword {name!r}; remove the line, or check the spelling "
        "against the keyword list in the README"
    )


def _check_one_password(source: str, given: Mapping[str, tuple[_Keyword, str, int]]) -> None:
    """LDAPBindPassword and LDAPBindPasswordFile set one field: refuse both."""
    if "LDAPBindPassword" in given and "LDAPBindPasswordFile" in given:
        (first, first_line), (second, second_line) = sorted(
            ((name, given[name][2]) for name in ("LDAPBindPassword", "LDAPBindPasswordFile")),
            key=lambda item: item[1],
        )
        raise ConfigError(
            f"{source}:{second_line}: {second} and {first} (line {first_line}) are both given; "
            "keep one (LDAPBindPasswordFile keeps the password out of the configuration file)"
        )


def _cross_check(settings: Settings, lines: Mapping[str, int]) -> None:
    """Checks that involve more than one keyword; ``lines`` maps each given keyword to its line."""
    source = settings.source

    def at(name: str) -> str:
        return f"{source}:{lines[name]}" if name in lines else source

    single = [name for name in ("Domain", "Selector", "KeyFile") if name in lines]
    if single and "Directory" in lines:
        first = min(single, key=lambda name: lines[name])
        raise ConfigError(
            f"{at(first)}: {first} cannot be combined with Directory (line {lines['Directory']}); "
            "use one or the other: Directory for keys in LDAP or an LDIF file, or "
            "Domain, Selector and KeyFile for a single key file"
        )
    if single and len(single) < 3:
        missing = [name for name in ("Domain", "Selector", "KeyFile") if name not in lines]
        first = min(single, key=lambda name: lines[name])
        raise ConfigError(
            f"{at(first)}: {' and '.join(single)} given without {' and '.join(missing)}; "
            "single-key signing needs Domain, Selector and KeyFile together, "
            "or use Directory instead"
        )
    if settings.signs and settings.directory is None and not single:
        said = f"Mode {settings.mode}" if "Mode" in lines else f"Mode is {settings.mode} by default"
        raise ConfigError(
            f"{at('Mode')}: {said}, which signs, but there are no keys "
            "(neither Directory nor Domain, Selector and KeyFile); add Directory "
            "(ldap://HOST/BASE-DN or ldif:PATH) or Domain, Selector and KeyFile, "
            "or set 'Mode v' to verify only"
        )
    if (settings.ldap_admin_bind_user is None) != (settings.ldap_admin_bind_password is None):
        names = ["LDAPAdminBindUser", "LDAPAdminBindPasswordFile"]
        given, absent = names if settings.ldap_admin_bind_user is not None else names[::-1]
        raise ConfigError(
            f"{at(given)}: {given} is given without {absent}; 'ldapdkim rotate' binds with "
            "both (a simple bind), so add the other, or remove both to write as LDAPBindUser"
        )
    if settings.directory is not None and settings.directory.kind == "ldif":
        return  # the LDAP bind keywords do not apply to a file
    if settings.ldap_auth_mechanism is None:
        password = "LDAPBindPasswordFile" if "LDAPBindPasswordFile" in lines else "LDAPBindPassword"
        if settings.ldap_bind_user is not None and settings.ldap_bind_password is None:
            raise ConfigError(
                f"{at('LDAPBindUser')}: LDAPBindUser is given without a password; add "
                "LDAPBindPasswordFile (or LDAPBindPassword), or set LDAPAuthMechanism EXTERNAL "
                "to bind with a TLS client certificate or over ldapi://"
            )
        if settings.ldap_bind_password is not None and settings.ldap_bind_user is None:
            raise ConfigError(
                f"{at(password)}: {password} is given without LDAPBindUser; add LDAPBindUser "
                "with the DN to bind as, or remove the password to bind anonymously"
            )
