"""Change tracking without RFC 4533: polling Active Directory's update sequence numbers.

Active Directory offers no content sync.  Every domain controller numbers
its own writes instead: each object's ``uSNChanged`` is the number of its
last change on that DC, and the root DSE's ``highestCommittedUSN`` the
highest number given out so far.  :class:`UsnPoller` keeps a replica current
with that, through the same :class:`~ldapdkim.directory.replica.feed.ReplicaFeed`
as content sync, so the database, the workers and the commits are the same:

* a **full refresh** reads ``highestCommittedUSN`` first, then every policy
  and key entry below the base (paged); whatever the replica holds that the
  directory no longer has is dropped, and the USN read first becomes the
  cookie, committed with the entries;
* a **poll** (every ``DirectoryPollInterval`` seconds) reads the root DSE
  only; if the USN moved, it fetches the entries below the base whose
  ``uSNChanged`` is above the cookie's, and the tombstones (``isDeleted``,
  read with the Show Deleted control) changed since, whose ``objectGUID``
  names the replica entry to delete;
* an account that may not read tombstones (by default only administrators
  may list ``CN=Deleted Objects``) still sees deletions: each poll that
  finds the USN moved then lists the ``objectGUID`` of every entry below the
  base and drops the others (one search of the DKIM subtree);
* an entry moved out of the base is noticed the same way, or at the next
  full refresh when tombstones are readable;
* USNs are per DC: the cookie names the DC (``dsServiceName``) it came
  from, and a different DC (failover to the next ``Directory`` URI) brings
  a full refresh.

Entries are identified by their ``objectGUID``, written as a UUID string.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import ldap
from ldap.controls import LDAPControl

from ldapdkim.directory.ldapbackend import paged_search
from ldapdkim.directory.replica.feed import ReplicaFeed

log = logging.getLogger(__name__)

AD_CAPABILITY = "1.2.840.113556.1.4.800"
"""LDAP_CAP_ACTIVE_DIRECTORY_OID in the root DSE's ``supportedCapabilities``."""
SHOW_DELETED = "1.2.840.113556.1.4.417"
"""LDAP_SERVER_SHOW_DELETED_OID: a search also returns tombstones."""
COOKIE_PREFIX = "usn:"
_ROOT_ATTRIBUTES = ["highestCommittedUSN", "dsServiceName", "defaultNamingContext"]


@dataclass(frozen=True)
class RootDse:
    """What a poll reads first: where the DC's numbering stands."""

    usn: int
    dc: str
    """``dsServiceName``: which domain controller numbered the changes."""
    naming_context: str

    @property
    def cookie(self) -> str:
        return f"{COOKIE_PREFIX}{self.usn}#{self.dc}"


def tracks_usn(root: dict[str, list[bytes]]) -> bool:
    """Whether a root DSE (attributes as read) is a server whose changes can be polled by USN."""
    names = {name.lower(): values for name, values in root.items()}
    return bool(names.get("highestcommittedusn"))


def read_root(conn: Any, timeout: float) -> RootDse:
    """The root DSE's USN, DC name and default naming context.

    Raises:
        ValueError: the server has no ``highestCommittedUSN`` (not Active Directory).
    """
    [(_, attrs)] = conn.search_st(
        "", ldap.SCOPE_BASE, "(objectClass=*)", _ROOT_ATTRIBUTES, 0, timeout
    )
    names = {name.lower(): values for name, values in attrs.items()}
    try:
        usn = int(names["highestcommittedusn"][0])
    except (KeyError, IndexError, ValueError):
        raise ValueError("the root DSE has no highestCommittedUSN") from None
    dc = names.get("dsservicename", [b""])[0].decode("utf-8", "replace")
    context = names.get("defaultnamingcontext", [b""])[0].decode("utf-8", "replace")
    return RootDse(usn, dc, context)


def parse_cookie(cookie: str | None) -> tuple[int, str] | None:
    """(USN, DC) of a cookie this module wrote, else None (none, or a content-sync cookie)."""
    if cookie is None or not cookie.startswith(COOKIE_PREFIX):
        return None
    number, _, dc = cookie[len(COOKIE_PREFIX) :].partition("#")
    try:
        return int(number), dc
    except ValueError:
        return None


def guid(attrs: dict[str, list[bytes]]) -> str | None:
    """The entry's ``objectGUID`` as a UUID string (AD stores it little-endian)."""
    for name, values in attrs.items():
        if name.lower() == "objectguid" and values and len(values[0]) == 16:
            return str(uuid.UUID(bytes_le=values[0]))
    return None


