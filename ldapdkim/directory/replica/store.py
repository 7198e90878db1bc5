"""The replicated entries in LMDB: written by one process, read by every worker.

``StateDirectory/replica.mdb`` (with its lock file ``replica.mdb-lock``) is an
LMDB database: memory-mapped, so every worker reads the same pages without a
copy of its own, and crash-safe, so a process killed at any moment leaves the
last committed transaction whole.  Its named databases:

=========  ==============================================================
entries    entryUUID -> the entry (:func:`encode`)
dns        normalized DN -> entryUUID of the entry filed under it
names      domain name (lowercase) -> entryUUIDs of the policy entries naming it
children   normalized parent DN -> entryUUIDs of the key entries beneath it
meta       the directory it copies, the sync cookie, whether a refresh ever
           completed, a generation bumped by every change, and the writer's
           word on its connection (for processes that only read)
=========  ==============================================================

The sync cookie is written in the same transaction as the entries it covers
(:meth:`ReplicaStore.commit`), so the database never claims a state it does
not hold: after a crash, content sync resumes from the committed cookie and
the server sends again whatever came after it.

An entry is stored as length-prefixed items (:func:`encode`), the values
as the bytes the server sent: compact (a private key takes its own size)
and read without any general-purpose deserializer, so a damaged file can
give an error, never run code.  The file holds every
private key: it is created mode 0600.

Threads: LMDB transactions are cheap and need no lock, except that a process
may change its map size only while it has no transaction open; reads
therefore hold :attr:`ReplicaStore._reading` for the few microseconds they
last, and growing the map takes it too.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import struct
import threading
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

from ldapdkim import schema
from ldapdkim.directory.entries import Entry, normalize_dn
from ldapdkim.errors import DamagedReplica

log = logging.getLogger(__name__)

DATABASE = "replica.mdb"
MAP_START = 256 << 20
"""The map a new database starts with; it doubles whenever it is full."""
MAP_CEILING = 1 << 40
"""Address space the map may grow to (64-bit: costs nothing until written)."""
MAX_READERS = 4096
"""Read transactions open at once, across every process (one per lookup in flight)."""
_LONG_KEY = 400
"""DNs longer than this (bytes) are keyed by their SHA-256: LMDB keys stop at 511."""
_POLICY = schema.POLICY_CLASS.lower().encode()
_KEY = schema.KEY_CLASS.lower().encode()
_DOMAIN_NAME = schema.DOMAIN_NAME.lower()

Attrs = dict[str, tuple[bytes, ...]]


@dataclass(frozen=True)
class Put:
    """File an entry (added, changed, renamed or sent in a refresh)."""

    uuid: str
    dn: str
    key: str
    """The normalized DN."""
    parent: str
    attrs: Attrs


@dataclass(frozen=True)
class Delete:
    uuids: tuple[str, ...]


@dataclass(frozen=True)
class Keep:
    """Delete every entry whose entryUUID is not in ``uuids`` (end of a present phase)."""

    uuids: frozenset[str]


@dataclass(frozen=True)
class Cookie:
    cookie: str | None


@dataclass(frozen=True)
class Loaded:
    """A refresh completed: the database is a whole copy from now on."""


Op = Put | Delete | Keep | Cookie | Loaded


@dataclass(frozen=True)
class Meta:
    """What the database says about itself, read in one transaction."""

    directory: str | None
    cookie: str | None
    loaded: bool
    generation: int
    entries: int
    contact: float | None
    """Wall-clock time the writer was last in touch with a server (while it was)."""
    uri: str | None
    """The server the writer is connected to now, None while it is not."""
    refused: bool
    """The server refused content sync (``DirectorySync auto`` then looks entries up)."""
    beat: float | None
    """Wall-clock time of the writer's last word: a writer that died stops it."""


_LENGTH = struct.Struct(">I")


def encode(dn: str, key: str, parent: str, attrs: Attrs) -> bytes:
    """An entry as stored: the three DNs, then per attribute its name, value count and values.

    Every item is a 4-byte big-endian length and its bytes (text in UTF-8).
    """
    items = [dn.encode(), key.encode(), parent.encode()]
    for name, values in attrs.items():
        items += [name.encode(), _LENGTH.pack(len(values)), *values]
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)


def decode(blob: bytes) -> tuple[str, str, str, Attrs]:
    """An entry as :func:`encode` stored it.

    Raises:
        DamagedReplica: the bytes are not such an entry.
    """
    try:
        items: list[bytes] = []
        end, pos = len(blob), 0
        unpack = _LENGTH.unpack_from
        while pos < end:
            (size,) = unpack(blob, pos)
            pos += 4 + size
            if pos > end:
                raise DamagedReplica("an entry is cut short")
            items.append(blob[pos - size : pos])
        dn, key, parent = (item.decode() for item in items[:3])
        attrs: Attrs = {}
        at = 3
        while at < len(items):
            (count,) = unpack(items[at + 1])
            values = tuple(items[at + 2 : at + 2 + count])
            if len(values) != count:
                raise DamagedReplica("an entry is cut short")
            attrs[items[at].decode()] = values
            at += 2 + count
    except (struct.error, ValueError, IndexError) as err:
        raise DamagedReplica(f"an entry cannot be read ({err})") from None
    return dn, key, parent, attrs


