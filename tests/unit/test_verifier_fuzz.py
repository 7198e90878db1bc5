"""Property-based fuzzing: nothing a message, a signature or a key record holds makes the
verifier, the From reader or the milter fail on its own account.

Each property runs ``LDAPDKIM_FUZZ_EXAMPLES`` generated cases (a short run in
the test suite; ``bench/fuzz_verifier.py`` runs a million).  Cases are byte
mutations of validly signed messages and key records, and tag lists built
from the grammar's pieces.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from harness.forge import ed25519_key, forge, key_record, rsa_key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ldapdkim.errors import DnsTemporaryError, InvalidDomain, MessageError
from ldapdkim.model import DkimResult, Failure, VerifyResult
from ldapdkim.signing.author import author_address
from ldapdkim.signing.canonicalization import split_message
from ldapdkim.signing.verifier import verify, verify_message

EXAMPLES = int(os.environ.get("LDAPDKIM_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

ED = "v=1; a=ed25519-sha256; c=relaxed/simple; d=example.com; s=s1; h=from:to:subject; bh=@; b="
RSA = "v=1; a=rsa-sha256; c=simple/relaxed; d=example.com; s=s2; h=from:from:subject; bh=@; b="
SIGNED = [
    forge(ED, ed25519_key(), canon="relaxed/simple").message,
    forge(RSA, rsa_key(1024), canon="simple/relaxed").message,
]
RECORDS = {
    "s1._domainkey.example.com": key_record(ed25519_key()),
    "s2._domainkey.example.com": key_record(
        rsa_key(1024), "v=DKIM1; h=sha256; k={k}; t=y:s; p={p}"
    ),
}
PIECES = [
    b"v=1", b"v=2", b"a=rsa-sha256", b"a=ed25519-sha256", b"a=rsa-sha1", b"c=relaxed/simple",
    b"c=simple", b"c=x/y", b"d=example.com", b"d=EXAMPLE.com.", b"d=", b"s=s1", b"s=s2", b"s=-",
    b"h=from", b"h=to:subject", b"h=from:from:FROM", b"h=", b"i=@example.com", b"i=a=40b@x.example",
    b"i=@example.org", b"i=a=0D=0Ab@example.com", b"i=a=3Bb=22@example.com", b"l=0", b"l=5",
    b"l=99999999999999999999", b"q=dns/txt", b"q=x:dns/txt",
    b"t=1", b"x=2", b"t=99999999999", b"x=", b"z=From:a|To:b", b"bh=", b"bh=AAAA", b"b=", b"b=AA=A",
    b"b=\r\n\t AAAA", b"zz=1", b"V=1", b"=", b"a", b" \t", b"\r\n ", b"\x00", b"\xff", b"\r", b"\n",
]  # fmt: skip


def _lookup(records: dict[str, bytes]):  # type: ignore[no-untyped-def]
    def lookup(name: str) -> Sequence[bytes]:
        if name.startswith("temp"):
            raise DnsTemporaryError("SERVFAIL")
        record = records.get(name.lower())
        return [record] if record is not None else []

    return lookup


def _sane(results: list[VerifyResult]) -> None:
    for result in results:
        assert isinstance(result.result, DkimResult) and isinstance(result.failure, Failure)
        assert (result.result is DkimResult.PASS) == (result.failure is Failure.NONE)
        shown = result.domain + result.selector + result.algorithm + result.identity
        assert not any(c in shown for c in '\r\n;" ()') and "\n" not in result.reason


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    message = bytearray(draw(st.sampled_from(SIGNED)))
    for _ in range(draw(st.integers(1, 6))):
        where = draw(st.integers(0, len(message)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "piece"]))
        if action == "flip" and where < len(message):
            message[where] = draw(st.integers(0, 255))
        elif action == "insert":
            message[where:where] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del message[where : where + draw(st.integers(1, 40))]
        elif action == "duplicate":
            end = message.find(b"\r\n", where)
            message[where:where] = message[where : end + 2 if end >= 0 else where + 20]
        else:
            message[where:where] = draw(st.sampled_from(PIECES)) + b";"
    return bytes(message)


@FUZZ
@given(_mutated())
def test_no_mutation_of_a_signed_message_raises(message: bytes) -> None:
    _sane(verify_message(message, _lookup(RECORDS), max_signatures=5))


@FUZZ
@given(st.lists(st.sampled_from(PIECES), min_size=0, max_size=14), st.sampled_from(SIGNED))
def test_tag_lists_built_from_the_grammar_never_raise(pieces: list[bytes], signed: bytes) -> None:
    field = b"DKIM-Signature: " + b";".join(pieces) + b"\r\n"
    _sane(verify_message(field + signed, _lookup(RECORDS), max_signatures=5))


@FUZZ
@given(st.sampled_from(sorted(RECORDS)), st.binary(max_size=12), st.integers(0, 400), st.data())
def test_mutated_key_records_never_raise(
    name: str, noise: bytes, where: int, data: st.DataObject
) -> None:
    record = bytearray(RECORDS[name])
    record[where:where] = noise + data.draw(st.sampled_from([b"", b";", b"=", b"; p=", b"k=rsa;"]))
    records = {**RECORDS, name: bytes(record)}
    _sane(verify_message(SIGNED[0] + b"", _lookup(records)))
    _sane(verify_message(SIGNED[1], _lookup(records)))


@FUZZ
@given(st.binary(max_size=120), st.sampled_from([b"", b"<", b">", b"@", b'"', b"(", b"=?"]))
def test_the_from_reader_only_refuses(noise: bytes, piece: bytes) -> None:
    value = b" Alice " + piece + noise + b" <alice@example.com>\r\n"
    try:
        address = author_address(value)
    except (MessageError, InvalidDomain):
        return
    assert address.count("@") >= 1 and address.rpartition("@")[2] == "example.com"


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_split_and_verify(message: bytes) -> None:
    headers, body = split_message(message)
    assert all(b":" not in name for name, _ in headers)
    _sane(verify(headers, body, _lookup(RECORDS)))


def test_the_unmutated_messages_pass() -> None:
    """The fuzzed cases start from signatures that verify (else they test too little)."""
    for message in SIGNED:
        results = verify_message(message, _lookup(RECORDS))
        assert [r.result for r in results] == [DkimResult.PASS]
