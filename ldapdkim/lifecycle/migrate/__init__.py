"""Turn an OpenDKIM signing set-up into directory entries (LDIF records).

Two sources are read:

- an ``opendkim.conf`` (opendkim.conf(5)): single-key mode (``Domain``,
  ``Selector``, ``KeyFile``), or ``KeyTable`` and ``SigningTable`` held in
  ``file:``, ``refile:`` or ``csl:`` data sets (opendkim(8), DATA SETS);
- entries of OpenDKIM's contrib LDAP schema as Zimbra keeps them
  (``DKIMDomain``, ``DKIMSelector``, ``DKIMKey``, optional ``DKIMIdentity``),
  read from an LDAP server by :func:`read_contrib_ldap`.

Both become the same tables, and the tables are *asked* what OpenDKIM asks
them: for a sender in every domain the SigningTable names, and for one in a
subdomain of it, in OpenDKIM's lookup order (``refile:`` top to bottom; other
tables ``user@host``, ``host``, ``user@.parent``, ``.parent``, ...,
``user@*``, ``*``) with its first-match rule unless ``MultipleSignatures``.
So ordering and precedence carry over, not just the lines.

The answer becomes one domain entry per signing domain (``d=``) whose
``dkimSignDomainName`` lists the From domains it signs for, and one active
key entry per selector beneath it.  ``dkimSignSubdomains`` is written on
every entry, TRUE or FALSE, because in OpenDKIM it follows from the tables
domain by domain; the global signing keywords (Canonicalization,
SignHeaders, OversignHeaders, SignatureTTL) mean the same in ldapdkim.conf
and are listed for the administrator to copy there, so one line keeps
governing every domain.

What ldapdkim cannot express is reported as a warning, never dropped in
silence: rules for particular senders (ldapdkim signs per domain), patterns
that match every domain, a ``d=`` other than the From domain or its parent,
Lua scripts, and OpenDKIM keywords without an ldapdkim equivalent.  Tables in
databases (``db:``, ``dsn:``, ``ldap:`` ...) are errors that say how to export
them.  No message carries key material.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ldap
import ldap.dn

from ldapdkim import config, keys, schema
from ldapdkim.config.datasets import (
    KINDS,
    dataset_kind,
    dataset_prefix,
    keyword_lines,
    read_dataset,
)
from ldapdkim.config.ldap import LdapSettings
from ldapdkim.config.secret import Secret, read_secret_file
from ldapdkim.directory import ldifout
from ldapdkim.directory.ldapbackend import LdapBackend, paged_search, reason
from ldapdkim.directory.ldifout import Record
from ldapdkim.domainname import normalize_domain, normalize_selector
from ldapdkim.errors import (
    ConfigError,
    DirectoryError,
    InvalidDomain,
    InvalidSelector,
)
from ldapdkim.model import Algorithm, PrivateKey

CONTRIB_ATTRIBUTES = ("DKIMDomain", "DKIMSelector", "DKIMKey", "DKIMIdentity")
"""OpenDKIM's contrib LDAP schema (contrib/ldap/opendkim.schema), as Zimbra uses it."""

SIGNING_KEYWORDS = ("Canonicalization", "SignHeaders", "OversignHeaders", "SignatureTTL")
"""Global signing settings that keep their keyword and meaning in ldapdkim.conf."""

_PROBE = "ldapdkim-probe"
"""Local part and subdomain label used to ask the tables about 'any sender'."""

_LUA_KEYWORDS = (
    "SetupPolicyScript",
    "ScreenPolicyScript",
    "FinalPolicyScript",
    "StatisticsPolicyScript",
)
# Read by migrate itself; everything else is listed as carried over or not.
_CONSUMED = frozenset(
    name.lower()
    for name in (
        "KeyTable",
        "SigningTable",
        "Domain",
        "Selector",
        "KeyFile",
        "SubDomains",
        "MultipleSignatures",
        "SignatureAlgorithm",
        "Include",
        "BaseDirectory",
        "RequireSafeKeys",
        *_LUA_KEYWORDS,
    )
)

