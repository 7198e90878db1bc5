"""The consumer side of content sync (RFC 4533) and how a server's changes are followed.

:meth:`Consumer.run` is one session with a server, until it breaks: it
connects (through :class:`~ldapdkim.directory.ldapbackend.LdapBackend`: same
URIs, bind, TLS and timeouts; failover is libldap's URI list), reads the
root DSE, and follows the server's changes into the writer's
:class:`~ldapdkim.directory.replica.feed.ReplicaFeed`:

* by python-ldap's ``SyncreplConsumer`` in refreshAndPersist mode, with
  :data:`SYNC_FILTER` and ``derefAliases`` never, resuming from the saved
  cookie.  A server that cannot resume from it (e-syncRefreshRequired;
  slapd's unwillingToPerform for a cookie newer than its own state) ends the
  session with :attr:`Ended.RESYNC` and no cookie: the next session is a full
  refresh, after which whatever the server did not send is deleted;
* or, when the root DSE lists no sync control but a ``highestCommittedUSN``
  (Active Directory), by polling every ``DirectoryPollInterval`` seconds
  (:mod:`~ldapdkim.directory.replica.usnpoll`).

It returns why the session ended (:class:`SessionEnd`); what to do then
is the caller's (:mod:`~ldapdkim.directory.replica.sync`), as are commits
and housekeeping, asked for through :class:`Host`.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import ldap
from ldap.ldapobject import SimpleLDAPObject
from ldap.syncrepl import SyncreplConsumer

from ldapdkim import schema
from ldapdkim.directory.ldapbackend import LdapBackend, peer_uri, reason
from ldapdkim.directory.replica import usnpoll
from ldapdkim.directory.replica.feed import ReplicaFeed
from ldapdkim.directory.replica.syncstate import RESPONSE_CONTROLS
from ldapdkim.errors import DirectoryUnavailable

log = logging.getLogger(__name__)

SYNC_FILTER = f"(|(objectClass={schema.POLICY_CLASS})(objectClass={schema.KEY_CLASS}))"
SYNC_ATTRIBUTES = sorted(
    {*schema.POLICY_ATTRIBUTES, *schema.KEY_ATTRIBUTES, "objectClass"} - {schema.PUBLIC_KEY}
)
"""What the milter signs with.  The public key and createTimestamp serve audits
and DNS export, which read the directory itself; left out, an RSA-2048 key
entry stays under LMDB's 2 kB in-page limit instead of taking a 4 kB page."""
POLL_TIMEOUT = 0.5
KEEPALIVE_INTERVAL = 5.0
"""A root DSE read this often on the sync connection notices a frozen server."""
_REFUSED_SYNC = (ldap.UNAVAILABLE_CRITICAL_EXTENSION, ldap.PROTOCOL_ERROR)
_REFRESH_REQUIRED = 4096  # e-syncRefreshRequired, RFC 4533 §2.3
SYNC_CONTROL = "1.3.6.1.4.1.4203.1.9.1.1"
"""RFC 4533's sync request control, as the root DSE lists it (slapd's syncprov overlay,
389-DS's Content Synchronization plugin)."""


TRACKING_ATTRIBUTES = ["supportedControl", "highestCommittedUSN"]
"""What the root DSE says about how a server's changes can be followed."""


def tracking(root: Mapping[str, Sequence[bytes]]) -> str | None:
    """How to follow the changes of the server whose root DSE is ``root`` (attributes as read,
    TRACKING_ATTRIBUTES at least): ``sync`` (RFC 4533), ``usn`` (Active Directory's update
    sequence numbers) or None (neither: lookups only)."""
    names = {name.lower(): values for name, values in root.items()}
    if SYNC_CONTROL.encode() in names.get("supportedcontrol", ()):
        return "sync"
    return "usn" if usnpoll.tracks_usn(root) else None


def ping(conn: Any, timeout: float) -> None:
    """One round trip every server answers: the root DSE, no attributes.

    (Who am I?, RFC 4532, would do, but Active Directory does not offer it.)
    """
    conn.search_st("", ldap.SCOPE_BASE, "(objectClass=*)", ["1.1"], 0, timeout)


