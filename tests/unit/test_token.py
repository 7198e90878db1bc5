"""The token signer without a token: what it says before it asks one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ldapdkim.errors import KeyFormatError, KeyUnavailable
from ldapdkim.model import Algorithm
from ldapdkim.signing.token import Pkcs11Token


def test_without_pykcs11_the_error_names_the_debian_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "PyKCS11", None)
    token = Pkcs11Token(Path("/usr/lib/softhsm/libsofthsm2.so"), None)
    signer = token.signer("pkcs11:object=k", "s", Algorithm.RSA_SHA256, where="key 'x'")
    with pytest.raises(KeyUnavailable, match="install python3-pykcs11") as caught:
        signer.sign_digest(b"\0" * 32)
    assert caught.value.in_token


def test_a_signer_for_a_broken_uri_is_refused_before_the_token_is_asked() -> None:
    token = Pkcs11Token(Path("/nonexistent/module.so"), None)
    with pytest.raises(KeyFormatError, match="dkimSignPrivateKey: the pkcs11: URI names no key"):
        token.signer("pkcs11:token=t", "s", Algorithm.RSA_SHA256, where="key 'x'")
