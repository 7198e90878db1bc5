"""Entries indexed the way the directory server indexes them, in memory.

Policy entries are found by ``dkimSignDomainName`` (case-insensitive, as the
schema's equality rule says) and key entries by the DN of the entry above
them.  Entries can be added, replaced and removed one at a time, so the same
index serves a fixed LDIF file (:mod:`ldapdkim.memorybackend`) and a replica
kept current by content sync (:mod:`ldapdkim.replica`).

Not thread-safe by itself: a caller that changes the index while others read
it holds a lock around both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ldapdkim import schema
from ldapdkim.entries import Entry, lower_keys, normalize_dn, parent_dn


def has_class(entry: Entry, name: str) -> bool:
    """Whether ``entry`` (lowercase attribute names) has object class ``name``."""
    wanted = name.lower().encode()
    return any(v.lower() == wanted for v in entry[1].get("objectclass", ()))


class EntryIndex:
    """Policy entries by domain name, key entries by parent DN; all by normalized DN."""

    def __init__(self) -> None:
        self._policies: dict[str, dict[str, Entry]] = {}
        self._children: dict[str, dict[str, Entry]] = {}
        self._where: dict[str, tuple[list[str], str | None]] = {}
        """Normalized DN -> (names it is filed under, parent it is filed under)."""

    def __len__(self) -> int:
        return len(self._where)

    def add(self, dn: str, attrs: dict[str, Sequence[bytes]]) -> None:
        """File the entry ``dn``, replacing what was filed under that DN before."""
        entry: Entry = (dn, lower_keys(attrs))
        key = normalize_dn(dn)
        self.remove(dn)
        names: list[str] = []
        parent: str | None = None
        if has_class(entry, schema.POLICY_CLASS):
            for value in entry[1].get(schema.DOMAIN_NAME.lower(), ()):
                name = value.decode("utf-8", "replace").lower()
                self._policies.setdefault(name, {})[key] = entry
                names.append(name)
        if has_class(entry, schema.KEY_CLASS):
            parent = parent_dn(dn)
            self._children.setdefault(parent, {})[key] = entry
        self._where[key] = (names, parent)

    def remove(self, dn: str) -> None:
        """Forget the entry ``dn``, if filed."""
        key = normalize_dn(dn)
        filed = self._where.pop(key, None)
        if filed is None:
            return
        names, parent = filed
        for name in names:
            _discard(self._policies, name, key)
        if parent is not None:
            _discard(self._children, parent, key)

    def policies(self, names: Sequence[str]) -> list[Entry]:
        """Policy entries naming one of ``names``, each once."""
        found: dict[str, Entry] = {}
        for name in names:
            found.update(self._policies.get(name.lower(), {}))
        return list(found.values())

    def children(self, dn: str) -> list[Entry]:
        """Key entries directly beneath ``dn``."""
        return list(self._children.get(normalize_dn(dn), {}).values())

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
