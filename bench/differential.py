#!/usr/bin/env python3
"""The long differential run: ldapdkim, Perl Mail::DKIM and OpenDKIM on generated cases.

    .venv/bin/python bench/differential.py [--cases 100000] [--seed 1]

Generates signed messages and key records mutated as ``tests/harness/differential.py``
describes, has the three verifiers judge each one (keys on a loopback DNS
server), and prints every class of disagreement with its count and, when the
class is known, the RFC clause that explains it and which verifier is wrong.
Exits 1 when a class is not explained (fix it, or explain it there), or when
ldapdkim's own verdict is not one ``REQUIRED`` allows for its mutation.
"""

from __future__ import annotations

import argparse
import time

from harness import differential


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    started = time.monotonic()
    report = differential.run(args.cases, seed=args.seed, batch_size=1000)
    elapsed = time.monotonic() - started
    print(f"cases: {report.cases}  judged alike: {report.agree}  time: {elapsed:.0f} s")
    print("class (mutation, ldapdkim, Mail::DKIM, OpenDKIM)  cases  explanation")
    for key, count in sorted(report.classes.items(), key=lambda item: -item[1]):
        why = differential.explanation(key) or "NOT EXPLAINED"
        print(f"{key}  {count}  {why}")
    print("ldapdkim's verdicts by mutation (mutation  verdict=cases ...)")
    for kind in differential.MUTATIONS:
        counts = {v: n for (k, v), n in sorted(report.verdicts.items()) if k == kind}
        print(f"  {kind:20} " + " ".join(f"{v}={n}" for v, n in counts.items()))
    unexplained = report.unexplained()
    print(f"unexplained classes: {len(unexplained)}")
    print(f"verdicts the RFCs do not allow ldapdkim (mutation, verdict): {dict(report.wrong)}")
    return 1 if unexplained or report.wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
