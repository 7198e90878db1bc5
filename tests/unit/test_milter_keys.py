"""What the milter does with each kind of key: plaintext, sealed, or in a token.

Driven in-process through pymilter's test context, with the LDIF directory
backend over entries made here.  The token is a stand-in
(:class:`UnreachableToken`): a real SoftHSM2 token is in ``tests/integration``.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import Milter
import pytest
from Milter import testctx

from ldapdkim import config, keys, metrics, schema, sealing
from ldapdkim.directory import ldifout
from ldapdkim.errors import KeyUnavailable
from ldapdkim.milter.daemon import Holder, build_runtime
from ldapdkim.milter.session import DkimMilter
from ldapdkim.model import Algorithm

BASE = "ou=domains,dc=example,dc=com"
MESSAGE = b"From: Alice <alice@example.com>\nTo: bob@example.net\nSubject: hi\n\nHello\n"
KEK = sealing.KeyEncryptionKey("kek1", bytes(range(32)))


def _entries(rsa: bytes, ed25519: bytes) -> str:
    """example.com with an RSA key (selector r1) and an Ed25519 key (e1), stored as given."""
    dn, attrs = ldifout.domain_record("example.com", BASE)
    rsa_dn, rsa_attrs = ldifout.key_record(dn, "r1", keys.generate(Algorithm.RSA_SHA256))
    ed_dn, ed_attrs = ldifout.key_record(dn, "e1", keys.generate(Algorithm.ED25519_SHA256))
    rsa_attrs[schema.PRIVATE_KEY] = [rsa]
    ed_attrs[schema.PRIVATE_KEY] = [ed25519]
    return ldifout.render([(dn, attrs), (rsa_dn, rsa_attrs), (ed_dn, ed_attrs)])


def _sealed(algorithm: Algorithm, selector: str, kek: sealing.KeyEncryptionKey = KEK) -> bytes:
    der = keys.private_der(keys.generate(algorithm))
    return sealing.seal(der, kek, sealing.KeyIdentity("example.com", selector, algorithm))


def _plaintext(algorithm: Algorithm) -> bytes:
    return keys.private_pem(keys.generate(algorithm))


class UnreachableToken:
    """A token that is not there (removed, or its module failed)."""

    def signer(self, uri: str, selector: str, algorithm: Algorithm, *, where: str) -> NoReturn:
        raise KeyUnavailable("the token is not present; plug it in", in_token=True)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Any]:
    """run(ldif, *config lines, token=None) -> (rc, ctx) for one message from an inside host."""
    saved = Milter.factory
    kek_path = tmp_path / "kek1"
    kek_path.write_bytes(KEK.key)
    kek_path.chmod(0o600)

    def feed(ldif: str, *lines: str, token: Any = None, kek: bool = True) -> Any:
        path = tmp_path / f"dir{len(list(tmp_path.glob('dir*')))}.ldif"
        path.write_text(ldif)
        text = "\n".join(
            [
                "Mode s",
                f"Directory ldif:{path}",
                *([f"KeyEncryptionKey kek1 {kek_path}"] if kek else []),
                *lines,
            ]
        )
        runtime = build_runtime(config.parse(text + "\n", "test.conf"))
        if token is not None:
            runtime.keyring.token = token
        holder = Holder(runtime)
        Milter.factory = lambda: DkimMilter(holder.current)
        ctx = testctx.TestCtx(logfile="/dev/null")
        ctx._setsymval("i", "4XyZ1")
        rc = ctx._connect(ip="127.0.0.1")
        if rc == Milter.CONTINUE:
            rc = ctx._feedFile(io.BytesIO(MESSAGE), "alice@example.com", "bob@example.net")
        return rc, ctx

    yield feed
    Milter.factory = saved


def _not_signed(reason: str) -> float:
    value: float = metrics.MESSAGES_NOT_SIGNED.labels(reason=reason)._value.get()
    return value


def test_sealed_keys_sign_like_plaintext_ones(run: Any) -> None:
    ldif = _entries(_sealed(Algorithm.RSA_SHA256, "r1"), _sealed(Algorithm.ED25519_SHA256, "e1"))
    rc, ctx = run(ldif)
    assert rc == Milter.ACCEPT
    signed = ctx._msg.get_all("DKIM-Signature")
    assert len(signed) == 2, ctx._msg


def test_without_the_kek_no_key_signs_and_on_signatureerror_applies(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ldif = _entries(_sealed(Algorithm.RSA_SHA256, "r1"), _sealed(Algorithm.ED25519_SHA256, "e1"))
    before = _not_signed("key_unavailable")
    with caplog.at_level(logging.ERROR):
        rc, _ = run(ldif, "On-SignatureError tempfail", kek=False)
    assert rc == Milter.TEMPFAIL
    assert _not_signed("key_unavailable") == before + 1
    assert "sealed with KEK 'kek1', which this host does not have" in caplog.text
    assert "dkimSignSelector=" in caplog.text  # the key entry is named


def test_a_key_that_does_not_open_is_left_out_and_the_other_signs(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The RSA value was sealed for selector r9: it does not open as r1."""
    ldif = _entries(_sealed(Algorithm.RSA_SHA256, "r9"), _sealed(Algorithm.ED25519_SHA256, "e1"))
    with caplog.at_level(logging.ERROR):
        rc, ctx = run(ldif)
    assert rc == Milter.ACCEPT
    [signature] = ctx._msg.get_all("DKIM-Signature")
    assert "a=ed25519-sha256" in signature
    assert "does not open with KEK 'kek1'" in caplog.text


