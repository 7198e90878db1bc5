"""OpenDKIM's contrib LDAP schema as Zimbra keeps it: read the entries, and migrate them.

Entries with ``DKIMDomain``, ``DKIMSelector``, ``DKIMKey`` and optionally
``DKIMIdentity`` become KeyTable and SigningTable rows, asked the same way as
tables read from files.  The server is read over an
:class:`~ldapdkim.config.ldap.LdapSettings` connection: TLS and SASL as for
the milter's own directory.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ldap
import ldap.dn

from ldapdkim.config.ldap import LdapSettings
from ldapdkim.config.secret import Secret, read_secret_file
from ldapdkim.directory.ldapbackend import LdapBackend, paged_search, reason
from ldapdkim.errors import (
    ConfigError,
    DirectoryError,
)
from ldapdkim.lifecycle.migrate.plan import (
    KeyLoader,
    Migration,
    Report,
    build_records,
    check_base,
    migration_of,
    plan_entries,
)
from ldapdkim.lifecycle.migrate.tables import KeyRow, Row, Tables, key_row

CONTRIB_ATTRIBUTES = ("DKIMDomain", "DKIMSelector", "DKIMKey", "DKIMIdentity")
"""OpenDKIM's contrib LDAP schema (contrib/ldap/opendkim.schema), as Zimbra uses it."""


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
    report = Report()
    keytable: dict[str, KeyRow] = {}
    signing: list[Row] = []
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
            row = key_row(Row(dn, f"{domain}:{selector}:{key}", where))
        except ConfigError as err:
            report.warn(f"{err}; not migrated")
            continue
        keytable[dn] = row
        signing.append(Row(identity or str(domain), dn, where))
    if not signing:
        report.warn("no usable entries with DKIMDomain, DKIMSelector and DKIMKey were found")
    tables = Tables(
        keytable, signing, patterns=False, multiple=True, warn=report.warn, every_row=True
    )
    plan = plan_entries(tables, KeyLoader(Path("/")), report)
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
    return migration_of(build_records(plan, base, report), report)


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
    with LdapBackend(connection).connection() as conn:
        bases = [base] if base else _naming_contexts(conn, server)
        found: list[tuple[str, dict[str, list[bytes]]]] = []
        for dn in bases:
            found += _paged_search(conn, server, dn, connection.timeout)
        return found


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