def _cannot_resume(err: ldap.LDAPError) -> bool:
    """Whether the server refused the sync search because of the cookie we sent.

    RFC 4533 §2.3 says e-syncRefreshRequired; slapd 2.5 answers a cookie
    newer than its own state with unwillingToPerform ("consumer state is
    newer than provider!").
    """
    details = err.args[0] if err.args and isinstance(err.args[0], dict) else {}
    return details.get("result") == _REFRESH_REQUIRED or isinstance(err, ldap.UNWILLING_TO_PERFORM)


class _Consumer(SyncreplConsumer, SimpleLDAPObject):  # type: ignore[misc]
    """A python-ldap connection whose sync callbacks go to a :class:`ReplicaFeed`."""

    feed: ReplicaFeed

    def result4(self, *args: Any, **kwargs: Any) -> Any:
        """python-ldap's, reading each entry's sync state without pyasn1 (:mod:`.syncstate`)."""
        kwargs.setdefault("resp_ctrl_classes", RESPONSE_CONTROLS)
        return super().result4(*args, **kwargs)

    def syncrepl_get_cookie(self) -> str | None:
        return self.feed.cookie

    def syncrepl_set_cookie(self, cookie: str | bytes) -> None:
        self.feed.set_cookie(cookie)

    def syncrepl_entry(self, dn: str, attributes: dict[str, list[bytes]], uuid: Any) -> None:
        self.feed.entry(str(uuid), dn, attributes)

    def syncrepl_delete(self, uuids: Sequence[Any]) -> None:
        self.feed.delete([str(u) for u in uuids])

    def syncrepl_present(self, uuids: Sequence[Any] | None, refreshDeletes: bool = False) -> None:
        self.feed.present(None if uuids is None else [str(u) for u in uuids], refreshDeletes)

    def syncrepl_refreshdone(self) -> None:
        self.feed.refresh_done()


@enum.unique
class Ended(enum.Enum):
    """Why a session ended."""

    STOPPED = "stopped"  # the replica is closing
    SERVER_ENDED = "server ended"  # the server ended the content sync search
    UNAVAILABLE = "unavailable"  # no server could be reached (or bound to)
    LOST = "lost"  # an LDAP error broke the session, or kept it from starting
    REFUSED = "refused"  # the server refuses the sync control (no syncprov)
    RESYNC = "resync"  # the server cannot resume from the cookie: a full refresh next


@dataclass(frozen=True)
class SessionEnd:
    why: Ended
    refreshed: bool
    """The session got as far as a whole copy (the retry delay starts over)."""
    detail: str = ""
    """The server's reason (for REFUSED: what the caller logs)."""


class Host(Protocol):
    """What a session tells the replica it feeds, and asks of it: the server it follows
    now (None: the session is over), that the replica holds everything that server has
    as of now, a commit of what the feed holds, and housekeeping (about every
    :data:`POLL_TIMEOUT` seconds while the session lasts)."""

    def on_connected(self, uri: str | None) -> None: ...
    def on_level_with(self, uri: str) -> None: ...
    def commit(self) -> None: ...
    def housekeeping(self) -> None: ...