def test_a_kek_of_the_same_id_but_other_bytes_does_not_open_the_key(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    other = sealing.KeyEncryptionKey("kek1", os.urandom(32))
    ldif = _entries(
        _sealed(Algorithm.RSA_SHA256, "r1", other), _sealed(Algorithm.ED25519_SHA256, "e1", other)
    )
    with caplog.at_level(logging.ERROR):
        rc, _ = run(ldif)
    assert rc == Milter.REJECT  # On-SignatureError's default
    assert "does not open" in caplog.text


def test_require_sealed_keys_refuses_plaintext_and_names_the_fix(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ldif = _entries(_plaintext(Algorithm.RSA_SHA256), _plaintext(Algorithm.ED25519_SHA256))
    with caplog.at_level(logging.ERROR):
        rc, _ = run(ldif, "RequireSealedKeys yes")
    assert rc == Milter.REJECT
    assert "stored in plaintext and RequireSealedKeys is yes" in caplog.text
    assert "ldapdkim keys seal" in caplog.text
    rc, ctx = run(
        _entries(_sealed(Algorithm.RSA_SHA256, "r1"), _sealed(Algorithm.ED25519_SHA256, "e1")),
        "RequireSealedKeys yes",
    )
    assert rc == Milter.ACCEPT and len(ctx._msg.get_all("DKIM-Signature")) == 2


def test_an_unreachable_token_tempfails_as_an_internal_error(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    uri = b"pkcs11:token=ldapdkim;object=example.com-r1;type=private"
    ldif = _entries(uri, uri.replace(b"r1", b"e1"))
    before = _not_signed("token_unavailable")
    with caplog.at_level(logging.ERROR):
        rc, _ = run(ldif, token=UnreachableToken())
    assert rc == Milter.TEMPFAIL  # On-InternalError's default: the token may come back
    assert _not_signed("token_unavailable") == before + 1
    assert "the token is not present" in caplog.text


def test_a_token_key_without_pkcs11module_names_the_keywords(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    uri = b"pkcs11:token=ldapdkim;object=example.com-r1;type=private"
    with caplog.at_level(logging.ERROR):
        rc, _ = run(_entries(uri, uri.replace(b"r1", b"e1")))
    assert rc == Milter.REJECT
    assert "PKCS11Module is not set" in caplog.text
