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
  read with the Show Deleted control from ``CN=Deleted Objects`` of the
  base's naming context) changed since, whose ``objectGUID`` names the
  replica entry to delete;
* an account that sees no tombstones (by default only administrators may
  list ``CN=Deleted Objects``, and a search there then finds nothing rather
  than failing) still sees deletions: each poll that finds the USN moved
  lists the ``objectGUID`` of every entry below the base and drops the
  others (one search of the DKIM subtree);
* an entry moved out of the base leaves no tombstone: the listing drops it,
  which with tombstones readable still runs once an hour
  (:data:`LISTING_INTERVAL`) when the directory changed;
* USNs are per DC: the cookie names the DC (``dsServiceName``) it came
  from, and a different DC (failover to the next ``Directory`` URI) brings
  a full refresh.

Entries are identified by their ``objectGUID``, written as a UUID string.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ldap
from ldap.controls import LDAPControl

from ldapdkim.directory.entries import normalize_dn
from ldapdkim.directory.ldapbackend import paged_search
from ldapdkim.directory.replica.feed import ReplicaFeed
from ldapdkim.errors import DirectoryUnavailable

log = logging.getLogger(__name__)

SHOW_DELETED = "1.2.840.113556.1.4.417"
"""LDAP_SERVER_SHOW_DELETED_OID: a search also returns tombstones."""
COOKIE_PREFIX = "usn:"
LISTING_INTERVAL = 3600.0
"""With tombstones to go by, the base is still listed this often (when it changed), to drop
entries moved out of it, which leave no tombstone."""
_ROOT_ATTRIBUTES = ["highestCommittedUSN", "dsServiceName", "namingContexts"]


@dataclass(frozen=True)
class RootDse:
    """What a poll reads first: where the DC's numbering stands."""

    usn: int
    dc: str
    """``dsServiceName``: which domain controller numbered the changes."""
    naming_contexts: tuple[str, ...]

    def naming_context_of(self, dn: str) -> str | None:
        """The naming context (partition) that holds ``dn``: the longest that ends it."""
        key = normalize_dn(dn)
        holding = [nc for nc in self.naming_contexts if key == (n := normalize_dn(nc))
                   or key.endswith("," + n)]  # fmt: skip
        return max(holding, key=len, default=None)

    @property
    def cookie(self) -> str:
        return f"{COOKIE_PREFIX}{self.usn}#{self.dc}"


def tracks_usn(root: Mapping[str, Sequence[bytes]]) -> bool:
    """Whether a root DSE (attributes as read) is a server whose changes can be polled by USN."""
    names = {name.lower(): values for name, values in root.items()}
    return bool(names.get("highestcommittedusn"))


