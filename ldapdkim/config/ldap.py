"""How to reach and bind to the LDAP servers: one small value, built once from the configuration.

The LDAP backend, the content-sync replica, the writer of ``ldapdkim rotate``
and ``ldapdkim migrate --from-ldap`` all connect with an :class:`LdapSettings`
and nothing else of the configuration.  So every setting that changes how a
connection is made is a field here, and a reload compares two of these values
to decide whether a running replica can be kept.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ldapdkim.config.secret import Secret

BIND_KEYWORDS = "LDAPBindUser and LDAPBindPassword or LDAPBindPasswordFile"
ADMIN_BIND_KEYWORDS = "LDAPAdminBindUser and LDAPAdminBindPasswordFile"


@dataclass(frozen=True)
class LdapSettings:
    """Servers, base DN, bind identity and secret, SASL, TLS and timeout of one LDAP client.

    ``uris`` are ``scheme://host:port`` (or ``ldapi://%2Fpath``) in failover
    order; libldap tries them in turn.  ``sasl_mechanism`` None means a simple
    bind as ``bind_dn`` (anonymous when that is None too).
    """

    uris: tuple[str, ...]
    base_dn: str
    bind_dn: str | None = None
    password: Secret | None = None
    sasl_mechanism: str | None = None
    sasl_authcid: str | None = None
    """The SASL user to authenticate as (``LDAPAuthName``)."""
    sasl_authzid: str | None = None
    """The SASL identity to act as (``LDAPAuthUser``)."""
    sasl_realm: str | None = None
    start_tls: bool = False
    """StartTLS on ``ldap://`` connections (``ldaps://`` is TLS already)."""
    ca_cert_file: Path | None = None
    timeout: float = 5.0
    """Seconds for connecting and for each operation."""
    credentials: str = dataclasses.field(default=BIND_KEYWORDS, compare=False)
    """Where the bind identity was configured, named when a server refuses it."""
    connection_keywords: str = dataclasses.field(
        default="Directory, LDAPUseTLS and LDAPTLSCACertFile", compare=False
    )
    """Where the servers and TLS were configured, named when no server answers."""

    def describe(self) -> str:
        """The servers and the base DN, for messages (never the secret)."""
        servers = " ".join(self.uris)
        return f"{servers} (base {self.base_dn})" if self.base_dn else servers

    def bind_identity(self) -> str:
        """Who binds, for messages: the DN, ``SASL <mechanism>`` or ``anonymous``."""
        if self.bind_dn:
            return self.bind_dn
        return f"SASL {self.sasl_mechanism}" if self.sasl_mechanism else "anonymous"

    def binding_as(self, bind_dn: str, password: Secret | None, credentials: str) -> LdapSettings:
        """The same servers and TLS, with a simple bind as ``bind_dn`` instead."""
        return dataclasses.replace(
            self,
            bind_dn=bind_dn,
            password=password,
            sasl_mechanism=None,
            sasl_authcid=None,
            sasl_authzid=None,
            sasl_realm=None,
            credentials=credentials,
        )
