"""ARC (RFC 8617): check an ARC chain and add a set to it.

Placeholder holding the agreed interface until the ARC library lands:
the types are the library's, and :func:`verify_chain` and :func:`seal`
raise until then.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from ldapdkim.model import Header
from ldapdkim.signing.keyfetch import DnsLookup
from ldapdkim.signing.keyring import KeySigner


class ChainValidation(enum.Enum):
    """The chain's validation status, ``cv=`` (RFC 8617 §5.2)."""

    NONE = "none"
    PASS = "pass"  # noqa: S105 - a result, not a password
    FAIL = "fail"


@dataclass(frozen=True)
class ArcVerdict:
    """What the chain of one message says."""

    cv: ChainValidation
    instances: int
    """ARC sets present and structurally valid (0: no chain)."""
    oldest_pass: int
    """RFC 8617 §5.2 oldest-pass (0 when every AMS passes, or no chain)."""
    reason: str
    sealer: str | None
    """``d=`` of the newest ARC-Seal, if any."""
    at_limit: bool
    """The chain holds 50 sets: it must not be sealed again."""


def verify_chain(
    headers: Sequence[Header],
    body: bytes,
    lookup: DnsLookup,
    *,
    timeout: float,
    minimum_key_bits: int = 1024,
    now: int | None = None,
) -> ArcVerdict:
    """The verdict on the ARC chain of a message."""
    raise NotImplementedError("the ARC library is not in this build")


def seal(
    headers: Sequence[Header],
    body: bytes,
    verdict: ArcVerdict,
    *,
    domain: str,
    signer: KeySigner,
    authserv_id: str,
    results: str,
    timestamp: int | None = None,
    header_names: Sequence[bytes] | None = None,
) -> list[Header]:
    """The three fields of a new ARC set, ARC-Seal first, to be prepended."""
    raise NotImplementedError("the ARC library is not in this build")
