"""The host sets (InternalHosts, PeerList, ...) built from OpenDKIM data sets.

A :class:`HostList` answers "is this SMTP client in the set?".  Its entries are
IPv4/IPv6 addresses, CIDR networks (``192.0.2.0/24``, ``2001:db8::/32``; host
bits are masked off, as OpenDKIM does), host names (exact, case-insensitive),
``.example.com`` (any name below example.com, not example.com itself) and, from
``refile:``, wildcard patterns.  An entry starting with ``!`` excludes.

Matching rule, as OpenDKIM's (opendkim.c ``dkimf_checkhost``/``dkimf_checkip``):
among address entries the most specific network that holds the client
decides, and a ``!`` entry wins a tie (``192.0.2.1`` beats ``!192.0.2.0/24``);
among name entries the host name itself is looked up first, then each
``.parent`` domain, and at each level a ``!`` entry first.  One declared
difference (docs/reference/opendkim-differences.md): OpenDKIM lets an address
match include a client that a name entry excludes; here an exclusion by
either kind wins.  IPv4-mapped IPv6 addresses
(``::ffff:192.0.2.1``), in entries and in client addresses, are treated as IPv4.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from ldapdkim.config.datasets import DataSetEntry, read_dataset
from ldapdkim.domainname import normalize_host_name
from ldapdkim.errors import InvalidDomain

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_PATTERN = re.compile(r"[a-z0-9_.*-]+\Z")

_ENTRY_FORMS = (
    "use an IP address (192.0.2.1, 2001:db8::1), a network (192.0.2.0/24, 2001:db8::/32), "
    "a host name (mail.example.com) or a domain (.example.com), optionally preceded by ! "
    "to exclude"
)


def _parse_network(text: str) -> IPNetwork:
    """An address or CIDR network, IPv4-mapped IPv6 turned into IPv4."""
    network = ipaddress.ip_network(text, strict=False)
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


@dataclass(frozen=True)
class HostEntry:
    """One entry of a :class:`HostList`; exactly one of the match fields is set."""

    text: str
    negated: bool = False
    network: IPNetwork | None = None
    host: str | None = None
    suffix: str | None = None
    pattern: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, entry: DataSetEntry) -> HostEntry:
        """Parse one data-set entry.

        Raises:
            ValueError: the entry is not one of the accepted forms.
        """
        text = entry.text.strip()
        negated = text.startswith("!")
        body = text[1:] if negated else text
        sign = "!" if negated else ""

        def bad(problem: str, fix: str = _ENTRY_FORMS) -> ValueError:
            return ValueError(f"bad entry {text!r}{entry.where}: {problem}; {fix}")

        if not body:
            raise bad("'!' excludes nothing", "write !ADDRESS, !NETWORK or !HOST")
        if any(c.isspace() for c in body):
            raise bad("one line holds several entries", "put one entry per line")
        if entry.pattern:
            lowered = body.lower()
            if not _PATTERN.match(lowered):
                raise bad(
                    "not a host-name pattern",
                    "use letters, digits, '-', '.', '_' and * for any text, e.g. *.mx.example.com",
                )
            regex = ".*".join(re.escape(part) for part in lowered.split("*"))
            return cls(sign + lowered, negated, pattern=re.compile(regex))
        # OpenDKIM accepts addresses in square brackets: [192.0.2.1], [2001:db8::]/32.
        bracketed = re.fullmatch(r"\[([^\]]*)\](/\d+)?", body)
        if bracketed:
            body = bracketed.group(1) + (bracketed.group(2) or "")
        if "/" in body or ":" in body or re.fullmatch(r"\d[\d.]*", body):
            try:
                network = _parse_network(body)
            except ValueError:
                if re.fullmatch(r"\d+(\.\d+){0,2}(/\d+)?", body):
                    raise bad(
                        "not a complete IPv4 address or network",
                        "write all four parts, e.g. 192.0.2.0/24",
                    ) from None
                raise bad("not an IP address or network") from None
            shown = str(network.network_address) if _is_single(network) else str(network)
            return cls(sign + shown, negated, network=network)
        if "*" in body:
            raise bad("wildcards need a refile:", "put patterns in a file and write refile:PATH")
        if body.startswith("."):
            try:
                domain = normalize_host_name(body[1:])
            except InvalidDomain as err:
                raise bad(str(err)) from None
            return cls(f"{sign}.{domain}", negated, suffix="." + domain)
        try:
            host = normalize_host_name(body)
        except InvalidDomain as err:
            raise bad(str(err)) from None
        return cls(sign + host, negated, host=host)

    def matches_probe(self, probe: str) -> bool:
        """True when this name entry, ignoring its ``!``, is the key OpenDKIM looks up for
        ``probe``: the host name itself, or ``.parent`` for a parent domain."""
        if self.host is not None:
            return probe == self.host
        if self.suffix is not None:
            return probe == self.suffix
        return self.pattern is not None and self.pattern.fullmatch(probe) is not None

    def matches_address(self, address: IPAddress) -> bool:
        """True when this address entry, ignoring its ``!``, holds ``address``."""
        return (
            self.network is not None
            and address.version == self.network.version
            and address in self.network
        )


def _is_single(network: IPNetwork) -> bool:
    return network.prefixlen == network.max_prefixlen


def _client_address(address: str | None) -> IPAddress | None:
    """The client's address as given by the MTA, or None when absent or unparsable."""
    if not address:
        return None
    text = address.strip().strip("[]")
    if text[:5].lower() == "ipv6:":  # sendmail's "IPv6:2001:db8::1"
        text = text[5:]
    text = text.split("%", 1)[0]  # zone index: fe80::1%eth0
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped
    return parsed


