"""The cost of sender authorization once warm: CPU per signed message with and without it.

A throw-away slapd holds one tenant domain (one RSA-2048 key) and the person
who owns the address; ``ldapdkim run`` is started twice against it, once
plain and once with ``SenderLoginBase``/``SenderLoginFilter``/
``SenderLoginAttribute``, and each gets the same authenticated messages
(``{auth_authen}``) through the milter protocol, one after another.  Rounds
alternate (plain, with, with, plain, ...) so that drift hits both alike.
Per variant: milter CPU ms per message (``/proc/PID/stat`` utime+stime over
the timed messages), msg/s, and the LDAP searches the timed messages caused
(``sender_searches`` and ``ldap_searches`` of the SIGUSR1 stats line).

Run from the repository root after ``bash tests/setup.sh``::

    .venv/bin/python bench/bench_sender_auth.py [--messages 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import cpu_seconds
from harness.dnsserver import DnsServer
from harness.mailsite import MailSite, message
from harness.milterclient import Transaction, play
from harness.milterproc import MilterProcess
from harness.provisioning import genkey
from harness.slapd import Slapd, stock_schema_dir


def directory_ldif(base: str) -> str:
    people = f"ou=people,{base}"
    return (
        genkey("a.example", "s1", base, with_domain=True)
        + f"\ndn: {people}\nobjectClass: organizationalUnit\nou: people\n\n"
        f"dn: uid=alice,{people}\nobjectClass: inetOrgPerson\nuid: alice\ncn: alice\n"
        "sn: alice\nmail: alice@a.example\n\n"
    )


def run_round(milter: MilterProcess, count: int) -> tuple[float, float, dict[str, int]]:
    """(CPU ms per message, msg/s, searches during the round)."""
    text = message(subject="bench").replace(b"alice@example.com", b"alice@a.example")
    transaction = Transaction(
        text, mail_from="alice@a.example", mail_macros={"{auth_authen}": "alice"}
    )
    assert milter.process is not None
    before = milter.stats()
    cpu = cpu_seconds(milter.process.pid)
    started = time.perf_counter()
    for _ in range(count):
        answer = play(milter.socket, transaction)
        assert answer.values("DKIM-Signature"), answer
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(milter.process.pid) - cpu
    after = milter.stats()
    assert before is not None and after is not None
    searches = {
        key: int(after[key]) - int(before[key]) for key in ("ldap_searches", "sender_searches")
    }
    return cpu / count * 1000, count / elapsed, searches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ldapdkim-bench-senders-"))
    schema = [stock_schema_dir() / "inetorgperson.ldif"]
    with Slapd(work / "slapd", extra_schemas=schema) as slapd, DnsServer() as dns:
        base = slapd.domains_base
        slapd.ldapadd(directory_ldif(base))
        site = MailSite(slapd, base, dns, work)
        check = [
            f"SenderLoginBase ou=people,{base}",
            "SenderLoginFilter (mail=%s)",
            "SenderLoginAttribute uid",
        ]
        variants = {"without": [], "with": check}
        milters = {}
        for name, lines in variants.items():
            config = site.milter_config(*lines, f"StateDirectory {work}", "LogWhy no")
            milters[name] = MilterProcess(work / name, [*config, "SyslogSuccess no"])
            milters[name].start()
        try:
            for milter in milters.values():
                run_round(milter, 50)  # warm: key parsed, answers cached
            results: dict[str, list[tuple[float, float, dict[str, int]]]] = {n: [] for n in milters}
            order = list(milters)
            for round_number in range(args.rounds):
                for name in order if round_number % 2 == 0 else order[::-1]:
                    results[name].append(run_round(milters[name], args.messages))
        finally:
            for milter in milters.values():
                milter.stop()
    print(f"{args.messages} authenticated messages per round, {args.rounds} rounds, medians")
    print(f"{'variant':<10} {'CPU ms/msg':>11} {'msg/s':>8} {'LDAP searches per round':>24}")
    medians = {}
    for name, rows in results.items():
        cpu = statistics.median(r[0] for r in rows)
        rate = statistics.median(r[1] for r in rows)
        searches = max(sum(r[2].values()) for r in rows)
        medians[name] = cpu
        print(f"{name:<10} {cpu:>11.3f} {rate:>8.0f} {searches:>24}")
    overhead = medians["with"] - medians["without"]
    print(f"overhead of the check: {overhead * 1000:+.0f} µs CPU per message "
          f"({medians['with'] / medians['without']:.2f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
