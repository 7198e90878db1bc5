"""The writer's side of the replica: content sync's callbacks batched into LMDB commits.

Only one process writes a replica: the one holding :class:`WriterRole`, an
exclusive ``flock`` on ``StateDirectory/replica.lock``.  Every process (each
worker of ``Workers N``) asks for it; the others read.  The kernel releases
the lock when its holder dies, however it dies, and another process takes
the role within a second and resumes content sync from the committed cookie.

:class:`ReplicaFeed` applies what an RFC 4533 refresh or persist phase sends
(entries, deletes, present lists, cookies) to a :class:`ReplicaStore`:

* operations wait in memory and are committed together: when a cookie
  arrives (with every entry it covers, in the same transaction), when a
  refresh ends, when :data:`BATCH` are waiting, or :data:`DELAY` seconds
  after the first of them, whichever comes first;
* a commit that fails (disk full, map at its ceiling) is logged and tried
  again later, with nothing lost: the operations stay in memory meanwhile.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import lmdb

from ldapdkim import keys, schema
from ldapdkim.directory.entries import locate
from ldapdkim.directory.replica.store import Cookie, Delete, Keep, Loaded, Op, Put, ReplicaStore

log = logging.getLogger(__name__)

LOCK = "replica.lock"
BATCH = 5000
"""Operations committed together at most (a refresh of 300 000 entries: 60 commits)."""
DELAY = 0.1
"""Seconds an operation may wait for its commit."""
_PRIVATE_KEY = schema.PRIVATE_KEY.lower()


class WriterRole:
    """The right to write the replica in ``directory``: one process at a time."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def take(self) -> bool:
        """Take the role if no other process has it; whether this process has it now."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


class ReplicaFeed:
    """python-ldap's ``SyncreplConsumer`` callbacks, turned into commits to ``store``."""

    def __init__(self, store: ReplicaStore) -> None:
        self.store = store
        meta = store.meta()
        self.cookie = meta.cookie
        """The cookie of everything received (committed or waiting)."""
        self.loaded = meta.loaded
        """The database holds a whole copy: a refresh's end is committed (lookups then go
        to it, so this must not turn True while the refresh's last entries still wait)."""
        self._ops: list[Op] = []
        self._since = 0.0
        """When the oldest waiting operation arrived (monotonic)."""
        self._present: set[str] = set()
        """entryUUIDs the server sent or named as present in this refresh."""
        self._full = False
        """This refresh started without a cookie: the server sends everything it has."""
        self._failing = False

    @property
    def waiting(self) -> int:
        return len(self._ops)

    # -- sync callbacks -----------------------------------------------------

    def begin_refresh(self) -> None:
        """A new sync search starts: no entry has been presented yet.

        Without a cookie the server sends its whole content (RFC 4533 §3.3):
        whatever we hold that it does not send is gone once the refresh ends,
        whichever way the server ends it.
        """
        self._present = set()
        self._full = self.cookie is None

    def entry(self, uuid: str, dn: str, attrs: dict[str, list[bytes]]) -> None:
        """An entry was added or changed (or is sent in full during a refresh)."""
        key, parent = locate(dn)
        compact = {name.lower(): tuple(values) for name, values in attrs.items()}
        private = compact.get(_PRIVATE_KEY)
        if private:
            # A sealed value or a token's URI is kept as the directory holds it.
            compact[_PRIVATE_KEY] = tuple(
                keys.compact_private_key(v) if keys.stored_form(v) == "plaintext" else v
                for v in private
            )
        self._add(Put(uuid, dn, key, parent, compact))

    def delete(self, uuids: Sequence[str]) -> None:
        self._add(Delete(tuple(uuids)))

    def present(self, uuids: Sequence[str] | None, refresh_deletes: bool) -> None:
        """python-ldap's ``syncrepl_present``: record, or end of a present phase.

        ``uuids`` None ends a phase: after a present phase (``refresh_deletes``
        False) every entry the server did not present is gone (RFC 4533 §3.3.1),
        which is how deletes made while we were away reach us.
        """
        if uuids is not None:
            self._present.update(uuids)
            return
        if not refresh_deletes or self._full:
            self._drop_unpresented()

    def keep_only(self, uuids: Iterable[str]) -> None:
        """Delete every entry not named in ``uuids``: a listing of all the base holds.

        For change tracking without a present phase (USN polling), which lists
        what exists instead.
        """
        self._add(Keep(frozenset(uuids)))

    def set_cookie(self, cookie: str | bytes | None) -> None:
        """A new cookie: committed now, with every entry received before it."""
        if isinstance(cookie, bytes):
            cookie = cookie.decode("utf-8", "replace")
        if cookie != self.cookie:
            self.cookie = cookie
            self._add(Cookie(cookie))
            self.flush()

    def refresh_done(self) -> None:
        if self._full:
            self._drop_unpresented()
        self._add(Loaded())
        self.flush()

    def _drop_unpresented(self) -> None:
        self._add(Keep(frozenset(self._present)))
        self._present = set()
        self._full = False

    def _add(self, op: Op) -> None:
        if not self._ops:
            self._since = time.monotonic()
        self._ops.append(op)
        if len(self._ops) >= BATCH:
            self.flush()

    # -- commits ------------------------------------------------------------

    def due(self) -> bool:
        """Whether waiting operations have waited long enough."""
        return bool(self._ops) and time.monotonic() - self._since >= DELAY

    def due_in(self) -> float | None:
        """Seconds until waiting operations are due (0: now), for a reader of the server to
        wait no longer; None when nothing hurries (none wait, or commits fail: those are
        tried again at the reader's own pace)."""
        if not self._ops or self._failing:
            return None
        return max(0.0, DELAY - (time.monotonic() - self._since))

    def flush(self, **meta: str | None) -> bool:
        """Commit what waits (and ``meta``); whether it is all in the database now."""
        if not self._ops and not meta:
            return True
        try:
            self.store.commit(self._ops, **meta)
        except lmdb.Error as err:
            if not self._failing:
                self._failing = True
                log.error(
                    "cannot write the replica database %s (%s); serving what it holds and "
                    "keeping %d changes in memory until it can; free disk space in "
                    "StateDirectory",
                    self.store.path,
                    err,
                    len(self._ops),
                )
            return False
        if self._failing:
            self._failing = False
            log.info("replica database %s written again", self.store.path)
        if not self.loaded:
            self.loaded = any(isinstance(op, Loaded) for op in self._ops)
        self._ops = []
        return True
