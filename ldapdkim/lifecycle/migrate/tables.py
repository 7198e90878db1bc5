"""OpenDKIM's KeyTable and SigningTable, read from their data sets and asked as OpenDKIM asks.

A SigningTable is asked for a sender in OpenDKIM's lookup order (``refile:``
top to bottom; other tables ``user@host``, ``host``, ``user@.parent``,
``.parent``, ..., ``user@*``, ``*``) with its first-match rule unless
``MultipleSignatures``, so ordering and precedence carry over, not just the
lines.  Tables in databases (``db:``, ``dsn:``, ``ldap:`` ...) are errors that
say how to export them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ldapdkim.config.datasets import (
    KINDS,
    dataset_kind,
    dataset_prefix,
    keyword_lines,
)
from ldapdkim.domainname import normalize_domain, normalize_selector
from ldapdkim.errors import (
    ConfigError,
    InvalidDomain,
    InvalidSelector,
)
from ldapdkim.lifecycle.migrate.opendkimconf import Setting

_KEYTABLE_ALGORITHMS = ("rsa-sha256", "rsa-sha1", "ed25519-sha256")


@dataclass(frozen=True)
class Row:
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


def read_table(setting: Setting, base: Path) -> tuple[str, list[Row]]:
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
                rows.append(Row(key.strip(), value.strip(), where))
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
    rows = [Row(key, value, f"{path}:{number}") for number, key, value in keyword_lines(text)]
    return kind, rows


def _pattern_regex(row: Row) -> re.Pattern[str]:
    """A refile: pattern as OpenDKIM compiles it: '*' is any text, '.' and '+' literal."""
    text = row.key.replace(".", r"\.").replace("+", r"\+").replace("*", ".*")
    try:
        return re.compile(f"^{text}$", re.IGNORECASE)
    except re.error as err:
        raise ConfigError(
            f"{row.where}: pattern {row.key!r} is not a valid expression ({err}); "
            "OpenDKIM refuses it too: use '*' as the only wildcard"
        ) from None


@dataclass(frozen=True)
class KeyRow:
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


def key_row(row: Row) -> KeyRow:
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
    return KeyRow(row.key, domain, selector, key, algorithm, row.where)


@dataclass(frozen=True)
class Match:
    """One signature OpenDKIM would make for a sender."""

    rule: Row
    key: KeyRow
    domain: str
    """d= as OpenDKIM fills it in."""
    signer: str | None
    """i= as OpenDKIM fills it in."""


class Tables:
    """A KeyTable and a SigningTable, asked the way OpenDKIM asks them."""

    def __init__(
        self,
        keytable: Mapping[str, KeyRow],
        signing: Sequence[Row],
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

    def rows_for(self, user: str, domain: str) -> list[Row]:
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

    def lookup(self, user: str, domain: str, percent: str | None = None) -> list[Match]:
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
            matches.append(Match(row, key, d, signer.strip().replace("%", percent) or None))
        return matches


def key_table(rows: Iterable[Row], warn: Callable[[str], None]) -> dict[str, KeyRow]:
    table: dict[str, KeyRow] = {}
    for row in rows:
        entry = key_row(row)
        if entry.name in table:
            warn(
                f"{row.where}: KeyTable name {entry.name!r} is already defined at "
                f"{table[entry.name].where}; OpenDKIM uses the first, and so does migrate"
            )
            continue
        table[entry.name] = entry
    return table


@dataclass(frozen=True)
class Scope:
    domain: str
    itself: bool
    """The row covers ``domain`` itself."""
    subdomains: bool
    """The row covers subdomains of ``domain``."""
    user: str | None
    """Local part (pattern) when the row names particular senders."""


def scope_of(row: Row, patterns: bool) -> Scope | str:
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


def _named(row: Row, name: str, itself: bool, subdomains: bool, user: str | None) -> Scope | str:
    try:
        domain = normalize_domain(name)
    except InvalidDomain as err:
        return f"{row.key!r} does not name a domain ({err})"
    if "." not in domain:
        return f"{row.key!r} covers a whole top-level domain; ldapdkim signs named domains only"
    return Scope(domain, itself, subdomains, user)