class Consumer:
    """Runs sessions with the directory for ``host``, until ``stop`` is set."""

    def __init__(
        self, lookup: LdapBackend, host: Host, stop: threading.Event, poll_interval: float
    ) -> None:
        self.lookup = lookup
        self.host = host
        self.stop = stop
        self.poll_interval = poll_interval
        self.poller: usnpoll.UsnPoller | None = None
        """The USN poller, kept from one session to the next (None until a server needs it)."""
        self._uri: str | None = None

    def run(self, feed: ReplicaFeed) -> SessionEnd:
        """One session until it breaks, into ``feed``; why it ended."""
        conn: Any = None
        refreshed = False
        try:
            conn = self.lookup.open_connection(_Consumer)
            conn.feed = feed
            if self._follows_usn(conn):
                polled = self._poll_usn(conn, feed)
                return SessionEnd(Ended.STOPPED, polled)
            return self._persist(conn, feed)
        except DirectoryUnavailable as err:
            log.warning("directory content sync: %s; retrying", err)
            return SessionEnd(Ended.UNAVAILABLE, refreshed, str(err))
        except _REFUSED_SYNC as err:
            return SessionEnd(Ended.REFUSED, refreshed, reason(err))
        except ldap.LDAPError as err:
            if feed.cookie is not None and _cannot_resume(err):
                # The server cannot start from our cookie: it is too old for its
                # session log, or newer than the server's own state (a server
                # restored from a backup, or a replica that lags behind the one
                # we synced from).  A full refresh puts us level with it.
                log.warning(
                    "%s cannot resume content sync from the saved cookie (%s); "
                    "doing a full refresh",
                    self.lookup.describe(),
                    reason(err),
                )
                feed.set_cookie(None)
                return SessionEnd(Ended.RESYNC, True, reason(err))
            if self._uri is not None:
                log.warning(
                    "directory content sync with %s lost (%s); serving the replica and "
                    "reconnecting",
                    self._uri,
                    reason(err),
                )
            else:
                log.warning("directory content sync failed (%s); retrying", reason(err))
            return SessionEnd(Ended.LOST, refreshed, reason(err))
        finally:
            self._connected(None)
            if conn is not None:
                with contextlib.suppress(ldap.LDAPError):
                    conn.unbind_ext_s()

    def _connected(self, uri: str | None) -> None:
        self._uri = uri
        self.host.on_connected(uri)

    def _persist(self, conn: Any, feed: ReplicaFeed) -> SessionEnd:
        """Content sync in refreshAndPersist mode until the server or :attr:`stop` ends it.

        Errors pass to :meth:`run`: a session broken by one does not count as refreshed.
        """
        refreshed = False
        resuming = feed.cookie is not None
        feed.begin_refresh()
        msgid = conn.syncrepl_search(
            self.lookup.base_dn,
            ldap.SCOPE_SUBTREE,
            mode="refreshAndPersist",
            filterstr=SYNC_FILTER,
            attrlist=SYNC_ATTRIBUTES,
        )
        uri = peer_uri(conn, self.lookup.uris)
        keepalive = time.monotonic() + KEEPALIVE_INTERVAL
        first = True
        while not self.stop.is_set():
            # A change waits DELAY for its commit, not until the server says more.
            due_in = feed.due_in()
            timeout = POLL_TIMEOUT if due_in is None else min(POLL_TIMEOUT, due_in)
            try:
                if not conn.syncrepl_poll(msgid=msgid, timeout=timeout, all=0):
                    log.info("%s ended the content sync search; reconnecting", uri)
                    return SessionEnd(Ended.SERVER_ENDED, refreshed)
            except ldap.TIMEOUT:
                pass
            if first:
                first = False
                self._connected(uri)
                log.info(
                    "directory: content sync (RFC 4533) with %s, %s",
                    uri,
                    "resuming from the committed cookie" if resuming else "full refresh",
                )
            if feed.due():
                self.host.commit()
            if feed.loaded:
                refreshed = True
                self.host.on_level_with(uri)
            if time.monotonic() >= keepalive:
                ping(conn, self.lookup.ldap_settings.timeout)
                keepalive = time.monotonic() + KEEPALIVE_INTERVAL
            self.host.housekeeping()
        return SessionEnd(Ended.STOPPED, refreshed)

    def _follows_usn(self, conn: Any) -> bool:
        """Whether the server offers no content sync but numbers its changes (Active Directory).

        Read from the root DSE at each connection, so a failover to a server of
        the other kind changes the method.
        """
        [(_, root)] = conn.search_st(
            "", ldap.SCOPE_BASE, "(objectClass=*)", TRACKING_ATTRIBUTES,
            0, self.lookup.ldap_settings.timeout,
        )  # fmt: skip
        return tracking(root) == "usn"

    def _poll_usn(self, conn: Any, feed: ReplicaFeed) -> bool:
        """Follow the server's changes by USN every ``poll_interval`` until :attr:`stop`.

        True once a poll has succeeded; errors pass to :meth:`run`.
        """
        uri = peer_uri(conn, self.lookup.uris)
        if self.poller is None:
            self.poller = usnpoll.UsnPoller(
                self.lookup.base_dn, SYNC_FILTER, SYNC_ATTRIBUTES, self.lookup.ldap_settings.timeout
            )
        self._connected(uri)
        log.info(
            "directory: %s offers no content sync (RFC 4533); following its changes by "
            "uSNChanged every %g s (DirectoryPollInterval)",
            uri,
            self.poll_interval,
        )
        polled = False
        due = 0.0
        while not self.stop.is_set():
            if time.monotonic() >= due:
                self.poller.poll(conn, feed)
                due = time.monotonic() + self.poll_interval
                polled = True
                self.host.on_level_with(uri)
            self.host.housekeeping()
            self.stop.wait(min(POLL_TIMEOUT, max(0.0, due - time.monotonic())))
        return polled