def _dn_key(key: str) -> bytes:
    raw = key.encode()
    return raw if len(raw) <= _LONG_KEY else b"#" + hashlib.sha256(raw).digest()


def _names(attrs: Attrs) -> list[bytes]:
    """The domain names a policy entry is found by (none for other entries)."""
    classes = [v.lower() for v in attrs.get("objectclass", ())]
    if _POLICY not in classes:
        return []
    names = []
    for value in attrs.get(_DOMAIN_NAME, ()):
        name = value.decode("utf-8", "replace").strip().lower().encode()
        if 0 < len(name) <= _LONG_KEY:  # a longer one is no host name: nothing asks for it
            names.append(name)
    return names


def _is_key(attrs: Attrs) -> bool:
    return _KEY in (v.lower() for v in attrs.get("objectclass", ()))


_environments: weakref.WeakValueDictionary[str, lmdb.Environment] = weakref.WeakValueDictionary()
_environments_lock = threading.Lock()


def _environment(path: Path) -> lmdb.Environment:
    """The process's one handle on ``path``: LMDB forbids opening a file twice in a process."""
    name = str(path.resolve())
    with _environments_lock:
        env = _environments.get(name)
        if env is None:
            start = max(MAP_START, 2 * path.stat().st_size if path.exists() else 0)
            old = os.umask(0o077)  # the file holds private keys
            try:
                env = lmdb.open(
                    name,
                    subdir=False,
                    map_size=start,
                    max_dbs=8,
                    max_readers=MAX_READERS,
                )
            finally:
                os.umask(old)
            _environments[name] = env
        return env


