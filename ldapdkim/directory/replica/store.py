"""The replicated entries, kept by entryUUID and indexed; content sync's callbacks land here.

:class:`ReplicaStore` applies what an RFC 4533 refresh or persist phase sends
(entries, deletes, present lists, cookies) to an :class:`EntryIndex`, answers
lookups from it, and saves and restores it through :mod:`ldapdkim.directory.replica.statefile`.

Thread-safe: the sync thread writes, milter threads read, under one lock that
is held only for dictionary updates and lookups; parsing DNs, compacting
attributes and writing the file happen outside it.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from ldapdkim.directory.entries import Entry, locate
from ldapdkim.directory.entryindex import EntryIndex, Record, compact
from ldapdkim.directory.replica import statefile
from ldapdkim.errors import DamagedReplica


class ReplicaStore:
    """The entries of one directory, by entryUUID and indexed like the server indexes them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.generation = 0
        """Bumped by every change; the resolver drops its caches when it moves."""
        self.cookie: str | None = None
        self.loaded = False
        """True once a refresh completed or a saved replica was read."""
        self.changed = False
        """Entries or cookie changed since the last save."""
        self._keys: dict[str, str] = {}
        """entryUUID -> normalized DN of the entry in the index."""
        self._index = EntryIndex()
        self._present: set[str] = set()
        """entryUUIDs the server sent or named as present in this refresh."""
        self._full = False
        """This refresh started without a cookie: the server sends everything it has."""

    def __len__(self) -> int:
        return len(self._keys)

    # -- sync callbacks -----------------------------------------------------

    def begin_refresh(self) -> None:
        """A new sync search starts: no entry has been presented yet.

        Without a cookie the server sends its whole content (RFC 4533 §3.3):
        whatever we hold that it does not send is gone once the refresh ends,
        whichever way the server ends it.
        """
        with self.lock:
            self._present = set()
            self._full = self.cookie is None

    def entry(self, uuid: str, dn: str, attrs: dict[str, list[bytes]]) -> None:
        """An entry was added or changed (or is sent in full during a refresh)."""
        key, parent = locate(dn)
        record: Record = (dn, key, parent, compact(attrs), uuid)
        with self.lock:
            self._file(record)
            self._bump()

    def delete(self, uuids: Sequence[str]) -> None:
        with self.lock:
            for uuid in uuids:
                if self._forget(uuid):
                    self._bump()

    def present(self, uuids: Sequence[str] | None, refresh_deletes: bool) -> None:
        """python-ldap's ``syncrepl_present``: record, or end of a present phase.

        ``uuids`` None ends a phase: after a present phase (``refresh_deletes``
        False) every entry the server did not present is gone (RFC 4533 §3.3.1),
        which is how deletes made while we were away reach us.
        """
        with self.lock:
            if uuids is not None:
                self._present.update(uuids)
                return
            if not refresh_deletes or self._full:
                self._drop_unpresented()

    def _drop_unpresented(self) -> None:
        """End of a present phase or of a full refresh; under the lock."""
        for uuid in [u for u in self._keys if u not in self._present]:
            self._forget(uuid)
            self._bump()
        self._present = set()
        self._full = False

    def set_cookie(self, cookie: str | bytes | None) -> None:
        with self.lock:
            if isinstance(cookie, bytes):
                cookie = cookie.decode("utf-8", "replace")
            if cookie != self.cookie:
                self.cookie = cookie
                self.changed = True

    def refresh_done(self) -> None:
        with self.lock:
            if self._full:
                self._drop_unpresented()
            first = not self.loaded
            self.loaded = True
            self.changed = True
        if first:
            _settle()

    def _file(self, record: Record) -> None:
        """File ``record`` for its entryUUID, replacing that entry's old copy; under the lock."""
        _dn, key, _parent, _attrs, uuid = record
        assert uuid is not None
        old = self._keys.get(uuid)
        if old is not None and old != key and self._index.owner(old) == uuid:
            self._index.remove(old)  # renamed
        holder = self._index.owner(key)
        if holder is not None and holder != uuid:
            # Another entry held this DN (deleted and re-created while we were
            # away); the server will not mention the old one again.
            self._keys.pop(holder, None)
        self._index.file(record)
        self._keys[uuid] = key

    def _forget(self, uuid: str) -> bool:
        key = self._keys.pop(uuid, None)
        if key is None:
            return False
        if self._index.owner(key) == uuid:
            self._index.remove(key)
        return True

    def _bump(self) -> None:
        self.generation += 1
        self.changed = True

    # -- lookups ------------------------------------------------------------

    def policies(self, names: Sequence[str]) -> list[Entry]:
        with self.lock:
            return self._index.policies(names)

    def children(self, dn: str) -> list[Entry]:
        with self.lock:
            return self._index.children(dn)

    def walk(self) -> list[tuple[Entry, list[Entry]]]:
        with self.lock:
            return list(self._index.walk())

    # -- persistence --------------------------------------------------------

    def save(self, path: Path, directory: str, last_sync: float | None) -> None:
        """Write the entries and cookie to ``path``; clears ``changed``.

        Only the list of records is taken under the lock: entries are replaced
        whole, never changed in place, so the file is written outside it and
        lookups carry on meanwhile (seconds at 100 000 domains).

        Raises:
            OSError: the file cannot be written (``changed`` is set again).
        """
        with self.lock:
            self.changed = False
            records = self._index.records()
            cookie = self.cookie
        header = statefile.Header(directory, cookie, last_sync, len(records))
        try:
            statefile.write(path, header, records)
        except OSError:
            self.changed = True
            raise

    def restore(self, cookie: str | None, chunks: Iterable[list[Record]]) -> None:
        """Take the entries and cookie of a saved replica; it then counts as loaded.

        Raises:
            DamagedReplica: the chunks end early or hold junk; the
                store is then left empty.
        """
        gc.disable()  # millions of new objects, none of them garbage: no collections
        try:
            with self.lock:
                try:
                    for chunk in chunks:
                        for record in chunk:
                            if record[4] is not None:
                                self._file(record)
                except DamagedReplica:
                    self._keys.clear()
                    self._index = EntryIndex()
                    raise
                self.cookie = cookie
                self.loaded = True
                self.generation += 1
        finally:
            gc.enable()
        _settle()


def _settle() -> None:
    """Move everything alive now out of the collector's sight.

    A full replica is millions of objects that live as long as the process;
    left in the oldest generation, every full collection would walk them all
    (a pause of a second at 100 000 domains) for nothing.
    """
    gc.freeze()
