"""The signer's exact output, pinned: every vector signs to the bytes recorded in
``tests/data/signer-vectors/expected.json``.

RSA PKCS #1 v1.5 and Ed25519 signatures are deterministic, so with fixed keys
(``rsa.pem``, ``ed25519.pem`` beside the table) and a fixed timestamp a change
to header selection, folding, message splitting or canonicalization shows up
as a changed byte.  dkimpy, an independent implementation, must also verify
every signature (it and PyNaCl stay in the test extras for this).

Regenerate the table with ``python tests/unit/test_signer_vectors.py --write``
only when a change to the signatures is meant.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path

import dkim
import pytest

from ldapdkim import keys
from ldapdkim.model import Algorithm, Canonicalization, KeyState, SigningKey, SigningParams
from ldapdkim.signing.keyring import Keyring
from ldapdkim.signing.signer import sign_message

DATA = Path(__file__).resolve().parents[1] / "data" / "signer-vectors"
EXPECTED = DATA / "expected.json"
DOMAIN = "example.com"
NOW = 1_700_000_000

MESSAGES: dict[str, bytes] = {
    "plain": (
        b"From: Alice <alice@example.com>\r\n"
        b"To: bob@example.net\r\n"
        b"Subject: a subject   with  odd   spacing\r\n"
        b"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n"
        b"Message-ID: <1@example.com>\r\n"
        b"Received: from somewhere\r\n"
        b"\r\n"
        b"Hello,  world \r\n\r\n\r\n"
    ),
    "lf-only": (
        b"From: Alice <alice@example.com>\n"
        b"To: bob@example.net\n"
        b"Subject: written with\n"
        b"\tLF line ends only\n"
        b"\n"
        b"line one\n"
        b"line two  \t\n"
        b"\n"
    ),
    "folded": (
        b"Received: from a.example.net by b.example.com;\r\n"
        b"\tSat, 28 Nov 2026 12:00:00 +0000\r\n"
        b'From: "A very long display name"\r\n'
        b"   <alice@example.com>\r\n"
        b"To: one@example.net,\r\n"
        b" two@example.net,\r\n"
        b"\t three@example.net\r\n"
        b"Subject: folded\r\n"
        b"  \t over three\r\n"
        b" lines\r\n"
        b"Content-Type: text/plain;\r\n"
        b"\tcharset=utf-8\r\n"
        b"\r\n"
        b"body\r\n"
    ),
    "odd-whitespace": (
        b"FROM:alice@example.com\r\n"
        b"to:   \t bob@example.net \t \r\n"
        b"Subject:\tlots \t of\t\t   space   \r\n"
        b"X-Empty:\r\n"
        b"X-Blank:    \r\n"
        b"Message-Id: <2@example.com>\r\n"
        b"\r\n"
        b" leading space\r\n"
        b"\ttab  and   runs \t \r\n"
        b"   \r\n"
        b"\r\n"
        b"trailing\t \t\r\n"
        b"\r\n"
        b"\r\n"
    ),
    "empty-body": (b"From: alice@example.com\r\nSubject: nothing follows\r\n\r\n"),
    "no-separator": (b"From: alice@example.com\r\nSubject: no empty line\r\n"),
    "repeated-fields": (
        b"Received: from first\r\n"
        b"Received: from second\r\n"
        b"From: alice@example.com\r\n"
        b"To: first@example.net\r\n"
        b"Subject: one\r\n"
        b"To: second@example.net\r\n"
        b"Reply-To: r@example.com\r\n"
        b"Cc: c@example.net\r\n"
        b"In-Reply-To: <0@example.net>\r\n"
        b"References: <0@example.net>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Transfer-Encoding: 7bit\r\n"
        b"List-Id: <list.example.com>\r\n"
        b"\r\n"
        b"no final line end"
    ),
    "body-of-blank-lines": (b"From: alice@example.com\r\n\r\n\r\n  \r\n\t\r\n\r\n"),
}

PARAMS: dict[str, SigningParams] = {
    "default": SigningParams(),
    # x= lies in 2055, so that dkimpy (which reads the clock) finds it unexpired.
    "identity-expiry": SigningParams(identity="@mail.example.com", expire_seconds=10**9),
    "listed": SigningParams(
        sign_headers=("From", "x-missing", "TO", "subject"),
        oversign_headers=("to", "subject", "from"),
    ),
}

CANONICALIZATIONS = ("simple/simple", "simple/relaxed", "relaxed/simple", "relaxed/relaxed")
SELECTORS = {Algorithm.RSA_SHA256: "rsa1", Algorithm.ED25519_SHA256: "ed1"}


@cache
def _signing_key(algorithm: Algorithm) -> SigningKey:
    name = "rsa.pem" if algorithm is Algorithm.RSA_SHA256 else "ed25519.pem"
    pem = (DATA / name).read_bytes()
    return SigningKey("dn", SELECTORS[algorithm], algorithm, KeyState.ACTIVE, pem)


def _cases() -> list[tuple[str, bytes, SigningParams, Algorithm]]:
    cases = []
    for message_id, message in MESSAGES.items():
        for params_id, params in PARAMS.items():
            for canon in CANONICALIZATIONS:
                if params_id != "default" and canon != "relaxed/relaxed":
                    continue  # the other parameters once, with one canonicalization
                merged = SigningParams(
                    Canonicalization.parse(canon),
                    params.sign_headers,
                    params.oversign_headers,
                    params.identity,
                    params.expire_seconds,
                )
                for algorithm in Algorithm:
                    name = f"{message_id}/{params_id}/{canon}/{algorithm.value}"
                    cases.append((name, message, merged, algorithm))
    return cases


CASES = _cases()
_ARGS = ("name", "message", "params", "algorithm")
_IDS = [case[0] for case in CASES]


def _sign(message: bytes, params: SigningParams, algorithm: Algorithm) -> bytes:
    signers = Keyring().signers([_signing_key(algorithm)], DOMAIN)
    [value] = sign_message(message, DOMAIN, signers, params, timestamp=NOW)
    return value


@cache
def _expected() -> dict[str, str]:
    table: dict[str, str] = json.loads(EXPECTED.read_text())
    return table


def test_the_table_has_one_row_per_vector() -> None:
    assert sorted(_expected()) == sorted(name for name, *_ in CASES)


@pytest.mark.parametrize(_ARGS, CASES, ids=_IDS)
def test_the_signature_is_byte_for_byte_the_recorded_one(
    name: str, message: bytes, params: SigningParams, algorithm: Algorithm
) -> None:
    assert _sign(message, params, algorithm).decode("ascii") == _expected()[name]


def _dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
    for algorithm, selector in SELECTORS.items():
        if name == f"{selector}._domainkey.{DOMAIN}.".encode():
            private = keys.private_key_of(_signing_key(algorithm))
            assert private is not None
            return keys.txt_record(algorithm, keys.public_key_b64(private)).encode()
    return None


@pytest.mark.parametrize(_ARGS, CASES, ids=_IDS)
def test_dkimpy_verifies_every_signature(
    name: str, message: bytes, params: SigningParams, algorithm: Algorithm
) -> None:
    """dkimpy reads the message as sent: with CRLF line ends, the new field on top."""
    value = _sign(message, params, algorithm)
    crlf = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    signed = b"DKIM-Signature:" + value + b"\r\n" + crlf
    assert dkim.verify(signed, dnsfunc=_dnsfunc, minkey=1024), name


def _write() -> None:
    table = {name: _sign(m, p, a).decode("ascii") for name, m, p, a in CASES}
    EXPECTED.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        _write()
    else:
        sys.exit(f"usage: {sys.argv[0]} --write")
