"""ldapdkim: a DKIM signing and verifying milter whose keys live in LDAP.

The public surface is small on purpose: the typed model and the error tree.
Everything else is reached through the ``ldapdkim`` command.  Importing the
package changes nothing outside it.
"""

from __future__ import annotations

from ldapdkim.errors import (
    ConfigError,
    DirectoryError,
    DirectoryUnavailable,
    DomainNotSigned,
    InvalidDomain,
    KeyFormatError,
    LdapDkimError,
)
from ldapdkim.model import Algorithm, DomainPolicy, KeyState, Resolution, SigningKey

__version__ = "0.1.0"

__all__ = [
    "Algorithm",
    "ConfigError",
    "DirectoryError",
    "DirectoryUnavailable",
    "DomainNotSigned",
    "DomainPolicy",
    "InvalidDomain",
    "KeyFormatError",
    "KeyState",
    "LdapDkimError",
    "Resolution",
    "SigningKey",
    "__version__",
]
