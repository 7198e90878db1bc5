"""The verifier's cost is bounded whatever a message holds (keys that never answer, piles of
signatures, huge keys), and a good signature is not hidden behind bad ones."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from harness.forge import HEADERS, ed25519_key, forge, key_record

from ldapdkim.model import DkimResult, Failure
from ldapdkim.signing.sigfield import MAX_SIGNATURES
from ldapdkim.signing.verifier import verify

GOOD = "v=1; a=ed25519-sha256; c=relaxed/relaxed; d=example.com; s=good; h=from:to; bh=@; b="


def _bogus(count: int, domain: str) -> list[tuple[bytes, bytes]]:
    fields = []
    for i in range(count):
        value = (
            f" v=1; a=rsa-sha256; d={domain}; s=hang{i}; h=from; "
            "bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA\r\n"
        )
        fields.append((b"DKIM-Signature", value.encode()))
    return fields


def test_dozens_of_unanswered_keys_in_front_cost_one_timeout_and_the_good_one_passes() -> None:
    good = forge(GOOD, ed25519_key())
    headers = [*_bogus(40, "example.com"), *good.headers]  # bogus ones first, same d=
    release = threading.Event()

    def lookup(name: str) -> Sequence[bytes]:
        if name.startswith("hang"):
            release.wait(10)  # never answers within the deadline
            return []
        return [key_record(ed25519_key())]

    started = time.monotonic()
    try:
        results = verify(headers, good.body, lookup, timeout=0.5, max_signatures=3)
    finally:
        release.set()
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, elapsed
    assert [r.selector for r in results if r.result is DkimResult.PASS] == ["good"]
    assert sum(r.failure is Failure.DNS_ERROR for r in results) == 40


def test_missing_keys_take_no_part_of_the_signature_budget() -> None:
    good = forge(GOOD, ed25519_key())
    headers = [*_bogus(10, "example.com"), *good.headers]

    def lookup(name: str) -> Sequence[bytes]:
        return [key_record(ed25519_key())] if name.startswith("good.") else []

    results = verify(headers, good.body, lookup, max_signatures=1)
    assert DkimResult.PASS in {r.result for r in results}


def test_author_signatures_come_first_and_the_budget_stops_the_rest() -> None:
    key = ed25519_key()
    other = forge(GOOD.replace("d=example.com", "d=example.org"), key)
    ours = forge(GOOD, key, headers=other.headers)
    lookup = lambda name: [key_record(key)]  # noqa: E731 - one key for both

    results = verify(ours.headers, ours.body, lookup, author_domain="example.com", max_signatures=1)
    assert [(r.domain, r.result) for r in results] == [("example.com", DkimResult.PASS)]


def test_at_most_max_signatures_fields_are_looked_at() -> None:
    asked: list[str] = []

    def lookup(name: str) -> Sequence[bytes]:
        asked.append(name)
        return []

    headers = [*_bogus(MAX_SIGNATURES + 50, "example.org"), *HEADERS]
    results = verify(headers, b"", lookup)
    assert len(asked) == len(results) == MAX_SIGNATURES


def test_an_oversized_signature_field_is_refused_unread() -> None:
    huge = (
        b"DKIM-Signature",
        b" v=1; a=rsa-sha256; d=example.com; s=s; h=from; bh=; b=" + b"A" * 20000 + b"\r\n",
    )
    [result] = verify([huge, *HEADERS], b"", lambda name: [])
    assert result.result is DkimResult.PERMERROR and "too long" in result.reason


def test_a_huge_h_list_is_refused() -> None:
    names = ":".join(["from"] + ["x"] * 600)
    value = f" v=1; a=rsa-sha256; d=example.com; s=s; h={names}; bh=AAAA; b=AAAA\r\n".encode()
    [result] = verify([(b"DKIM-Signature", value), *HEADERS], b"", lambda name: [])
    assert result.result is DkimResult.PERMERROR and "too many" in result.reason


def test_a_message_without_signatures_asks_nothing() -> None:
    asked: list[str] = []

    def lookup(name: str) -> Sequence[bytes]:
        asked.append(name)
        return []

    assert verify(list(HEADERS), b"x", lookup) == []
    assert asked == []