_KEYTABLE_ALGORITHMS = ("rsa-sha256", "rsa-sha1", "ed25519-sha256")


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


# -- reading opendkim.conf --------------------------------------------------------


@dataclass(frozen=True)
class _Setting:
    spelled: str
    value: str
    source: Path
    line: int

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


def _read_conf(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, _Setting]:
    """Keyword (lowercase) -> its last setting, with ``Include`` files read in place.

    A relative ``Include`` is taken from the including file's directory (OpenDKIM
    takes it from its working directory, which migrate cannot know).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: OpenDKIM configuration not found; give the file opendkim runs with "
            "(often /etc/opendkim.conf)"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise ConfigError(f"{path}: cannot be read ({reason}); check the path") from None
    settings: dict[str, _Setting] = {}
    for number, name, value in keyword_lines(text):
        setting = _Setting(name, value, path, number)
        if name.lower() == "include":
            included = Path(setting.value)
            if not included.is_absolute():
                included = path.parent / included
            if included in (path, *seen):
                raise ConfigError(f"{setting.where}: Include {setting.value} includes itself")
            settings.update(_read_conf(included, (*seen, path)))
            continue
        settings[name.lower()] = setting
    return settings


def _boolean(setting: _Setting | None) -> bool:
    """OpenDKIM's reading of a Boolean: true when it starts with t, y or 1."""
    return setting is not None and setting.value[:1].lower() in ("t", "y", "1")


# -- data sets -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    """One key/value line of a table, and where it stands."""

    key: str
    value: str
    where: str


def _unsupported_table(keyword: str, kind: str, where: str) -> ConfigError:
    if kind in ("ldap", "ldaps", "ldapi"):
        how = (
            "migrate the entries it reads with 'ldapdkim migrate --from-ldap URL', "
            "giving that server and the DN above the DKIM entries"
        )
    elif kind == "db":
        how = (
            "dump it into a text file of 'KEY VALUE' lines (e.g. makemap -u hash FILE) "
            f"and point {keyword} at file:PATH"
        )
    elif kind == "dsn":
        how = f"export the table as 'KEY VALUE' lines and point {keyword} at file:PATH"
    else:
        how = f"write what it returns as 'KEY VALUE' lines and point {keyword} at file:PATH"
    return ConfigError(
        f"{where}: {keyword} is a '{kind}:' data set, which migrate cannot read; {how}"
    )


def _read_table(setting: _Setting, base: Path) -> tuple[str, list[_Row]]:
    """(kind, rows) of a KeyTable or SigningTable data set."""
    keyword = setting.spelled
    kind, rest = dataset_kind(setting.value)
    prefix = dataset_prefix(setting.value)
    if prefix is not None and prefix not in KINDS:
        raise ConfigError(
            f"{setting.where}: {keyword} {setting.value!r} has the unknown data-set type "
            f"'{prefix}:'; OpenDKIM refuses it too; write file:PATH, refile:PATH or csl:LIST"
        )
    if kind == "csl":
        rows = []
        for number, item in enumerate(rest.split(","), start=1):
            key, _, value = item.partition("=")
            if key.strip():
                where = f"{setting.where}: {keyword} item {number}"
                rows.append(_Row(key.strip(), value.strip(), where))
        return kind, rows
    if kind not in ("file", "refile"):
        raise _unsupported_table(keyword, kind, setting.where)
    path = Path(rest.strip())
    if not path.is_absolute():
        path = base / path
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise ConfigError(
            f"{setting.where}: {keyword} file {path} cannot be read ({reason}); fix the path, "
            "or run migrate as a user who may read it"
        ) from None
    rows = [_Row(key, value, f"{path}:{number}") for number, key, value in keyword_lines(text)]
    return kind, rows


