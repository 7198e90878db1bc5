"""Seal the private keys of a directory in place, move them to another KEK, count them.

``ldapdkim keys seal`` replaces each plaintext ``dkimSignPrivateKey`` with its
sealed value (:mod:`ldapdkim.sealing`), and adds the ``dkimSignPublicKey`` that
``dns-records`` and ``rotate`` then need where the entry lacks one; ``ldapdkim keys rewrap --to ID``
replaces each value sealed with another KEK by the same key sealed with
``ID``.  Both go through every key entry below the base DN, and both can be
run again: a value that is already what the command makes is left alone.

**Which domain a key is sealed for.**  A key signs as whichever
``dkimSignDomainName`` of its domain entry the mail matched
(``Resolution.signing_domain``); the tools seal for the first of those
names in sorted order (:func:`ldapdkim.sealing.domain_of`) and the milter
opens a value under any of them.  A value copied onto the entry of another
domain does not open there.

**No lost update.**  Each write applies only if the entry is still what was
read.  ``rewrap`` swaps the old sealed value for the new one in one modify
(delete the old value, add the new: the server applies both or neither, and
refuses the delete of a value the entry no longer holds), which every server
takes, with no control.  ``seal`` asserts the entry's ``entryCSN`` (RFC 4528)
where the server keeps one (OpenLDAP: it changes with every write), so the
plaintext key does not go back to the server; elsewhere (389-DS, Active
Directory) it swaps the plaintext value as ``rewrap`` swaps a sealed one,
over the connection that has just read it.  An entry changed meanwhile is
counted as failed and left to the next run.

**Where the plaintext is.**  ``seal`` reads the plaintext the directory
holds; ``rewrap`` opens a sealed value in memory, seals it with the new KEK
at once, and sends and writes only sealed values.  Neither writes a key to
a file or a log.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from ldapdkim import keys, schema, sealing
from ldapdkim.directory.entries import Entry, normalize_dn, parent_dn
from ldapdkim.directory.writer import DirectoryWriter
from ldapdkim.errors import EntryChanged, KeyFormatError, KeyUnavailable
from ldapdkim.model import Algorithm

_STAMP = "entrycsn"
"""The operational attribute that changes with every write of an entry (OpenLDAP)."""


@enum.unique
class Outcome(enum.Enum):
    """What ``keys seal`` or ``keys rewrap`` did with one key entry."""

    SEALED = "sealed"
    REWRAPPED = "rewrapped"
    ALREADY = "already"
    """Already what the command makes: sealed (seal), sealed with the target KEK (rewrap)."""
    PKCS11 = "in a token"
    PLAINTEXT = "plaintext"
    """rewrap only: a plaintext key is left for ``keys seal``."""
    NO_KEY = "without a key"
    UNKNOWN_KEK = "unknown KEK"
    FAILED = "failed"

    @property
    def is_problem(self) -> bool:
        return self in (Outcome.FAILED, Outcome.UNKNOWN_KEK)


@dataclass(frozen=True)
class KeyEntry:
    """A key entry as these commands read it, with the names of its domain entry."""

    dn: str
    selector: str
    algorithm: Algorithm | None
    value: bytes | None = field(repr=False)
    names: tuple[str, ...]
    public_key: bytes | None = None
    stamp: bytes | None = None
    """The entry's ``entryCSN``, where the server keeps one."""

    def identities(self) -> list[sealing.KeyIdentity]:
        """The identities the key may be sealed as: one per name of its domain entry."""
        assert self.algorithm is not None
        return [sealing.KeyIdentity(n, self.selector, self.algorithm) for n in self.names]


@dataclass(frozen=True)
class Step:
    """One key entry's outcome, with the reason where it is not the expected one."""

    dn: str
    outcome: Outcome
    detail: str = ""

    def line(self) -> str:
        return f"{self.dn}: {self.detail}" if self.detail else f"{self.dn}: {self.outcome.value}"


def read_entries(writer: DirectoryWriter) -> list[KeyEntry]:
    """Every key entry below the base DN, read with the writer's bind, in DN order."""
    names_of: dict[str, tuple[str, ...]] = {}
    for dn, attrs in writer.search(f"(objectClass={schema.POLICY_CLASS})", [schema.DOMAIN_NAME]):
        values = attrs.get(schema.DOMAIN_NAME.lower(), ())
        names_of[normalize_dn(dn)] = tuple(sorted(v.decode("ascii", "replace").lower().strip()
                                                  for v in values))  # fmt: skip
    wanted = [schema.SELECTOR, schema.ALGORITHM, schema.PRIVATE_KEY, schema.PUBLIC_KEY, "entryCSN"]
    found = [
        _key_entry(entry, names_of.get(parent_dn(entry[0]), ()))
        for entry in writer.search(f"(objectClass={schema.KEY_CLASS})", wanted)
    ]
    return sorted(found, key=lambda e: (parent_dn(e.dn), normalize_dn(e.dn)))


