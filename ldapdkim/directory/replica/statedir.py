"""The replica's files in ``StateDirectory``: the saved replica and ``status.json``.

``replica.state`` holds the entries and the sync cookie (mode 0600: it holds
the private keys; format in :mod:`ldapdkim.directory.replica.statefile`).
``status.json`` is what ``ldapdkim status`` reads (format in
:mod:`ldapdkim.directory.replica.status`).  Both are written to a temporary
file and renamed, so a crash leaves the old file or the new one.  A directory
that cannot be written is reported once, with the fix, and the milter goes
on serving from memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ldapdkim.directory.replica import statefile
from ldapdkim.directory.replica.status import STATUS_FILE
from ldapdkim.directory.replica.store import ReplicaStore
from ldapdkim.errors import DamagedReplica

log = logging.getLogger(__name__)

STATE_FILE = "replica.state"


def iso(when: float | None) -> str | None:
    """A POSIX time as ISO 8601 in UTC (seconds), or None."""
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds")


class StateDirectory:
    """Reads and writes one replica's files; ``directory_id`` names the Directory they copy."""

    def __init__(self, path: Path, directory_id: str) -> None:
        self.path = path
        self.directory_id = directory_id
        self._warned = False

    def load(self) -> tuple[ReplicaStore, float | None] | None:
        """The saved replica and its last sync time; None when there is none to use.

        A file of another Directory, or one that cannot be read, is logged and
        left alone: the replica then starts empty.
        """
        path = self.path / STATE_FILE
        started = time.monotonic()
        store = ReplicaStore()
        try:
            with statefile.SavedReplica(path) as saved:
                header = saved.header
                if header.directory != self.directory_id:
                    log.info("%s holds another Directory; starting without it", path)
                    return None
                store.restore(header.cookie, saved.chunks())
        except FileNotFoundError:
            return None
        except OSError as err:
            log.warning("cannot read the saved replica %s (%s); starting without it", path, err)
            return None
        except DamagedReplica as err:
            log.warning("saved replica %s: %s; starting without it", path, err)
            return None
        log.info(
            "directory: loaded %d entries from %s in %.1f s (last sync %s); serving them",
            len(store),
            path,
            time.monotonic() - started,
            iso(header.last_sync) or "unknown",
        )
        return store, header.last_sync

    def save(self, store: ReplicaStore, last_sync: float | None) -> None:
        """Write the replica to ``replica.state``."""
        try:
            store.save(self.path / STATE_FILE, self.directory_id, last_sync)
        except OSError as err:
            self._unwritable(STATE_FILE, err)

    def write_status(self, document: dict[str, Any]) -> None:
        """Write ``document`` as ``status.json``: temp file, mode 0600, rename."""
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{STATUS_FILE}.", dir=self.path)
        except OSError as err:
            self._unwritable(STATUS_FILE, err)
            return
        try:
            with os.fdopen(fd, "w") as stream:  # mkstemp: mode 0600
                json.dump(document, stream, separators=(",", ":"))
            os.replace(temp, self.path / STATUS_FILE)
        except OSError as err:
            self._unwritable(STATUS_FILE, err)
            with contextlib.suppress(OSError):
                os.unlink(temp)

    def _unwritable(self, name: str, err: OSError) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "cannot write %s in StateDirectory %s (%s); the replica is not kept across "
                "restarts and status.json is not written; create the directory, writable "
                "by UserID",
                name,
                self.path,
                err.strerror or err,
            )
