"""The exception tree of ldapdkim.

Every error the project raises on purpose derives from :class:`LdapDkimError`,
and its message says what went wrong, where, and how to fix it.  Messages never
carry secrets: a private key or bind password is named by its attribute or
keyword, never shown.

::

    LdapDkimError
    ├── ConfigError            bad configuration file, keyword or value
    ├── UsageError             bad command-line arguments (exit status 2)
    ├── KeyFormatError         a key that cannot be used (not PEM, too short, ...)
    ├── KeyUnavailable         a key that cannot sign here and now (its KEK missing, a
    │                          sealed value that does not open, its token unreachable)
    ├── InvalidDomain          a From domain that fails validation (never sent to LDAP)
    ├── InvalidSelector        a selector that is not RFC 6376 sub-domain syntax
    ├── DomainNotSigned        a valid domain that the directory does not sign for
    │   └── DomainNotFound     ... because no policy entry covers it
    ├── SenderMismatch         the sender may not sign as the From address
    ├── DirectoryError         the directory answered, but the data is wrong
    │   ├── AmbiguousDomain    two policy entries claim one domain
    │   ├── EntryChanged       a write found the entry changed meanwhile (RFC 4528)
    │   └── DamagedReplica     a replica database entry that cannot be read back
    ├── DirectoryUnavailable   the directory did not answer (down, timeout, TLS, bind)
    │   └── DirectoryStale     ... and the replica is older than DirectoryMaxStale
    ├── MessageError           a message that cannot be signed as it is
    ├── DnsTemporaryError      a DNS lookup that timed out or failed temporarily
    ├── DnsUpdateError         a DNS server took no RFC 2136 update (unreachable, no answer)
    └── StatusUnreadable       a status.json that is not what the milter writes
"""

from __future__ import annotations


class LdapDkimError(Exception):
    """Base of all errors raised by ldapdkim on purpose."""


class ConfigError(LdapDkimError):
    """The configuration file, one of its keywords, or a value is wrong.

    The message starts with ``FILE:LINE:`` where the problem is in a file.
    """


class UsageError(LdapDkimError):
    """Bad command-line arguments (exit status 2)."""


class KeyFormatError(LdapDkimError):
    """A private or public key cannot be used: not a key, wrong type, too short."""


class KeyUnavailable(LdapDkimError):
    """A key entry that cannot sign on this host now, though the directory may be right.

    A sealed key whose key-encryption key is not configured here, or whose sealed
    value does not open (damaged, or copied from another key entry); a key in a
    PKCS#11 token that is missing, locked or whose session broke.  The message
    names the key entry, the cause and the fix, never key material.
    ``in_token`` tells the token's trouble (which may pass) from the rest.
    """

    def __init__(self, message: str, *, in_token: bool = False) -> None:
        super().__init__(message)
        self.in_token = in_token


class InvalidDomain(LdapDkimError):
    """A mail domain that is not a syntactically valid DNS host name.

    Raised before any directory lookup, so hostile input never reaches LDAP.
    """


class InvalidSelector(LdapDkimError):
    """A DKIM selector that is not RFC 6376 §3.1 syntax (letters, digits, inner hyphens)."""


class DomainNotSigned(LdapDkimError):
    """A valid domain that ldapdkim must not sign for; the message says why."""


class DomainNotFound(DomainNotSigned):
    """No policy entry in the directory covers the domain."""


class SenderMismatch(LdapDkimError):
    """The sender may not sign as the From address (sender authorization); the message
    says who, as whom, and what rule refused it."""


class DirectoryError(LdapDkimError):
    """The directory answered, but what it holds is inconsistent or unusable."""


class AmbiguousDomain(DirectoryError):
    """More than one policy entry claims the same mail domain."""


class EntryChanged(DirectoryError):
    """The entry no longer was what the change assumed (someone changed it meanwhile)."""


class DirectoryUnavailable(LdapDkimError):
    """The directory could not be asked: unreachable, timed out, bind or TLS failure."""


class DirectoryStale(DirectoryUnavailable):
    """No server answered for longer than DirectoryMaxStale: the replica is too old to use.

    Nothing older may be served instead (the resolver's last known answers included).
    """


class MessageError(LdapDkimError):
    """The message cannot be signed as it is (no From, several From, bad header)."""


class DnsTemporaryError(LdapDkimError):
    """A DNS query timed out or failed in a way that may pass (RFC 8601 temperror)."""


class DnsUpdateError(LdapDkimError):
    """The DNS server could not be reached, or its answer could not be read."""


class DamagedReplica(DirectoryError):
    """An entry in the replica database that is not what the milter stored there."""


class StatusUnreadable(LdapDkimError):
    """The status file exists but is not the JSON document the milter writes."""


SIGNING_REFUSALS: tuple[type[LdapDkimError], ...] = (
    SenderMismatch,
    MessageError,
    InvalidDomain,
    DomainNotSigned,
    DirectoryError,
    DirectoryUnavailable,
)
"""What finding a message's signer (author domain, directory answer) can raise
instead: the message is then not signed, for the reason the exception gives."""
