"""ARC, the Authenticated Received Chain (RFC 8617): verify a message's chain, seal it.

:func:`verify_chain` gives the :class:`ArcVerdict` on the chain a message
arrives with; :func:`seal` adds this hop's set after that verdict (and after
our own DKIM signature, which the new ARC-Message-Signature covers).  Keys
are DKIM's (``selector._domainkey`` TXT records, RSA or Ed25519), signed with
a :class:`~ldapdkim.signing.keyring.KeySigner`.
"""

from __future__ import annotations

from ldapdkim.signing.arc.seal import DEFAULT_ARC_HEADERS, seal
from ldapdkim.signing.arc.verdict import MAX_INSTANCES, ArcVerdict, ChainValidation
from ldapdkim.signing.arc.verify import verify_chain

__all__ = [
    "DEFAULT_ARC_HEADERS",
    "MAX_INSTANCES",
    "ArcVerdict",
    "ChainValidation",
    "seal",
    "verify_chain",
]
