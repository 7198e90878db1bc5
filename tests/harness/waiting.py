"""Waiting, in a test, for something another process or thread does, with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def wait_for(
    what: str,
    check: Callable[[], object],
    timeout: float = 20.0,
    *,
    interval: float = 0.02,
    ignoring: tuple[type[Exception], ...] = (),
) -> float:
    """Seconds until ``check()`` holds; the test fails, naming ``what``, after ``timeout``.

    ``ignoring``: exceptions ``check`` may raise while the awaited thing is not there yet.
    """
    started = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - started
        except ignoring:
            pass
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout:g} s")
        time.sleep(interval)
