"""The replica's state as typed values, and the pure rules that decide how lookups are answered.

Two values, both frozen:

* :class:`Link`: the writer's own word on its connection (the server it is
  level with, its last contact, a refusal of content sync, when each server
  was last synced from).  The facade holds one and replaces it under its
  lock; it writes the word into the database for the processes that only
  read (:class:`~ldapdkim.directory.replica.store.Meta`).
* :class:`ReplicaState`: what one process knows at one moment: the
  ``DirectorySync`` wanted, whether the replica is loaded, the server it is
  connected to, the last contact, a refusal.  The writer makes it from its
  link and its feed; a reader from the database (:meth:`ReplicaState.of_meta`).

The rules, over a :class:`ReplicaState` and the time ``now``:

* mode: ``no`` looks up; ``auto`` looks up while the server refuses content
  sync or no refresh has completed; otherwise lookups go to the replica.
* staleness: 0 while connected and loaded; None when no server was ever in
  touch; else the seconds since the last contact (never negative).
* verdict: a replica not loaded refuses (``yes`` before the first refresh);
  one staler than ``DirectoryMaxStale`` refuses (exactly at it still
  serves; a staleness of 0 always serves); otherwise it serves.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from ldapdkim.directory.replica.status import ServerStatus, Status
from ldapdkim.directory.replica.store import Meta
from ldapdkim.model import DirectorySync


@enum.unique
class LookupMode(enum.StrEnum):
    """How lookups are answered now (the ``mode`` of ``status.json`` and the metrics)."""

    SYNC = "sync"
    """From the replica, in memory."""
    LOOKUP = "lookup"
    """By (cached) searches on the server."""


@enum.unique
class Verdict(enum.Enum):
    """What a lookup does, by the rules."""

    LOOKUP = "lookup"
    """Ask the server."""
    SERVE = "serve"
    """Answer from the replica."""
    NOT_LOADED = "not loaded"
    """Refuse: no whole copy yet (DirectoryUnavailable)."""
    STALE = "stale"
    """Refuse: the copy is older than DirectoryMaxStale (DirectoryStale)."""


@dataclass(frozen=True)
class Link:
    """The writer's connection, as it tells the readers (in the database) and status.json."""

    uri: str | None = None
    """The server content sync (or USN polling) runs with now; None while disconnected."""
    contact: float | None = None
    """Wall-clock time the replica was last known level with a server."""
    refused: bool = False
    """The server refused the sync control (``auto`` then answers by lookups)."""
    refused_at: float = 0.0
    """Monotonic time of the refusal, or of the last time content sync was asked for again."""
    synced: Mapping[str, float] = field(default_factory=dict, hash=False)
    """Wall-clock time each server was last synced from (replaced, never changed in place)."""
    last_uri: str | None = None
    """The server the replica was last synced from (its entries count in status.json)."""

    def connected(self, uri: str | None) -> Link:
        return replace(self, uri=uri)

    def level_with(self, uri: str, now: float) -> Link:
        """Level with the server at ``uri`` at wall-clock ``now``: a refusal is over."""
        return replace(
            self, refused=False, contact=now, synced={**self.synced, uri: now}, last_uri=uri
        )

    def refusal(self, at: float) -> Link:
        """The server refused content sync, or ``auto`` asks again, at monotonic ``at``."""
        return replace(self, refused=True, refused_at=at)


@dataclass(frozen=True)
class ReplicaState:
    """What one process knows of the replica at one moment; the rules are its methods."""

    wanted: DirectorySync
    loaded: bool
    """The database holds a whole copy: the commit of a refresh's end succeeded."""
    connected: str | None
    """The server the writer is level with now (None: disconnected, or a silent writer)."""
    contact: float | None
    """Wall-clock time the replica was last known current (None: never)."""
    refused: bool

    @classmethod
    def of_writer(cls, wanted: DirectorySync, loaded: bool, link: Link) -> ReplicaState:
        return cls(wanted, loaded, link.uri, link.contact, link.refused)

    @classmethod
    def of_meta(cls, wanted: DirectorySync, meta: Meta, now: float, silent: float) -> ReplicaState:
        """A reader's view: the writer's word, its server forgotten once the writer has
        said nothing for ``silent`` seconds (it died, or hangs)."""
        alive = meta.beat is not None and now - meta.beat < silent
        return cls(wanted, meta.loaded, meta.uri if alive else None, meta.contact, meta.refused)

    def mode(self) -> LookupMode:
        if self.wanted is DirectorySync.NO:
            return LookupMode.LOOKUP
        if self.wanted is DirectorySync.AUTO and (self.refused or not self.loaded):
            return LookupMode.LOOKUP
        return LookupMode.SYNC

    def staleness(self, now: float) -> float | None:
        """Seconds since the replica was last known current; 0 while connected and loaded."""
        if self.connected is not None and self.loaded:
            return 0.0
        if self.contact is None:
            return None
        return max(0.0, now - self.contact)

    def verdict(self, now: float, max_stale: float) -> Verdict:
        if self.mode() is LookupMode.LOOKUP:
            return Verdict.LOOKUP
        if not self.loaded:
            return Verdict.NOT_LOADED
        stale = self.staleness(now)
        if stale is not None and stale > 0 and stale > max_stale:
            return Verdict.STALE
        return Verdict.SERVE


def status(
    state: ReplicaState,
    link: Link,
    uris: Sequence[str],
    *,
    lookup_uri: str | None,
    entries: int,
    started: float,
    now: float,
) -> Status:
    """What ``status.json`` says: the mode and one item per ``Directory`` URI.

    In lookup mode ``connected`` is ``lookup_uri``, the lookup connection's
    server; a server never synced from has the staleness of the replica as
    a whole (or the time since ``started``).  ``entries`` counts for the
    server last synced from only.
    """
    mode = state.mode()
    lookup_mode = mode is LookupMode.LOOKUP
    overall = state.staleness(now)
    servers = []
    for uri in uris:
        last = link.synced.get(uri)
        connected = uri == (lookup_uri if lookup_mode else link.uri)
        current = connected and (lookup_mode or state.loaded)
        if current:
            stale = 0.0
        elif last is not None:
            stale = now - last
        else:
            stale = overall if overall is not None else now - started
        last_sync = now if current and not lookup_mode else last
        servers.append(
            ServerStatus(
                uri=uri,
                connected=connected,
                last_sync=None if last_sync is None else datetime.fromtimestamp(last_sync, UTC),
                entries=entries if uri == link.last_uri else 0,
                staleness_s=stale,
            )
        )
    return Status(mode, tuple(servers), datetime.fromtimestamp(now, UTC))
