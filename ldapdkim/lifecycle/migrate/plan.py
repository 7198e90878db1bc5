"""From the tables' answers to entries: a domain entry per ``d=``, a key entry per selector.

Each signing domain's entry lists the From domains it signs for
(``dkimSignDomainName``) and carries ``dkimSignSubdomains`` TRUE or FALSE,
because in OpenDKIM that follows from the tables domain by domain.  What
ldapdkim cannot express (rules for particular senders, a ``d=`` other than the
From domain or its parent, ...) is reported as a warning, never dropped in
silence.  No message carries key material.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ldap
import ldap.dn

from ldapdkim import keys, schema
from ldapdkim.directory import ldifout
from ldapdkim.directory.ldifout import Record
from ldapdkim.errors import (
    ConfigError,
)
from ldapdkim.lifecycle.migrate.tables import KeyRow, Match, Row, Scope, Tables, scope_of
from ldapdkim.model import Algorithm, PrivateKey

_PROBE = "ldapdkim-probe"
"""Local part and subdomain label used to ask the tables about 'any sender'."""


@dataclass(frozen=True)
class Migration:
    """The LDIF records of a migration and what the administrator must be told."""

    records: tuple[Record, ...]
    warnings: tuple[str, ...]
    """Behaviour that changes or is not carried over; each says what to do."""
    notes: tuple[str, ...]
    """Things to do by hand that keep behaviour (keywords for ldapdkim.conf)."""
    domains: int
    keys: int


def check_base(base: str) -> None:
    """Raise :class:`ConfigError` unless ``base`` is a DN that entries can go beneath."""
    if not base or not ldap.dn.is_dn(base):
        raise ConfigError(
            f"base DN {base!r} is not a valid DN; write it like ou=domains,dc=example,dc=com"
        )


@dataclass
class _Key:
    selector: str
    private: PrivateKey = field(repr=False)
    where: str


@dataclass
class Entry:
    domain: str
    names: dict[str, bool] = field(default_factory=dict)
    """From domain -> whether its subdomains are signed."""
    keys: dict[str, _Key] = field(default_factory=dict)
    key_sets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    signers: dict[str, str | None] = field(default_factory=dict)


class Report:
    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.notes: list[str] = []

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


class KeyLoader:
    """Reads each key once; ``%`` in a key path is the sender's domain, as in OpenDKIM."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._cache: dict[tuple[str, str], PrivateKey] = {}

    def load(self, row: KeyRow, domain: str) -> PrivateKey:
        text = row.key
        if row.percent_in_path and text.startswith("/"):
            text = text.replace("%", domain)
        cached = self._cache.get((row.where, text))
        if cached is not None:
            return cached
        if text.startswith(("/", "./", "../")):
            path = Path(text) if text.startswith("/") else self.base / text
            try:
                data = path.read_bytes()
            except OSError as err:
                raise ConfigError(
                    f"{row.where}: key file {path} of {row.name!r} cannot be read "
                    f"({err.strerror}); fix the path, or run migrate as root or as the user "
                    "opendkim runs as"
                ) from None
            key = keys.load_private_key(data, where=f"{row.where}: key file {path}")
        else:
            key = keys.load_private_key(text.encode(), where=f"{row.where}: key of {row.name!r}")
        self._cache[(row.where, text)] = key
        return key


def _describe(matches: Sequence[Match]) -> str:
    return ", ".join(f"d={m.domain} s={m.key.selector}" for m in matches) or "no key"


def plan_entries(tables: Tables, loader: KeyLoader, report: Report) -> dict[str, Entry]:
    """Ask the tables about every domain they name; group the answers by d=."""
    scoped: list[tuple[Row, Scope]] = []
    unmigrated: set[str] = set()
    for row in tables.signing:
        scope = scope_of(row, tables.patterns)
        if isinstance(scope, str):
            report.warn(f"{row.where}: {scope}; not migrated")
            unmigrated.add(row.where)
        else:
            scoped.append((row, scope))
            if tables.patterns and scope.itself and scope.subdomains:
                report.warn(
                    f"{row.where}: {row.key!r} also matched domains that merely end in "
                    f"{scope.domain} (such as x{scope.domain}); ldapdkim signs {scope.domain} "
                    "and its subdomains only"
                )
    users = {scope.user for _, scope in scoped if scope.user}
    probe = _PROBE
    while probe in users:
        probe += "-x"
    entries: dict[str, Entry] = {}
    for domain in dict.fromkeys(scope.domain for _, scope in scoped):
        subdomain = f"{_PROBE}.{domain}"
        own = tables.lookup(probe, domain)
        # A catch-all row also answers for subdomains; it is reported, not migrated.
        sub = [m for m in tables.lookup(probe, subdomain) if m.rule.where not in unmigrated]
        per_user = [(row, s) for row, s in scoped if s.domain == domain and s.user is not None]
        for row, scope in per_user:
            user = scope.user.replace("*", "x") if scope.user else probe
            theirs = tables.lookup(user, domain if scope.itself else subdomain, percent=domain)
            if not own and not sub and theirs:
                report.warn(
                    f"{row.where}: {row.key!r} signs particular senders only; ldapdkim signs "
                    f"per domain, so all mail from {domain} is now signed ({_describe(theirs)})"
                )
                own = theirs
            elif [m.key.name for m in theirs] != [m.key.name for m in (own or sub)]:
                report.warn(
                    f"{row.where}: {row.key!r} gave particular senders of {domain} their own "
                    f"signature ({_describe(theirs)}); ldapdkim signs per domain, so they are "
                    f"signed like the rest of {domain} ({_describe(own or sub)})"
                )
        if not own and not sub:
            continue
        if not own:
            report.warn(
                f"OpenDKIM signed only subdomains of {domain}; ldapdkim signs {domain} itself "
                "as well, with the same key"
            )
            own = [
                m
                for m in tables.lookup(probe, subdomain, percent=domain)
                if m.rule.where not in unmigrated
            ]
        elif sub and [m.key.name for m in sub] != [m.key.name for m in own]:
            report.warn(
                f"mail from subdomains of {domain} was signed with {_describe(sub)}; "
                f"ldapdkim signs it with the keys of {domain} ({_describe(own)})"
            )
        if sub and any(m.key.domain == "%" for m in sub):
            report.warn(
                f"OpenDKIM signed mail from each subdomain of {domain} with d= set to that "
                f"subdomain (KeyTable domain %); ldapdkim signs it with d={domain}"
            )
        assign(entries, domain, bool(sub), own, loader, report)
    return entries


