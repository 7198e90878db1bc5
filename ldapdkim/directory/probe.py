"""What ``check-config --connect`` asks an LDAP directory before the milter relies on it.

Each check returns problems as text (what, and how to fix it); every problem
is reported, not only the first.  The bind is made as the milter binds, so the
checks see what the milter will see (its ACL included).
"""

from __future__ import annotations

from typing import Any

import ldap

from ldapdkim import schema
from ldapdkim.config.ldap import LdapSettings
from ldapdkim.directory.ldapbackend import LdapBackend, reason
from ldapdkim.directory.replica.consumer import TRACKING_ATTRIBUTES, tracking
from ldapdkim.errors import DirectoryUnavailable


def probe(
    ldap_settings: LdapSettings, *, sync_required: bool, sender_login_base: str | None = None
) -> list[str]:
    """The problems found with the directory ``ldap_settings`` names; [] when there is none.

    ``sender_login_base``: SenderLoginBase, which must exist too.
    """
    try:
        with LdapBackend(ldap_settings).connection() as conn:
            return [
                *_base(conn, ldap_settings.base_dn),
                *_schema(conn),
                *_private_keys(conn, ldap_settings),
                *(_sync(conn) if sync_required else []),
                *(_sender_base(conn, sender_login_base) if sender_login_base else []),
            ]
    except DirectoryUnavailable as err:
        return [str(err)]


def _base(conn: Any, base: str) -> list[str]:
    try:
        conn.search_s(base, ldap.SCOPE_BASE, "(objectClass=*)", ["1.1"])
    except ldap.NO_SUCH_OBJECT:
        return [f"base DN {base!r} does not exist; create it, or fix the Directory URL"]
    except ldap.LDAPError as err:
        return [f"base DN {base!r} cannot be read ({reason(err)}); check the ACL"]
    return []


def _sender_base(conn: Any, base: str) -> list[str]:
    try:
        conn.search_s(base, ldap.SCOPE_BASE, "(objectClass=*)", ["1.1"])
    except ldap.NO_SUCH_OBJECT:
        return [f"SenderLoginBase {base!r} does not exist; fix SenderLoginBase"]
    except ldap.LDAPError as err:
        return [f"SenderLoginBase {base!r} cannot be read ({reason(err)}); check the ACL"]
    return []


def _schema(conn: Any) -> list[str]:
    try:
        subschema = conn.search_subschemasubentry_s()
        entry = conn.read_subschemasubentry_s(subschema, attrs=["objectClasses"]) or {}
    except ldap.LDAPError as err:
        return [f"the server's schema cannot be read ({reason(err)})"]
    known = b" ".join(entry.get("objectClasses", [])).lower()
    return [
        f"the server does not know object class {name}; load schema/ (ldapdkim.ldif or "
        "ldapdkim.schema) into it"
        for name in (schema.POLICY_CLASS, schema.KEY_CLASS)
        if f"'{name.lower()}'".encode() not in known
    ]


def _private_keys(conn: Any, ldap_settings: LdapSettings) -> list[str]:
    """The milter's bind must read and filter on private keys (the ACL lets no one else)."""
    base = ldap_settings.base_dn
    keys = f"(objectClass={schema.KEY_CLASS})"
    readable = f"(&{keys}({schema.PRIVATE_KEY}=*))"
    try:
        if not _any(conn, base, keys, "1.1"):
            return []  # no key entry yet: nothing to tell
        if _any(conn, base, readable, schema.PRIVATE_KEY):
            return []
    except ldap.LDAPError as err:
        return [f"key entries cannot be searched ({reason(err)}); check the ACL"]
    return [
        f"{ldap_settings.bind_identity()} cannot read {schema.PRIVATE_KEY} on the key "
        "entries it finds; let it read and filter on the attribute "
        "(conf/openldap-acl.ldif), or bind as the milter's DN"
    ]


def _any(conn: Any, base: str, filterstr: str, attribute: str) -> bool:
    """Whether the search finds at least one entry (the first is enough)."""
    try:
        found = conn.search_ext_s(base, ldap.SCOPE_SUBTREE, filterstr, [attribute], sizelimit=1)
    except ldap.SIZELIMIT_EXCEEDED:
        return True
    except ldap.NO_SUCH_OBJECT:
        return False
    return any(dn for dn, _ in found)


def _sync(conn: Any) -> list[str]:
    try:
        root = conn.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", TRACKING_ATTRIBUTES)
    except ldap.LDAPError as err:
        return [f"the root DSE cannot be read ({reason(err)})"]
    if not any(tracking(attrs) for dn, attrs in root if dn is not None):
        return [
            "DirectorySync yes, but the server offers no content sync (RFC 4533) and no "
            "update sequence numbers (Active Directory); load syncprov (OpenLDAP) or the "
            "Content Synchronization plugin (389-DS) there, or set DirectorySync auto"
        ]
    return []
