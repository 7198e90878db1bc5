"""The LDAP vocabulary of ldapdkim: object class and attribute names.

Defined in ``schema/ldapdkim.schema``; this module is the one place the code
spells them.  The ``dkimSign`` prefix keeps the names apart from OpenDKIM's
contrib schema (``DKIMDomain``, ``DKIMSelector``, ...), as LDAP names are
case-insensitive.
"""

from __future__ import annotations

POLICY_CLASS = "dkimSignDomainPolicy"
KEY_CLASS = "dkimSignKey"

DOMAIN_NAME = "dkimSignDomainName"
ENABLED = "dkimSignEnabled"
CANONICALIZATION = "dkimSignCanonicalization"
SIGN_HEADER = "dkimSignHeader"
OVERSIGN_HEADER = "dkimSignOversignHeader"
ALGORITHM = "dkimSignAlgorithm"
IDENTITY = "dkimSignIdentity"
SUBDOMAINS = "dkimSignSubdomains"
EXPIRE_SECONDS = "dkimSignExpireSeconds"
ALLOWED_SENDER = "dkimSignAllowedSender"
ALLOWED_NETWORK = "dkimSignAllowedNetwork"
SENDER_ALIGNMENT = "dkimSignSenderAlignment"
ARC_SELECTOR = "dkimSignArcSelector"
ARC_ADDRESS = "dkimSignArcAddress"

SELECTOR = "dkimSignSelector"
PRIVATE_KEY = "dkimSignPrivateKey"
PUBLIC_KEY = "dkimSignPublicKey"
KEY_STATE = "dkimSignKeyState"
NOT_BEFORE = "dkimSignNotBefore"
NOT_AFTER = "dkimSignNotAfter"

POLICY_ATTRIBUTES = (
    DOMAIN_NAME,
    ENABLED,
    CANONICALIZATION,
    SIGN_HEADER,
    OVERSIGN_HEADER,
    ALGORITHM,
    IDENTITY,
    SUBDOMAINS,
    EXPIRE_SECONDS,
    ALLOWED_SENDER,
    ALLOWED_NETWORK,
    SENDER_ALIGNMENT,
    ARC_SELECTOR,
    ARC_ADDRESS,
)
KEY_ATTRIBUTES = (SELECTOR, ALGORITHM, KEY_STATE, PRIVATE_KEY, PUBLIC_KEY, NOT_BEFORE, NOT_AFTER)
