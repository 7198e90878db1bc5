"""The cache in front of the directory: TTLs, negative answers, last known good."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from ldapdkim.directory.cache import CachedResolver
from ldapdkim.errors import (
    AmbiguousDomain,
    DirectoryUnavailable,
    DomainNotFound,
    InvalidDomain,
)
from ldapdkim.model import DomainPolicy, Resolution


@dataclass
class FakeDirectory:
    """Stands in for :class:`~ldapdkim.directory.resolution.Directory` (tests the cache only)."""

    known: set[str] = field(default_factory=lambda: {"example.com"})
    ambiguous: set[str] = field(default_factory=set)
    down: bool = False
    asked: list[str] = field(default_factory=list)
    backend: SimpleNamespace = field(
        default_factory=lambda: SimpleNamespace(generation=0, serves_from_memory=False)
    )
    """The resolver watches ``backend.generation`` (a live replica bumps it)."""

    def resolve(self, domain: str) -> Resolution:
        self.asked.append(domain)
        if self.down:
            raise DirectoryUnavailable("ldap://127.0.0.1:1 did not answer")
        if domain in self.ambiguous:
            raise AmbiguousDomain(f"domain {domain} is claimed by 2 entries")
        if domain not in self.known:
            raise DomainNotFound(f"no policy entry for {domain}")
        policy = DomainPolicy(dn=f"ou={domain}", names=(domain,))
        return Resolution(domain, domain, policy, ())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _resolver(directory: FakeDirectory, clock: Clock, **overrides: float) -> CachedResolver:
    options = {"ttl": 300.0, "negative_ttl": 60.0, "max_stale": 3600.0} | overrides
    return CachedResolver(directory, clock=clock, **options)  # type: ignore[arg-type]


def test_positive_answers_are_cached_for_the_ttl() -> None:
    directory, clock = FakeDirectory(), Clock()
    resolver = _resolver(directory, clock)
    assert resolver.resolve("Example.COM").signing_domain == "example.com"
    clock.now += 299
    resolver.resolve("example.com")
    assert directory.asked == ["example.com"]
    clock.now += 2
    resolver.resolve("example.com")
    assert directory.asked == ["example.com", "example.com"]


def test_absences_are_cached_for_the_negative_ttl_and_then_asked_again() -> None:
    directory, clock = FakeDirectory(), Clock()
    resolver = _resolver(directory, clock)
    for _ in range(3):
        with pytest.raises(DomainNotFound, match=r"no policy entry for unknown\.example"):
            resolver.resolve("unknown.example")
    assert directory.asked == ["unknown.example"]
    directory.known.add("unknown.example")
    clock.now += 61
    assert resolver.resolve("unknown.example").domain == "unknown.example"


def test_ambiguous_directory_data_is_an_error_every_time_not_a_first_hit() -> None:
    directory, clock = FakeDirectory(ambiguous={"twice.example"}), Clock()
    resolver = _resolver(directory, clock)
    for _ in range(2):
        with pytest.raises(AmbiguousDomain):
            resolver.resolve("twice.example")


def test_invalid_domains_never_reach_the_directory() -> None:
    directory, clock = FakeDirectory(), Clock()
    resolver = _resolver(directory, clock)
    for hostile in ["*", "*)(objectClass=*", "x\0.example.com", "example.com,ou=x"]:
        with pytest.raises(InvalidDomain):
            resolver.resolve(hostile)
    assert directory.asked == []


def test_last_known_good_is_served_while_the_directory_is_down_within_max_stale() -> None:
    directory, clock = FakeDirectory(), Clock()
    resolver = _resolver(directory, clock, max_stale=3600)
    resolver.resolve("example.com")
    with pytest.raises(DomainNotFound):
        resolver.resolve("gone.example")
    directory.down = True
    clock.now += 1000  # both TTLs over: the directory is asked and does not answer
    assert resolver.resolve("example.com").domain == "example.com"
    with pytest.raises(DomainNotFound):
        resolver.resolve("gone.example")
    assert resolver.stats.stale_served == 2
    clock.now += 2700  # now older than max_stale
    with pytest.raises(DirectoryUnavailable, match="did not answer"):
        resolver.resolve("example.com")


def test_a_domain_never_seen_fails_with_directory_unavailable_when_down() -> None:
    directory, clock = FakeDirectory(down=True), Clock()
    with pytest.raises(DirectoryUnavailable):
        _resolver(directory, clock).resolve("example.com")


def test_flush_forgets_fresh_answers_but_keeps_last_known_good() -> None:
    directory, clock = FakeDirectory(), Clock()
    resolver = _resolver(directory, clock)
    resolver.resolve("example.com")
    resolver.flush()
    directory.down = True
    assert resolver.resolve("example.com").domain == "example.com"
    assert directory.asked == ["example.com", "example.com"]


def test_zero_ttl_disables_caching() -> None:
    directory, clock = FakeDirectory(), Clock()
    resolver = _resolver(directory, clock, ttl=0, negative_ttl=0)
    resolver.resolve("example.com")
    resolver.resolve("example.com")
    assert len(directory.asked) == 2


def test_answers_from_a_replica_in_memory_get_no_second_copy_for_outages() -> None:
    """The replica is itself the last known state; copying it would double its memory."""
    directory = FakeDirectory()
    directory.backend.serves_from_memory = True
    resolver = CachedResolver(directory, ttl=0, negative_ttl=0, max_stale=3600)  # type: ignore[arg-type]
    resolver.resolve("example.com")
    directory.down = True
    with pytest.raises(DirectoryUnavailable):
        resolver.resolve("example.com")


class TickingClock(Clock):
    """Time moves on by ``step`` at every reading, as it does between two threads' steps."""

    def __init__(self, step: float) -> None:
        super().__init__()
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_an_answer_expiring_while_it_is_looked_up_is_a_miss_not_an_error() -> None:
    """Every reading of the clock may be the one at which the TTL runs out."""
    for step in (0.2, 0.25, 0.35, 0.4, 0.45):  # each meets the expiry at another reading
        directory = FakeDirectory()
        resolver = _resolver(directory, TickingClock(step), ttl=1.0, negative_ttl=1.0)
        for _ in range(20):
            assert resolver.resolve("example.com").signing_domain == "example.com"
            with pytest.raises(DomainNotFound):
                resolver.resolve("absent.example")
        assert len(directory.asked) > 4  # answers did expire along the way
