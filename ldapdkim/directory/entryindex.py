"""Entries indexed the way the directory server indexes them, in memory.

Policy entries are found by ``dkimSignDomainName`` (case-insensitive, as the
schema's equality rule says) and key entries by the DN of the entry above
them.  Entries can be added, replaced and removed one at a time, so the same
index serves a fixed LDIF file (:mod:`ldapdkim.directory.memorybackend`) and a replica
kept current by content sync (:mod:`ldapdkim.directory.replica.sync`).

Each entry is held once, in a compact form (:func:`compact`), and every table
refers to that one copy: at 100 000 domains (300 000 entries) the index is
most of the milter's memory.  Entries are never changed in place, only
replaced, so a reader may keep an entry it was handed.

Not thread-safe by itself: a caller that changes the index while others read
it holds a lock around both.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence

from ldapdkim import schema
from ldapdkim.directory.entries import Attributes, Entry, locate, normalize_dn

Record = tuple[str, str, str, Attributes, str | None]
"""How an entry is filed and saved: (DN, normalized DN, normalized parent DN,
compact attributes, owner).  The owner is the replica's entryUUID (None in a
fixed directory)."""

_ENUMERATED = frozenset(
    name.lower()
    for name in (
        "objectClass",
        schema.ALGORITHM,
        schema.KEY_STATE,
        schema.ENABLED,
        schema.SUBDOMAINS,
        schema.CANONICALIZATION,
    )
)
"""Attributes whose values repeat across entries: one copy of each value is kept."""
_SHARED_VALUES_MAX = 4096
_shared_values: dict[bytes, bytes] = {}


def compact(attrs: Mapping[str, Sequence[bytes]]) -> dict[str, tuple[bytes, ...]]:
    """``attrs`` as the index holds them.

    Names lowercased (LDAP attribute names are case-insensitive) and interned,
    values in tuples, and the values of enumerated attributes (object classes,
    algorithms, key states, booleans) shared between entries.
    """
    out: dict[str, tuple[bytes, ...]] = {}
    for name, values in attrs.items():
        lowered = sys.intern(name.lower())
        if lowered in _ENUMERATED:
            out[lowered] = tuple(_share(v) for v in values)
        else:
            out[lowered] = tuple(values)
    return out


def _share(value: bytes) -> bytes:
    shared = _shared_values.get(value)
    if shared is not None:
        return shared
    if len(_shared_values) < _SHARED_VALUES_MAX:
        _shared_values[value] = value
    return value


def has_class(entry: Entry, name: str) -> bool:
    """Whether ``entry`` (lowercase attribute names) has object class ``name``."""
    wanted = name.lower().encode()
    return any(v.lower() == wanted for v in entry[1].get("objectclass", ()))


class EntryIndex:
    """Policy entries by domain name, key entries by parent DN; all by normalized DN."""

    def __init__(self) -> None:
        self._policies: dict[str, dict[str, Entry]] = {}
        self._children: dict[str, dict[str, Entry]] = {}
        self._where: dict[str, tuple[Entry, tuple[str, ...], str, str | None]] = {}
        """Normalized DN -> (entry, names it is filed under, parent, owner)."""

    def __len__(self) -> int:
        return len(self._where)

    def add(self, dn: str, attrs: Mapping[str, Sequence[bytes]], owner: str | None = None) -> str:
        """File the entry ``dn``, replacing what was filed under that DN; its normalized DN."""
        key, parent = locate(dn)
        self.file((dn, key, parent, compact(attrs), owner))
        return key

    def file(self, record: Record) -> None:
        """File an entry whose DNs are normalized and attributes compact already."""
        dn, key, parent, attrs, owner = record
        entry: Entry = (dn, attrs)
        self.remove(key)
        names: list[str] = []
        if has_class(entry, schema.POLICY_CLASS):
            for value in attrs.get(schema.DOMAIN_NAME.lower(), ()):
                name = value.decode("utf-8", "replace").lower()
                self._policies.setdefault(name, {})[key] = entry
                names.append(name)
        if has_class(entry, schema.KEY_CLASS):
            self._children.setdefault(parent, {})[key] = entry
        self._where[key] = (entry, tuple(names), parent, owner)

    def remove(self, key: str) -> None:
        """Forget the entry whose normalized DN is ``key``, if filed."""
        filed = self._where.pop(key, None)
        if filed is None:
            return
        _entry, names, parent, _owner = filed
        for name in names:
            _discard(self._policies, name, key)
        _discard(self._children, parent, key)

    def owner(self, key: str) -> str | None:
        """The owner the entry at ``key`` was filed with (None: none, or not filed)."""
        filed = self._where.get(key)
        return None if filed is None else filed[3]

    def records(self) -> list[Record]:
        """Every entry as filed, for saving (a new list: safe to use without the lock)."""
        return [
            (entry[0], key, parent, entry[1], owner)
            for key, (entry, _names, parent, owner) in self._where.items()
        ]

    def policies(self, names: Sequence[str]) -> list[Entry]:
        """Policy entries naming one of ``names``, each once."""
        found: dict[str, Entry] = {}
        for name in names:
            found.update(self._policies.get(name.lower(), {}))
        return list(found.values())

    def children(self, dn: str) -> list[Entry]:
        """Key entries directly beneath ``dn``."""
        # A DN as the server sends it is usually normalized but for case.  If
        # the lowercased DN is a key here, it is normalized already (keys are),
        # so parsing it would give the same key: skip the parse (3 us a lookup).
        found = self._children.get(dn.lower())
        if found is None:
            found = self._children.get(normalize_dn(dn), {})
        return list(found.values())

    def walk(self) -> Iterator[tuple[Entry, list[Entry]]]:
        """Every policy entry (once) with the key entries beneath it."""
        seen: set[str] = set()
        for entries in list(self._policies.values()):
            for key, entry in list(entries.items()):
                if key not in seen:
                    seen.add(key)
                    yield entry, list(self._children.get(key, {}).values())


def _discard(table: dict[str, dict[str, Entry]], slot: str, key: str) -> None:
    entries = table.get(slot)
    if entries is not None:
        entries.pop(key, None)
        if not entries:
            del table[slot]