def _client_host(hostname: str | None) -> str | None:
    """The client's host name, lowercase; None for "[192.0.2.1]" (no reverse DNS)."""
    if not hostname:
        return None
    text = hostname.strip().rstrip(".").lower()
    if not text or text.startswith("["):
        return None
    return text


REMEMBERED_CLIENTS = 4096
"""Clients whose answer a :class:`HostList` keeps (then it starts afresh)."""


@dataclass(frozen=True, repr=False)
class HostList:
    """A set of SMTP clients: addresses, networks, host names, domains, patterns."""

    items: tuple[HostEntry, ...] = ()

    @classmethod
    def parse(cls, value: str, *, base: Path | None = None) -> HostList:
        """Build a host list from a data-set value (inline, ``csl:``, ``file:``, ``refile:``).

        Raises:
            ValueError: a bad entry or an unreadable file, with the fix in the message.
        """
        items = tuple(
            HostEntry.parse(entry) for entry in read_dataset(value, base=base, patterns=True)
        )
        return cls(items)

    @property
    def entries(self) -> tuple[str, ...]:
        """The entries as normalised text, in the order given."""
        return tuple(item.text for item in self.items)

    def matches(self, address: str | None, hostname: str | None = None) -> bool:
        """True when the client with this address and host name is in the set.

        ``address`` may be IPv4, IPv6, IPv4-mapped IPv6 or in brackets; an
        unparsable or absent one matches no address entry.  ``hostname`` as
        reported by the MTA; ``None`` or ``[192.0.2.1]`` matches no name entry.
        The answers for the last :data:`REMEMBERED_CLIENTS` clients are kept:
        the milter asks for every message.
        """
        answers: dict[tuple[str | None, str | None], bool] | None = self.__dict__.get("_answers")
        if answers is None:
            answers = {}
            object.__setattr__(self, "_answers", answers)  # not a field: equality ignores it
        key = (address, hostname)
        answer = answers.get(key)
        if answer is None:
            answer = self._matches(address, hostname)
            if len(answers) >= REMEMBERED_CLIENTS:
                answers.clear()
            answers[key] = answer
        return answer

    def _matches(self, address: str | None, hostname: str | None) -> bool:
        by_address = self._by_address(_client_address(address))
        by_name = self._by_name(_client_host(hostname))
        if by_address is False or by_name is False:
            return (
                False  # an exclusion of either kind wins (docs/reference/opendkim-differences.md)
            )
        return bool(by_address or by_name)

    def _by_address(self, ip: IPAddress | None) -> bool | None:
        """OpenDKIM's rule: the most specific matching network decides; ``!`` wins a tie.

        None when no address entry matches.
        """
        if ip is None:
            return None
        hits = [e for e in self.items if e.matches_address(ip)]
        if not hits:
            return None
        best = max(e.network.prefixlen for e in hits if e.network is not None)
        return not any(e.negated for e in hits if e.network and e.network.prefixlen == best)

    def _by_name(self, host: str | None) -> bool | None:
        """OpenDKIM's rule: the host itself, then ``.parent`` domains, most specific first;
        at each level ``!`` is asked first.  None when no name entry matches."""
        if host is None:
            return None
        names = [e for e in self.items if e.network is None]
        probes = [host] + [host[i:] for i, c in enumerate(host) if c == "."]
        for probe in probes:
            hits = [e for e in names if e.matches_probe(probe)]
            if hits:
                return not any(e.negated for e in hits)
        return None

    def __bool__(self) -> bool:
        return bool(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"HostList({list(self.entries)!r})"