def assign(
    entries: dict[str, Entry],
    domain: str,
    subdomains: bool,
    matches: Sequence[Match],
    loader: KeyLoader,
    report: Report,
) -> None:
    """Put From ``domain`` into the entry of its d=, with the keys that sign its mail."""
    signing_domains = [m.domain for m in matches]
    d = domain if domain in signing_domains else signing_domains[0]
    entry = entries.setdefault(d, Entry(d))
    selectors = []
    for match in matches:
        if match.domain != domain:
            report.warn(
                f"{match.key.where}: OpenDKIM signed mail from {domain} with d={match.domain}; "
                f"ldapdkim signs with the From domain or the parent whose entry covers it, so "
                f"it signs d={domain} with the same key (publish "
                f"{match.key.selector}._domainkey.{domain}: 'ldapdkim dns-records' lists it)"
            )
        private = loader.load(match.key, domain)
        if match.key.algorithm and match.key.algorithm != keys.algorithm_of(private).value:
            report.warn(
                f"{match.key.where}: the KeyTable says {match.key.algorithm}, but the key is "
                f"{keys.algorithm_of(private).key_type}; the entry says "
                f"{keys.algorithm_of(private).value}"
            )
        bits = keys.key_bits(private)
        if keys.algorithm_of(private) is Algorithm.RSA_SHA256 and bits < keys.MIN_RSA_BITS:
            report.warn(
                f"{match.key.where}: RSA key of {bits} bits; ldapdkim does not sign with keys "
                f"under MinimumKeyBits (at least {keys.MIN_RSA_BITS}): replace it "
                "('ldapdkim genkey') before switching over"
            )
        known = entry.keys.get(match.key.selector)
        if known is not None and keys.public_key_b64(known.private) != keys.public_key_b64(private):
            report.warn(
                f"{match.key.where}: selector {match.key.selector} of d={d} holds a different "
                f"key at {known.where}; only that one is migrated"
            )
        elif known is None:
            entry.keys[match.key.selector] = _Key(match.key.selector, private, match.key.where)
        selectors.append(match.key.selector)
    entry.names[domain] = subdomains
    entry.key_sets[domain] = tuple(sorted(set(selectors)))
    entry.signers[domain] = matches[0].signer


def build_records(entries: Mapping[str, Entry], base: str, report: Report) -> list[Record]:
    records: list[Record] = []
    for d, entry in sorted(entries.items()):
        dn, attrs = ldifout.domain_record(d, base)
        names = sorted(entry.names)
        attrs[schema.DOMAIN_NAME] = [name.encode() for name in names]
        subdomains = any(entry.names.values())
        attrs[schema.SUBDOMAINS] = [b"TRUE" if subdomains else b"FALSE"]
        for name in names:
            if subdomains and not entry.names[name]:
                report.warn(
                    f"subdomains of {name} are signed too: {name} shares the entry {dn!r} "
                    "with a domain whose subdomains OpenDKIM signed (dkimSignSubdomains TRUE)"
                )
            if entry.key_sets[name] != tuple(sorted(entry.keys)):
                report.warn(
                    f"mail from {name} is signed with every key of {dn!r} "
                    f"({', '.join(sorted(entry.keys))}); OpenDKIM used "
                    f"{', '.join(entry.key_sets[name])} only"
                )
        signers = {entry.signers[name] for name in names}
        if len(names) == 1 and signers != {None}:
            attrs[schema.IDENTITY] = [str(signers.pop()).encode()]
        elif signers != {None}:
            report.warn(
                f"the SigningTable gives i= for the mail of {', '.join(names)}; they share "
                f"{dn!r}, which has one dkimSignIdentity, so none is set"
            )
        records.append((dn, attrs))
        for selector, key in sorted(entry.keys.items()):
            records.append(
                ldifout.key_record(dn, selector, key.private, description=f"from {key.where}")
            )
    return records


def migration_of(records: list[Record], report: Report) -> Migration:
    domains = sum(1 for _, a in records if schema.POLICY_CLASS.encode() in a["objectClass"])
    return Migration(
        tuple(records),
        tuple(report.warnings),
        tuple(report.notes),
        domains,
        len(records) - domains,
    )