def _pattern_regex(row: _Row) -> re.Pattern[str]:
    """A refile: pattern as OpenDKIM compiles it: '*' is any text, '.' and '+' literal."""
    text = row.key.replace(".", r"\.").replace("+", r"\+").replace("*", ".*")
    try:
        return re.compile(f"^{text}$", re.IGNORECASE)
    except re.error as err:
        raise ConfigError(
            f"{row.where}: pattern {row.key!r} is not a valid expression ({err}); "
            "OpenDKIM refuses it too: use '*' as the only wildcard"
        ) from None


# -- the tables, and asking them ---------------------------------------------------


@dataclass(frozen=True)
class _KeyRow:
    """One KeyTable entry: key name -> d=, selector, key (path or inline)."""

    name: str
    domain: str
    """The d= domain, or '%' for the sender's domain."""
    selector: str
    key: str
    algorithm: str | None
    where: str
    percent_in_path: bool = True
    """'%' in a key path is the sender's domain (KeyTable); not so for KeyFile."""


def _key_row(row: _Row) -> _KeyRow:
    fix = f"write it as {row.key} DOMAIN:SELECTOR:KEY, e.g. example.com:s1:/etc/opendkim/s1.private"
    parts = row.value.split(":", 2)
    if len(parts) < 3 or not all(p.strip() for p in parts):
        raise ConfigError(
            f"{row.where}: KeyTable entry {row.key!r} does not have the three fields "
            f"domain, selector and key; {fix}"
        )
    domain, selector, key = (p.strip() for p in parts)
    algorithm = None
    tail = re.fullmatch(r"(.*):([a-z0-9-]+)", key, re.DOTALL | re.IGNORECASE)
    if tail and tail.group(2).lower() in _KEYTABLE_ALGORITHMS:
        key, algorithm = tail.group(1), tail.group(2).lower()
    if domain != "%":
        try:
            domain = normalize_domain(domain)
        except InvalidDomain as err:
            raise ConfigError(
                f"{row.where}: KeyTable entry {row.key!r}: {err}; the first field is the "
                "signing domain (d=), or % for the sender's domain"
            ) from None
    try:
        selector = normalize_selector(selector)
    except InvalidSelector as err:
        raise ConfigError(f"{row.where}: KeyTable entry {row.key!r}: selector {err}") from None
    return _KeyRow(row.key, domain, selector, key, algorithm, row.where)


@dataclass(frozen=True)
class _Match:
    """One signature OpenDKIM would make for a sender."""

    rule: _Row
    key: _KeyRow
    domain: str
    """d= as OpenDKIM fills it in."""
    signer: str | None
    """i= as OpenDKIM fills it in."""


class _Tables:
    """A KeyTable and a SigningTable, asked the way OpenDKIM asks them."""

    def __init__(
        self,
        keytable: Mapping[str, _KeyRow],
        signing: Sequence[_Row],
        *,
        patterns: bool,
        multiple: bool,
        warn: Callable[[str], None],
        every_row: bool = False,
    ) -> None:
        self.keytable = keytable
        self.signing = signing
        self.patterns = patterns
        """True for a refile: SigningTable (ordered wildcard patterns)."""
        self.multiple = multiple
        """MultipleSignatures: every match signs, not only the first."""
        self.every_row = every_row
        """Every row with a matching key signs (LDAP entries), not only the first."""
        self.warn = warn
        self._regexes = {row.where: _pattern_regex(row) for row in signing} if patterns else {}

    def rows_for(self, user: str, domain: str) -> list[_Row]:
        """The SigningTable rows that apply to ``user@domain``, in OpenDKIM's order."""
        if self.patterns:
            address = f"{user}@{domain}"
            found = [r for r in self.signing if self._regexes[r.where].match(address)]
            return found if self.multiple else found[:1]
        probes = [f"{user}@{domain}", domain]
        for at in (i for i, c in enumerate(domain) if c == "."):
            probes += [f"{user}@{domain[at:]}", domain[at:]]
        probes += [f"{user}@*", "*"]
        found = []
        for probe in probes:
            hits = [r for r in self.signing if r.key.lower() == probe.lower()]
            found += hits if self.every_row else hits[:1]
            if found and not self.multiple and not self.every_row:
                return found[:1]
        return found

    def lookup(self, user: str, domain: str, percent: str | None = None) -> list[_Match]:
        """The signatures OpenDKIM makes for ``user@domain``; '%' means ``percent``."""
        percent = percent or domain
        matches = []
        for row in self.rows_for(user, domain):
            name, _, signer = row.value.partition(":")
            name = name.strip()
            if name == "%":
                name = domain
            key = self.keytable.get(name)
            if key is None:
                self.warn(
                    f"{row.where}: key name {name!r} is not in the KeyTable, so OpenDKIM "
                    f"tempfailed mail from {domain}; nothing is migrated for it"
                )
                continue
            d = percent if key.domain == "%" else key.domain
            matches.append(_Match(row, key, d, signer.strip().replace("%", percent) or None))
        return matches


