"""A live in-process replica of the directory: the lookup facade, the writer role and the thread.

:class:`SyncReplica` is a directory backend that answers lookups from
memory.  Its thread runs sessions of :class:`~.consumer.Consumer` (RFC 4533
content sync, or USN polling on Active Directory), which follow the
server's changes into the replica.  Every change bumps
:attr:`SyncReplica.generation`, which makes the resolver drop its caches, so
a modify in the directory changes the next message's signature.

* ``searches`` counts network round trips only: lookups served from the
  replica leave it alone.
* After a session ends the thread reconnects (0.5 s, doubling up to 30 s;
  back to 0.5 s after a session that got a whole copy) and resumes with the
  saved cookie.
* ``DirectorySync auto``: a server that refuses the sync control
  (unavailableCriticalExtension, protocolError: slapd without syncprov) is
  asked again every REFUSED_RETRY seconds, lookups going through the LDAP
  backend meanwhile.  Whether a lookup goes to the replica, to the server,
  or is refused (``yes`` before the first refresh, a replica staler than
  ``DirectoryMaxStale``) is decided by the rules of
  :mod:`~ldapdkim.directory.replica.state`.

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
from ldapdkim.directory.ldapbackend import LdapBackend
from ldapdkim.directory.replica.consumer import POLL_TIMEOUT, Consumer, Ended, ping
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
        self._meta: tuple[float, int, Meta] | None = None
        """What the database said about itself: when (monotonic), after how many of this
        process's commits (:attr:`ReplicaStore.commits`), and what."""
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
        self.consumer = Consumer(self.lookup, self, self._stop, settings.poll_interval)
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
            self.housekeeping(final=True)
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
        """What the database says about itself, re-read at most every META_FRESH seconds,
        and after every commit of this process's own (the feed commits by itself at the
        end of a refresh or with a new cookie: status.json must not miss them)."""
        store = self.store
        assert store is not None
        now = time.monotonic()
        cached = self._meta
        if cached is None or cached[1] != store.commits or now - cached[0] > META_FRESH:
            commits = store.commits  # before the read: a commit meanwhile reads again
            cached = (now, commits, store.meta())
            self._meta = cached
        return cached[2]

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
                self.housekeeping()
                self._stop.wait(POLL_TIMEOUT)
                continue
            assert self.feed is not None  # the writer role is held
            end = self.consumer.run(self.feed)
            if end.why is Ended.REFUSED:
                self._on_refused(end.detail)
            if end.refreshed:
                delay = RETRY_FIRST
            deadline = time.monotonic() + delay
            while not self._stop.is_set() and time.monotonic() < deadline:
                self.housekeeping()
                self._stop.wait(min(POLL_TIMEOUT, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, RETRY_MAX)
        self.housekeeping(final=True)

    def on_connected(self, uri: str | None) -> None:
        self._relink(lambda link: link.connected(uri))

    def on_level_with(self, uri: str) -> None:
        """The replica is level with the server at ``uri`` now (content sync or a USN poll)."""
        now = time.time()
        self._relink(lambda link: link.level_with(uri, now))

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

    def _on_refused(self, why: str) -> None:
        if self.wanted is DirectorySync.AUTO:
            if not self.link.refused:
                log.info(
                    "directory: %s refuses content sync (%s); using cached lookups "
                    "(LDAPCacheTTL) instead, and asking again every %.0f s",
                    self.describe(),
                    why,
                    REFUSED_RETRY,
                )
            now = time.monotonic()
            self._relink(lambda link: link.refusal(now))
        else:
            log.error(
                "DirectorySync yes, but %s refuses content sync (%s); enable syncprov "
                "there, or set DirectorySync auto",
                self.describe(),
                why,
            )

    # -- files --------------------------------------------------------------

    def commit(self, **word: str | None) -> None:
        """Commit what the feed holds (and the writer's ``word``); readers see it at once."""
        if self.feed is not None:
            self.feed.flush(**word)

    def housekeeping(self, *, final: bool = False) -> None:
        """The writer's word and commits, the lookup probe, status.json: each when due."""
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
            self.lookup.execute(lambda conn: ping(conn, self.lookup.ldap_settings.timeout))
        except (DirectoryUnavailable, ldap.LDAPError) as err:
            log.debug("directory probe: %s", err)
