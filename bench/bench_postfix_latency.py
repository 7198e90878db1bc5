"""What one message costs through a real Postfix with ldapdkim over ``inet:`` and ``local:``.

Starts a throw-away slapd, DNS server and Postfix (the test fixtures), then
sends messages one after another through Postfix with ldapdkim signing, over
a TCP socket and over a Unix socket, and with no milter as the baseline.
Prints the median and p90 of the SMTP transaction time (connect to the reply
to the message).

Run from the repository root after ``bash tests/setup.sh``::

    .venv/bin/python bench/bench_postfix_latency.py [--messages 60]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness.dnsserver import DnsServer
from harness.mailsite import MailSite, message
from harness.milterproc import MilterProcess
from harness.postfix import Postfix
from harness.slapd import Slapd


def _measure(postfix: Postfix, label: str, count: int) -> list[float]:
    times = []
    for i in range(count):
        started = time.perf_counter()
        reply = postfix.send(
            message(subject=f"{label} {i}"), mail_from="a@example.com", rcpt_to=["b@example.net"]
        )
        times.append(time.perf_counter() - started)
        if not reply.accepted:
            raise SystemExit(f"{label}: message {i} refused: {reply}")
    return times[5:]  # the first few warm caches and connections


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=60)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ldapdkim-bench-"))
    rows = []
    with Slapd(tmp / "slapd") as slapd, DnsServer() as dns:
        site = MailSite(slapd, slapd.domains_base, dns, tmp)
        site.add_domains(["example.com"], "rsa-sha256")
        with Postfix(tmp / "postfix") as postfix:
            rows.append(("no milter", _measure(postfix, "baseline", args.messages)))
            for label, unix in (("ldapdkim, inet:", False), ("ldapdkim, local:", True)):
                socket_path = postfix.socket_dir / "ldapdkim.sock" if unix else None
                lines = site.milter_config(
                    "LogWhy no", "SyslogSuccess no", *(["UMask 000"] if unix else [])
                )
                with MilterProcess(
                    tmp / label.replace(" ", ""), lines, unix_socket=socket_path
                ) as milter:
                    postfix.set_milter(milter.postfix_address)
                    postfix.reload()
                    rows.append((label, _measure(postfix, label, args.messages)))
                postfix.set_milter(None)
    print(f"{'path':<18} {'median ms':>10} {'p90 ms':>8}   ({args.messages - 5} messages each)")
    for label, times in rows:
        p90 = sorted(times)[int(0.9 * len(times))]
        print(f"{label:<18} {statistics.median(times) * 1000:>10.1f} {p90 * 1000:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