def _keytable(rows: Iterable[_Row], warn: Callable[[str], None]) -> dict[str, _KeyRow]:
    table: dict[str, _KeyRow] = {}
    for row in rows:
        entry = _key_row(row)
        if entry.name in table:
            warn(
                f"{row.where}: KeyTable name {entry.name!r} is already defined at "
                f"{table[entry.name].where}; OpenDKIM uses the first, and so does migrate"
            )
            continue
        table[entry.name] = entry
    return table


# -- which domains a SigningTable row names ---------------------------------------


@dataclass(frozen=True)
class _Scope:
    domain: str
    itself: bool
    """The row covers ``domain`` itself."""
    subdomains: bool
    """The row covers subdomains of ``domain``."""
    user: str | None
    """Local part (pattern) when the row names particular senders."""


def _scope(row: _Row, patterns: bool) -> _Scope | str:
    """The From domains a SigningTable row covers, or why ldapdkim cannot say."""
    text = row.key.lower()
    every = (
        f"{row.key!r} matches senders of every domain; ldapdkim signs only domains with an entry"
    )
    if patterns:
        if not re.fullmatch(r"[a-z0-9._+=*@-]+", text):
            return (
                f"pattern {row.key!r} uses regular-expression characters; migrate knows '*' "
                "only: add the domains it meant by hand"
            )
        local, at, dom = text.rpartition("@")
        if not at:
            if not text.startswith("*"):
                return f"pattern {row.key!r} matches no address (it has no @ and no leading *)"
            local, dom = "*", text
        user = None if local == "*" else local
        if "*" not in dom:
            return _named(row, dom, True, False, user)
        if dom.startswith("*.") and "*" not in dom[2:]:
            return _named(row, dom[2:], False, True, user)
        if dom.startswith("*") and "*" not in dom[1:] and dom != "*":
            return _named(row, dom[1:], True, True, user)
        return every
    if text == "*":
        return every
    user, at, host = text.rpartition("@")
    if at and host == "*":
        return every
    if host.startswith("."):
        return _named(row, host[1:], False, True, user if at else None)
    return _named(row, host, True, False, user if at else None)


def _named(row: _Row, name: str, itself: bool, subdomains: bool, user: str | None) -> _Scope | str:
    try:
        domain = normalize_domain(name)
    except InvalidDomain as err:
        return f"{row.key!r} does not name a domain ({err})"
    if "." not in domain:
        return f"{row.key!r} covers a whole top-level domain; ldapdkim signs named domains only"
    return _Scope(domain, itself, subdomains, user)


# -- the plan: one domain entry per d= ---------------------------------------------


@dataclass
class _Key:
    selector: str
    private: PrivateKey = field(repr=False)
    where: str


