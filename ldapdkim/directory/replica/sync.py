"""A live in-process replica of the directory, kept current by content sync (RFC 4533).

:class:`SyncReplica` is a directory backend that answers lookups from memory.
A thread runs python-ldap's ``SyncreplConsumer`` in refreshAndPersist mode
over a connection of its own (set up by :class:`~ldapdkim.directory.ldapbackend.LdapBackend`:
same URIs, bind, TLS and timeouts; failover is libldap's URI list), with the
filter ``(|(objectClass=dkimSignDomainPolicy)(objectClass=dkimSignKey))`` and
``derefAliases`` never.  Every change the server sends bumps
:attr:`SyncReplica.generation`, which makes the resolver drop its caches, so
a modify in the directory changes the next message's signature.

* ``searches`` counts network round trips only: lookups served from the
  replica leave it alone.
* After an error the thread reconnects (0.5 s, doubling up to 30 s) and
  resumes with the saved cookie.  A server that cannot resume from it
  (e-syncRefreshRequired; slapd's unwillingToPerform for a cookie newer than
  its own state) is asked again without one: a full refresh, after which
  whatever the server did not send is deleted.
* A server whose root DSE lists no sync control but a ``highestCommittedUSN``
  (Active Directory) is followed by polling instead, every
  ``DirectoryPollInterval`` seconds (:mod:`~ldapdkim.directory.replica.usnpoll`),
  into the same feed and database; everything below holds for it alike.
* ``DirectorySync auto``: sync if the server accepts the sync control, else
  (unavailableCriticalExtension, protocolError: slapd without syncprov)
  lookups through the LDAP backend, asking for sync again
  every REFUSED_RETRY seconds.  ``yes``: sync only;
  lookups raise :class:`DirectoryUnavailable` until the first refresh is
  done (now or by an earlier run).  ``no``: lookups only.  Until the first
  refresh (and with no earlier one in the database), ``auto`` answers by
  direct lookups.
* While disconnected the replica keeps answering; ``DirectoryMaxStale``
  seconds after the last contact with a server it raises
  :class:`DirectoryUnavailable` (0: as soon as it is disconnected).

The entries live in ``StateDirectory/replica.mdb``
(:mod:`ldapdkim.directory.replica.store`), which every process reads.  One
process writes it: each :class:`SyncReplica` asks for the writer role
(:class:`~ldapdkim.directory.replica.feed.WriterRole`) every
``POLL_TIMEOUT``; the one holding it runs content sync, commits what arrives
(:class:`~ldapdkim.directory.replica.feed.ReplicaFeed`) and, every
:data:`BEAT` seconds, writes its word on the connection (server, last
contact, refusal) into the database for the others.  A process that only
reads answers from the database as it stands: a restart serves mail at once,
from the last committed state.  A writer that falls silent for
:data:`WRITER_SILENT` seconds counts as disconnected.

The writer also writes ``StateDirectory/status.json`` every few seconds, for
``ldapdkim status`` (:mod:`ldapdkim.directory.replica.status`): ``mode`` says
how lookups are answered now; ``servers`` has one item per ``Directory`` URI;
``entries`` is the size of the replica for the server it was last synced from
(0 for others), ``staleness_s`` the seconds since that server was last known
current.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ldap

from ldapdkim.config.ldap import LdapSettings
from ldapdkim.config.settings import Settings
from ldapdkim.directory.entries import Entry
from ldapdkim.directory.ldapbackend import LdapBackend, peer_uri, reason
from ldapdkim.directory.replica import usnpoll
from ldapdkim.directory.replica.consumer import (
    _REFUSED_SYNC,
    KEEPALIVE_INTERVAL,
    POLL_TIMEOUT,
    SYNC_ATTRIBUTES,
    SYNC_FILTER,
    TRACKING_ATTRIBUTES,
    _cannot_resume,
    _Consumer,
    _ping,
    tracking,
)
from ldapdkim.directory.replica.feed import ReplicaFeed, WriterRole
from ldapdkim.directory.replica.state import Link, LookupMode, ReplicaState, Verdict
from ldapdkim.directory.replica.state import status as replica_status
from ldapdkim.directory.replica.statedir import StateDirectory
from ldapdkim.directory.replica.store import Meta, ReplicaStore
from ldapdkim.errors import DirectoryStale, DirectoryUnavailable
from ldapdkim.model import DirectorySync, DirectoryView

log = logging.getLogger(__name__)

RETRY_FIRST = 0.5
RETRY_MAX = 30.0
REFUSED_RETRY = 300.0
"""``auto`` asks a server that refused content sync again after this long."""
BEAT = 1.0
"""The writer tells the other processes how its connection is this often."""
WRITER_SILENT = 3 * BEAT + POLL_TIMEOUT
"""A writer not heard of for this long is gone (its replica no longer current)."""
META_FRESH = 0.02
"""Seconds a reader keeps what the database said about itself (read per message)."""
STATUS_INTERVAL = 2.0
LOOKUP_PROBE_INTERVAL = 30.0
"""In lookup mode, a root DSE read this often keeps the connection (and status) current."""


@dataclass(frozen=True)
class ReplicaSettings:
    """What a replica is made from: a reload that leaves this value equal keeps the replica."""

    ldap: LdapSettings
    sync: DirectorySync
    max_stale: float
    state_directory: Path
    poll_interval: float
    """``DirectoryPollInterval``: how often a server without content sync is polled."""

    @classmethod
    def of(cls, settings: Settings) -> ReplicaSettings:
        """The replica ``settings`` ask for.

        Raises:
            ValueError: ``Directory`` is not an LDAP server (an LDIF file needs no replica).
        """
        ldap_settings = settings.ldap
        if ldap_settings is None:
            raise ValueError(f"{settings.source}: a replica needs an LDAP Directory")
        return cls(
            ldap_settings,
            settings.directory_sync,
            settings.directory_max_stale,
            settings.state_directory,
            settings.directory_poll_interval,
        )


class SyncReplica:
    """A :class:`~ldapdkim.directory.resolution.Backend` answering from a content-sync replica.

    ``start`` False leaves the thread unstarted (tests drive :attr:`store` themselves).
    """

    def __init__(self, settings: ReplicaSettings, *, start: bool = True) -> None:
        self.settings = settings
        self.wanted = settings.sync
        self.lookup = LdapBackend(settings.ldap)
        self.max_stale = settings.max_stale
        self.files = StateDirectory(
            settings.state_directory, f"{' '.join(self.lookup.uris)} {self.lookup.base_dn}"
        )
        self.store: ReplicaStore | None = None
        """The database (None with ``DirectorySync no``)."""
        self.feed: ReplicaFeed | None = None
        """Set while this process holds the writer role."""
        self._role: WriterRole | None = None
        self._meta: tuple[float, Meta] | None = None
        self._lock = threading.Lock()
        self.link = Link()
        """The writer's connection: replaced whole, under ``_lock`` (:meth:`_relink`)."""
        self._started = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_beat = 0.0
        self._last_word: tuple[str | None, bool] | None = None
        self._last_status = 0.0
        self._last_probe = 0.0
        self._status_mode: LookupMode | None = None
        self._poller: usnpoll.UsnPoller | None = None
        if self.wanted is not DirectorySync.NO:
            self.store = self.files.open_store()
            self._role = WriterRole(self.store.path.parent)
        else:
            log.info("directory: lookups with caching (DirectorySync no)")
        if start:
            self._thread = threading.Thread(target=self._run, name="ldapdkim-sync", daemon=True)
            self._thread.start()

    def serves(self, settings: ReplicaSettings) -> bool:
        """Whether this running replica is the one ``settings`` describe.

        A configuration reload then keeps it, with its connection and role.
        """
        return not self._stop.is_set() and settings == self.settings

    # -- Backend ------------------------------------------------------------

    @property
    def searches(self) -> int:
        """Network round trips (direct lookups); replica answers do not count."""
        return self.lookup.searches

    @searches.setter
    def searches(self, value: int) -> None:
        self.lookup.searches = value

    @property
    def generation(self) -> int:
        return 0 if self.store is None else self._current().generation

    @property
    def serves_from_memory(self) -> bool:
        return self.mode is LookupMode.SYNC

    def describe(self) -> str:
        return self.lookup.describe()

    def search_policies(self, names: Sequence[str]) -> list[Entry]:
        if self._from_replica():
            assert self.store is not None
            return self.store.policies(names)
        return self.lookup.search_policies(names)

    def search_keys(self, policy_dn: str) -> list[Entry]:
        if self._from_replica():
            assert self.store is not None
            return self.store.children(policy_dn)
        return self.lookup.search_keys(policy_dn)

    def walk(self) -> Iterator[tuple[Entry, list[Entry]]]:
        if self._from_replica():
            assert self.store is not None
            return iter(self.store.walk())
        return self.lookup.walk()

    def close(self) -> None:
        """Stop the sync thread, commit what waits, give up the writer role, close connections.

        The database stays open for lookups still in flight; it closes when
        nothing refers to it any more.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        elif self.feed is not None:
            self._housekeeping(final=True)
        if self._role is not None:
            self._role.release()
        self.feed = None
        self.lookup.close()
        self.files.remove_fallback()

    # -- the writer role ----------------------------------------------------

    def take_writer_role(self) -> bool:
        """Become the process that writes the replica, if no other is; whether this one is."""
        if self.feed is not None:
            return True
        if self.store is None or self._role is None or not self._role.take():
            return False
        self.feed = ReplicaFeed(self.store)
        contact = self.store.meta().contact
        self._relink(lambda link: replace(link, contact=contact))
        log.info("directory: this process keeps the replica %s up to date", self.store.path)
        return True

    def _current(self) -> Meta:
        """What the database says about itself, re-read at most every META_FRESH seconds."""
        assert self.store is not None
        now = time.monotonic()
        cached = self._meta
        if cached is None or now - cached[0] > META_FRESH:
            cached = (now, self.store.meta())
            self._meta = cached
        return cached[1]

    def _relink(self, change: Callable[[Link], Link]) -> None:
        """Replace :attr:`link` by ``change(link)``; the lock keeps two changes from racing."""
        with self._lock:
            self.link = change(self.link)

    def state(self) -> ReplicaState:
        """The replica now: the writer's own (its link and feed), or the writer's word.

        The writer's ``loaded`` is its feed's, which turns True only once the
        commit of a refresh's end succeeded (lookups then go to the database).
        """
        feed = self.feed
        if feed is not None or self.store is None:
            loaded = feed is not None and feed.loaded
            return ReplicaState.of_writer(self.wanted, loaded, self.link)
        return ReplicaState.of_meta(self.wanted, self._current(), time.time(), WRITER_SILENT)

    @property
    def loaded(self) -> bool:
        """Whether the replica holds a whole copy (a refresh completed once)."""
        return self.state().loaded

    # -- state --------------------------------------------------------------

    @property
    def mode(self) -> LookupMode:
        """How lookups are answered now: ``sync`` (from memory) or ``lookup``."""
        return self.state().mode()

    def staleness(self) -> float | None:
        """Seconds since the replica was last known current; 0 while connected."""
        return self.state().staleness(time.time())

    def _from_replica(self) -> bool:
        now = time.time()
        state = self.state()
        verdict = state.verdict(now, self.max_stale)
        if verdict is Verdict.LOOKUP:
            return False
        if verdict is Verdict.NOT_LOADED:
            raise DirectoryUnavailable(
                f"DirectorySync yes: no copy of {self.describe()} yet (first content "
                "sync not done, none in the replica database); check the server, or set "
                "DirectorySync auto"
            )
        if verdict is Verdict.STALE:
            stale = state.staleness(now) or 0.0
            raise DirectoryStale(
                f"replica of {self.describe()} is {stale:.0f} s old, more than "
                f"DirectoryMaxStale {self.max_stale:g} s; check that a server answers"
            )
        return True

    def status(self) -> dict[str, Any]:
        """Mode and per-server state, as written to ``status.json`` (:func:`.state.status`).

        In lookup mode the lookup connection is kept up by a probe every
        LOOKUP_PROBE_INTERVAL while no mail needs it.
        """
        state = self.state()
        link = self.link
        lookup_mode = state.mode() is LookupMode.LOOKUP
        return replica_status(
            state,
            link,
            self.lookup.uris,
            lookup_uri=self.lookup.connected_uri() if lookup_mode else None,
            entries=self._entries() if link.last_uri in self.lookup.uris else 0,
            started=self._started,
            now=time.time(),
        ).document()

    def _entries(self) -> int:
        return 0 if self.store is None else self._current().entries

    def view(self) -> DirectoryView:
        """The replica's figures for metrics and health."""
        now = time.time()
        state = self.state()
        mode = state.mode()
        staleness = state.staleness(now)
        if mode is LookupMode.LOOKUP:
            connected = self.lookup.connected_uri() is not None
            last = self.lookup.last_answer
            age = 0.0 if connected else None if last is None else max(0.0, now - last)
        else:
            connected = state.connected is not None
            age = staleness if state.loaded else None
        return DirectoryView(
            mode=mode, connected=connected, age=age, entries=self._entries(), sync_age=staleness
        )

    def describe_state(self) -> str:
        """One line for the SIGUSR1 stats."""
        state = self.state()
        stale = state.staleness(time.time())
        return (
            f"directory_mode={state.mode()} replica_entries={self._entries()} "
            f"replica_connected={'yes' if state.connected else 'no'} "
            f"replica_staleness_s={'-' if stale is None else f'{stale:.1f}'}"
        )

    # -- the sync thread ----------------------------------------------------

    def _run(self) -> None:
        delay = RETRY_FIRST
        while not self._stop.is_set():
            if (
                self.wanted is DirectorySync.NO
                or not self.take_writer_role()
                or self._still_refused()
            ):
                self._housekeeping()
                self._stop.wait(POLL_TIMEOUT)
                continue
            if self._sync_once():
                delay = RETRY_FIRST
            deadline = time.monotonic() + delay
            while not self._stop.is_set() and time.monotonic() < deadline:
                self._housekeeping()
                self._stop.wait(min(POLL_TIMEOUT, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, RETRY_MAX)
        self._housekeeping(final=True)

    def _sync_once(self) -> bool:
        """One sync session until it breaks; True if it got as far as a refresh."""
        conn: Any = None
        feed: ReplicaFeed | None = None
        refreshed = False
        try:
            conn = self.lookup.open_connection(_Consumer)
            feed = self.feed
            assert feed is not None  # the writer role is held
            conn.feed = feed
            if self._follows_usn(conn):
                return self._poll_usn(conn, feed)
            resuming = feed.cookie is not None
            feed.begin_refresh()
            msgid = conn.syncrepl_search(
                self.lookup.base_dn,
                ldap.SCOPE_SUBTREE,
                mode="refreshAndPersist",
                filterstr=SYNC_FILTER,
                attrlist=SYNC_ATTRIBUTES,
            )
            uri = self._peer_uri(conn)
            keepalive = time.monotonic() + KEEPALIVE_INTERVAL
            first = True
            while not self._stop.is_set():
                try:
                    if not conn.syncrepl_poll(msgid=msgid, timeout=POLL_TIMEOUT, all=0):
                        log.info("%s ended the content sync search; reconnecting", uri)
                        return refreshed
                except ldap.TIMEOUT:
                    pass
                if first:
                    first = False
                    self._relink(lambda link: link.connected(uri))
                    log.info(
                        "directory: content sync (RFC 4533) with %s, %s",
                        uri,
                        "resuming from the committed cookie" if resuming else "full refresh",
                    )
                if feed.due():
                    self.commit()
                if feed.loaded:
                    refreshed = True
                    self._current_with(uri)
                if time.monotonic() >= keepalive:
                    _ping(conn, self.lookup.ldap_settings.timeout)
                    keepalive = time.monotonic() + KEEPALIVE_INTERVAL
                self._housekeeping()
        except DirectoryUnavailable as err:
            log.warning("directory content sync: %s; retrying", err)
        except _REFUSED_SYNC as err:
            self._on_refused(err)
        except ldap.LDAPError as err:
            if feed is not None and feed.cookie is not None and _cannot_resume(err):
                # The server cannot start from our cookie: it is too old for its
                # session log, or newer than the server's own state (a server
                # restored from a backup, or a replica that lags behind the one
                # we synced from).  A full refresh puts us level with it.
                log.warning(
                    "%s cannot resume content sync from the saved cookie (%s); "
                    "doing a full refresh",
                    self.describe(),
                    reason(err),
                )
                feed.set_cookie(None)
                return True
            if self.link.uri is not None:
                log.warning(
                    "directory content sync with %s lost (%s); serving the replica and "
                    "reconnecting",
                    self.link.uri,
                    reason(err),
                )
            else:
                log.warning("directory content sync failed (%s); retrying", reason(err))
        finally:
            self._relink(lambda link: link.connected(None))
            if conn is not None:
                with contextlib.suppress(ldap.LDAPError):
                    conn.unbind_ext_s()
        return refreshed

    def _current_with(self, uri: str) -> None:
        """The replica is level with the server at ``uri`` now (content sync or a USN poll)."""
        now = time.time()
        self._relink(lambda link: link.level_with(uri, now))

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
        """Follow the server's changes by USN every ``poll_interval`` until the connection breaks.

        True once a poll has succeeded; errors pass to :meth:`_sync_once`.
        """
        uri = self._peer_uri(conn)
        if self._poller is None:
            self._poller = usnpoll.UsnPoller(
                self.lookup.base_dn, SYNC_FILTER, SYNC_ATTRIBUTES, self.lookup.ldap_settings.timeout
            )
        self._relink(lambda link: link.connected(uri))
        log.info(
            "directory: %s offers no content sync (RFC 4533); following its changes by "
            "uSNChanged every %g s (DirectoryPollInterval)",
            uri,
            self.settings.poll_interval,
        )
        polled = False
        due = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= due:
                self._poller.poll(conn, feed)
                due = time.monotonic() + self.settings.poll_interval
                polled = True
                self._current_with(uri)
            self._housekeeping()
            self._stop.wait(min(POLL_TIMEOUT, max(0.0, due - time.monotonic())))
        return polled

    def _still_refused(self) -> bool:
        """Whether to go on with lookups after a refusal; False every REFUSED_RETRY s.

        A server may gain ``syncprov`` later, or failover may reach one that
        has it: ``auto`` asks again now and then (lookups go on meanwhile).
        """
        link = self.link
        now = time.monotonic()
        if not link.refused:
            return False
        if now - link.refused_at < REFUSED_RETRY:
            return True
        log.debug("directory: asking %s for content sync again", self.describe())
        self._relink(lambda link: link.refusal(now))
        return False

    def _on_refused(self, err: ldap.LDAPError) -> None:
        if self.wanted is DirectorySync.AUTO:
            if not self.link.refused:
                log.info(
                    "directory: %s refuses content sync (%s); using cached lookups "
                    "(LDAPCacheTTL) instead, and asking again every %.0f s",
                    self.describe(),
                    reason(err),
                    REFUSED_RETRY,
                )
            now = time.monotonic()
            self._relink(lambda link: link.refusal(now))
        else:
            log.error(
                "DirectorySync yes, but %s refuses content sync (%s); enable syncprov "
                "there, or set DirectorySync auto",
                self.describe(),
                reason(err),
            )

    def _peer_uri(self, conn: Any) -> str:
        """Which of the Directory URIs libldap connected to (for status)."""
        return peer_uri(conn, self.lookup.uris)

    # -- files --------------------------------------------------------------

    def commit(self, **word: str | None) -> None:
        """Commit what the feed holds (and the writer's ``word``); readers see it at once."""
        if self.feed is not None:
            self.feed.flush(**word)
            self._meta = None

    def _housekeeping(self, *, final: bool = False) -> None:
        now = time.monotonic()
        writer = self.feed is not None
        if writer:
            link = self.link
            word = (None if final else link.uri, link.refused)
            if final or word != self._last_word or now - self._last_beat >= BEAT:
                self._last_word = word
                self._last_beat = now
                self.commit(
                    beat=None if final else repr(time.time()),
                    contact=None if link.contact is None else repr(link.contact),
                    uri=word[0],
                    refused="1" if link.refused else None,
                )
            elif self.feed is not None and self.feed.due():
                self.commit()
        if (
            self.mode is LookupMode.LOOKUP
            and not final
            and now - self._last_probe >= LOOKUP_PROBE_INTERVAL
        ):
            self._last_probe = now
            self._probe()
        if not writer and self.wanted is not DirectorySync.NO:
            return  # the writer writes status.json
        mode = self.mode
        if final or now - self._last_status >= STATUS_INTERVAL or mode is not self._status_mode:
            self._last_status = now
            self._status_mode = mode
            self.files.write_status(self.status())

    def _probe(self) -> None:
        """Keep the lookup connection up while no mail needs it, so status can tell."""
        try:
            self.lookup.execute(lambda conn: _ping(conn, self.lookup.ldap_settings.timeout))
        except (DirectoryUnavailable, ldap.LDAPError) as err:
            log.debug("directory probe: %s", err)
