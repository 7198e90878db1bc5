"""Who may sign as whom: the sender authorization decision for one message.

Three rules, each off until configured (docs/howto/sender-authorization.md, "Who may sign as whom"):

* **Alignment** (``SenderAlignment``, or the domain entry's
  ``dkimSignSenderAlignment``): the MAIL FROM domain must be the From domain
  (``exact``) or share its organizational domain (``organizational``, RFC
  7489 §3.2).  A null MAIL FROM (a bounce) has no domain to compare and passes.
* **Logins**: with ``SenderLoginBase`` set, or on a domain whose entry names
  allowed senders or networks, an authenticated login (``{auth_authen}``)
  signs only if the domain entry allows it (``dkimSignAllowedSender``: the
  login itself, or a group it is in) or it owns the From address
  (``SenderLoginFilter``).
* **Networks**: under the same conditions, mail without a login is signed
  only from the domain's ``dkimSignAllowedNetwork``.

A refusal names who, as whom, and the rule; it never names a key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from ldapdkim.config.settings import Settings
from ldapdkim.directory.owners import SenderDirectory
from ldapdkim.domainname import normalize_domain
from ldapdkim.errors import InvalidDomain, SenderMismatch
from ldapdkim.model import Alignment, DomainPolicy


@dataclass(frozen=True)
class Sender:
    """What the MTA said about the sender of one message."""

    author: str
    """The From address, read strictly (``local@domain``, the domain normalized)."""
    login: str | None = None
    """The SMTP AUTH login (``{auth_authen}``)."""
    client_address: str | None = None
    mail_from: str | None = None
    """The envelope sender without ``<>``; empty for a bounce."""


def authorize(
    settings: Settings,
    policy: DomainPolicy,
    sender: Sender,
    directory: SenderDirectory | None,
    organizational: Callable[[str], str],
) -> None:
    """Return if ``sender`` may sign as ``sender.author`` under ``policy``.

    Raises:
        SenderMismatch: a rule refuses it; the message says which.
        DirectoryUnavailable: the directory cannot say, and nothing recent is known.
    """
    _check_alignment(settings, policy, sender, organizational)
    logins_configured = directory is not None and directory.query is not None
    if not (logins_configured or policy.delegates):
        return
    if sender.login:
        _check_login(policy, sender, directory)
    else:
        _check_network(policy, sender)


def _check_alignment(
    settings: Settings,
    policy: DomainPolicy,
    sender: Sender,
    organizational: Callable[[str], str],
) -> None:
    mode = policy.sender_alignment or settings.sender_alignment
    if mode is Alignment.NONE or not sender.mail_from:
        return
    author_domain = sender.author.rpartition("@")[2]
    try:
        envelope = normalize_domain(sender.mail_from.rpartition("@")[2])
    except InvalidDomain:
        raise SenderMismatch(
            f"MAIL FROM {sender.mail_from!r} has no valid domain to align with {author_domain}"
        ) from None
    if mode is Alignment.EXACT:
        aligned = envelope == author_domain
    else:
        aligned = organizational(envelope) == organizational(author_domain)
    if not aligned:
        raise SenderMismatch(
            f"MAIL FROM domain {envelope} is not aligned ({mode.value}) with From domain "
            f"{author_domain}"
        )


def _check_login(policy: DomainPolicy, sender: Sender, directory: SenderDirectory | None) -> None:
    login = (sender.login or "").strip().lower()
    if login in policy.allowed_senders:
        return
    if directory is not None:
        if any(login in directory.members(group) for group in policy.allowed_groups):
            return
        if login in directory.owners(sender.author):
            return
    raise SenderMismatch(
        f"login {sender.login!r} may not send as {sender.author}: it does not own the "
        "address and the domain entry does not allow it"
    )


def _check_network(policy: DomainPolicy, sender: Sender) -> None:
    try:
        address = ipaddress.ip_address((sender.client_address or "").strip("[]"))
    except ValueError:
        address = None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address is not None and any(address in network for network in policy.allowed_networks):
        return
    domain = sender.author.rpartition("@")[2]
    raise SenderMismatch(
        f"unauthenticated mail from {sender.client_address or 'an unknown client'} may not "
        f"be signed for {domain}: not among the networks its entry allows "
        "(dkimSignAllowedNetwork), and no login"
    )
