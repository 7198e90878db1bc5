"""The cache of resolutions in front of the directory: TTLs, negative answers, last known good.

:class:`CachedResolver` is the in-process view of the directory that signing asks.

* A positive answer is kept for ``LDAPCacheTTL`` seconds, an absence (or a
  policy that says "do not sign") for ``LDAPNegativeCacheTTL``.
* When the directory cannot be asked, the last answer that it gave for the
  domain is served for up to ``DirectoryMaxStale`` seconds after it was
  fetched, so a directory outage does not stop signing.
* When the backend's ``generation`` changes (a live replica applied a
  directory change), fresh and negative answers are dropped, so the change
  applies to the next message.
* Hostile input is stopped before the cache: a domain that is not a valid
  host name raises :class:`InvalidDomain` without a lookup.

Thread-safe: pymilter runs one thread per SMTP connection.  The lock guards
the caches only; directory queries run outside it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import LRUCache, TTLCache

from ldapdkim import metrics
from ldapdkim.config.settings import Settings
from ldapdkim.directory.resolution import Directory
from ldapdkim.domainname import normalize_domain
from ldapdkim.errors import (
    DirectoryError,
    DirectoryStale,
    DirectoryUnavailable,
    DomainNotSigned,
)
from ldapdkim.model import Resolution

log = logging.getLogger(__name__)

Answer = Resolution | DomainNotSigned | DirectoryError

_normalized = functools.lru_cache(maxsize=4096)(normalize_domain)
"""normalize_domain, remembered for the From domains mail repeats (bounded; a name
that is no domain raises each time)."""


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    stale_served: int = 0


class CachedResolver:
    """Resolves From domains through a :class:`Directory`, with caching."""

    def __init__(
        self,
        directory: Directory,
        *,
        ttl: float,
        negative_ttl: float,
        max_stale: float,
        maxsize: int = 200_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.max_stale = max_stale
        self.stats = CacheStats()
        self._clock = clock
        self._lock = threading.Lock()
        self._fresh: TTLCache[str, Resolution] | None = (
            TTLCache(maxsize, ttl, timer=clock) if ttl > 0 else None
        )
        self._negative: TTLCache[str, DomainNotSigned | DirectoryError] | None = (
            TTLCache(maxsize, negative_ttl, timer=clock) if negative_ttl > 0 else None
        )
        self._last_good: LRUCache[str, tuple[Answer, float]] = LRUCache(maxsize)
        self._generation = directory.backend.generation

    @classmethod
    def configured(cls, directory: Directory, settings: Settings) -> CachedResolver:
        """A resolver over ``directory`` with the configuration's TTLs and DirectoryMaxStale."""
        return cls(
            directory,
            ttl=settings.ldap_cache_ttl,
            negative_ttl=settings.ldap_negative_cache_ttl,
            max_stale=settings.directory_max_stale,
        )

    def resolve(self, domain: str) -> Resolution:
        """The signing identity of ``domain``.

        Raises:
            InvalidDomain: ``domain`` is not a host name (nothing was looked up).
            DomainNotSigned: the directory does not sign for it (possibly cached).
            DirectoryError: the directory holds inconsistent data for it.
            DirectoryUnavailable: the directory cannot be asked and nothing
                recent enough is known.
        """
        name = _normalized(domain)
        generation = self.directory.backend.generation
        with self._lock:
            if generation != self._generation:
                # A live replica applied a directory change: answer anew.
                self._generation = generation
                self._clear()
            cached = self._cached(name)
        if cached is not None:
            self.stats.hits += 1
            metrics.labelled(metrics.CACHE_LOOKUPS, "hit").inc()
            return _deliver(cached)
        self.stats.misses += 1
        metrics.labelled(metrics.CACHE_LOOKUPS, "miss").inc()
        try:
            answer: Answer = self.directory.resolve(name)
        except (DomainNotSigned, DirectoryError) as refusal:
            answer = refusal
        except DirectoryStale:
            raise  # the replica is already DirectoryMaxStale old: nothing older will do
        except DirectoryUnavailable as err:
            return _deliver(self._stale(name, err))
        with self._lock:
            if generation == self._generation:  # else the answer may predate a change
                self._store(name, answer)
        return _deliver(answer)

    def flush(self) -> None:
        """Forget fresh and negative answers (last-known-good ones are kept)."""
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        if self._fresh is not None:
            self._fresh.clear()
        if self._negative is not None:
            self._negative.clear()

    def adopt_last_known_good(self, previous: CachedResolver) -> None:
        """Take over ``previous``'s last known answers (after a configuration reload).

        Fresh and negative answers are not taken: a reload flushes them.
        """
        with previous._lock:
            known = list(previous._last_good.items())
        with self._lock:
            for name, entry in known:
                self._last_good.setdefault(name, entry)

    def _cached(self, name: str) -> Answer | None:
        # One get each: "in" then "[]" would race the TTL, which may expire
        # the entry between the two.
        answer: Answer | None  # typed here: Debian 12's cachetools has no type hints
        if self._fresh is not None:
            answer = self._fresh.get(name)
            if answer is not None:
                return answer
        if self._negative is not None:
            answer = self._negative.get(name)
            if answer is not None:
                return answer
        return None

    def _store(self, name: str, answer: Answer) -> None:
        if isinstance(answer, Resolution):
            if self._fresh is not None:
                self._fresh[name] = answer
        elif self._negative is not None:
            self._negative[name] = answer
        if not self.directory.backend.serves_from_memory:
            # A replica in memory is itself the last known state: a second
            # copy of every answer would cost memory (100 000 domains: 150 MB).
            self._last_good[name] = (answer, self._clock())

    def _stale(self, name: str, err: DirectoryUnavailable) -> Answer:
        """The last known answer for ``name`` if young enough; else re-raise."""
        with self._lock:
            known = self._last_good.get(name)
        if known is not None:
            answer: Answer
            fetched: float
            answer, fetched = known
            age = self._clock() - fetched
            if age <= self.max_stale:
                self.stats.stale_served += 1
                metrics.labelled(metrics.CACHE_LOOKUPS, "stale").inc()
                log.warning(
                    "directory unavailable; using what it said about %s %.0f s ago", name, age
                )
                return answer
        raise err


def _deliver(answer: Answer) -> Resolution:
    """Return a resolution, or raise a fresh copy of a cached refusal.

    A fresh instance each time: re-raising one cached exception object would
    grow its traceback with every delivery.
    """
    if isinstance(answer, Resolution):
        return answer
    raise type(answer)(*answer.args)
