"""The saved replica: ``StateDirectory/replica.state``, written and read fast.

A restart must serve mail within seconds even at 300 000 entries, so the file
holds the entries as the index files them (DNs already normalized) and is
read by C code: it is a sequence of pickles (protocol 5) of plain data only.
The reader refuses every class and function, so reading the file cannot run
code, whatever it holds; it is still a copy of every private key, so it is
written mode 0600 and only the milter's user should be able to read the
directory it lives in.

Layout, each item one pickle::

    {"format": 2, "directory": str, "cookie": str | None,
     "last_sync": float | None, "entries": int}          # the header
    [record, ...]                                          # chunks of records
    "end"                                                  # proof of a whole file

A record is ``(dn, normalized dn, normalized parent dn, attributes, entryUUID)``
(:data:`ldapdkim.directory.entryindex.Record`).  The file is written under a temporary
name, synced to disk and renamed, so a reader sees the old file or the new
one.  Chunks keep the writer's memory flat and let other threads run between
them.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ldapdkim.directory.entryindex import Record
from ldapdkim.errors import DamagedReplica

FORMAT = 2
CHUNK = 2048
_END = "end"


@dataclass(frozen=True)
class Header:
    directory: str
    cookie: str | None
    last_sync: float | None
    entries: int


def write(path: Path, header: Header, records: Sequence[Record]) -> None:
    """Write ``records`` to ``path`` (temporary file, mode 0600, rename).

    Raises:
        OSError: the directory cannot be written; nothing is left behind.
    """
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as stream:
            dump = pickle.Pickler(stream, protocol=5).dump
            dump(
                {
                    "format": FORMAT,
                    "directory": header.directory,
                    "cookie": header.cookie,
                    "last_sync": header.last_sync,
                    "entries": len(records),
                }
            )
            for start in range(0, len(records), CHUNK):
                # A fresh pickler per chunk: its memo (one slot per object
                # written) stays small instead of growing with the replica.
                pickle.Pickler(stream, protocol=5).dump(list(records[start : start + CHUNK]))
            pickle.Pickler(stream, protocol=5).dump(_END)
            # On disk before the rename: after a power cut the old file or the
            # new one is there, never a name for a file that was not written.
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


class SavedReplica:
    """A saved replica open for reading: :attr:`header` first, then :meth:`chunks`.

    Use it as a context manager (the file is closed on leaving).

    Raises:
        FileNotFoundError: there is no saved replica.
        OSError: it cannot be read.
        DamagedReplica: it is not a saved replica of this format.
    """

    def __init__(self, path: Path) -> None:
        self._stream = path.open("rb")
        try:
            self.header = self._read_header()
        except BaseException:
            self._stream.close()
            raise

    def __enter__(self) -> SavedReplica:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stream.close()

    def _read_header(self) -> Header:
        header = _load(self._stream)
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise DamagedReplica("not a saved replica of this version")
        directory, count = header.get("directory"), header.get("entries")
        cookie, last = header.get("cookie"), header.get("last_sync")
        if not isinstance(directory, str) or not isinstance(count, int):
            raise DamagedReplica("its header is incomplete")
        return Header(
            directory=directory,
            cookie=cookie if isinstance(cookie, str) else None,
            last_sync=float(last) if isinstance(last, int | float) else None,
            entries=count,
        )

    def chunks(self) -> Iterator[list[Record]]:
        """The records, a chunk at a time.

        Raises:
            DamagedReplica: the file ends early or holds anything but records;
                the caller discards what it took so far.
        """
        seen = 0
        while True:
            chunk = _load(self._stream)
            if chunk == _END:
                break
            if not isinstance(chunk, list) or not all(_is_record(r) for r in chunk):
                raise DamagedReplica("it holds something other than entries")
            seen += len(chunk)
            yield chunk
        if seen != self.header.entries:
            raise DamagedReplica(f"it holds {seen} entries, its header says {self.header.entries}")


def _is_record(item: Any) -> bool:
    return (
        isinstance(item, tuple)
        and len(item) == 5
        and isinstance(item[0], str)
        and isinstance(item[1], str)
        and isinstance(item[2], str)
        and isinstance(item[3], dict)
        and (item[4] is None or isinstance(item[4], str))
    )


class _PlainData(pickle.Unpickler):
    """Reads tuples, lists, dicts, strings, bytes and numbers; refuses any class."""

    def find_class(self, module: str, name: str) -> Any:
        raise DamagedReplica(f"it names {module}.{name}; a saved replica holds plain data only")


def _load(stream: BinaryIO) -> Any:
    try:
        return _PlainData(stream).load()
    except DamagedReplica:
        raise
    except EOFError:
        raise DamagedReplica("it ends early (was a write cut short?)") from None
    except (pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError) as err:
        if "truncated" in str(err):
            raise DamagedReplica("it ends early (was a write cut short?)") from None
        raise DamagedReplica(f"it cannot be read ({type(err).__name__})") from None
