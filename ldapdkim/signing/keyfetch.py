"""Key records fetched concurrently, under one deadline for a whole message."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait

from ldapdkim.errors import DnsTemporaryError
from ldapdkim.signing.sigfield import MAX_SIGNATURES

KeyLookup = Callable[[str], bytes | Sequence[bytes] | None]
"""``lookup(name)``: the TXT records at ``name`` (each record's strings joined),
or one record, or None when there is none; raises
:class:`~ldapdkim.errors.DnsTemporaryError` when the answer may come later."""

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


def _records(answer: bytes | Sequence[bytes] | None) -> list[bytes]:
    if answer is None:
        return []
    if isinstance(answer, bytes):
        return [answer]
    return list(answer)


def fetch_keys(
    names: Iterable[str], lookup: KeyLookup, timeout: float
) -> dict[str, list[bytes] | DnsTemporaryError]:
    """The records at each name, asked concurrently; what has not answered by ``timeout``
    seconds after the first question is a temporary error."""
    futures: dict[str, Future[bytes | Sequence[bytes] | None]] = {
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
            answers[name] = _records(future.result())
        elif isinstance(error, DnsTemporaryError):
            answers[name] = error
        else:
            answers[name] = DnsTemporaryError(f"DNS query for {name} failed: {error}")
    return answers
