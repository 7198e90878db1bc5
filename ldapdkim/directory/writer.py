"""Writes to the directory: add key entries, change their state, delete them.

Only the key life cycle writes (``ldapdkim rotate``); the milter never does.
Writes bind as ``LDAPAdminBindUser`` with ``LDAPAdminBindPasswordFile`` (a
simple bind), or, when those are not set, as the milter's own bind
(``LDAPBindUser`` ...), which a directory set up like
``conf/openldap-acl.ldif`` does not let write: that refusal is reported with
the keyword to set.  The connection (URIs and failover, timeouts, TLS, one
reconnect) is :class:`~ldapdkim.directory.ldapbackend.LdapBackend`'s.

A change can carry an assertion (RFC 4528): the server applies it only if
the entry still matches a filter, e.g. ``(dkimSignKeyState=pending)``, so
two ``rotate --advance`` runs at once cannot both act on one key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ldap
import ldap.modlist
from ldap.controls.libldap import AssertionControl

from ldapdkim.config.ldap import LdapSettings
from ldapdkim.config.settings import Settings
from ldapdkim.directory.entries import Entry
from ldapdkim.directory.ldapbackend import LdapBackend, reason
from ldapdkim.directory.ldifout import Record
from ldapdkim.errors import ConfigError, DirectoryError, EntryChanged

# Result codes that mean "this bind may not do that" (RFC 4511 appendix A).
_REFUSED = (ldap.INSUFFICIENT_ACCESS, ldap.STRONG_AUTH_REQUIRED, ldap.UNWILLING_TO_PERFORM)


class DirectoryWriter:
    """Adds, changes and deletes entries with the administrative bind."""

    def __init__(self, ldap_settings: LdapSettings, *, admin: bool) -> None:
        """Write through ``ldap_settings``; ``admin`` says they bind as LDAPAdminBindUser."""
        self.admin = admin
        self.bind_dn = ldap_settings.bind_identity()
        self._backend = LdapBackend(ldap_settings)

    @classmethod
    def for_settings(cls, settings: Settings) -> DirectoryWriter:
        """A writer binding as the configuration's LDAPAdminBindUser, or as the milter.

        Raises:
            ConfigError: ``Directory`` is not an LDAP server.
        """
        ldap_settings = settings.ldap_admin
        if ldap_settings is None:
            source = settings.directory
            where = f"ldif:{source.ldif_path}" if source is not None else "not set"
            raise ConfigError(
                f"{settings.source}: key rotation writes to an LDAP directory, but Directory "
                f"is {where}; point Directory at the LDAP server (an LDIF file is read-only: "
                "add keys to it with 'ldapdkim genkey')"
            )
        return cls(ldap_settings, admin=settings.ldap_admin_bind_user is not None)

    def __enter__(self) -> DirectoryWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def describe(self) -> str:
        return self._backend.describe()

    def search(self, filterstr: str, attrs: list[str]) -> list[Entry]:
        """Entries below the base DN that match ``filterstr``, read with this writer's bind
        (which may read what it is to change, such as private keys).

        Raises:
            DirectoryUnavailable: no server answered, or the bind failed.
            DirectoryError: the server refused the search.
        """
        return self._backend.search(self._backend.base_dn, ldap.SCOPE_SUBTREE, filterstr, attrs)

    def add(self, record: Record) -> None:
        """Add the entry ``record``.

        Raises:
            DirectoryError: it exists already, or the bind may not add it.
        """
        dn, attrs = record
        modlist = ldap.modlist.addModlist(dict(attrs))
        self._write("add", dn, lambda conn: conn.add_s(dn, modlist))

    def replace(
        self,
        dn: str,
        values: Mapping[str, Sequence[bytes]],
        *,
        assertion: str | None = None,
    ) -> None:
        """Set each attribute in ``values`` to exactly those values (an empty list removes it).

        ``assertion`` is an LDAP filter the entry must still match (RFC 4528).

        Raises:
            EntryChanged: the entry is gone or no longer matches ``assertion``.
            DirectoryError: the bind may not change it, or the server refused.
        """
        modlist = [(ldap.MOD_REPLACE, name, list(vals) or None) for name, vals in values.items()]
        controls = _assertion(assertion)
        self._write("change", dn, lambda conn: conn.modify_ext_s(dn, modlist, serverctrls=controls))

    def swap(
        self,
        dn: str,
        attribute: str,
        old: bytes,
        new: bytes,
        also: Mapping[str, Sequence[bytes]] | None = None,
    ) -> None:
        """Replace the value ``old`` of ``attribute`` by ``new``, only if the entry still
        holds ``old``, and set the attributes of ``also``: one modify that deletes the old
        value and adds the new one, which the server applies whole or not at all (RFC 4511
        §4.6).  It needs no control, so every server takes it (389-DS and Active Directory
        do not all offer the RFC 4528 assertion).

        Raises:
            EntryChanged: the entry is gone or no longer holds ``old``.
            DirectoryError: the bind may not change it, or the server refused.
        """
        modlist: list[tuple[int, str, list[bytes] | None]] = [
            (ldap.MOD_DELETE, attribute, [old]),
            (ldap.MOD_ADD, attribute, [new]),
        ]
        modlist += [(ldap.MOD_REPLACE, name, list(v) or None) for name, v in (also or {}).items()]
        self._write("change", dn, lambda conn: conn.modify_s(dn, modlist))

    def delete(self, dn: str, *, assertion: str | None = None) -> None:
        """Delete the entry ``dn`` (it must have no children).

        Raises:
            EntryChanged: the entry is gone or no longer matches ``assertion``.
            DirectoryError: the bind may not delete it, or the server refused.
        """
        controls = _assertion(assertion)
        self._write("delete", dn, lambda conn: conn.delete_ext_s(dn, serverctrls=controls))

    def close(self) -> None:
        self._backend.close()

    def _write(self, verb: str, dn: str, operation: Any) -> None:
        try:
            self._backend.execute(operation)
        except _REFUSED as err:
            raise DirectoryError(self._refused(verb, dn, err)) from None
        except (ldap.ASSERTION_FAILED, ldap.NO_SUCH_ATTRIBUTE):
            raise EntryChanged(
                f"cannot {verb} {dn!r}: it was changed meanwhile (another rotate run?); "
                "run the command again"
            ) from None
        except ldap.NO_SUCH_OBJECT:
            if verb == "add":
                raise DirectoryError(
                    f"cannot add {dn!r}: its parent entry does not exist at {self.describe()}"
                ) from None
            raise EntryChanged(f"cannot {verb} {dn!r}: the entry no longer exists") from None
        except ldap.ALREADY_EXISTS:
            raise DirectoryError(
                f"cannot add {dn!r}: an entry with that DN exists already; choose another selector"
            ) from None
        except ldap.LDAPError as err:
            raise DirectoryError(
                f"cannot {verb} {dn!r} at {self.describe()}: {reason(err)}"
            ) from None

    def _refused(self, verb: str, dn: str, err: ldap.LDAPError) -> str:
        what = f"cannot {verb} {dn!r}: {reason(err)}"
        if self.admin:
            return (
                f"{what}; the bind DN {self.bind_dn!r} (LDAPAdminBindUser) may not write "
                "there; grant it write access to the DKIM entries (conf/openldap-acl.ldif)"
            )
        return (
            f"{what}; the bind DN {self.bind_dn!r} may not write; set LDAPAdminBindUser and "
            "LDAPAdminBindPasswordFile to a DN that may (the milter's own bind should only read)"
        )


def _assertion(filterstr: str | None) -> list[AssertionControl] | None:
    return [AssertionControl(True, filterstr)] if filterstr else None
