"""Resolve a mail domain to its signing identity, from any directory backend.

Resolution is the same for every backend (LDAP server or LDIF file): one
search for the policy entries of the domain and its parents, one for the key
entries beneath the policy that applies.  DNs are only ever taken from search
results, never built from the domain.  Two policy entries claiming one name
are an error, never "first hit wins".

Backends implement :class:`Backend`; caching lives in :mod:`ldapdkim.directory.cache`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Protocol

from ldapdkim.config.settings import Settings
from ldapdkim.directory.entries import Entry, key_from_entry, policy_from_entry
from ldapdkim.domainname import normalize_domain, parent_domains
from ldapdkim.errors import AmbiguousDomain, ConfigError, DomainNotFound, DomainNotSigned
from ldapdkim.model import DirectoryView, DomainPolicy, Resolution, SigningKey

log = logging.getLogger(__name__)


class Backend(Protocol):
    """Where entries come from.  Attribute names in results are lowercase."""

    searches: int
    """How many searches were sent so far (network round trips for LDAP)."""

    @property
    def generation(self) -> int:
        """Changes whenever the entries may have changed (a live replica applied a change)."""
        ...

    @property
    def serves_from_memory(self) -> bool:
        """Whether answers come from entries held in memory (no server is asked).

        Such a backend is its own last known state: the cache keeps no
        second copy of its answers for outages.
        """
        ...

    def describe(self) -> str:
        """Where the entries come from, for messages (no credentials)."""
        ...

    def search_policies(self, names: Sequence[str]) -> list[Entry]:
        """Policy entries whose ``dkimSignDomainName`` equals one of ``names``.

        ``names`` are validated, normalized domain names; the backend still
        escapes them (RFC 4515).
        """
        ...

    def search_keys(self, policy_dn: str) -> list[Entry]:
        """Key entries directly beneath ``policy_dn``."""
        ...

    def walk(self) -> Iterator[tuple[Entry, list[Entry]]]:
        """Every policy entry with the key entries beneath it."""
        ...

    def close(self) -> None: ...


class Directory:
    """Resolves domains against one backend, without caching.

    A context manager: leaving the ``with`` block closes the backend (its
    connection, or a replica's sync thread).
    """

    def __init__(self, backend: Backend, *, subdomains: bool, minimum_key_bits: int) -> None:
        self.backend = backend
        self.subdomains = subdomains
        self.minimum_key_bits = minimum_key_bits

    def __enter__(self) -> Directory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the backend; a replica stops its thread and saves its state."""
        self.backend.close()

    def describe(self) -> str:
        """Where the entries come from, for messages."""
        return self.backend.describe()

    @property
    def searches(self) -> int:
        """Searches sent to a server so far (answers from a replica in memory do not count)."""
        return self.backend.searches

    def shares_backend_with(self, other: Directory) -> bool:
        """Whether both answer from the same backend (a replica kept across a reload)."""
        return self.backend is other.backend

    def view(self) -> DirectoryView:
        """How current the answers are: a replica's or lookup connection's figures; a
        KeyFile or LDIF read at start is always current."""
        view = getattr(self.backend, "view", None)
        if callable(view):
            figures: DirectoryView = view()
            return figures
        return DirectoryView(mode="memory", connected=True, age=0.0)

    def replica_state(self) -> str | None:
        """The content-sync replica's one-line state (for SIGUSR1), or None without one."""
        describe_state = getattr(self.backend, "describe_state", None)
        return describe_state() if callable(describe_state) else None

    def resolve(self, domain: str) -> Resolution:
        """The signing identity for ``domain`` (already validated by :mod:`domainname`).

        Raises:
            DomainNotFound: no policy entry covers the domain.
            DomainNotSigned: a policy covers it but says not to sign.
            AmbiguousDomain: two policy entries claim the same name.
            DirectoryUnavailable: the backend could not be asked.
        """
        candidates = parent_domains(domain)
        by_name: dict[str, list[DomainPolicy]] = {}
        for entry in self.backend.search_policies(candidates):
            policy = policy_from_entry(entry)
            for name in policy.names:
                by_name.setdefault(name, []).append(policy)
        for name in candidates:
            policies = by_name.get(name)
            if not policies:
                continue
            if len(policies) > 1:
                dns = " and ".join(repr(p.dn) for p in policies)
                raise AmbiguousDomain(
                    f"domain {name} is claimed by {len(policies)} entries ({dns}); "
                    "remove the dkimSignDomainName value from all but one"
                )
            policy = policies[0]
            self._check_covers(domain, name, policy)
            keys = tuple(
                key_from_entry(entry, self.minimum_key_bits)
                for entry in self.backend.search_keys(policy.dn)
            )
            _log_key_problems(keys)
            return Resolution(domain=domain, signing_domain=name, policy=policy, keys=keys)
        scope = " or a parent domain" if len(candidates) > 1 else ""
        raise DomainNotFound(f"no policy entry for {domain}{scope} in {self.backend.describe()}")

    def _check_covers(self, domain: str, name: str, policy: DomainPolicy) -> None:
        if name != domain:
            allowed = policy.subdomains if policy.subdomains is not None else self.subdomains
            if not allowed:
                raise DomainNotSigned(
                    f"{domain} is a subdomain of {name}, whose entry {policy.dn!r} does not "
                    "cover subdomains (set dkimSignSubdomains TRUE there, or SubDomains yes)"
                )
        if policy.enabled is False:
            raise DomainNotSigned(
                f"signing for {name} is switched off (dkimSignEnabled FALSE on {policy.dn!r})"
            )

    def find(self, domain: str) -> tuple[DomainPolicy, tuple[SigningKey, ...]]:
        """The entry whose ``dkimSignDomainName`` is exactly ``domain``, with its keys.

        Unlike :meth:`resolve`, no parent domain stands in, and a disabled
        entry is found all the same: this is for the tools that manage keys.

        Raises:
            DomainNotFound: no entry names the domain.
            AmbiguousDomain: several do.
        """
        found = [
            entry
            for entry in self.backend.search_policies([domain])
            if domain in policy_from_entry(entry).names
        ]
        if not found:
            raise DomainNotFound(
                f"no domain entry names {domain} (dkimSignDomainName) in "
                f"{self.backend.describe()}; check the spelling"
            )
        if len(found) > 1:
            dns = " and ".join(repr(e[0]) for e in found)
            raise AmbiguousDomain(
                f"domain {domain} is claimed by {len(found)} entries ({dns}); "
                "remove the dkimSignDomainName value from all but one"
            )
        keys = tuple(
            key_from_entry(e, self.minimum_key_bits) for e in self.backend.search_keys(found[0][0])
        )
        return policy_from_entry(found[0]), keys

    def walk(self) -> Iterator[tuple[DomainPolicy, tuple[SigningKey, ...]]]:
        """Every policy with its keys, for audits and DNS export."""
        for policy_entry, key_entries in self.backend.walk():
            policy = policy_from_entry(policy_entry)
            keys = tuple(key_from_entry(e, self.minimum_key_bits) for e in key_entries)
            yield policy, keys


def _log_key_problems(keys: Sequence[SigningKey]) -> None:
    for key in keys:
        if key.problem and key.state.value == "active":
            log.warning("key %s cannot sign: %s", key.dn, key.problem)


def open_backend(
    settings: Settings, *, live: bool = False, running: Backend | None = None
) -> Backend:
    """The backend the configuration names: ``Directory``, or Domain/Selector/KeyFile.

    ``live``: for the milter, an LDAP ``Directory`` is served by a content-sync
    replica (:mod:`ldapdkim.directory.replica.sync`, ``DirectorySync``), which runs a thread;
    one-shot commands leave it False and look entries up directly.
    ``running``: the milter's backend before a reload; a replica that serves
    ``settings`` unchanged is returned as it is.

    Raises:
        ConfigError: the configuration names no key source.
    """
    source = settings.directory
    ldap_settings = settings.ldap
    if source is not None and source.kind == "ldif" and source.ldif_path is not None:
        from ldapdkim.directory.memorybackend import MemoryBackend

        return MemoryBackend.from_ldif(source.ldif_path)
    if ldap_settings is not None and live:
        from ldapdkim.directory.replica.sync import ReplicaSettings, SyncReplica

        wanted = ReplicaSettings.of(settings)
        if isinstance(running, SyncReplica) and running.serves(wanted):
            return running
        return SyncReplica(wanted)
    if ldap_settings is not None:
        from ldapdkim.directory.ldapbackend import LdapBackend

        return LdapBackend(ldap_settings)
    if settings.domain and settings.selector and settings.key_file:
        from ldapdkim.directory.memorybackend import MemoryBackend

        domains = [normalize_domain(d) for d in settings.domain]
        return MemoryBackend.from_key_file(domains, settings.selector, settings.key_file)
    raise ConfigError(
        f"{settings.source}: no key source; set Directory (ldap://... or ldif:FILE), "
        "or Domain, Selector and KeyFile"
    )


def open_directory(
    settings: Settings, *, live: bool = False, previous: Directory | None = None
) -> Directory:
    """A :class:`Directory` over the configured backend (see :func:`open_backend`).

    ``previous``: the milter's directory before a reload, whose replica is
    kept when ``settings`` ask for the same one.
    """
    running = previous.backend if previous is not None else None
    return Directory(
        open_backend(settings, live=live, running=running),
        subdomains=settings.subdomains,
        minimum_key_bits=settings.minimum_key_bits,
    )