class ReplicaStore:
    """One directory's replica in ``path``: lookups for every process, commits for the writer.

    Raises:
        lmdb.Error, OSError: the file cannot be opened or created (``__init__``).
    """

    def __init__(self, path: Path, directory: str) -> None:
        self.path = path
        self.directory = directory
        self._env = _environment(path)
        self._reading = threading.Lock()
        with self._env.begin(write=True) as txn:
            self._entries = self._env.open_db(b"entries", txn=txn)
            self._dns = self._env.open_db(b"dns", txn=txn)
            self._by_name = self._env.open_db(b"names", txn=txn, dupsort=True)
            self._children = self._env.open_db(b"children", txn=txn, dupsort=True)
            self._meta = self._env.open_db(b"meta", txn=txn)
        self._cached: Meta | None = None
        self.commits = 0
        """Commits made through this object: this process's own (another's show in the meta)."""

    # -- reading ------------------------------------------------------------

    @contextlib.contextmanager
    def _read(self) -> Iterator[Any]:
        with self._reading:
            try:
                txn = self._env.begin(buffers=False)
            except lmdb.MapResizedError:
                # The writer (another process) grew the map: take its new size.
                self._env.set_mapsize(0)
                txn = self._env.begin(buffers=False)
            try:
                yield txn
            finally:
                txn.abort()

    def meta(self) -> Meta:
        with self._read() as txn:
            return self._meta_in(txn)

    def _meta_in(self, txn: Any) -> Meta:
        def text(name: bytes) -> str | None:
            value = txn.get(name, db=self._meta)
            return None if value is None else bytes(value).decode("utf-8", "replace")

        def number(name: bytes) -> float | None:
            value = text(name)
            return None if value is None else float(value)

        directory = text(b"directory")
        mine = directory == self.directory
        return Meta(
            directory=directory,
            cookie=text(b"cookie") if mine else None,
            loaded=mine and text(b"loaded") == "1",
            generation=int(text(b"generation") or 0),
            entries=int(txn.stat(self._entries)["entries"]) if mine else 0,
            contact=number(b"contact") if mine else None,
            uri=text(b"uri") or None,
            refused=text(b"refused") == "1",
            beat=number(b"beat"),
        )

    def __len__(self) -> int:
        return self.meta().entries

    def policies(self, names: Sequence[str]) -> list[Entry]:
        """Policy entries naming one of ``names``, each once."""
        with self._read() as txn:
            cursor = txn.cursor(self._by_name)
            uuids: dict[bytes, None] = {}
            for name in names:
                if cursor.set_key(name.lower().encode()):
                    uuids.update(dict.fromkeys(cursor.iternext_dup()))
            return self._load(txn, uuids)

    def children(self, dn: str) -> list[Entry]:
        """Key entries directly beneath ``dn``."""
        with self._read() as txn:
            cursor = txn.cursor(self._children)
            # A DN as servers send it is normalized but for case: try that first
            # and parse only when it is not a key here (3 us a lookup).
            if not cursor.set_key(_dn_key(dn.lower())) and not cursor.set_key(
                _dn_key(normalize_dn(dn))
            ):
                return []
            return self._load(txn, dict.fromkeys(cursor.iternext_dup()))

    def walk(self) -> list[tuple[Entry, list[Entry]]]:
        """Every policy entry with the key entries beneath it."""
        with self._read() as txn:
            out: list[tuple[Entry, list[Entry]]] = []
            for _uuid, blob in txn.cursor(self._entries):
                dn, key, _parent, attrs = decode(blob)
                if not _names(attrs):
                    continue
                cursor = txn.cursor(self._children)
                kids = list(cursor.iternext_dup()) if cursor.set_key(_dn_key(key)) else []
                out.append(((dn, attrs), self._load(txn, dict.fromkeys(kids))))
            return out

    def _load(self, txn: Any, uuids: dict[bytes, None]) -> list[Entry]:
        found: list[Entry] = []
        for uuid in uuids:
            blob = txn.get(uuid, db=self._entries)
            if blob is not None:
                try:
                    dn, _key, _parent, attrs = decode(blob)
                except DamagedReplica as err:
                    raise DamagedReplica(
                        f"{self.path}: entryUUID {bytes(uuid).decode(errors='replace')}: {err}; "
                        "stop the milter, delete the file and start it: a full refresh "
                        "rebuilds it"
                    ) from None
                found.append((dn, attrs))
        return found

    # -- writing (the one process that holds the writer role) ---------------

    def commit(self, ops: Sequence[Op], **meta: str | None) -> None:
        """Apply ``ops`` and set ``meta`` values, in one transaction; grows the map when full.

        The generation moves when an entry changed.  A database of another
        Directory is emptied first.

        Raises:
            lmdb.Error: the transaction failed (disk full, map at its
                ceiling); nothing of it was written.
        """
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    changed = self._mine(txn)
                    for op in ops:
                        changed |= self._apply(txn, op)
                    if changed:
                        generation = int(txn.get(b"generation", b"0", db=self._meta)) + 1
                        txn.put(b"generation", str(generation).encode(), db=self._meta)
                    for name, value in meta.items():
                        if value is None:
                            txn.delete(name.encode(), db=self._meta)
                        else:
                            txn.put(name.encode(), value.encode(), db=self._meta)
            except lmdb.MapFullError:
                self._grow()
                continue
            self.commits += 1  # once committed: a reader of the count then sees the commit
            return

    def _grow(self) -> None:
        size = int(self._env.info()["map_size"])
        if size * 2 > MAP_CEILING:
            raise lmdb.MapFullError(f"{self.path} is at its largest ({size >> 20} MB)")
        with self._reading:  # no read transaction may be open in this process
            self._env.set_mapsize(size * 2)
        log.info("replica database %s grown to %d MB", self.path, (size * 2) >> 20)

    def _mine(self, txn: Any) -> bool:
        """Empty a database that copies another Directory; whether it did."""
        held = txn.get(b"directory", db=self._meta)
        if held is not None and bytes(held).decode("utf-8", "replace") == self.directory:
            return False
        for db in (self._entries, self._dns, self._by_name, self._children, self._meta):
            txn.drop(db, delete=False)
        txn.put(b"directory", self.directory.encode(), db=self._meta)
        if held is not None:
            log.info("%s held a copy of another Directory; emptied", self.path)
        return held is not None

    def _apply(self, txn: Any, op: Op) -> bool:
        """Apply one operation; whether an entry changed."""
        if isinstance(op, Put):
            return self._put(txn, op)
        if isinstance(op, Delete):
            return any([self._forget(txn, uuid.encode()) for uuid in op.uuids])
        if isinstance(op, Keep):
            wanted = {uuid.encode() for uuid in op.uuids}
            gone = [bytes(u) for u in txn.cursor(self._entries).iternext(values=False)]
            return any([self._forget(txn, u) for u in gone if u not in wanted])
        if isinstance(op, Cookie):
            if op.cookie is None:
                txn.delete(b"cookie", db=self._meta)
            else:
                txn.put(b"cookie", op.cookie.encode(), db=self._meta)
            return False
        txn.put(b"loaded", b"1", db=self._meta)
        return False

    def _put(self, txn: Any, op: Put) -> bool:
        uuid = op.uuid.encode()
        self._forget(txn, uuid)
        key = _dn_key(op.key)
        holder = txn.get(key, db=self._dns)
        if holder is not None:
            # Another entry held this DN (deleted and re-created while we were
            # away); the server will not mention the old one again.
            self._forget(txn, bytes(holder))
        txn.put(uuid, encode(op.dn, op.key, op.parent, op.attrs), db=self._entries)
        txn.put(key, uuid, db=self._dns)
        for name in _names(op.attrs):
            txn.put(name, uuid, db=self._by_name)
        if _is_key(op.attrs):
            txn.put(_dn_key(op.parent), uuid, db=self._children)
        return True

    def _forget(self, txn: Any, uuid: bytes) -> bool:
        blob = txn.get(uuid, db=self._entries)
        if blob is None:
            return False
        _dn, key, parent, attrs = decode(blob)
        txn.delete(uuid, db=self._entries)
        dn_key = _dn_key(key)
        if txn.get(dn_key, db=self._dns) == uuid:
            txn.delete(dn_key, db=self._dns)
        for name in _names(attrs):
            txn.delete(name, uuid, db=self._by_name)
        if _is_key(attrs):
            txn.delete(_dn_key(parent), uuid, db=self._children)
        return True
