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
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import milterload

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--size", type=int, default=20_000_000)
    parser.add_argument("--messages", type=int, default=32)
    args = parser.parse_args()
    port = _free_port()
    work = Path(tempfile.mkdtemp(prefix="ldapdkim-mem-"))
    config = work / "ldapdkim.conf"
    config.write_text(
        f"Mode s\nSocket inet:{port}@127.0.0.1\nDirectory ldif:{REPO}/conf/example.ldif\n"
        "Canonicalization relaxed/simple\nSyslog no\n"
    )
    milter = subprocess.Popen(
        [sys.executable, "-m", "ldapdkim", "run", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        idle = _kib(milter.pid, "VmRSS")
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
        peak = _kib(milter.pid, "VmHWM")
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
