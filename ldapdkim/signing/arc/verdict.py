"""What ARC verification found (RFC 8617 §5.2), as the sealer and the milter read it."""

from __future__ import annotations

import enum
from dataclasses import dataclass

MAX_INSTANCES = 50
"""RFC 8617 §4.2.1: instance values run from 1 to 50; a chain at 50 is not sealed again."""


@enum.unique
class ChainValidation(enum.Enum):
    """The chain validation status (RFC 8617 §4.4), the ``cv=`` of the next ARC-Seal."""

    NONE = "none"
    PASS = "pass"  # noqa: S105 - an RFC 8617 status, not a password
    FAIL = "fail"


@dataclass(frozen=True)
class ArcVerdict:
    """The verdict on the ARC chain of one message."""

    cv: ChainValidation
    """The chain's validation status (RFC 8617 §5.2)."""
    instances: int
    """The number N of the newest ARC set, 0 when the message has none.

    For a valid chain, the number of its sets.  For a broken one, the highest
    instance value in 1..50 that an ARC field carries, so that a new set,
    numbered ``instances + 1``, is above every set already there."""
    oldest_pass: int
    """RFC 8617 §5.2 step 6: the oldest instance whose AMS still verifies, 0 when every
    AMS does (or when the chain did not pass)."""
    reason: str
    """Why, for people and an A-R comment: ASCII, no parentheses, may be ""."""
    sealer: str | None
    """``d=`` of the newest ARC-Seal, when it could be read."""
    at_limit: bool
    """The chain must not be sealed again: it holds instance 50, or a value beyond it."""
    temporary: bool = False
    """The chain failed only because a key lookup failed and may answer later.

    RFC 8617 has no ``temperror`` for ARC (its results are none, pass and fail):
    the status is ``fail``.  A sealer that would rather not mark the chain
    failed for good (``cv=fail`` ends it for every later hop) can tell this
    case apart."""
