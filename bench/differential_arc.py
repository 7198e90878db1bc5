#!/usr/bin/env python3
"""The long ARC differential run: ldapdkim, dkimpy and Perl Mail::DKIM validate mutated chains.

    .venv/bin/python bench/differential_arc.py [--cases 20000] [--seed 1] [--samples DIR]

Builds ARC chains and mutates them as ``tests/harness/arc_differential.py``
describes, has the three validators judge each one (keys on one loopback DNS
server, Mail::DKIM in one perl process), and prints every class of
disagreement with its count and, when the class is known, the RFC 8617 clause
that explains it and who is wrong.  ``--samples DIR`` writes the first
message of each class there, to reproduce it.  Exits 1 when a class is not
explained (fix it, or explain it there), or when ldapdkim's own verdict is
not one ``REQUIRED`` allows for its mutation.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from harness import arc_differential


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--samples", type=Path, help="write the first message of each class here")
    args = parser.parse_args()
    started = time.monotonic()
    report = arc_differential.run(args.cases, seed=args.seed, batch_size=500)
    elapsed = time.monotonic() - started
    print(f"cases: {report.cases}  judged alike: {report.agree} "
          f"({100 * report.agree / max(1, report.cases):.1f} %)  time: {elapsed:.0f} s  "
          f"Mail::DKIM {report.mail_dkim}")  # fmt: skip
    print("agreement with ldapdkim:", "  ".join(
        f"{name} {100 * n / max(1, report.cases):.1f} %" for name, n in report.pairs.items()
    ))  # fmt: skip
    print("class (mutation, ldapdkim, dkimpy, Mail::DKIM)  cases  explanation")
    for key, count in sorted(report.classes.items(), key=lambda item: (-item[1], item[0])):
        why = arc_differential.explanation(key) or "NOT EXPLAINED"
        print(f"{key}  {count}  {why}")
        if args.samples:
            args.samples.mkdir(parents=True, exist_ok=True)
            name = re.sub(r"[^a-z0-9@.-]+", "_", "_".join(key).lower())
            (args.samples / f"{name}.eml").write_bytes(report.samples[key])
    print("ldapdkim's verdicts by mutation (mutation  verdict=cases ...)")
    for kind in sorted({k for k, _ in report.verdicts}):
        counts = {v: n for (k, v), n in sorted(report.verdicts.items()) if k == kind}
        print(f"  {kind:28} " + " ".join(f"{v}={n}" for v, n in counts.items()))
    unexplained = report.unexplained()
    print(f"unexplained classes: {len(unexplained)}")
    print(f"verdicts RFC 8617 does not allow ldapdkim (mutation, verdict): {dict(report.wrong)}")
    return 1 if unexplained or report.wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
