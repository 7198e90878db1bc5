"""Keys held in a PKCS #11 token (RFC 7512 ``pkcs11:`` URIs): work in progress."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

from ldapdkim.config.secret import Secret
from ldapdkim.errors import KeyUnavailable
from ldapdkim.model import Algorithm


class Pkcs11Token:
    """The token of ``PKCS11Module``, logged in with the PIN of ``PKCS11PinFile``."""

    def __init__(self, module: Path, pin: Secret | None) -> None:
        self.module = module
        self.pin = pin

    def signer(self, uri: str, selector: str, algorithm: Algorithm, *, where: str) -> NoReturn:
        raise KeyUnavailable("signing in a PKCS#11 token is not available yet", in_token=True)
