"""Private keys and passwords never reach a log line, even if code slips."""

from __future__ import annotations

import logging

import pytest

from ldapdkim import keys
from ldapdkim.log import RedactingFilter, setup_cli_logging
from ldapdkim.model import Algorithm


def test_pem_private_keys_and_named_secrets_are_removed(caplog: pytest.LogCaptureFixture) -> None:
    pem = keys.private_pem(keys.generate(Algorithm.ED25519_SHA256)).decode()
    logger = logging.getLogger("ldapdkim.test")
    logger.addFilter(RedactingFilter(["s3cret-pass"]))
    try:
        with caplog.at_level(logging.INFO, logger="ldapdkim.test"):
            logger.info("bad entry %s with password %s", pem, "s3cret-pass")
    finally:
        logger.filters.clear()
    [record] = caplog.records
    assert "PRIVATE KEY" not in record.getMessage()
    assert "s3cret-pass" not in record.getMessage()
    assert "[private key removed]" in record.getMessage()
    assert "[secret removed]" in record.getMessage()


def test_cli_logging_goes_to_stderr_with_redaction(capsys: pytest.CaptureFixture[str]) -> None:
    setup_cli_logging(verbose=False, secrets=["hunter2"])
    logging.getLogger("ldapdkim.x").warning("bind as cn=x with hunter2 failed")
    assert capsys.readouterr().err == (
        "ldapdkim: WARNING: bind as cn=x with [secret removed] failed\n"
    )


def test_repr_of_a_signing_key_never_shows_the_private_key() -> None:
    from ldapdkim.model import KeyState, SigningKey

    private = keys.generate(Algorithm.ED25519_SHA256)
    pem = keys.private_pem(private)
    key = SigningKey("dn", "s1", Algorithm.ED25519_SHA256, KeyState.ACTIVE, pem)
    assert "key_data" not in repr(key) and "PRIVATE" not in repr(key)