@dataclass
class _Entry:
    domain: str
    names: dict[str, bool] = field(default_factory=dict)
    """From domain -> whether its subdomains are signed."""
    keys: dict[str, _Key] = field(default_factory=dict)
    key_sets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    signers: dict[str, str | None] = field(default_factory=dict)


class _Report:
    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.notes: list[str] = []

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


class _KeyLoader:
    """Reads each key once; ``%`` in a key path is the sender's domain, as in OpenDKIM."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._cache: dict[tuple[str, str], PrivateKey] = {}

    def load(self, row: _KeyRow, domain: str) -> PrivateKey:
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


def _describe(matches: Sequence[_Match]) -> str:
    return ", ".join(f"d={m.domain} s={m.key.selector}" for m in matches) or "no key"


def _plan(tables: _Tables, loader: _KeyLoader, report: _Report) -> dict[str, _Entry]:
    """Ask the tables about every domain they name; group the answers by d=."""
    scoped: list[tuple[_Row, _Scope]] = []
    unmigrated: set[str] = set()
    for row in tables.signing:
        scope = _scope(row, tables.patterns)
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
    entries: dict[str, _Entry] = {}
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
        _assign(entries, domain, bool(sub), own, loader, report)
    return entries


def _assign(
    entries: dict[str, _Entry],
    domain: str,
    subdomains: bool,
    matches: Sequence[_Match],
    loader: _KeyLoader,
    report: _Report,
) -> None:
    """Put From ``domain`` into the entry of its d=, with the keys that sign its mail."""
    signing_domains = [m.domain for m in matches]
    d = domain if domain in signing_domains else signing_domains[0]
    entry = entries.setdefault(d, _Entry(d))
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


def _records(entries: Mapping[str, _Entry], base: str, report: _Report) -> list[Record]:
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


def _result(records: list[Record], report: _Report) -> Migration:
    domains = sum(1 for _, a in records if schema.POLICY_CLASS.encode() in a["objectClass"])
    return Migration(
        tuple(records),
        tuple(report.warnings),
        tuple(report.notes),
        domains,
        len(records) - domains,
    )


def check_base(base: str) -> None:
    """Raise :class:`ConfigError` unless ``base`` is a DN that entries can go beneath."""
    if not base or not ldap.dn.is_dn(base):
        raise ConfigError(
            f"base DN {base!r} is not a valid DN; write it like ou=domains,dc=example,dc=com"
        )


# -- opendkim.conf -------------------------------------------------------------------


def from_opendkim_conf(path: Path, base: str) -> Migration:
    """The entries that reproduce the signing of the OpenDKIM configuration at ``path``.

    Relative paths in it are taken from its ``BaseDirectory``, else from the
    current directory, as OpenDKIM does.

    Raises:
        ConfigError: unreadable files, bad table lines (FILE:LINE), tables
            in databases, or no signing set-up at all.
        KeyFormatError: a key that is not an RSA or Ed25519 private key.
    """
    check_base(base)
    conf = _read_conf(path)
    report = _Report()
    base_dir = Path(conf["basedirectory"].value) if "basedirectory" in conf else Path.cwd()
    loader = _KeyLoader(base_dir)
    keytable, signing = conf.get("keytable"), conf.get("signingtable")
    single = [conf[k] for k in ("domain", "selector", "keyfile") if k in conf]
    if keytable is not None and signing is not None:
        if single:
            report.warn(
                f"{single[0].where}: {', '.join(s.spelled for s in single)} are ignored by "
                "OpenDKIM when a KeyTable is set; not migrated"
            )
        entries = _from_tables(keytable, signing, conf, base_dir, loader, report)
    elif keytable is not None:
        raise ConfigError(
            f"{keytable.where}: KeyTable without SigningTable: keys are chosen by a Lua "
            "SetupPolicyScript, which migrate cannot read; write a SigningTable for it, "
            "or make the domain entries with 'ldapdkim genkey'"
        )
    elif signing is not None:
        raise ConfigError(
            f"{signing.where}: SigningTable without KeyTable; OpenDKIM refuses this too: "
            "add the KeyTable"
        )
    elif len(single) == 3:
        entries = _from_single_key(conf, base_dir, loader, report)
    else:
        raise ConfigError(
            f"{path}: no signing set-up: neither KeyTable and SigningTable nor Domain, "
            "Selector and KeyFile together; give the configuration opendkim signs with"
        )
    _carry_over(conf, report)
    return _result(_records(entries, base, report), report)


def _from_tables(
    keytable: _Setting,
    signing: _Setting,
    conf: Mapping[str, _Setting],
    base_dir: Path,
    loader: _KeyLoader,
    report: _Report,
) -> dict[str, _Entry]:
    _, key_rows = _read_table(keytable, base_dir)
    kind, signing_rows = _read_table(signing, base_dir)
    for row in signing_rows:
        if not row.value.partition(":")[0].strip():
            raise ConfigError(
                f"{row.where}: SigningTable entry {row.key!r} names no key; write "
                f"{row.key} KEYNAME, with KEYNAME from the KeyTable"
            )
    tables = _Tables(
        _keytable(key_rows, report.warn),
        signing_rows,
        patterns=kind == "refile",
        multiple=_boolean(conf.get("multiplesignatures")),
        warn=report.warn,
    )
    if "subdomains" in conf:
        report.note(
            f"{conf['subdomains'].where}: SubDomains applies to Domain only, which a KeyTable "
            "replaces; each entry's dkimSignSubdomains follows the SigningTable instead"
        )
    return _plan(tables, loader, report)


def _from_single_key(
    conf: Mapping[str, _Setting], base_dir: Path, loader: _KeyLoader, report: _Report
) -> dict[str, _Entry]:
    domain_setting, selector_setting, key_setting = (
        conf["domain"],
        conf["selector"],
        conf["keyfile"],
    )
    try:
        selector = normalize_selector(selector_setting.value)
    except InvalidSelector as err:
        raise ConfigError(f"{selector_setting.where}: Selector {err}") from None
    key_path = key_setting.value
    if not key_path.startswith("/"):
        key_path = "./" + key_path
    row = _KeyRow("KeyFile", "%", selector, key_path, None, key_setting.where, False)
    try:
        listed = read_dataset(domain_setting.value, base=base_dir)
    except ValueError as err:
        raise ConfigError(f"{domain_setting.where}: Domain: {err}") from None
    subdomains = _boolean(conf.get("subdomains"))
    entries: dict[str, _Entry] = {}
    for item in listed:
        if item.text == "*":
            report.warn(
                f"{domain_setting.where}: Domain '*' signs every domain; ldapdkim signs only "
                "domains with an entry: not migrated"
            )
            continue
        try:
            domain = normalize_domain(item.text)
        except InvalidDomain as err:
            raise ConfigError(f"{domain_setting.where}: Domain{item.where}: {err}") from None
        rule = _Row(domain, "KeyFile", domain_setting.where)
        _assign(entries, domain, subdomains, [_Match(rule, row, domain, None)], loader, report)
    return entries


def _carry_over(conf: Mapping[str, _Setting], report: _Report) -> None:
    """Tell which OpenDKIM keywords to copy into ldapdkim.conf, and which do not carry over."""
    shared = {name.lower(): name for name, _, _ in config.keyword_reference()}
    signing, same, lost = [], [], []
    for key, setting in sorted(conf.items(), key=lambda item: item[1].line):
        if key in _CONSUMED:
            continue
        if key in {k.lower() for k in SIGNING_KEYWORDS}:
            # Validated as ldapdkim would read it, at the line where it stands.
            text = "\n" * (setting.line - 1) + f"{shared[key]} {setting.value}\nMode v\n"
            try:
                config.parse(text, str(setting.source))
            except ConfigError as err:
                report.warn(f"{err}; not carried over")
                continue
            signing.append(f"{shared[key]} {setting.value}")
        elif key in shared:
            same.append(shared[key])
        else:
            lost.append(setting.spelled)
    if signing:
        report.note(
            "copy these lines into ldapdkim.conf, where they apply to every domain as in "
            "OpenDKIM: " + "; ".join(signing)
        )
    if same:
        report.note(f"these keywords mean the same in ldapdkim.conf: {', '.join(same)}")
    for name in _LUA_KEYWORDS:
        if name.lower() in conf:
            report.warn(
                f"{conf[name.lower()].where}: {name} runs a Lua script, whose decisions are "
                "not migrated; express them as domain entries"
            )
    if _boolean(conf.get("multiplesignatures")):
        report.note(
            "MultipleSignatures: in ldapdkim every active key of a domain signs; that is how "
            "the matches found for each domain were kept"
        )
    if "signaturealgorithm" in conf:
        report.note(
            "SignatureAlgorithm is not needed: each key entry's dkimSignAlgorithm follows its "
            "key type"
        )
    if lost:
        report.warn(
            f"OpenDKIM keywords with no ldapdkim equivalent, not carried over: {', '.join(lost)}"
        )


# -- OpenDKIM's contrib LDAP schema -----------------------------------------------------


def from_contrib_entries(
    entries: Sequence[tuple[str, Mapping[str, Sequence[bytes]]]], base: str
) -> Migration:
    """The entries that reproduce signing with OpenDKIM's contrib LDAP entries (Zimbra's form).

    Each entry with ``DKIMSelector`` is one KeyTable row (``DKIMDomain`` is
    d=, ``DKIMKey`` the key or a key file path); its ``DKIMIdentity`` is what
    the SigningTable looks up (``domain``, ``user@domain``, ``.domain``), as
    in OpenDKIM's README.LDAP and Zimbra; without one, ``DKIMDomain`` is.

    Raises:
        ConfigError: ``base`` is not a DN, or a key file path cannot be read.
        KeyFormatError: a ``DKIMKey`` that is not an RSA or Ed25519 private key.
    """
    check_base(base)
    report = _Report()
    keytable: dict[str, _KeyRow] = {}
    signing: list[_Row] = []
    for dn, raw in entries:
        attrs = {name.lower(): values for name, values in raw.items()}

        def first(name: str, attrs: Mapping[str, Sequence[bytes]] = attrs) -> str | None:
            values = attrs.get(name.lower())
            return values[0].decode("utf-8", "replace").strip() if values else None

        where = f"entry {dn!r}"
        selector, domain, key = first("DKIMSelector"), first("DKIMDomain"), first("DKIMKey")
        missing = [n for n, v in (("DKIMDomain", domain), ("DKIMKey", key)) if not v]
        if missing:
            report.warn(
                f"{where} has no {' and no '.join(missing)} (OpenDKIM treats it as corrupt, "
                "or the bind DN may not read it); not migrated"
            )
            continue
        identity = first("DKIMIdentity")
        if identity is None:
            report.note("entries without DKIMIdentity are taken to sign mail from their DKIMDomain")
        try:
            row = _key_row(_Row(dn, f"{domain}:{selector}:{key}", where))
        except ConfigError as err:
            report.warn(f"{err}; not migrated")
            continue
        keytable[dn] = row
        signing.append(_Row(identity or str(domain), dn, where))
    if not signing:
        report.warn("no usable entries with DKIMDomain, DKIMSelector and DKIMKey were found")
    tables = _Tables(
        keytable, signing, patterns=False, multiple=True, warn=report.warn, every_row=True
    )
    plan = _plan(tables, _KeyLoader(Path("/")), report)
    for entry in plan.values():
        for name in entry.names:
            if len(entry.key_sets[name]) > 1:
                report.warn(
                    f"{name} has {len(entry.key_sets[name])} DKIM entries "
                    f"({', '.join(entry.key_sets[name])}); OpenDKIM signed with the one the "
                    "server returned first, ldapdkim signs with all: set dkimSignKeyState "
                    "retired on those not in use"
                )
    report.note(
        "the signing settings of opendkim.conf (Canonicalization, SignHeaders, ...) are not "
        "read with --from-ldap; copy them into ldapdkim.conf"
    )
    return _result(_records(plan, base, report), report)


def read_password_file(path: Path) -> Secret:
    """The first line of ``path``, for an LDAP bind.

    Raises:
        ConfigError: unreadable or empty.
    """
    try:
        password = read_secret_file(path)
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise ConfigError(f"password file {path} cannot be read ({reason}); fix the path") from None
    if password is None:
        raise ConfigError(f"password file {path} has an empty first line; put the password there")
    return password


_URL = re.compile(r"(ldaps?|ldapi)://([^/?]*)(?:/([^?]*))?(?:\?.*)?\Z", re.IGNORECASE)


def contrib_source(url: str) -> tuple[str, str]:
    """(server URI, base DN) of an ``ldap://HOST[:PORT]/BASE-DN`` URL; the base may be "".

    Attributes, scope and filter after ``?`` (as in an OpenDKIM KeyTable URL)
    are ignored.

    Raises:
        ConfigError: not an LDAP URL, or a base DN with ``$d``/``$D``.
    """
    match = _URL.match(url.strip())
    if match is None:
        raise ConfigError(
            f"{url!r} is not an LDAP URL; write ldap://HOST[:PORT]/BASE-DN (or ldaps://, ldapi://)"
        )
    scheme, hostport, path = match.group(1).lower(), match.group(2), match.group(3) or ""
    base = urllib.parse.unquote(path)
    if "$" in base:
        raise ConfigError(
            f"base DN {base!r} holds an OpenDKIM placeholder ($d/$D); give the DN above "
            "the DKIM entries, e.g. ou=people,dc=example,dc=com"
        )
    return f"{scheme}://{hostport}", base


def read_contrib_ldap(
    connection: LdapSettings, base: str
) -> list[tuple[str, dict[str, list[bytes]]]]:
    """Entries with ``DKIMSelector`` below ``base`` (every naming context when it is "").

    ``connection`` says how to reach and bind to the server (TLS and SASL as
    for the milter's own directory).

    Raises:
        DirectoryUnavailable: the server cannot be reached or refuses the bind.
        DirectoryError: the search fails.
    """
    server = connection.describe()
    conn = LdapBackend(connection).open_connection()
    try:
        bases = [base] if base else _naming_contexts(conn, server)
        found: list[tuple[str, dict[str, list[bytes]]]] = []
        for dn in bases:
            found += _paged_search(conn, server, dn, connection.timeout)
        return found
    finally:
        try:
            conn.unbind_s()
        except ldap.LDAPError:
            pass


def _naming_contexts(conn: Any, server: str) -> list[str]:
    try:
        result = conn.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["namingContexts"])
    except ldap.LDAPError as err:
        raise DirectoryError(
            f"{server}: cannot read the naming contexts ({reason(err)}); put the base DN in the URL"
        ) from None
    values = result[0][1].get("namingContexts", []) if result else []
    return [v.decode() for v in values]


def _paged_search(
    conn: Any, server: str, base: str, timeout: float
) -> list[tuple[str, dict[str, list[bytes]]]]:
    try:
        return paged_search(
            conn,
            base,
            ldap.SCOPE_SUBTREE,
            "(DKIMSelector=*)",
            [*CONTRIB_ATTRIBUTES, "objectClass"],
            timeout,
        )
    except ldap.NO_SUCH_OBJECT:
        raise DirectoryError(f"{server}: base DN {base!r} does not exist; fix the URL") from None
    except ldap.LDAPError as err:
        raise DirectoryError(
            f"search for DKIMSelector under {base!r} failed at {server}: {reason(err)}"
        ) from None
