#!/usr/bin/env python3
"""The long fuzz run: the properties of tests/unit/test_verifier_fuzz.py, a million cases.

    .venv/bin/python bench/fuzz_verifier.py [--cases 1000000]

Runs each of the file's generated-case properties (five) with an equal
share of ``--cases`` through Hypothesis, then prints the cases run, the time
taken and pytest's verdict.  Any case that fails is printed by Hypothesis in
its smallest form: make it a regression test before fixing it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROPERTIES = 5
"""The properties of the file that take generated cases (the sixth test takes none)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1_000_000, help="cases in all")
    args = parser.parse_args()
    per_property = max(1, args.cases // PROPERTIES)
    env = {**os.environ, "LDAPDKIM_FUZZ_EXAMPLES": str(per_property)}
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/unit/test_verifier_fuzz.py"],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else "(no output)"
    failures = len(re.findall(r"^FAILED ", run.stdout, re.MULTILINE))
    print(
        f"cases: {per_property * PROPERTIES} ({per_property} per property, {PROPERTIES} properties)"
    )
    print(f"time: {elapsed:.0f} s ({elapsed / (per_property * PROPERTIES) * 1e6:.0f} us per case)")
    print(f"properties failing: {failures}")
    print(f"pytest: {summary}")
    if run.returncode:
        print(run.stdout[-20000:])
    return run.returncode


if __name__ == "__main__":
    raise SystemExit(main())
