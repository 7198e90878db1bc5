"""Key records fetched concurrently, under one deadline for a whole message.

:class:`DnsLookup` is the one shape of a TXT lookup: the verifier, the
milter, ``ldapdkim verify``, ``testkey``, ``rotate`` and ``check-config`` ask
DNS through it (:class:`~ldapdkim.signing.dnslookup.TxtLookup` is the
dnspython one), and tests put a table behind it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
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
    seconds after the first question is a temporary error."""
    futures: dict[str, Future[Sequence[bytes]]] = {
        name: _executor().submit(lookup, name) for name in dict.fromkeys(names)
    }
    wait(futures.values(), timeout=timeout)
    answers: dict[str, list[bytes] | DnsTemporaryError] = {}
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
