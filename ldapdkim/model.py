"""Typed values shared by every part of ldapdkim.

Domains and selectors are lowercase ASCII ``str`` (IDNs as A-labels); messages
are ``bytes``.  Private keys are held as parsed ``cryptography`` objects, so a
key is decoded once when it is read from the directory, never per message, and
they are excluded from ``repr`` so that they cannot end up in a log line.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@enum.unique
class Algorithm(enum.Enum):
    """DKIM signing algorithms (``a=``) that ldapdkim signs with (RFC 6376, RFC 8463)."""

    RSA_SHA256 = "rsa-sha256"
    ED25519_SHA256 = "ed25519-sha256"

    @property
    def key_type(self) -> str:
        """The ``k=`` tag of the DNS key record for this algorithm."""
        return "rsa" if self is Algorithm.RSA_SHA256 else "ed25519"

    @classmethod
    def parse(cls, text: str) -> Algorithm:
        """Return the algorithm named ``text``; raise ``ValueError`` naming the choices."""
        try:
            return cls(text.strip().lower())
        except ValueError:
            choices = ", ".join(a.value for a in cls)
            raise ValueError(f"unknown algorithm {text!r}; use one of {choices}") from None


@enum.unique
class KeyState(enum.Enum):
    """Life-cycle state of a key entry.  Only ``active`` keys sign."""

    PENDING = "pending"
    ACTIVE = "active"
    RETIRED = "retired"
    REVOKED = "revoked"

    @classmethod
    def parse(cls, text: str) -> KeyState:
        try:
            return cls(text.strip().lower())
        except ValueError:
            choices = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown key state {text!r}; use one of {choices}") from None


@dataclass(frozen=True)
class Canonicalization:
    """The ``c=`` pair, header/body, each ``simple`` or ``relaxed`` (RFC 6376 §3.4)."""

    header: str = "simple"
    body: str = "simple"

    @classmethod
    def parse(cls, text: str) -> Canonicalization:
        """Parse ``relaxed/simple``; a single word means header/simple (RFC 6376 §3.5 c=)."""
        parts = text.strip().lower().split("/")
        if len(parts) == 1:
            parts.append("simple")
        if len(parts) != 2 or any(p not in ("simple", "relaxed") for p in parts):
            raise ValueError(
                f"bad canonicalization {text!r}; use HEADER/BODY with each "
                "'simple' or 'relaxed', e.g. relaxed/simple"
            )
        return cls(parts[0], parts[1])

    def __str__(self) -> str:
        return f"{self.header}/{self.body}"


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Alignment(enum.Enum):
    """How the MAIL FROM domain must match the From domain before ldapdkim signs."""

    NONE = "none"
    EXACT = "exact"
    """The same domain."""
    ORGANIZATIONAL = "organizational"
    """The same organizational domain (RFC 7489 §3.2, by the public suffix list)."""

    @classmethod
    def parse(cls, text: str) -> Alignment:
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise ValueError(
                f"sender alignment {text!r} is not none, exact or organizational"
            ) from None


@enum.unique
class DirectorySync(enum.StrEnum):
    """``DirectorySync``: whether the milter keeps a replica of the directory."""

    AUTO = "auto"
    """A replica when the server can be followed (content sync, USN), else lookups."""
    YES = "yes"
    """A replica only: no lookups, unavailable until it is loaded."""
    NO = "no"
    """Lookups only."""


@dataclass(frozen=True)
class DomainPolicy:
    """The signing policy held on one domain entry (``dkimSignDomainPolicy``).

    ``None`` in an optional field means "the configuration's default applies".
    """

    dn: str
    names: tuple[str, ...]
    enabled: bool | None = None
    canonicalization: Canonicalization | None = None
    sign_headers: tuple[str, ...] | None = None
    oversign_headers: tuple[str, ...] | None = None
    algorithms: tuple[Algorithm, ...] | None = None
    identity: str | None = None
    subdomains: bool | None = None
    expire_seconds: int | None = None
    allowed_senders: tuple[str, ...] = ()
    """Logins (lowercase) that may send as any address of the domain."""
    allowed_groups: tuple[str, ...] = ()
    """DNs of groups whose members may send as any address of the domain."""
    allowed_networks: tuple[IPNetwork, ...] = ()
    """Networks whose mail is signed for the domain without a login."""
    sender_alignment: Alignment | None = None
    arc_selector: str | None = None
    """The selector of the key that seals ARC sets for the domain; None: it does not seal."""
    arc_addresses: tuple[str, ...] = ()
    """Addresses of the domain (lists, forwarders), lowercase, whose incoming mail is sealed."""

    @property
    def delegates(self) -> bool:
        """Whether the entry says who may send for the domain (sender authorization)."""
        return bool(self.allowed_senders or self.allowed_groups or self.allowed_networks)


@dataclass(frozen=True)
class SigningKey:
    """One key entry (``dkimSignKey``) beneath a domain entry."""

    dn: str
    selector: str
    algorithm: Algorithm
    state: KeyState
    key_data: bytes | None = field(default=None, repr=False, compare=False)
    """The private key as stored, already checked; parsed when used, through a
    bounded cache (:func:`ldapdkim.keys.private_key_of`), so that cached answers
    for many domains do not hold many parsed keys (8.8 kB each for RSA-2048)."""
    public_key: str | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    problem: str | None = None
    """Why this key cannot sign although its state may say so (bad PEM, too short)."""
    created: datetime | None = field(default=None, compare=False)
    """When the directory created the entry (``createTimestamp``), for audits."""

    def signs_at(self, now: datetime) -> bool:
        """True when the key is active, usable and inside its validity window."""
        if self.state is not KeyState.ACTIVE or self.key_data is None or self.problem:
            return False
        if self.not_before is not None and now < self.not_before:
            return False
        return not (self.not_after is not None and now >= self.not_after)


@dataclass(frozen=True)
class Resolution:
    """What the directory says about one From domain.

    ``signing_domain`` is the ``d=`` to use: the From domain itself, or the
    parent domain whose policy covers it (``SubDomains``).
    """

    domain: str
    signing_domain: str
    policy: DomainPolicy
    keys: tuple[SigningKey, ...]

    def active_keys(self, now: datetime) -> tuple[SigningKey, ...]:
        """The keys that sign at ``now``, in a stable order (by algorithm, then selector)."""
        usable = [k for k in self.keys if k.signs_at(now)]
        return tuple(sorted(usable, key=lambda k: (k.algorithm.value, k.selector)))


@enum.unique
class Action(enum.Enum):
    """What the milter tells the MTA for an outcome (OpenDKIM's ``On-*`` values)."""

    ACCEPT = "accept"
    DISCARD = "discard"
    QUARANTINE = "quarantine"
    REJECT = "reject"
    TEMPFAIL = "tempfail"

    @classmethod
    def parse(cls, text: str) -> Action:
        """Parse a full name or OpenDKIM's one-letter form (a, d, q, r, t), any case.

        Raises:
            ValueError: naming the accepted forms.
        """
        word = text.strip().lower()
        for action in cls:
            if word in (action.value, action.value[0]):
                return action
        raise ValueError(
            f"unknown action {text!r}; use accept (a), discard (d), quarantine (q), "
            "reject (r) or tempfail (t)"
        )


@enum.unique
class Outcome(enum.StrEnum):
    """The outcomes that OpenDKIM's ``On-*`` keywords give an :class:`Action` to.

    The value is the keyword without ``On-``, lowercase.  ``DEFAULT`` is not an
    outcome of its own: ``On-Default`` sets the action of every outcome whose
    keyword is not given.
    """

    DEFAULT = "default"
    BAD_SIGNATURE = "badsignature"
    DNS_ERROR = "dnserror"
    INTERNAL_ERROR = "internalerror"
    KEY_NOT_FOUND = "keynotfound"
    NO_SIGNATURE = "nosignature"
    SIGNATURE_ERROR = "signatureerror"
    DIRECTORY_ERROR = "directoryerror"
    SENDER_MISMATCH = "sendermismatch"

    @property
    def keyword(self) -> str:
        """The configuration keyword, e.g. ``On-BadSignature``."""
        return "On-" + _ON_KEYWORDS[self]

    @classmethod
    def parse(cls, text: str) -> Outcome:
        """The outcome named ``text``: ``badsignature`` or ``On-BadSignature``, any case.

        Raises:
            ValueError: an unknown outcome name, listing the known ones.
        """
        try:
            return cls(text.strip().lower().removeprefix("on-"))
        except ValueError:
            known = ", ".join(sorted(o.value for o in cls))
            raise ValueError(f"unknown outcome {text!r}; use one of {known}") from None


_ON_KEYWORDS = {
    Outcome.DEFAULT: "Default",
    Outcome.BAD_SIGNATURE: "BadSignature",
    Outcome.DNS_ERROR: "DNSError",
    Outcome.INTERNAL_ERROR: "InternalError",
    Outcome.KEY_NOT_FOUND: "KeyNotFound",
    Outcome.NO_SIGNATURE: "NoSignature",
    Outcome.SIGNATURE_ERROR: "SignatureError",
    Outcome.DIRECTORY_ERROR: "DirectoryError",
    Outcome.SENDER_MISMATCH: "SenderMismatch",
}


@enum.unique
class NotSignedReason(enum.StrEnum):
    """Why a message to sign was not signed.

    The value is the ``reason`` label of ``ldapdkim_messages_not_signed_total``:
    dashboards and alerts use it, so a value never changes.
    """

    DOMAIN_NOT_SIGNED = "domain_not_signed"
    NO_ACTIVE_KEY = "no_active_key"
    NO_AUTHOR_DOMAIN = "no_author_domain"
    DIRECTORY_UNAVAILABLE = "directory_unavailable"
    DIRECTORY_INCONSISTENT = "directory_inconsistent"
    KEY_UNUSABLE = "key_unusable"
    KEY_UNAVAILABLE = "key_unavailable"
    TOKEN_UNAVAILABLE = "token_unavailable"  # noqa: S105 - a label value, not a password
    MESSAGE_UNSIGNABLE = "message_unsignable"
    SENDER_MISMATCH = "sender_mismatch"


@enum.unique
class NotSealedReason(enum.StrEnum):
    """Why a message ARCSeal would seal was not sealed (docs/arc.md).

    The value is the ``reason`` label of ``ldapdkim_arc_not_sealed_total``;
    a value never changes.
    """

    NO_SEALING_DOMAIN = "no_sealing_domain"
    """The ARCSealDomain rule names no domain (no MAIL FROM, no recipient of ours)."""
    DOMAIN_NOT_OURS = "domain_not_ours"
    """The sealing domain has no entry in the directory."""
    DOMAIN_DOES_NOT_SEAL = "domain_does_not_seal"
    """Its entry names no key in dkimSignArcSelector."""
    NO_SEALING_KEY = "no_sealing_key"
    """No active key of that selector, or the key cannot sign here."""
    DIRECTORY_UNAVAILABLE = "directory_unavailable"
    CHAIN_AT_LIMIT = "chain_at_limit"
    """The chain already holds 50 sets (RFC 8617 §4.2.1)."""
    CHAIN_UNCHECKED = "chain_unchecked"
    """A key of the chain could not be looked up now: sealing it cv=fail would end a
    chain that may be sound, so the message goes on as it came."""
    MESSAGE_UNSEALABLE = "message_unsealable"
    """The message cannot be sealed as it is (no From, broken header fields)."""


@enum.unique
class DkimResult(enum.Enum):
    """RFC 8601 §2.7.1 results of DKIM verification."""

    NONE = "none"
    PASS = "pass"  # noqa: S105 - an RFC 8601 result name, not a password
    FAIL = "fail"
    POLICY = "policy"
    NEUTRAL = "neutral"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@enum.unique
class Failure(enum.Enum):
    """Why a signature did not pass, as the verifier found it; never read from the reason text.

    :func:`ldapdkim.signing.policy.verification_outcome` chooses the ``On-*``
    outcome from it: :attr:`DNS_ERROR` is ``On-DNSError``, :attr:`NO_KEY` is
    ``On-KeyNotFound``, every other failure ``On-BadSignature``.
    """

    NONE = "none"
    """The signature passed."""
    SYNTAX = "syntax"
    """The signature field is malformed: bad tag list, a required tag missing or wrong."""
    NO_KEY = "no-key"
    """DNS holds no key record at the selector's name."""
    KEY_UNUSABLE = "key-unusable"
    """The key record is malformed, revoked, too small or of the wrong type."""
    DNS_ERROR = "dns-error"
    """The key lookup failed in a way that may pass (RFC 8601 temperror)."""
    BODY_HASH = "body-hash"
    """The body hash does not match: the body was changed."""
    BAD_SIGNATURE = "bad-signature"
    """The signature does not verify over the signed header fields."""
    ALGORITHM = "algorithm"
    """An algorithm that is unknown or no longer accepted (rsa-sha1, RFC 8301)."""
    EXPIRED = "expired"
    """The signature's ``x=`` lies in the past."""
    PARTIAL_BODY = "partial-body"
    """The signature verifies, but its ``l=`` leaves part of the body unsigned."""
    UNSIGNED_FROM = "unsigned-from"
    """The signature verifies, but the message has From fields it does not cover (or none)."""


@dataclass(frozen=True)
class VerifyResult:
    """The verdict on one DKIM-Signature header field."""

    result: DkimResult
    domain: str
    selector: str
    algorithm: str
    reason: str = ""
    signature_prefix: str = ""
    """The first characters of ``b=``, for RFC 6008 ``header.b``."""
    identity: str = ""
    failure: Failure = field(kw_only=True)
    """What went wrong, for the ``On-*`` decision; ``reason`` is for people.  No
    default: whoever builds a result says which kind it is, so a verdict that
    forgets it fails the type check instead of reading as a bad signature."""
    testing: bool = False
    """The key record says ``t=y``: the domain is testing DKIM (RFC 6376 §3.6.1)."""


Header = tuple[bytes, bytes]
"""A header field as the signer and verifier hold it: name, and the raw value after the colon
(with CRLF)."""


@dataclass(frozen=True)
class SigningParams:
    """How to sign: the configuration's defaults merged with the domain's policy."""

    canonicalization: Canonicalization = Canonicalization("relaxed", "simple")
    sign_headers: tuple[str, ...] | None = None
    """The header fields to sign; None means RFC 6376 §5.4.1's list."""
    oversign_headers: tuple[str, ...] = ("from",)
    identity: str | None = None
    expire_seconds: int | None = None


@dataclass(frozen=True)
class DirectoryView:
    """How current the milter's view of the directory is (metrics and ``/healthz``)."""

    mode: str
    """``sync`` (a content-sync replica), ``lookup`` (cached searches) or ``memory``
    (KeyFile or LDIF, read at start)."""
    connected: bool
    """A server is connected (always True for ``memory``)."""
    age: float | None
    """Seconds since the view was last known current: 0 while connected, None
    when it never was (no replica loaded, no server ever answered)."""
    entries: int = 0
    """Entries in the replica (0 without one)."""
    sync_age: float | None = None
    """Seconds since the replica was last synced (None: never, or no replica)."""
