"""ARC verification costs little whatever a chain holds: 50 sets, keys that never answer,
thousands of bogus fields, oversized ones; and no chain makes it raise."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence

import pytest
from harness.arcforge import Chain, forge_chain, keys
from harness.forge import BODY, HEADERS, ed25519_key, rsa_key

from ldapdkim.signing.arc import ChainValidation, verify_chain
from ldapdkim.signing.canonicalization import split_message

CPU_BUDGET = 0.5
"""CPU seconds a test's verification may take; each needs a few milliseconds."""


def _cpu(chain: Chain, lookup: object, **options: object) -> tuple[float, object]:
    started = time.process_time()
    verdict = verify_chain(chain.headers, chain.body, lookup, timeout=2, **options)  # type: ignore[arg-type]
    return time.process_time() - started, verdict


@pytest.mark.parametrize("key", [ed25519_key(), rsa_key()], ids=["ed25519", "rsa"])
def test_a_chain_of_50_sets_is_verified_in_little_cpu_time(key: object) -> None:
    chain = forge_chain(50, key)  # type: ignore[arg-type]
    cpu, verdict = _cpu(chain, keys(key))  # type: ignore[arg-type]
    assert verdict.cv is ChainValidation.PASS  # type: ignore[attr-defined]
    assert cpu < CPU_BUDGET, cpu


def test_keys_that_never_answer_cost_one_timeout_for_the_whole_chain() -> None:
    def distinct(instance: int, kind: str, text: str) -> str:
        return text.replace("s=arc;", f"s=hang{instance}{kind};")

    chain = forge_chain(50, tweak=distinct)
    release = threading.Event()
    asked: list[str] = []

    def lookup(name: str) -> Sequence[bytes]:
        asked.append(name)
        release.wait(10)
        return []

    started = time.monotonic()
    try:
        verdict = verify_chain(chain.headers, chain.body, lookup, timeout=0.5)
    finally:
        release.set()
    assert time.monotonic() - started < 2.0
    assert (verdict.cv, verdict.temporary) == (ChainValidation.FAIL, True)


def test_thousands_of_bogus_arc_fields_are_refused_before_any_dns_query() -> None:
    asked: list[str] = []

    def lookup(name: str) -> Sequence[bytes]:
        asked.append(name)
        return []

    bogus = [
        (
            b"ARC-Seal",
            f" i={1 + i % 50}; cv=pass; a=rsa-sha256; d=x.example; s=s; b=AA\r\n".encode(),
        )
        for i in range(10_000)
    ]
    cpu, verdict = _cpu(Chain([*bogus, *HEADERS], BODY), lookup)
    assert verdict.cv is ChainValidation.FAIL and verdict.at_limit  # type: ignore[attr-defined]
    assert asked == []
    assert cpu < CPU_BUDGET, cpu


def test_oversized_fields_are_refused_unread() -> None:
    chain = forge_chain(1)
    index = chain.field("ARC-Authentication-Results", 1)
    headers = list(chain.headers)
    headers[index] = (headers[index][0], b" i=1; mx.example.org; " + b"x" * 1_000_000 + b"\r\n")
    cpu, verdict = _cpu(Chain(headers, chain.body), keys())
    assert verdict.cv is ChainValidation.FAIL and "too long" in verdict.reason  # type: ignore[attr-defined]
    assert cpu < CPU_BUDGET, cpu


def test_50_sets_of_the_largest_fields_are_hashed_once_each() -> None:
    """Seal i covers sets 1..i: each field is canonicalized once, not once per seal."""

    def padded(instance: int, kind: str, text: str) -> str:
        return text + " dkim=pass" * 1500 if kind == "aar" else text

    chain = forge_chain(50, tweak=padded)
    cpu, verdict = _cpu(chain, keys())
    assert verdict.cv is ChainValidation.PASS  # type: ignore[attr-defined]
    assert cpu < CPU_BUDGET, cpu


def test_no_mutation_of_a_chain_makes_verification_raise(caplog: pytest.LogCaptureFixture) -> None:
    chain = forge_chain(3)
    message = chain.message
    header_end = message.index(b"\r\n\r\n")
    rng = random.Random(8617)
    alphabet = b" \t\r\n;=:abi0123456789\xff\x00"
    for _ in range(300):
        data = bytearray(message)
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(header_end)
            data[position] = rng.choice(alphabet)
        mutated = bytes(data)
        headers, body = split_message(mutated)
        with caplog.at_level(logging.ERROR):
            verdict = verify_chain(headers, body, keys(), timeout=1)
        assert verdict.cv in (ChainValidation.PASS, ChainValidation.FAIL, ChainValidation.NONE)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_bug_meets_the_barrier_fails_the_chain_and_forbids_sealing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(fields: object) -> object:
        raise RuntimeError("a bug")

    monkeypatch.setattr("ldapdkim.signing.arc.verify.chain_sets", broken)
    chain = forge_chain(1)
    with caplog.at_level(logging.ERROR):
        verdict = verify_chain(chain.headers, chain.body, keys(), timeout=1)
    assert (verdict.cv, verdict.at_limit) == (ChainValidation.FAIL, True)
    assert "internal error" in verdict.reason
    assert "a bug" in caplog.text
