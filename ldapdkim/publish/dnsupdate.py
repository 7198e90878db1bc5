"""Send DKIM key records to an authoritative DNS server as signed dynamic updates.

RFC 2136 UPDATE messages, signed with TSIG (RFC 8945), go over TCP through
dnspython.  Each published name's TXT RRset is replaced (delete, then add, in
one message, so the server applies both or neither), and each withdrawn
(revoked) name's TXT RRset is deleted.  Names are grouped by zone, at most
:data:`NAMES_PER_MESSAGE` to a message.

Which zone a name is in: with an explicit zone, that zone (checked with one
SOA query); otherwise the server is asked for the SOA of ``_domainkey.DOMAIN``
and the owner of the SOA in its authoritative answer is the zone, as
``nsupdate`` does (RFC 2136 §4).  Every name gets an :class:`Outcome` with the
server's RCODE (RFC 1035 §4.1.1, RFC 6895) and, for TSIG failures, the TSIG
error (BADKEY, BADSIG, BADTIME).

The TSIG key is read from a key file in BIND's format, as ``tsig-keygen``
writes it.  The secret is never shown in a message or ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import ipaddress
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.tsig
import dns.update

from ldapdkim.errors import ConfigError, DnsUpdateError
from ldapdkim.publish.dnsexport import (
    Publication,
    Record,
    Withdrawal,
    absolute_name,
    in_zone,
    split_strings,
)

NAMES_PER_MESSAGE = 50
"""Names per UPDATE message: 50 RSA-4096 records stay well under TCP's 64 KB."""

TSIG_ALGORITHMS = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-md5": dns.tsig.HMAC_MD5,
}
"""TSIG algorithms as BIND's key files name them (RFC 8945 §6)."""

_KEY_FILE_FORM = 'key "NAME" { algorithm hmac-sha256; secret "BASE64"; };'


# -- the server ------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """Where updates go: a host name or IP address and a port."""

    host: str
    port: int = 53

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_server(text: str) -> Server:
    """``HOST``, ``HOST:PORT``, ``IPv6`` or ``[IPv6]:PORT``; the port defaults to 53.

    >>> parse_server("192.0.2.53:5353")
    Server(host='192.0.2.53', port=5353)
    >>> str(parse_server("[2001:db8::53]"))
    '[2001:db8::53]:53'

    Raises:
        ValueError: not a host, or a bad port; the message shows the forms.
    """
    forms = "use HOST, HOST:PORT, IPv6 or [IPv6]:PORT, e.g. ns1.example.com:53"
    host, port = text.strip(), "53"
    bracketed = re.fullmatch(r"\[([^\]]+)\](?::([^:]*))?", host)
    if bracketed:
        host, port = bracketed.group(1), bracketed.group(2)
        port = "53" if port is None else port
    elif host.count(":") == 1:
        host, port = host.split(":")
    if not re.fullmatch(r"\d{1,5}", port) or not 0 < int(port) < 65536:
        raise ValueError(f"server {text!r} has a bad port; {forms}")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?\.?", host):
            raise ValueError(f"server {text!r} is not a host name or IP address; {forms}") from None
        return Server(host.rstrip("."), int(port))
    return Server(str(address), int(port))


def parse_zone(text: str) -> str:
    """A zone name, absolute and lowercase; underscores are allowed (``_domainkey`` zones).

    >>> parse_zone("_domainkey.Example.COM")
    '_domainkey.example.com.'

    Raises:
        ValueError: not a DNS name.
    """
    label = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
    if len(text) > 254 or not re.fullmatch(rf"({label}\.)*{label}\.?", text):
        raise ValueError(f"{text!r} is not a DNS name such as example.com")
    return absolute_name(text)


# -- the TSIG key ----------------------------------------------------------------


@dataclass(frozen=True)
class TsigKey:
    """A TSIG key: its name, BIND's algorithm name and the secret (kept out of ``repr``)."""

    name: str
    algorithm: str
    secret: bytes = field(repr=False)
    source: str = ""
    """The file it came from, for messages."""

    @property
    def secret_text(self) -> str:
        """The secret in base64, as in the key file: only for log redaction."""
        return base64.b64encode(self.secret).decode("ascii")

    def dnspython_key(self) -> dns.tsig.Key:
        # Debian 12's dnspython (2.3) has no type hints here; later ones do.
        key = dns.tsig.Key(  # type: ignore[no-untyped-call,unused-ignore]
            self.name, self.secret, TSIG_ALGORITHMS[self.algorithm]
        )
        return key


