"""Key records fetched concurrently, under one deadline for a whole message.

:class:`DnsLookup` is the one shape of a TXT lookup: the verifier, the
milter, ``ldapdkim verify``, ``testkey``, ``rotate`` and ``check-config`` ask
DNS through it (:class:`~ldapdkim.signing.dnslookup.TxtLookup` is the
dnspython one), and tests put a table behind it.  A lookup that keeps a cache
may also answer :class:`CachedLookup`'s ``cached``: answers it already holds
are then taken at once, without a thread's round trip per message.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Protocol

from ldapdkim.errors import DnsTemporaryError
from ldapdkim.signing.sigfield import MAX_SIGNATURES


class DnsLookup(Protocol):
    """``lookup(name)``: every TXT record at ``name``, each one's strings joined.

    Empty when there is none (NXDOMAIN or no TXT record).  Raises
    :class:`~ldapdkim.errors.DnsTemporaryError` when the answer may come later
    (a timeout, a server failure), so that a verifier says temperror, not fail
    (RFC 6376 §6.1.2).
    """

    def __call__(self, name: str, /) -> Sequence[bytes]: ...


class CachedLookup(DnsLookup, Protocol):
    """A :class:`DnsLookup` that can say what it would answer from its cache right now."""

    def cached(self, name: str, /) -> Sequence[bytes] | None:
        """The records at ``name`` if the cache holds them (never waits), else None."""
        ...


_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """One pool per process (a forked worker starts its own)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            workers = MAX_SIGNATURES  # every key of one message can be asked at once
            _pool = (os.getpid(), ThreadPoolExecutor(workers, thread_name_prefix="ldapdkim-dns"))
        return _pool[1]


def fetch_keys(
    names: Iterable[str], lookup: DnsLookup, timeout: float
) -> dict[str, list[bytes] | DnsTemporaryError]:
    """The records at each name, asked concurrently; what has not answered by ``timeout``
    seconds after the first question is a temporary error.

    Names that ``lookup`` answers from its cache (:class:`CachedLookup`) are
    not asked in the pool.
    """
    cached: Callable[[str], Sequence[bytes] | None] | None = getattr(lookup, "cached", None)
    answers: dict[str, list[bytes] | DnsTemporaryError] = {}
    futures: dict[str, Future[Sequence[bytes]]] = {}
    for name in dict.fromkeys(names):
        known = cached(name) if cached is not None else None
        if known is not None:
            answers[name] = list(known)
        else:
            futures[name] = _executor().submit(lookup, name)
    if futures:
        wait(futures.values(), timeout=timeout)
    for name, future in futures.items():
        if not future.done():
            future.cancel()
            answers[name] = DnsTemporaryError(f"no answer for {name} within {timeout:g} s")
            continue
        error = future.exception()
        if error is None:
            answers[name] = list(future.result())
        elif isinstance(error, DnsTemporaryError):
            answers[name] = error
        else:
            answers[name] = DnsTemporaryError(f"DNS query for {name} failed: {error}")
    return answers
