"""What a real Postfix and Sendmail do over ``inet:`` with and without ``SMFIP_NR_*``.

For each MTA, sends messages one after another through it (one SMTP session
each, from an internal client, so ldapdkim signs) with these milters behind
it, and prints the median and p90 of the SMTP transaction time (connect to
the reply to the message) and the milter's CPU per message:

* ``null`` (:mod:`harness.nullmilter`, asyncio, TCP_NODELAY) over TCP
  answering every step; the same skipping the replies to DATA, the header
  fields, end of header and the body (``SMFIP_NR_*``, as on a Unix socket);
  the same with TCP_QUICKACK after each read (the milter acknowledges at
  once); and on a Unix socket with ``SMFIP_NR_*``;
* ``pynull`` (:mod:`harness.pynullmilter`, pymilter: ldapdkim's callbacks and
  negotiation, doing nothing) over TCP and on a Unix socket;
* ``ldapdkim`` signing, over TCP and on a Unix socket.

The MTA's own time is in every row; the rows differ only in the milter.
With ``--route-quickack`` (root) the whole run happens in a network namespace
of its own whose loopback routes have ``quickack 1``: every segment is
acknowledged at once, as ``ip route change ... quickack 1`` makes it on a
site's route to its MTA (docs/mta.md).

Run from the repository root after ``bash tests/setup.sh``::

    .venv/bin/python bench/bench_mta_tcp.py [--messages 60] [--mtas postfix,sendmail]
        [--route-quickack]          # about 2 minutes
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from benchlib import cpu_seconds
from harness import milterproto as mp
from harness.common import accepts, free_port, start_and_wait, stop_process
from harness.dnsserver import DnsServer
from harness.mailsite import MailSite, message
from harness.milterload import TESTS_DIR
from harness.milterproc import MilterProcess
from harness.nullmilter import DEFAULT_PROTOCOL, UNIX_NO_REPLIES
from harness.postfix import Postfix
from harness.sendmail import Sendmail
from harness.slapd import Slapd


@dataclass(frozen=True)
class MilterKind:
    label: str
    unix: bool
    start: Callable[[str, Path], contextlib.AbstractContextManager[int]]
    """(socket spec, work directory) -> context giving the milter's pid."""


@contextlib.contextmanager
def _python_milter(argv: list[str], spec: str, log: Path) -> Iterator[int]:
    process = start_and_wait(
        [sys.executable, "-m", *argv, "--socket", spec],
        name=argv[0],
        until=f"listening on {spec}",
        ready=lambda: accepts(spec),
        timeout=10,
        cwd=TESTS_DIR,
        log_path=log,
    )
    try:
        yield process.pid
    finally:
        stop_process(process, 5)


def null_milter(*args: str) -> Callable[[str, Path], contextlib.AbstractContextManager[int]]:
    return lambda spec, work: _python_milter(["harness.nullmilter", *args], spec, work / "log")


def pynull_milter() -> Callable[[str, Path], contextlib.AbstractContextManager[int]]:
    return lambda spec, work: _python_milter(["harness.pynullmilter"], spec, work / "log")


def ldapdkim_milter(
    site: MailSite, *config: str
) -> Callable[[str, Path], contextlib.AbstractContextManager[int]]:
    @contextlib.contextmanager
    def start(spec: str, work: Path) -> Iterator[int]:
        address = mp.MilterAddress.parse(spec)
        lines = site.milter_config("LogWhy no", "SyslogSuccess no", "UMask 000", *config)
        milter = MilterProcess(
            work, lines, unix_socket=Path(address.path) if not address.is_tcp else None
        )
        if address.is_tcp:  # the MTA's configuration names this port
            milter.socket = spec
            milter.write_config(lines)
        with milter:
            assert milter.process is not None
            yield milter.process.pid

    return start


def kinds(site: MailSite) -> list[MilterKind]:
    nr = f"0x{DEFAULT_PROTOCOL | UNIX_NO_REPLIES:x}"
    return [
        MilterKind("null inet, replies", False, null_milter()),
        MilterKind("null inet, NR", False, null_milter("--protocol", nr)),
        MilterKind("null inet, NR+QA", False, null_milter("--protocol", nr, "--quickack")),
        MilterKind("null unix, NR", True, null_milter()),
        MilterKind("pynull inet", False, pynull_milter()),
        MilterKind(
            "pynull inet, NR",
            False,
            lambda s, w: _python_milter(["harness.pynullmilter", "--no-reply", "on"], s, w / "log"),
        ),
        MilterKind("pynull unix", True, pynull_milter()),
        MilterKind("ldapdkim inet", False, ldapdkim_milter(site)),
        MilterKind("ldapdkim inet, NR", False, ldapdkim_milter(site, "NoReplyOverTCP yes")),
        MilterKind("ldapdkim unix", True, ldapdkim_milter(site)),
    ]