class UsnPoller:
    """Full refreshes and incremental polls of one base, into one feed."""

    def __init__(
        self, base: str, filterstr: str, attributes: Iterable[str], timeout: float
    ) -> None:
        self.base = base
        self.filter = filterstr
        self.attributes = [*attributes, "objectGUID"]
        self.timeout = timeout
        self.tombstones_readable: bool | None = None
        """Learnt at the first poll with changes: None until then."""

    def poll(self, conn: Any, feed: ReplicaFeed) -> int:
        """Bring ``feed`` level with the server; the number of entries changed or deleted.

        A full refresh when the feed has no USN cookie of this DC, else the
        changes since its cookie.  python-ldap errors pass through.
        """
        root = read_root(conn, self.timeout)
        known = parse_cookie(feed.cookie)
        if known is None or known[1] != root.dc or known[0] > root.usn:
            if known is not None:
                log.info(
                    "directory: %s is not the domain controller the replica followed (%s, USN "
                    "%d); doing a full refresh",
                    root.dc,
                    known[1],
                    known[0],
                )
            return self._refresh(conn, feed, root)
        since = known[0]
        if root.usn == since:
            return 0
        return self._changes(conn, feed, root, since)

    def _refresh(self, conn: Any, feed: ReplicaFeed, root: RootDse) -> int:
        found = self._search(conn, self.filter)
        present = []
        for dn, attrs in found:
            entry_id = guid(attrs)
            if entry_id is not None:
                feed.entry(entry_id, dn, _without_guid(attrs))
                present.append(entry_id)
        feed.keep_only(present)  # drops what the directory no longer has
        feed.set_cookie(root.cookie)
        feed.refresh_done()
        log.info("directory: full refresh by USN from %s: %d entries", root.dc, len(found))
        return len(found)

    def _changes(self, conn: Any, feed: ReplicaFeed, root: RootDse, since: int) -> int:
        changed = self._search(conn, f"(&{self.filter}(uSNChanged>={since + 1}))")
        for dn, attrs in changed:
            entry_id = guid(attrs)
            if entry_id is not None:
                feed.entry(entry_id, dn, _without_guid(attrs))
        deleted = self._deleted(conn, root, since)
        if deleted is None:  # tombstones unreadable: compare with what exists instead
            listing = self._search(conn, self.filter, ["objectGUID"])
            feed.keep_only(g for _, attrs in listing if (g := guid(attrs)) is not None)
            count = len(changed)
        else:
            feed.delete(deleted)
            count = len(changed) + len(deleted)
        feed.set_cookie(root.cookie)
        if count:
            log.debug("directory: %d changes by USN from %s", count, root.dc)
        return count

    def _deleted(self, conn: Any, root: RootDse, since: int) -> list[str] | None:
        """objectGUIDs of tombstones changed since ``since``; None if this account cannot
        read tombstones."""
        if self.tombstones_readable is False:
            return None
        control = LDAPControl(SHOW_DELETED, True, None)
        filterstr = f"(&(isDeleted=TRUE)(uSNChanged>={since + 1}))"
        base = f"CN=Deleted Objects,{root.naming_context}"
        try:
            conn.search_ext_s(
                base, ldap.SCOPE_BASE, "(objectClass=*)", ["1.1"],
                serverctrls=[control], timeout=self.timeout,
            )  # fmt: skip
            found = conn.search_ext_s(
                root.naming_context, ldap.SCOPE_SUBTREE, filterstr, ["objectGUID"],
                serverctrls=[control], timeout=self.timeout,
            )  # fmt: skip
        except (ldap.NO_SUCH_OBJECT, ldap.INSUFFICIENT_ACCESS, ldap.UNAVAILABLE_CRITICAL_EXTENSION):
            if self.tombstones_readable is None:
                log.info(
                    "directory: this account cannot read %s; deletions are found by listing "
                    "the entries below %s at each change (grant it List Contents and Read "
                    "Property there to save that search)",
                    base,
                    self.base,
                )
            self.tombstones_readable = False
            return None
        self.tombstones_readable = True
        return [g for dn, attrs in found if dn is not None and (g := guid(attrs)) is not None]

    def _search(
        self, conn: Any, filterstr: str, attributes: list[str] | None = None
    ) -> list[tuple[str, dict[str, list[bytes]]]]:
        return paged_search(
            conn, self.base, ldap.SCOPE_SUBTREE, filterstr, attributes or self.attributes,
            self.timeout,
        )  # fmt: skip


def _without_guid(attrs: dict[str, list[bytes]]) -> dict[str, list[bytes]]:
    return {name: values for name, values in attrs.items() if name.lower() != "objectguid"}
