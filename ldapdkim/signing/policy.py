"""Per-message decisions that need no I/O: how to sign, and with which keys.

The configuration gives the defaults; attributes on the domain's policy entry
override them (canonicalization, headers, ``i=``, ``x=``, algorithms).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from ldapdkim.config.settings import Settings
from ldapdkim.errors import InvalidDomain, MessageError
from ldapdkim.model import (
    DkimResult,
    Failure,
    Header,
    Outcome,
    Resolution,
    SigningKey,
    SigningParams,
    VerifyResult,
)
from ldapdkim.signing.author import author_address

log = logging.getLogger(__name__)


def _identity(identity: str | None, resolution: Resolution) -> str | None:
    """``i=`` if it lies in the signing domain (RFC 6376 §3.5); otherwise None, with a warning."""
    if not identity:
        return None
    domain = identity.rpartition("@")[2].lower()
    signing = resolution.signing_domain
    if domain == signing or domain.endswith("." + signing):
        return identity
    log.warning(
        "entry %r: dkimSignIdentity %r is outside d=%s; signing without i=",
        resolution.policy.dn,
        identity,
        signing,
    )
    return None


def signing_params(settings: Settings, resolution: Resolution) -> SigningParams:
    """The configuration's signing defaults, overridden by the domain's policy entry."""
    policy = resolution.policy
    expire = policy.expire_seconds if policy.expire_seconds is not None else settings.signature_ttl
    return SigningParams(
        canonicalization=policy.canonicalization or settings.canonicalization,
        sign_headers=policy.sign_headers
        if policy.sign_headers is not None
        else settings.sign_headers,
        oversign_headers=policy.oversign_headers
        if policy.oversign_headers is not None
        else settings.oversign_headers,
        identity=_identity(policy.identity, resolution),
        expire_seconds=expire or None,
    )


def signing_keys(resolution: Resolution, now: datetime) -> tuple[SigningKey, ...]:
    """The keys that sign now: active, in their window, of an algorithm the policy allows.

    Every such key signs, so a domain with an RSA and an Ed25519 key gets two
    signatures (RFC 8463 §3).
    """
    allowed = resolution.policy.algorithms
    return tuple(
        k for k in resolution.active_keys(now) if allowed is None or k.algorithm in allowed
    )


def author(headers: Sequence[Header]) -> str:
    """The one author address of the From field, ``local@domain`` (see :func:`author_domain`).

    Raises:
        MessageError: no From field, several, or not exactly one unambiguous mailbox.
        InvalidDomain: the address's domain is not a valid host name.
    """
    values = [v for n, v in headers if n.strip().lower() == b"from"]
    if not values:
        raise MessageError("no From header field")
    if len(values) > 1:
        raise MessageError(f"{len(values)} From header fields; RFC 5322 allows one")
    return author_address(values[0])


def author_domain(headers: Sequence[Header]) -> str:
    """The domain of the one author address in the From field (RFC 5322 §3.6.2).

    The field is read strictly (:mod:`ldapdkim.signing.author`): a From that two
    parsers could read as different domains is refused.

    Raises:
        MessageError: no From field, several, or not exactly one unambiguous mailbox.
        InvalidDomain: the address's domain is not a valid host name.
    """
    return author(headers).rpartition("@")[2]


def readable_author_domain(headers: Sequence[Header]) -> str | None:
    """The author domain when the From field can be read one way; None otherwise."""
    try:
        return author_domain(headers)
    except (MessageError, InvalidDomain):
        return None


@enum.unique
class Role(enum.Enum):
    """What ldapdkim does with the mail of one SMTP client."""

    SIGN = "sign"
    VERIFY = "verify"
    SKIP = "skip"


def macro_matches(
    macro_list: Sequence[tuple[str, Sequence[str]]], value_of: Callable[[str], str | None]
) -> str | None:
    """The first ``MacroList`` entry that the MTA's macros satisfy, as text; None if none.

    An entry without values matches any non-empty value (OpenDKIM's meaning).
    """
    for name, values in macro_list:
        value = value_of(name)
        if value and (not values or value in values):
            return f"{name}={value}"
    return None


def choose_role(
    settings: Settings,
    address: str | None,
    hostname: str | None,
    macro_value: Callable[[str], str | None],
) -> tuple[Role, str]:
    """Sign, verify or skip the mail of this client, with the reason (for ``LogWhy``).

    Mail from an originating client is a candidate for signing: a client in
    InternalHosts, an authenticated session (``{auth_type}`` set, whatever
    MacroList says, as in OpenDKIM) or MTA macros that match MacroList.  Mail
    from anyone else is never signed, whatever From it claims.  Whether a
    candidate is signed is known at end of header (:func:`role_for_author`).
    """
    if settings.peer_list and settings.peer_list.matches(address, hostname):
        return Role.SKIP, f"client {address or hostname} is in PeerList"
    if settings.internal_hosts.matches(address, hostname):
        return Role.SIGN, f"client {address or hostname} is in InternalHosts"
    auth_type = macro_value("{auth_type}")
    if auth_type:
        return Role.SIGN, f"authenticated sender ({{auth_type}}={auth_type})"
    macro = macro_matches(settings.macro_list, macro_value)
    if macro:
        return Role.SIGN, f"MTA macro {macro}"
    if settings.verifies:
        return Role.VERIFY, f"client {address or hostname} is outside InternalHosts"
    return Role.SKIP, f"Mode {settings.mode} does not verify mail from outside"


def role_for_author(settings: Settings, ours: bool, why: str) -> tuple[Role, str]:
    """The role of an originating client's message once its author domain is known.

    As in OpenDKIM: mail of a domain ldapdkim signs for is signed (and in
    ``Mode v`` passed untouched); mail of any other domain is verified like
    mail from outside (``Mode s``: passed).  ``why`` says what was found.
    """
    if ours:
        if settings.signs:
            return Role.SIGN, why
        return Role.SKIP, f"{why}; Mode {settings.mode} does not sign"
    if settings.verifies:
        return Role.VERIFY, f"{why}; verified instead"
    return Role.SKIP, why


def verification_outcome(results: Sequence[VerifyResult]) -> Outcome | None:
    """The ``On-*`` outcome of a verified message; None when a signature passed.

    Chosen from each result's :class:`~ldapdkim.model.Failure`, never from its
    reason text: a temporary DNS failure anywhere is ``On-DNSError`` (the
    message may pass later), a missing key record ``On-KeyNotFound``, any
    other failure ``On-BadSignature``.  A failed signature whose key record
    says ``t=y`` (testing) counts as no signature (RFC 6376 §3.6.1).
    """
    if any(r.result is DkimResult.PASS for r in results):
        return None
    counted = [r for r in results if not r.testing]
    if not counted:
        return Outcome.NO_SIGNATURE
    failures = {r.failure for r in counted}
    if Failure.DNS_ERROR in failures:
        return Outcome.DNS_ERROR
    if Failure.NO_KEY in failures:
        return Outcome.KEY_NOT_FOUND
    return Outcome.BAD_SIGNATURE
