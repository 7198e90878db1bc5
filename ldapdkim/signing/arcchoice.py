"""Which mail gets an ARC set, sealed by which domain, with which key (docs/arc.md).

Pure decisions, no I/O: the directory is asked through the ``policy_of``
callable the milter passes.  A message is sealed when ``ARCSeal`` is on and
its client is in ``ARCSealHosts``, its login in ``ARCSealLogins``, or one of
its recipients is an address a domain entry lists in ``dkimSignArcAddress``.
The sealing domain follows ``ARCSealDomain``; it is sealed for only when the
directory holds its entry and that entry names a key in
``dkimSignArcSelector``.  So the author's domain seals only when it is ours.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from ldapdkim.config.settings import Settings
from ldapdkim.model import DomainPolicy, NotSealedReason, Resolution, SigningKey

ENVELOPE_SENDER = "envelope-sender"
RECIPIENT = "recipient"

PolicyOf = Callable[[str], DomainPolicy | None]
"""A domain's policy entry, or None when the directory has none (or cannot say)."""


def domain_of(address: str | None) -> str | None:
    """The domain of an envelope address (``<>`` and a missing ``@`` give None)."""
    if not address:
        return None
    local, at, domain = address.strip().strip("<>").rpartition("@")
    return domain.lower().rstrip(".") or None if at and local else None


def listed(address: str, policy_of: PolicyOf) -> bool:
    """True when ``address``'s domain entry seals and lists ``address`` in dkimSignArcAddress."""
    domain = domain_of(address)
    if domain is None:
        return False
    policy = policy_of(domain)
    return (
        policy is not None
        and policy.arc_selector is not None
        and address.strip().strip("<>").lower() in policy.arc_addresses
    )


def client_seals(
    settings: Settings, address: str | None, hostname: str | None, login: str | None
) -> bool:
    """True when ARCSealHosts or ARCSealLogins names this client."""
    if not settings.arc_seal:
        return False
    if login and login.lower() in settings.arc_seal_logins:
        return True
    return settings.arc_seal_hosts.matches(address, hostname)


@dataclass(frozen=True)
class Choice:
    """The sealing domain and key, or why the message is not sealed."""

    domain: str | None = None
    key: SigningKey | None = None
    resolution: Resolution | None = None
    reason: NotSealedReason | None = None
    why: str = ""
    """For the log line: which domain, which selector."""


def sealing_domain(
    settings: Settings, mail_from: str | None, recipients: Sequence[str], policy_of: PolicyOf
) -> str | None:
    """The domain ARCSealDomain names for this message, before the directory is asked for a key.

    ``recipient`` takes the first recipient whose domain's entry seals (a listed
    address's domain first); a fixed domain is taken as it is.
    """
    rule = settings.arc_seal_domain
    if rule == ENVELOPE_SENDER:
        return domain_of(mail_from)
    if rule == RECIPIENT:
        for address in recipients:
            if listed(address, policy_of):
                return domain_of(address)
        for address in recipients:
            domain = domain_of(address)
            if domain is not None:
                policy = policy_of(domain)
                if policy is not None and policy.arc_selector is not None:
                    return domain
        return None
    return rule


def sealing_key(resolution: Resolution, now: datetime) -> Choice:
    """The key of the domain's ``dkimSignArcSelector``, if it signs at ``now``."""
    domain = resolution.signing_domain
    selector = resolution.policy.arc_selector
    if selector is None:
        return Choice(domain, reason=NotSealedReason.DOMAIN_DOES_NOT_SEAL, why=domain)
    for key in resolution.keys:
        if key.selector == selector and key.signs_at(now):
            return Choice(domain, key, resolution)
    return Choice(
        domain,
        reason=NotSealedReason.NO_SEALING_KEY,
        why=f"{domain}: no active key of selector {selector!r} (dkimSignArcSelector)",
    )