_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\f\v]+)
  | (?P<newline>\n)
  | (?P<comment>\#[^\n]*|//[^\n]*|/\*.*?\*/)
  | (?P<string>"[^"\n]*")
  | (?P<punct>[{};])
  | (?P<word>(?:[^\s{};"#/]|/(?![/*]))+)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    line: int


def _tokens(text: str, where: str) -> list[_Token]:
    tokens: list[_Token] = []
    line, pos = 1, 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            # Never quote the text: it may be part of the secret.
            raise ConfigError(
                f"{where}:{line}: unexpected character in TSIG key file; "
                f"write it as {_KEY_FILE_FORM}"
            )
        kind = match.lastgroup or ""
        if kind in ("string", "punct", "word"):
            tokens.append(_Token(kind, match.group(), line))
        line += match.group().count("\n")
        pos = match.end()
    return tokens


def parse_tsig_key(text: str, where: str) -> TsigKey:
    """The one key in ``text``, a key file in BIND's format (``tsig-keygen`` output).

    >>> key = parse_tsig_key('key "upd" { algorithm hmac-sha256; secret "c2VjcmV0"; };', "k")
    >>> key
    TsigKey(name='upd', algorithm='hmac-sha256', source='k')

    Raises:
        ConfigError: ``where:LINE: what; how to fix``, never quoting the secret.
    """
    tokens = _tokens(text, where)
    keys: list[TsigKey] = []
    pos = 0

    def fail(token: _Token | None, what: str) -> ConfigError:
        line = token.line if token else (tokens[-1].line if tokens else 1)
        return ConfigError(f"{where}:{line}: {what}; write it as {_KEY_FILE_FORM}")

    def take(kind: str, text: str | None = None, what: str = "") -> _Token:
        nonlocal pos
        token = tokens[pos] if pos < len(tokens) else None
        if token is None or token.kind != kind or (text is not None and token.text != text):
            raise fail(token, what or f"expected {text or kind}")
        pos += 1
        return token

    while pos < len(tokens):
        start = take("word", "key", "expected a 'key' statement")
        name_token = tokens[pos] if pos < len(tokens) else None
        if name_token is None or name_token.kind not in ("word", "string"):
            raise fail(name_token, "expected the key name after 'key'")
        pos += 1
        name = name_token.text.strip('"')
        take("punct", "{", f"expected '{{' after key {name!r}")
        algorithm: str | None = None
        secret: bytes | None = None
        while pos < len(tokens) and tokens[pos].text != "}":
            option = take("word", what=f"expected 'algorithm' or 'secret' in key {name!r}")
            if option.text == "algorithm":
                value = take("word", what=f"expected the algorithm of key {name!r}")
                algorithm = value.text.lower()
                if algorithm not in TSIG_ALGORITHMS:
                    raise ConfigError(
                        f"{where}:{value.line}: key {name!r} has unknown TSIG algorithm "
                        f"{value.text!r}; use one of {', '.join(TSIG_ALGORITHMS)}"
                    )
            elif option.text == "secret":
                value = take("string", what=f"expected the quoted secret of key {name!r}")
                try:
                    secret = base64.b64decode(value.text.strip('"'), validate=True)
                except binascii.Error:
                    raise ConfigError(
                        f"{where}:{value.line}: the secret of key {name!r} is not base64; "
                        "copy it from tsig-keygen's output"
                    ) from None
            else:
                raise fail(option, f"key {name!r} has an option other than algorithm and secret")
            take("punct", ";", f"expected ';' after the {option.text} of key {name!r}")
        take("punct", "}", f"key {name!r} is not closed with '}}'")
        take("punct", ";", f"expected ';' after the closing '}}' of key {name!r}")
        if algorithm is None or not secret:
            missing = "algorithm" if algorithm is None else "secret"
            raise ConfigError(
                f"{where}:{start.line}: key {name!r} has no {missing}; write it as {_KEY_FILE_FORM}"
            )
        try:
            dns.name.from_text(name)
        except dns.exception.DNSException:
            raise ConfigError(
                f"{where}:{name_token.line}: key name {name!r} is not a DNS name"
            ) from None
        keys.append(TsigKey(name, algorithm, secret, where))
    if len(keys) != 1:
        names = ", ".join(repr(k.name) for k in keys)
        raise ConfigError(
            f"{where}: holds {len(keys)} TSIG keys{f' ({names})' if names else ''}; "
            "keep exactly the one that signs the updates"
        )
    return keys[0]


def read_tsig_key_file(path: str | Path) -> TsigKey:
    """The key in the BIND key file at ``path``.

    Raises:
        ConfigError: the file cannot be read or holds no single valid key.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise ConfigError(f"{path}: cannot read the TSIG key file: {reason}") from None
    return parse_tsig_key(text, str(path))


# -- outcomes ---------------------------------------------------------------------


@enum.unique
class Change(enum.Enum):
    """What an update does to one name's TXT RRset."""

    REPLACE = "replace"
    DELETE = "delete"


@dataclass(frozen=True)
class Outcome:
    """What became of one name: ``rcode`` is the server's answer (``NOERROR`` is success)."""

    name: str
    change: Change
    zone: str | None
    rcode: str
    tsig_error: str | None = None
    problem: str = ""
    """Why the name was not updated, in words; empty on success."""
    hint: str = ""
    """How to fix it; empty on success."""

    @property
    def ok(self) -> bool:
        return self.rcode == "NOERROR" and not self.tsig_error and not self.problem

    def __str__(self) -> str:
        """One report line.

        >>> print(Outcome("s1._domainkey.example.com.", Change.REPLACE, "example.com.", "NOERROR"))
        OK     replace s1._domainkey.example.com. in zone example.com.: NOERROR
        """
        status = "OK    " if self.ok else "FAILED"
        where = f" in zone {self.zone}" if self.zone else ""
        what = self.rcode
        if self.tsig_error:
            what += f" (TSIG {self.tsig_error})"
        if self.problem:
            what += f" ({self.problem})"
        return f"{status} {self.change.value} {self.name}{where}: {what}"


# -- sending ----------------------------------------------------------------------

_TSIG_ERRORS: dict[type[dns.tsig.PeerError], str] = {
    dns.tsig.PeerBadKey: "BADKEY",
    dns.tsig.PeerBadSignature: "BADSIG",
    dns.tsig.PeerBadTime: "BADTIME",
    dns.tsig.PeerBadTruncation: "BADTRUNC",
}


class _NoZone(Exception):
    def __init__(self, rcode: str, problem: str) -> None:
        super().__init__(problem)
        self.rcode = rcode
        self.problem = problem


_Item = Record | Withdrawal


class Updater:
    """Makes one server's zones hold a :class:`Publication`.

    Args:
        server: the primary server that accepts updates.
        key: signs every message; the server's answers must be signed with it.
        ttl: TTL of the records added.
        zone: put every name into this zone instead of asking the server.
        timeout: seconds for each query or update.
    """

    def __init__(
        self,
        server: Server,
        key: TsigKey,
        *,
        ttl: int,
        zone: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.server = server
        self.key = key
        self.ttl = ttl
        self.zone = absolute_name(zone) if zone else None
        self.timeout = timeout
        self._address: str | None = None
        self._zones: dict[str, str] = {}

    def apply(self, publication: Publication) -> Iterator[Outcome]:
        """Send the updates; one :class:`Outcome` per name, as each answer arrives.

        Raises:
            DnsUpdateError: the server cannot be reached or does not answer in time.
        """
        by_zone: dict[str, list[_Item]] = {}
        for item in (*publication.withdrawals, *publication.records):
            try:
                zone = self._zone_of(item.name)
            except _NoZone as no_zone:
                yield Outcome(
                    item.name,
                    _change(item),
                    None,
                    no_zone.rcode,
                    problem=no_zone.problem,
                    hint=self._zone_hint(),
                )
                continue
            by_zone.setdefault(zone, []).append(item)
        for zone, items in by_zone.items():
            for start in range(0, len(items), NAMES_PER_MESSAGE):
                yield from self._update(zone, items[start : start + NAMES_PER_MESSAGE])

    # -- zones --

    def _zone_hint(self) -> str:
        if self.zone is not None:
            return f"{self.server} does not serve zone {self.zone}; check --zone and --server"
        return (
            f"{self.server} serves no zone for these names; point --server at the primary "
            "server of their zones, or give --zone"
        )

    def _zone_of(self, name: str) -> str:
        if self.zone is not None:
            if not in_zone(name, self.zone):
                raise _NoZone("NOTZONE", f"not in zone {self.zone}")
            if self.zone not in self._zones:
                self._zones[self.zone] = self._ask_soa(self.zone, exact=True)
            return self._zones[self.zone]
        # Every name of a domain is below _domainkey.DOMAIN: one query per domain.
        parent = dns.name.from_text(name).parent().to_text()
        if parent not in self._zones:
            self._zones[parent] = self._ask_soa(parent, exact=False)
        return self._zones[parent]

    def _ask_soa(self, qname: str, *, exact: bool) -> str:
        """The zone that holds ``qname`` on the server, from the SOA in its answer."""
        query = dns.message.make_query(qname, dns.rdatatype.SOA)
        response = self._exchange(query)
        rcode = dns.rcode.to_text(response.rcode())
        authoritative = bool(response.flags & dns.flags.AA)
        if response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) and authoritative:
            for rrset in (*response.answer, *response.authority):
                if rrset.rdtype == dns.rdatatype.SOA:
                    zone: str = rrset.name.to_text().lower()
                    if not exact or zone == qname:
                        return zone
        if exact:
            raise _NoZone(rcode, f"{qname} is not a zone on {self.server}")
        answered = response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
        detail = ", answer not authoritative" if answered and not authoritative else ""
        raise _NoZone(rcode, f"no zone found by SOA query for {qname}{detail}")

    # -- updates --

    def _update(self, zone: str, items: list[_Item]) -> Iterator[Outcome]:
        update = dns.update.UpdateMessage(zone, keyring=self.key.dnspython_key())
        for item in items:
            update.delete(item.name, dns.rdatatype.TXT)
            if not isinstance(item, Withdrawal):
                strings = [s.encode("ascii") for s in split_strings(item.text)]
                rdata = dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, strings)
                update.add(item.name, self.ttl, rdata)
        tsig_error: str | None = None
        problem = ""
        try:
            response = self._exchange(update)
        except dns.tsig.PeerError as err:
            rcode, tsig_error = "NOTAUTH", _TSIG_ERRORS.get(type(err), "TSIG error")
        except dns.exception.FormError as err:
            rcode, problem = "FORMERR", f"unreadable or unsigned answer: {err}"
        else:
            rcode = dns.rcode.to_text(response.rcode())
        hint = "" if rcode == "NOERROR" and not problem else self._hint(zone, rcode, tsig_error)
        for item in items:
            yield Outcome(item.name, _change(item), zone, rcode, tsig_error, problem, hint)

    def _hint(self, zone: str, rcode: str, tsig_error: str | None) -> str:
        key = f"TSIG key {self.key.name!r}"
        if tsig_error:
            clocks = " and that both clocks agree" if tsig_error == "BADTIME" else ""
            return (
                f"{self.server} does not accept {key} ({tsig_error}); check that "
                f"{self.key.source or 'the key file'} holds the key the server has for updates "
                f"(name, algorithm, secret){clocks}"
            )
        if rcode == "REFUSED":
            return (
                f"{self.server} refuses updates to zone {zone} signed with {key}; allow them "
                "(Knot: an acl with action update; BIND: update-policy or allow-update)"
            )
        if rcode == "NOTAUTH":
            return (
                f"{self.server} is not authoritative for zone {zone}; point --server at "
                "the zone's primary server"
            )
        if rcode == "NOTZONE":
            return f"a name lies outside zone {zone}; check --zone"
        return f"{self.server} answered {rcode}; see its log"

    # -- transport --

    def _exchange(self, message: dns.message.Message) -> dns.message.Message:
        address = self._resolve()
        try:
            return dns.query.tcp(message, address, timeout=self.timeout, port=self.server.port)
        except dns.exception.Timeout:
            raise DnsUpdateError(
                f"{self.server} did not answer within {self.timeout:g} s over TCP; "
                "check --server and that the server is up"
            ) from None
        except OSError as err:
            raise DnsUpdateError(
                f"cannot reach {self.server} over TCP: {err.strerror or err}; "
                "check --server and that the server is up"
            ) from None

    def _resolve(self) -> str:
        if self._address is None:
            try:
                infos = socket.getaddrinfo(
                    self.server.host, self.server.port, type=socket.SOCK_STREAM
                )
            except socket.gaierror as err:
                raise DnsUpdateError(
                    f"cannot resolve the server name {self.server.host!r}: {err.strerror}; "
                    "check --server"
                ) from None
            self._address = str(infos[0][4][0])
        return self._address


def summary(failures: list[Outcome], total: int, server: Server) -> str:
    """One line for the end of a run with failures: how many, and how to fix them."""
    hints = "; ".join(dict.fromkeys(o.hint for o in failures if o.hint))
    return f"{len(failures)} of {total} names not updated on {server}: {hints}"


def _change(item: _Item) -> Change:
    return Change.DELETE if isinstance(item, Withdrawal) else Change.REPLACE
