"""``ldapdkim testkey``: check every key in the directory against DNS and good practice."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from ldapdkim.cli import options
from ldapdkim.cli.options import Parents, Subparsers
from ldapdkim.directory.resolution import open_directory
from ldapdkim.publish.audit import KeyReport, Level, audit
from ldapdkim.signing.dnslookup import TxtLookup


def add_parser(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser(
        "testkey",
        parents=[parents.with_config],
        help="check every key: DNS against the directory, size, age, state",
        description="Exits 1 when any key or domain is bad: an active key that DNS does not "
        "publish or publishes differently, a domain without a signing key, an RSA key under "
        "1024 bits, a DNS error.  Weak keys and revoked keys still in DNS are warnings.",
    )
    p.add_argument("-d", "--domain", help="only this domain's keys")
    p.add_argument(
        "--json", action="store_true", help="one JSON object per line and key, not a table"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = options.load(args)
    domain = options.domain_arg(args.domain) if args.domain else None
    lookup = TxtLookup(settings.nameservers, timeout=settings.dns_timeout)
    now = datetime.now(UTC)
    progress = _progress("testkey: DNS answers") if sys.stderr.isatty() else None
    with open_directory(settings) as directory:
        reports = audit(directory, lookup, now=now, domain=domain, progress=progress)
    if args.json:
        for report in reports:
            print(json.dumps(report.as_json(now)))
    else:
        _print_reports(reports, now)
    counts = {level: sum(r.verdict is level for r in reports) for level in Level}
    print(
        f"ldapdkim: {len(reports)} checked: "
        + ", ".join(f"{counts[level]} {level.label}" for level in reversed(Level)),
        file=sys.stderr,
    )
    return 1 if counts[Level.BAD] else 0


def _print_reports(reports: Sequence[KeyReport], now: datetime) -> None:
    """A table, one row per key and domain name, each row's findings indented below it."""
    head = ("DOMAIN", "SELECTOR", "ALG", "STATE", "BITS", "AGE", "DNS", "VERDICT")
    rows: list[tuple[str, ...]] = []
    for r in reports:
        age = r.age(now)
        rows.append(
            (
                r.domain,
                r.selector or "-",
                r.algorithm.key_type if r.algorithm else "-",
                r.state.value if r.state else "-",
                str(r.bits) if r.bits else "-",
                f"{age.days}d" if age is not None else "-",
                r.dns.status.value if r.dns else "-",
                r.verdict.label,
            )
        )
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
    for report, row in zip(reports, rows, strict=True):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        for finding in report.findings:
            print(f"    {finding.level.label}: {finding.text}")


def _progress(label: str) -> Callable[[int, int], None]:
    """A counter redrawn on one stderr line, at most ten times a second."""
    last = 0.0

    def show(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if done < total and now - last < 0.1:
            return
        last = now
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\r{label} {done}/{total}{end}")
        sys.stderr.flush()

    return show