def read_root(conn: Any, timeout: float) -> RootDse:
    """The root DSE's USN, DC name and naming contexts.

    Raises:
        DirectoryUnavailable: the server has no ``highestCommittedUSN`` (failover reached a
            server that is not Active Directory); the caller reconnects and asks again.
    """
    [(_, attrs)] = conn.search_st(
        "", ldap.SCOPE_BASE, "(objectClass=*)", _ROOT_ATTRIBUTES, 0, timeout
    )
    names = {name.lower(): values for name, values in attrs.items()}
    try:
        usn = int(names["highestcommittedusn"][0])
    except (KeyError, IndexError, ValueError):
        raise DirectoryUnavailable(
            "the server's root DSE has no highestCommittedUSN to follow changes by"
        ) from None
    dc = names.get("dsservicename", [b""])[0].decode("utf-8", "replace")
    contexts = tuple(v.decode("utf-8", "replace") for v in names.get("namingcontexts", []))
    return RootDse(usn, dc, contexts)


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
        self._listed = time.monotonic()
        """When the base was last read or listed in full (monotonic)."""
        self.tombstones_readable: bool | None = None
        """Learnt at the first poll with changes (None until then), again after a refresh."""

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
        self.tombstones_readable = None  # another DC, or rights changed since
        self._listed = time.monotonic()
        found = self._search(conn, self.filter)
        feed.keep_only(_file(feed, found))  # drops what the directory no longer has
        feed.set_cookie(root.cookie)
        feed.refresh_done()
        log.info("directory: full refresh by USN from %s: %d entries", root.dc, len(found))
        return len(found)

    def _changes(self, conn: Any, feed: ReplicaFeed, root: RootDse, since: int) -> int:
        changed = self._search(conn, f"(&{self.filter}(uSNChanged>={since + 1}))")
        _file(feed, changed)
        deleted = self._deleted(conn, root, since)
        count = len(changed) + len(deleted or [])
        if deleted is not None:
            feed.delete(deleted)
        if deleted is None or time.monotonic() - self._listed >= LISTING_INTERVAL:
            # No tombstones to go by, or time to catch what they do not show
            # (an entry moved out of the base): compare with what exists.
            listing = self._search(conn, self.filter, ["objectGUID"])
            feed.keep_only(g for _, attrs in listing if (g := guid(attrs)) is not None)
            self._listed = time.monotonic()
        feed.set_cookie(root.cookie)
        if count:
            log.debug("directory: %d changes by USN from %s", count, root.dc)
        return count

    def _deleted(self, conn: Any, root: RootDse, since: int) -> list[str] | None:
        """objectGUIDs of the tombstones changed since ``since``; None if this account sees
        no tombstones (then deletions are found by listing)."""
        context = root.naming_context_of(self.base)
        if context is None:
            return None
        container = f"CN=Deleted Objects,{context}"
        if self.tombstones_readable is None:
            self.tombstones_readable = self._sees_tombstones(conn, container)
            if not self.tombstones_readable:
                log.info(
                    "directory: this account sees no tombstones in %s; deletions are found by "
                    "listing the entries below %s whenever the directory changed (grant it "
                    "List Contents and Read Property there to spare that search)",
                    container,
                    self.base,
                )
        if not self.tombstones_readable:
            return None
        found = conn.search_ext_s(
            container, ldap.SCOPE_ONELEVEL, f"(&(isDeleted=TRUE)(uSNChanged>={since + 1}))",
            ["objectGUID"], serverctrls=[_show_deleted()], timeout=self.timeout,
        )  # fmt: skip
        return [g for dn, attrs in found if dn is not None and (g := guid(attrs)) is not None]

    def _sees_tombstones(self, conn: Any, container: str) -> bool:
        """Whether this account sees any tombstone at all.

        Without List Contents on the container a search for tombstones
        answers "none" rather than refusing, which could not be told from no
        deletions; an account that sees one sees them all.  A domain that
        never deleted anything shows none either, and is listed instead: safe.
        """
        try:
            found = conn.search_ext_s(
                container, ldap.SCOPE_ONELEVEL, "(isDeleted=TRUE)", ["1.1"],
                serverctrls=[_show_deleted()], timeout=self.timeout, sizelimit=1,
            )  # fmt: skip
        except ldap.SIZELIMIT_EXCEEDED:
            return True
        except (ldap.NO_SUCH_OBJECT, ldap.INSUFFICIENT_ACCESS, ldap.UNAVAILABLE_CRITICAL_EXTENSION):
            return False
        return any(dn for dn, _ in found)

    def _search(
        self, conn: Any, filterstr: str, attributes: list[str] | None = None
    ) -> list[tuple[str, dict[str, list[bytes]]]]:
        return paged_search(
            conn, self.base, ldap.SCOPE_SUBTREE, filterstr, attributes or self.attributes,
            self.timeout,
        )  # fmt: skip


def _show_deleted() -> LDAPControl:
    return LDAPControl(SHOW_DELETED, True, None)


def _file(feed: ReplicaFeed, found: list[tuple[str, dict[str, list[bytes]]]]) -> list[str]:
    """Give ``feed`` each entry found, under its objectGUID; the GUIDs."""
    filed = []
    for dn, attrs in found:
        entry_id = guid(attrs)
        if entry_id is not None:
            without = {k: v for k, v in attrs.items() if k.lower() != "objectguid"}
            feed.entry(entry_id, dn, without)
            filed.append(entry_id)
    return filed
