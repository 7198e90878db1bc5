#!/usr/bin/env python3
"""Worst-case CPU per verified message: what a hostile sender can make one message cost.

    .venv/bin/python bench/bench_verify_worst.py [--rounds 5]

Each message is verified in-process by ``ldapdkim.signing.verifier.verify`` with
the milter's defaults (MaximumSignaturesToVerify 3, DNSTimeout 5), keys from a
table (DNS time is not CPU, and a key query that never answers is bounded by
one DNSTimeout for the whole message, as tests/unit/test_verifier_bounds.py
shows).  The figure is the process CPU time (user + system) per message, the
median of ``--rounds`` rounds, next to an ordinary signed message.
"""

from __future__ import annotations

import argparse
import statistics
import time

from harness.forge import HEADERS, forge, key_record, rsa_key

from ldapdkim.signing.sigfield import MAX_SIGNATURES
from ldapdkim.signing.verifier import verify

TAGS = "v=1; a=rsa-sha256; c={c}; d=example.com; s={s}; h={h}; bh=@; b="


def _cases() -> dict[str, tuple[list[tuple[bytes, bytes]], bytes, dict[str, list[bytes]]]]:
    big = rsa_key(8192)
    normal = rsa_key(2048)
    records = {
        "s8k._domainkey.example.com": [key_record(big)],
        "s2k._domainkey.example.com": [key_record(normal)],
    }
    plain = forge(TAGS.format(c="relaxed/relaxed", s="s2k", h="from:to:subject"), normal)
    cases = {"ordinary message, one RSA-2048 signature": (plain.headers, plain.body, records)}
    # 64 signatures with 8192-bit keys: three are checked (MaximumSignaturesToVerify).
    body = b"x" * 2000 + b"\r\n"
    heavy = forge(TAGS.format(c="relaxed/relaxed", s="s8k", h="from:to:subject"), big, body=body)
    fields = [heavy.headers[0]] * MAX_SIGNATURES
    cases["64 signatures, RSA-8192 keys"] = ([*fields, *heavy.headers[1:]], body, records)
    # A 20 MB body, three signatures with different c= and l= (three canonical bodies).
    huge = b"A line of text with  two  spaces\t\r\n" * 600_000
    signed = [
        forge(TAGS.format(c=c, s="s2k", h="from:to") + "", normal, body=huge, canon=c).headers[0]
        for c in ("simple/simple", "relaxed/relaxed", "simple/relaxed")
    ]
    cases["20 MB body, three canonicalizations"] = ([*signed, *HEADERS], huge, records)
    # 5000 header fields, h= naming 512 of them.
    many = [*HEADERS, *((b"X-Filler", f" value {i}\r\n".encode()) for i in range(5000))]
    h = ":".join(["from"] + ["x-filler"] * 511)
    wide = forge(TAGS.format(c="relaxed/relaxed", s="s2k", h=h), normal, headers=many)
    cases["5000 header fields, h= of 512 names"] = (wide.headers, wide.body, records)
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"{'message':45} {'CPU ms (median)':>16} {'results':>8}")
    for name, (headers, body, records) in _cases().items():
        lookup = lambda key, records=records: records.get(key, [])  # noqa: E731
        times = []
        for _ in range(args.rounds):
            started = time.process_time()
            results = verify(headers, body, lookup)
            times.append(time.process_time() - started)
        print(f"{name:45} {statistics.median(times) * 1000:16.1f} {len(results):>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
