"""Peak memory of ldapdkim while it signs 16 concurrent 20 MB messages.

Starts ``ldapdkim run`` on the embedded default directory (``conf/example.ldif``)
on a free loopback port, reads its idle RSS, drives it with
``tests/harness/milterload.py`` (16 sessions, 20 MB bodies, every reply checked for
a DKIM-Signature), and prints the peak RSS (VmHWM) above idle.

Run from the repository root::

    .venv/bin/python bench/bench_memory.py [--concurrency 16] [--size 20000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import status_kb
from harness import milterload
from harness.common import accepts, free_port, start_and_wait

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--size", type=int, default=20_000_000)
    parser.add_argument("--messages", type=int, default=32)
    args = parser.parse_args()
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="ldapdkim-mem-"))
    config = work / "ldapdkim.conf"
    config.write_text(
        f"Mode s\nSocket inet:{port}@127.0.0.1\nDirectory ldif:{REPO}/conf/example.ldif\n"
        "Canonicalization relaxed/simple\nSyslog no\n"
    )
    milter = start_and_wait(
        [sys.executable, "-m", "ldapdkim", "run", "-c", str(config)],
        name="ldapdkim run",
        until=f"listening on 127.0.0.1:{port}",
        ready=lambda: accepts(f"inet:{port}@127.0.0.1"),
        timeout=15,
    )
    try:
        idle = status_kb([milter.pid], ("VmRSS",))["VmRSS"]
        summary = work / "load.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "harness.milterload",
                "--socket",
                f"inet:{port}@127.0.0.1",
                "-c",
                str(args.concurrency),
                "-n",
                str(args.messages),
                "--size",
                str(args.size),
                "--domain",
                "example.com",
                "--json",
                str(summary),
            ],
            check=True,
            cwd=milterload.TESTS_DIR,
            stdout=subprocess.DEVNULL,
        )
        peak = status_kb([milter.pid], ("VmHWM",))["VmHWM"]
        load = json.loads(summary.read_text())
    finally:
        milter.terminate()
        milter.wait(timeout=30)
    print(
        f"{args.messages} messages of {args.size / 1e6:.0f} MB, {args.concurrency} at a time: "
        f"{load['ok']} signed, failures {load['failures'] or 'none'}"
    )
    print(
        f"idle RSS {idle / 1024:.1f} MB, peak RSS {peak / 1024:.1f} MB, "
        f"peak above idle {(peak - idle) / 1024:.1f} MB"
    )
    return 0 if load["ok"] == args.messages else 1


if __name__ == "__main__":
    sys.exit(main())
