"""Signing refusals as a table: why a message to sign is not signed, and what follows.

Each :class:`~ldapdkim.model.NotSignedReason` has one :class:`Refusal` row:
the level of its log line (``not signed: ...``; INFO lines only with
``LogWhy``), the ``On-*`` outcome whose action answers the MTA (None: the
message passes unsigned), and the SMTP text of a reject or tempfail.  Pure:
the session logs, counts and replies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from logging import ERROR, INFO, WARNING
from types import MappingProxyType

from ldapdkim.errors import (
    DirectoryError,
    DirectoryUnavailable,
    DomainNotFound,
    DomainNotSigned,
    InvalidDomain,
    KeyUnavailable,
    MessageError,
    SenderMismatch,
)
from ldapdkim.model import KeyState, NotSignedReason, Outcome, Resolution


@dataclass(frozen=True)
class Refusal:
    """What follows from one reason for not signing."""

    reason: NotSignedReason
    level: int
    """The ``logging`` level of the ``not signed:`` line; INFO is logged only with LogWhy."""
    outcome: Outcome | None
    """The ``On-*`` outcome that answers the MTA; None: accepted unsigned, no action."""
    text: str = ""
    """The SMTP reply text (after ``DKIM: ``) when the outcome's action has one."""


_R, _O = NotSignedReason, Outcome
_ROWS = (
    Refusal(_R.DOMAIN_NOT_SIGNED, WARNING, None),
    Refusal(_R.NO_ACTIVE_KEY, INFO, None),
    Refusal(_R.NO_AUTHOR_DOMAIN, WARNING, None),
    Refusal(_R.DIRECTORY_UNAVAILABLE, ERROR, _O.DIRECTORY_ERROR, "directory unavailable"),
    Refusal(_R.DIRECTORY_INCONSISTENT, ERROR, _O.SIGNATURE_ERROR, "signing data is inconsistent"),
    Refusal(_R.KEY_UNUSABLE, ERROR, _O.SIGNATURE_ERROR, "no usable signing key"),
    Refusal(_R.KEY_UNAVAILABLE, ERROR, _O.SIGNATURE_ERROR, "signing key unavailable"),
    Refusal(_R.TOKEN_UNAVAILABLE, ERROR, _O.INTERNAL_ERROR, "signing token unavailable"),
    Refusal(_R.MESSAGE_UNSIGNABLE, ERROR, _O.SIGNATURE_ERROR, "message cannot be signed"),
    Refusal(_R.SENDER_MISMATCH, WARNING, _O.SENDER_MISMATCH, "sender may not sign as From"),
)

TABLE: Mapping[NotSignedReason, Refusal] = MappingProxyType({row.reason: row for row in _ROWS})
"""Every reason's row."""


def reason_of(error: Exception) -> NotSignedReason:
    """The reason for an exception met while finding a message's signer or its keys.

    A :class:`MessageError` here is a From field without one author domain;
    one from signing itself is :attr:`~NotSignedReason.MESSAGE_UNSIGNABLE`,
    which the caller names.

    Raises:
        TypeError: ``error`` is no signing refusal (a programming error).
    """
    if isinstance(error, DirectoryUnavailable):
        return _R.DIRECTORY_UNAVAILABLE
    if isinstance(error, SenderMismatch):
        return _R.SENDER_MISMATCH
    if isinstance(error, DirectoryError):
        return _R.DIRECTORY_INCONSISTENT
    if isinstance(error, DomainNotSigned):
        return _R.DOMAIN_NOT_SIGNED
    if isinstance(error, KeyUnavailable):  # a token's trouble may pass, a sealed key's not
        return _R.TOKEN_UNAVAILABLE if error.in_token else _R.KEY_UNAVAILABLE
    if isinstance(error, MessageError | InvalidDomain):
        return _R.NO_AUTHOR_DOMAIN
    raise TypeError(f"{type(error).__name__} is no signing refusal; add it to reason_of")


def refusal_for(cause: NotSignedReason | Exception) -> Refusal:
    """The row for a reason, or for the exception that gave it (see :func:`reason_of`).

    A domain no policy entry covers (:class:`DomainNotFound`) is logged at INFO,
    not WARNING: it is most mail an internal host sends out of a domain not ours.
    """
    if isinstance(cause, NotSignedReason):
        return TABLE[cause]
    row = TABLE[reason_of(cause)]
    return replace(row, level=INFO) if isinstance(cause, DomainNotFound) else row


def keyless(resolution: Resolution) -> tuple[NotSignedReason, str]:
    """Why a domain with no key to sign with now has none, and the words for the log.

    An active key the directory marks unusable is an error (KEY_UNUSABLE); no
    active key at all is normal between keys (NO_ACTIVE_KEY).
    """
    domain = resolution.signing_domain
    for key in resolution.keys:
        if key.state is KeyState.ACTIVE and key.problem:
            return _R.KEY_UNUSABLE, f"no usable key for {domain}: {key.problem}"
    return _R.NO_ACTIVE_KEY, f"no active key for {domain}"
