"""What ARC sealing costs: signing alone against signing and sealing, at concurrency 4.

A throw-away slapd holds one domain, example.com, with one RSA-2048 key that
both signs DKIM and seals ARC (``dkimSignArcSelector``).  ``ldapdkim run`` is
started twice against it: ``sign`` (Mode s) and ``sign+seal`` (the same, with
``ARCSeal yes``, ``ARCSealHosts 127.0.0.1`` and ``ARCSealDomain
envelope-sender``, so every message gets an ARC set from example.com after
its DKIM-Signature).  :mod:`milterload` drives each with the same messages
through the milter protocol, in rounds that alternate (sign, seal, seal,
sign, ...) so that drift hits both alike.  Per variant: msg/s and the
milter's CPU ms per message (``/proc`` utime+stime over its process tree),
as medians of the rounds, and their ratio.  A sample of sealed messages is
checked with dkimpy's ``arc_verify``; the script exits 1 if a message failed,
lacked its ARC set, or a sampled chain did not pass.

Run from the repository root after ``bash tests/setup.sh``::

    .venv/bin/python bench/bench_arc.py [--messages 2000] [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import dkim
from benchlib import cpu_seconds, render
from harness import milterload
from harness.dnsserver import DnsServer
from harness.mailsite import MailSite
from harness.milterproc import MilterProcess
from harness.provisioning import genkey
from harness.slapd import Slapd

DOMAIN = "example.com"
SELECTOR = "s1"
VARIANTS = {
    "sign": [],
    "sign+seal": ["ARCSeal yes", "ARCSealHosts 127.0.0.1", "ARCSealDomain envelope-sender"],
}


def run_round(
    milter: MilterProcess, count: int, concurrency: int, sample: int = 0
) -> tuple[float, float, milterload.LoadResult]:
    """(msg/s, milter CPU ms per message, the driver's result) for ``count`` messages."""
    assert milter.process is not None
    options = milterload.LoadOptions(
        socket=milter.socket,
        concurrency=concurrency,
        count=count,
        body_size=2048,
        domain=DOMAIN,
        sample=sample,
    )
    before = cpu_seconds(milter.process.pid)
    result = milterload.run_load(options)
    cpu = cpu_seconds(milter.process.pid) - before
    return result.rate, cpu / max(result.messages, 1) * 1000, result


def sealed_chains_pass(samples: list[bytes], keys: dict[str, bytes]) -> list[str]:
    """The problems of the sampled sealed messages: no ARC set, or dkimpy's verdict."""

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes:
        return keys.get(name.decode().rstrip("."), b"")

    problems = []
    for message in samples:
        if b"ARC-Seal:" not in message:
            problems.append("a message without ARC-Seal")
            continue
        cv, _, reason = dkim.arc_verify(message, dnsfunc=dnsfunc)
        if cv != b"pass":
            problems.append(f"dkimpy arc_verify: {cv!r} {reason}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="per round and variant")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="Workers of each milter")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 100 messages, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.rounds = 100, 2
    work = Path(tempfile.mkdtemp(prefix="ldapdkim-bench-arc-"))
    failed: list[str] = []
    with Slapd(work / "slapd") as slapd, DnsServer() as dns:
        base = slapd.domains_base
        arc = ["--arc-selector", SELECTOR]
        slapd.ldapadd(genkey(DOMAIN, SELECTOR, base, with_domain=True, delegation=arc))
        site = MailSite(slapd, base, dns, work)
        site.publish_keys()
        keys = {name: "".join(texts).encode() for name, texts in dns.records().items()}
        milters = {}
        for name, lines in VARIANTS.items():
            config = site.milter_config(*lines, "Mode s", f"Workers {args.workers}")
            config += ["LogWhy no", "SyslogSuccess no", f"StateDirectory {work / name}"]
            milters[name] = MilterProcess(work / name, config)
            milters[name].start()
        rows: dict[str, list[tuple[float, float]]] = {name: [] for name in milters}
        try:
            for name, milter in milters.items():  # warm: key parsed, answers cached
                *_, result = run_round(milter, 50, args.concurrency, sample=8)
                if name == "sign+seal":
                    failed += sealed_chains_pass(result.samples, keys)
            order = list(milters)
            for number in range(args.rounds):
                for name in order if number % 2 == 0 else order[::-1]:
                    rate, cpu, result = run_round(milters[name], args.messages, args.concurrency)
                    if result.failed:
                        failed.append(f"{name}: {result.failures} {result.errors[:2]}")
                    rows[name].append((rate, cpu))
        finally:
            for milter in milters.values():
                milter.stop()
    table = []
    medians = {}
    for name, measured in rows.items():
        rate = statistics.median(r for r, _ in measured)
        cpu = statistics.median(c for _, c in measured)
        medians[name] = (rate, cpu)
        table.append({"variant": name, "rate": rate, "cpu": cpu})
    print(
        f"{args.messages} messages of 2 KiB per round, c={args.concurrency}, "
        f"Workers {args.workers}, {args.rounds} rounds interleaved, medians"
    )
    columns = [
        ("variant", "{variant:<9}"),
        ("msg/s", "{rate:>7.0f}"),
        ("CPU ms/msg", "{cpu:>10.3f}"),
    ]
    print(render(columns, table))
    (sign_rate, sign_cpu), (seal_rate, seal_cpu) = medians["sign"], medians["sign+seal"]
    print(
        f"sealing: {seal_cpu / sign_cpu:.2f}x the CPU per message "
        f"({(seal_cpu - sign_cpu) * 1000:+.0f} µs), {seal_rate / sign_rate:.2f}x the msg/s"
    )
    if failed:
        print("FAILED:\n  " + "\n  ".join(failed))
        return 1
    print("sampled sealed messages: ARC chain passes with dkimpy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