def _key_entry(entry: Entry, names: tuple[str, ...]) -> KeyEntry:
    dn, attrs = entry

    def first(name: str) -> bytes | None:
        values = attrs.get(name.lower())
        return values[0] if values else None

    try:
        algorithm: Algorithm | None = Algorithm.parse((first(schema.ALGORITHM) or b"").decode())
    except (ValueError, UnicodeDecodeError):
        algorithm = None
    selector = (first(schema.SELECTOR) or b"").decode("ascii", "replace").strip().lower()
    return KeyEntry(
        dn,
        selector,
        algorithm,
        first(schema.PRIVATE_KEY),
        names,
        public_key=first(schema.PUBLIC_KEY),
        stamp=first(_STAMP),
    )


def _unusable(entry: KeyEntry) -> str | None:
    """Why the entry's key cannot be sealed for it, or None."""
    if entry.algorithm is None:
        return f"{schema.ALGORITHM} is missing or unknown; set rsa-sha256 or ed25519-sha256"
    if not entry.selector:
        return f"it has no {schema.SELECTOR}"
    if not entry.names:
        return (
            f"it is not directly beneath a domain entry with {schema.DOMAIN_NAME}, so it "
            "signs for no domain; move it beneath its domain's entry"
        )
    return None


def _octets(value: bytes) -> str:
    """An assertion value for a filter (RFC 4515), every octet escaped."""
    return "".join(f"\\{octet:02x}" for octet in value)


def _form(entry: KeyEntry) -> str | Step:
    """The stored form of the entry's key; the outcome of an entry that both commands
    leave alone (no key; a key in a token)."""
    if entry.value is None:
        return Step(entry.dn, Outcome.NO_KEY)
    form = keys.stored_form(entry.value)
    return Step(entry.dn, Outcome.PKCS11) if form == "token" else form


def seal_one(
    writer: DirectoryWriter, entry: KeyEntry, kek: sealing.KeyEncryptionKey, *, dry_run: bool
) -> Step:
    """Seal the entry's plaintext key with ``kek`` and write it (not with ``dry_run``).

    Raises:
        DirectoryError: the bind may not write.
    """
    form, value = _form(entry), entry.value or b""
    if isinstance(form, Step):
        return form
    if form == "sealed":
        try:
            sealing.parse(value)
        except KeyFormatError as err:
            return Step(
                entry.dn, Outcome.FAILED, f"{err}; seal this entry's key again from its source"
            )
        return Step(entry.dn, Outcome.ALREADY)
    problem = _unusable(entry)
    if problem is not None:
        return Step(entry.dn, Outcome.FAILED, f"not sealed: {problem}")
    assert entry.algorithm is not None
    try:
        private = keys.load_private_key(value, where="its plaintext key")
    except KeyFormatError as err:
        return Step(entry.dn, Outcome.FAILED, f"not sealed: {err}")
    if keys.algorithm_of(private) is not entry.algorithm:
        return Step(
            entry.dn,
            Outcome.FAILED,
            f"not sealed: it holds a {keys.algorithm_of(private).value} key, but "
            f"{schema.ALGORITHM} says {entry.algorithm.value}; correct {schema.ALGORITHM}",
        )
    identity = entry.identities()[0]
    changes = {schema.PRIVATE_KEY: [sealing.seal_key(private, kek, identity)]}
    if not entry.public_key:
        # Sealed, the private key no longer tells dns-records and rotate the public key.
        changes[schema.PUBLIC_KEY] = [keys.public_key_b64(private).encode()]
    if not dry_run:
        try:
            if entry.stamp is not None:
                writer.replace(entry.dn, changes, assertion=f"(entryCSN={_octets(entry.stamp)})")
            else:
                sealed = changes.pop(schema.PRIVATE_KEY)[0]
                writer.swap(entry.dn, schema.PRIVATE_KEY, value, sealed, changes)
        except EntryChanged as err:
            return Step(entry.dn, Outcome.FAILED, str(err))
    return Step(entry.dn, Outcome.SEALED)


