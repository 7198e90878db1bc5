"""The replica's files in ``StateDirectory``: the database and ``status.json``.

``replica.mdb`` holds the entries and the sync cookie (mode 0600: it holds
the private keys; layout in :mod:`ldapdkim.directory.replica.store`).
``status.json`` is what ``ldapdkim status`` reads (format in
:mod:`ldapdkim.directory.replica.status`); it is written to a temporary file
and renamed, so a crash leaves the old file or the new one.  A directory that
cannot be written is reported once, with the fix: the database then lives in
a temporary directory for this run (one per process), and status.json is not
written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import lmdb

from ldapdkim.directory.replica.status import STATUS_FILE
from ldapdkim.directory.replica.store import DATABASE, ReplicaStore

log = logging.getLogger(__name__)

OLD_STATE_FILE = "replica.state"
"""The saved replica of versions before the database: removed at start."""


class StateDirectory:
    """Reads and writes one replica's files; ``directory_id`` names the Directory they copy."""

    def __init__(self, path: Path, directory_id: str) -> None:
        self.path = path
        self.directory_id = directory_id
        self._warned = False
        self.fallback: Path | None = None
        """The temporary directory used instead of ``path`` when that could not be opened."""

    def open_store(self) -> ReplicaStore:
        """The replica database in this directory (or, failing that, in a temporary one)."""
        self._remove_old_state()
        try:
            return ReplicaStore(self.path / DATABASE, self.directory_id)
        except (lmdb.Error, OSError) as err:
            fallback = Path(tempfile.mkdtemp(prefix="ldapdkim-replica-"))
            self.fallback = fallback
            log.warning(
                "cannot open the replica database in StateDirectory %s (%s); keeping it in %s "
                "for this run only, filled by a full refresh; create the directory, writable "
                "by UserID",
                self.path,
                getattr(err, "strerror", None) or err,
                fallback,
            )
            return ReplicaStore(fallback / DATABASE, self.directory_id)

    def remove_fallback(self) -> None:
        """Remove the temporary directory of a run that could not use ``path`` (if any)."""
        if self.fallback is not None:
            shutil.rmtree(self.fallback, ignore_errors=True)
            self.fallback = None

    def _remove_old_state(self) -> None:
        old = self.path / OLD_STATE_FILE
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
            log.info(
                "removed %s, the saved replica of an earlier version; the replica is now "
                "%s, filled by a full refresh",
                old,
                DATABASE,
            )

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
