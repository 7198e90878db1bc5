"""Streaming body hashes equal dkimpy's canonicalization of the whole body."""

from __future__ import annotations

import hashlib
import random
import re

import pytest
from dkim.canonicalization import CanonicalizationPolicy
from hypothesis import given
from hypothesis import strategies as st

from ldapdkim.signing.bodyhash import BodyHasher, crlf_line_ends

PIECES = [
    b"a",
    b"bc",
    b" ",
    b"  ",
    b"\t",
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"\r",
    b" \r\n",
    b"x y",
    b".",
]


def _reference(body: bytes, relaxed: bool) -> bytes:
    policy = CanonicalizationPolicy.from_c_value(b"simple/relaxed" if relaxed else b"simple/simple")
    # dkimpy expects CRLF line ends, as its message parser produces them.
    crlf = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return hashlib.sha256(policy.canonicalize_body(crlf)).digest()


def _streamed(body: bytes, relaxed: bool, cuts: list[int]) -> bytes:
    hasher = BodyHasher(relaxed)
    last = 0
    for cut in sorted(cuts):
        hasher.update(body[last:cut])
        last = cut
    hasher.update(body[last:])
    return hasher.digest()


@pytest.mark.parametrize("relaxed", [False, True], ids=["simple", "relaxed"])
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\r\n",
        b"\r\n\r\n",
        b"a",
        b"a\r\n",
        b"a\r\n\r\n\r\n",
        b" a \t b \r\n\r\n",
        b"line\r\n \r\n\t\r\n",
        b"x\ny\n\n",
        b"  \r\n",
        b"a\r",
        b"a\rb\r\n",
    ],
)
def test_known_bodies(body: bytes, relaxed: bool) -> None:
    assert _streamed(body, relaxed, []) == _reference(body, relaxed)


@pytest.mark.parametrize("relaxed", [False, True], ids=["simple", "relaxed"])
def test_random_bodies_and_chunk_boundaries(relaxed: bool) -> None:
    rng = random.Random(6376)
    for _ in range(3000):
        # Over SMTP a body always ends in CRLF; without it, dkimpy keeps WSP of an
        # unterminated last line that RFC 6376 §3.4.4 would drop.
        body = b"".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 30))) + b"\r\n"
        cuts = [rng.randrange(0, len(body) + 1) for _ in range(rng.randrange(0, 6))]
        assert _streamed(body, relaxed, cuts) == _reference(body, relaxed), (body, cuts)


@given(
    st.binary(max_size=64) | st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\r\n"])).map(b"".join)
)
def test_every_bare_lf_becomes_crlf_and_nothing_else_changes(data: bytes) -> None:
    assert crlf_line_ends(data) == re.sub(rb"(?<!\r)\n", b"\r\n", data)
