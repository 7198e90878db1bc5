"""Read-only directories held in memory: an LDIF file, or OpenDKIM's single key.

``Directory ldif:PATH`` is the embedded default: the same entries and the same
resolution code as an LDAP server, with no server to run.  OpenDKIM's
``Domain``/``Selector``/``KeyFile`` are turned into the same kind of entries.
Matching follows the schema: object classes and ``dkimSignDomainName``
compare case-insensitively, as slapd does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import ldif

from ldapdkim import keys, schema
from ldapdkim.directory.entries import Entry
from ldapdkim.directory.entryindex import EntryIndex
from ldapdkim.directory.ldifout import child_dn
from ldapdkim.errors import DirectoryError, DirectoryUnavailable
from ldapdkim.model import KeyState


class MemoryBackend:
    """A fixed set of entries, indexed like the directory server indexes them."""

    generation = 0
    """Never changes: the entries are fixed."""
    serves_from_memory = True

    def __init__(self, entries: Iterable[Entry], description: str) -> None:
        self.searches = 0
        self._description = description
        self._index = EntryIndex()
        for dn, attrs in entries:
            self._index.add(dn, attrs)

    @classmethod
    def from_ldif(cls, path: Path) -> MemoryBackend:
        """The entries of the LDIF file at ``path``."""
        try:
            with path.open("rb") as stream:
                parser = ldif.LDIFRecordList(stream)
                parser.parse()
        except OSError as err:
            raise DirectoryUnavailable(
                f"cannot read {path}: {err.strerror}; check the Directory keyword"
            ) from None
        except ValueError as err:
            raise DirectoryError(f"{path}: not valid LDIF ({err})") from None
        return cls(parser.all_records, f"ldif:{path}")

    @classmethod
    def from_key_file(cls, domains: Sequence[str], selector: str, key_file: Path) -> MemoryBackend:
        """OpenDKIM's single-key set-up: every domain in ``domains`` signs with one key."""
        try:
            pem = key_file.read_bytes()
        except OSError as err:
            raise DirectoryUnavailable(f"cannot read KeyFile {key_file}: {err.strerror}") from None
        algorithm = keys.algorithm_of(keys.load_private_key(pem, where=f"KeyFile {key_file}"))
        entries: list[Entry] = []
        for domain in domains:
            dn = child_dn("ou", domain, "cn=KeyFile")
            entries.append(
                (
                    dn,
                    {
                        "objectClass": [schema.POLICY_CLASS.encode()],
                        schema.DOMAIN_NAME: [domain.encode()],
                    },
                )
            )
            entries.append(
                (
                    child_dn(schema.SELECTOR, selector, dn),
                    {
                        "objectClass": [schema.KEY_CLASS.encode()],
                        schema.SELECTOR: [selector.encode()],
                        schema.ALGORITHM: [algorithm.value.encode()],
                        schema.KEY_STATE: [KeyState.ACTIVE.value.encode()],
                        schema.PRIVATE_KEY: [pem],
                    },
                )
            )
        return cls(entries, f"KeyFile {key_file}")

    def describe(self) -> str:
        return self._description

    def search_policies(self, names: Sequence[str]) -> list[Entry]:
        self.searches += 1
        return self._index.policies(names)

    def search_keys(self, policy_dn: str) -> list[Entry]:
        self.searches += 1
        return self._index.children(policy_dn)

    def walk(self) -> Iterator[tuple[Entry, list[Entry]]]:
        return self._index.walk()

    def close(self) -> None:
        pass