def rewrap_one(
    writer: DirectoryWriter,
    entry: KeyEntry,
    keks: Mapping[str, sealing.KeyEncryptionKey],
    target: sealing.KeyEncryptionKey,
    *,
    dry_run: bool,
) -> Step:
    """Seal the entry's key, sealed with another KEK of ``keks``, again with ``target``.

    Raises:
        DirectoryError: the bind may not write.
    """
    form, value = _form(entry), entry.value or b""
    if isinstance(form, Step):
        return form
    if form == "plaintext":
        return Step(entry.dn, Outcome.PLAINTEXT)
    try:
        kek_id = sealing.parse(value).kek_id
    except KeyFormatError as err:
        return Step(entry.dn, Outcome.FAILED, f"{err}; seal this entry's key again from its source")
    if kek_id == target.kek_id:
        return Step(entry.dn, Outcome.ALREADY)
    if kek_id not in keks:
        return Step(
            entry.dn,
            Outcome.UNKNOWN_KEK,
            f"left as it is: sealed with KEK {kek_id!r}, which the configuration does not "
            f"have; add 'KeyEncryptionKey {kek_id} PATH' and run again",
        )
    problem = _unusable(entry)
    if problem is not None:
        return Step(entry.dn, Outcome.FAILED, f"not rewrapped: {problem}")
    try:
        der, identity = sealing.unseal_as_any(value, keks, entry.identities())
    except KeyUnavailable as err:
        return Step(entry.dn, Outcome.FAILED, f"not rewrapped: {err}")
    sealed = sealing.seal(der, target, identity)
    del der
    if not dry_run:
        try:
            writer.swap(entry.dn, schema.PRIVATE_KEY, value, sealed)
        except EntryChanged as err:
            return Step(entry.dn, Outcome.FAILED, str(err))
    return Step(entry.dn, Outcome.REWRAPPED)


# -- counting what a directory holds ------------------------------------------------------


@dataclass
class Census:
    """How the private keys of a directory are stored (``check-config --connect``)."""

    sealed: Counter[str] = field(default_factory=Counter)
    """Keys sealed with a configured KEK, by KEK id."""
    unknown_kek: list[tuple[str, str]] = field(default_factory=list)
    """(DN, KEK id) of keys sealed with a KEK the configuration does not have."""
    damaged: list[str] = field(default_factory=list)
    plaintext: list[str] = field(default_factory=list)
    token: int = 0
    no_key: int = 0

    def summary(self) -> str:
        by_kek = ", ".join(f"{kek_id} {n}" for kek_id, n in sorted(self.sealed.items()))
        parts = [
            f"{sum(self.sealed.values())} sealed" + (f" ({by_kek})" if by_kek else ""),
            f"{len(self.plaintext)} plaintext",
            f"{self.token} in a token",
            f"{len(self.unknown_kek)} sealed with a KEK not configured here",
        ]
        if self.damaged:
            parts.append(f"{len(self.damaged)} damaged")
        if self.no_key:
            parts.append(f"{self.no_key} unreadable or missing")
        return "private keys: " + ", ".join(parts)

    def problems(self, *, require_sealed: bool, config: str) -> list[str]:
        """What the milter cannot sign with, each entry by DN with the fix."""
        found = [
            f"key {dn!r} is sealed with KEK {kek_id!r}, which {config} does not have; add "
            f"'KeyEncryptionKey {kek_id} PATH' "
            f"(or run 'ldapdkim keys rewrap --to ID' where {kek_id!r} is)"
            for dn, kek_id in self.unknown_kek
        ]
        found += [
            f"key {dn!r} holds a damaged sealed value; seal its key again from its source"
            for dn in self.damaged
        ]
        if require_sealed:
            found += [
                f"key {dn!r} is stored in plaintext and RequireSealedKeys is yes, so it does "
                f"not sign; seal it with 'ldapdkim keys seal -c {config}'"
                for dn in self.plaintext
            ]
        return found


def census(key_entries: Iterable[Entry], kek_ids: Collection[str]) -> Census:
    """Count the stored forms of the keys of ``key_entries`` (raw entries, lowercase names)."""
    counted = Census()
    for dn, attrs in key_entries:
        values = attrs.get(schema.PRIVATE_KEY.lower())
        if not values:
            counted.no_key += 1
            continue
        form = keys.stored_form(values[0])
        if form == "token":
            counted.token += 1
        elif form == "plaintext":
            counted.plaintext.append(dn)
        else:
            try:
                kek_id = sealing.parse(values[0]).kek_id
            except KeyFormatError:
                counted.damaged.append(dn)
                continue
            if kek_id in kek_ids:
                counted.sealed[kek_id] += 1
            else:
                counted.unknown_kek.append((dn, kek_id))
    return counted