def measure(send: Callable[[bytes], bool], pid: int, label: str, count: int) -> dict[str, float]:
    for i in range(5):  # warm caches and connections
        send(message(subject=f"{label} warm {i}"))
    times = []
    cpu_before = cpu_seconds(pid)
    for i in range(count):
        started = time.perf_counter()
        if not send(message(subject=f"{label} {i}")):
            raise SystemExit(f"{label}: message {i} refused")
        times.append(time.perf_counter() - started)
    cpu = cpu_seconds(pid) - cpu_before
    times.sort()
    return {
        "median_ms": statistics.median(times) * 1000,
        "p90_ms": times[int(0.9 * len(times))] * 1000,
        "cpu_ms": cpu * 1000 / count,
    }


def run_postfix(tmp: Path, site: MailSite, count: int) -> list[tuple[str, dict[str, float]]]:
    rows = []
    port = free_port()
    with Postfix(tmp / "postfix") as postfix:

        def send(msg: bytes) -> bool:
            return postfix.send(msg, mail_from="a@example.com", rcpt_to=["b@example.net"]).accepted

        for kind in kinds(site):
            work = tmp / "pf" / kind.label.replace(" ", "").replace(",", "_")
            work.mkdir(parents=True)
            path = postfix.socket_dir / "m.sock"
            spec = f"unix:{path}" if kind.unix else f"inet:{port}@127.0.0.1"
            with kind.start(spec, work) as pid:
                if kind.unix:
                    path.chmod(0o666)
                postfix.set_milter(f"unix:{path}" if kind.unix else f"inet:127.0.0.1:{port}")
                postfix.reload()
                rows.append((kind.label, measure(send, pid, kind.label, count)))
    return rows


def run_sendmail(tmp: Path, site: MailSite, count: int) -> list[tuple[str, dict[str, float]]]:
    rows = []
    port = free_port()
    path = tmp / "sm-sockets" / "m.sock"
    path.parent.mkdir(parents=True)
    for unix in (False, True):
        spec = f"unix:{path}" if unix else f"inet:{port}@127.0.0.1"
        with Sendmail(tmp / f"sendmail-{'unix' if unix else 'inet'}", milter=spec) as sendmail:

            def send(msg: bytes, sendmail: Sendmail = sendmail) -> bool:
                reply = sendmail.send(msg, mail_from="a@example.com", rcpt_to="b@example.net")
                return reply.accepted

            for kind in kinds(site):
                if kind.unix != unix:
                    continue
                work = tmp / "sm" / kind.label.replace(" ", "").replace(",", "_")
                work.mkdir(parents=True)
                with kind.start(spec, work) as pid:
                    time.sleep(1.0)  # Sendmail retries a milter it found down after a while
                    rows.append((kind.label, measure(send, pid, kind.label, count)))
    return rows


QUICKACK_ROUTES = (
    "local 127.0.0.0/8 dev lo proto kernel scope host src 127.0.0.1 table local",
    "local 127.0.0.1 dev lo proto kernel scope host src 127.0.0.1 table local",
)
"""The loopback routes of a new network namespace, changed to acknowledge at once."""


def in_quickack_namespace(argv: list[str]) -> int:
    """Run this script again (without ``--route-quickack``) in a new network namespace
    whose loopback routes have ``quickack 1``."""
    setup = ["ip link set lo up", *(f"ip route change {r} quickack 1" for r in QUICKACK_ROUTES)]
    rest = " ".join(shlex.quote(a) for a in [sys.executable, __file__, *argv])
    script = " && ".join(
        [*setup, "ip route show table local | grep -c 'quickack 1'", "exec " + rest]
    )
    return subprocess.run(["unshare", "--net", "sh", "-c", script], check=False).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=60)
    parser.add_argument("--mtas", default="postfix,sendmail")
    parser.add_argument(
        "--route-quickack",
        action="store_true",
        help="run in a network namespace whose loopback routes have quickack 1 (root)",
    )
    args = parser.parse_args()
    if args.route_quickack:
        return in_quickack_namespace([a for a in sys.argv[1:] if a != "--route-quickack"])
    tmp = Path(tempfile.mkdtemp(prefix="ldapdkim-bench-"))
    results = {}
    with Slapd(tmp / "slapd") as slapd, DnsServer() as dns:
        site = MailSite(slapd, slapd.domains_base, dns, tmp)
        site.add_domains(["example.com"], "rsa-sha256")
        for mta in args.mtas.split(","):
            runner = {"postfix": run_postfix, "sendmail": run_sendmail}[mta]
            results[mta] = runner(tmp / mta, site, args.messages)
    for mta, rows in results.items():
        print(f"\n{mta}: {args.messages} messages each, one SMTP session each")
        print(f"{'milter':<20} {'median ms':>10} {'p90 ms':>8} {'CPU ms/msg':>11}")
        for label, r in rows:
            print(f"{label:<20} {r['median_ms']:>10.1f} {r['p90_ms']:>8.1f} {r['cpu_ms']:>11.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
