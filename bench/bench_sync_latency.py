"""How soon a directory change signs mail: LDAP modify -> first message signed the new way.

Starts a throw-away slapd (the test fixture, with syncprov) and ``ldapdkim run``
(``DirectorySync auto``: the content-sync replica), provisions example.com
with two Ed25519 keys, one active and one pending, and then, per sample:

1. sends the modify that makes the pending key active (python-ldap, as the
   admin, asynchronously) and notes the time just before sending it;
2. meanwhile sends messages to the milter over one milter session in a tight
   loop (tests/harness/milterload.py's protocol client) until a DKIM-Signature
   carries the new key's ``s=``; the sample is the time from step 1 to the
   end-of-message reply of that message;
3. retires the old key (not timed) and waits until it no longer signs, so
   the next sample flips the roles.

Prints p50/p90/p99/max over the samples and the message round trip that
bounds the resolution.

With ``--workers N`` the milter runs N worker processes over one replica
database, written by one of them; ``--sessions`` sessions (default 4 per
worker) are opened, spread over the workers by the kernel (``ss`` tells how
many workers they reached), and a sample ends when every session has signed
with the new key: the change has reached every worker's signing.  Run from
the repository root::

    .venv/bin/python bench/bench_sync_latency.py [--samples 100] [--workers 2]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import ldap
from harness import milterload as ml
from harness import milterproto as mp
from harness.milterproc import MilterProcess
from harness.provisioning import genkey, without_version_line
from harness.slapd import Slapd

_SELECTOR = re.compile(rb"\bs=([A-Za-z0-9._-]+)")


class Sender:
    """One milter session that sends the benchmark message again and again."""

    def __init__(self, socket_spec: str) -> None:
        self.options = ml.LoadOptions(socket=socket_spec, body_size=512)
        self.session = ml.open_session(mp.MilterAddress.parse(socket_spec), self.options)
        self.plan = ml.MessagePlan(
            ml.make_message("example.com", 512), self.session.negotiated, self.options
        )
        self.sent = 0

    def selectors(self) -> set[str]:
        """Send one message; the selectors of the signatures the milter added."""
        if self.sent:
            self.session.send(mp.packet(mp.SMFIC_ABORT))
        self.sent += 1
        outcome = ml.send_message(self.session, self.plan, f"B{self.sent:08X}", self.sent == 1)
        ml.judge(outcome, require_signature=False)
        found = set()
        for command, data in outcome.modifications:
            if command in (mp.SMFIR_INSHEADER, mp.SMFIR_ADDHEADER) and b"DKIM-Signature" in data:
                match = _SELECTOR.search(data)
                if match:
                    found.add(match.group(1).decode())
        return found


def workers_reached(port: int) -> set[int]:
    """The processes holding the server side of the milter sessions on ``port``."""
    listing = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", listing)}


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1, help="the milter's Workers")
    parser.add_argument("--sessions", type=int, help="milter sessions (default: 4 per worker)")
    args = parser.parse_args()
    sessions = args.sessions or (1 if args.workers == 1 else 4 * args.workers)
    tmp = Path(tempfile.mkdtemp(prefix="ldapdkim-sync-bench-"))
    with Slapd(tmp / "slapd") as slapd:
        base = slapd.domains_base
        domain_dn = f"ou=example.com,{base}"
        ldif = genkey("example.com", "k0", base, algorithm="ed25519-sha256", with_domain=True)
        ldif += without_version_line(
            genkey(
                "example.com",
                "k1",
                base,
                algorithm="ed25519-sha256",
                state="pending",
                domain_dn=domain_dn,
            )
        )
        slapd.ldapadd(ldif)
        lines = [
            "Mode s",
            f"Workers {args.workers}",
            f"Directory {slapd.ldap_uri}/{base}",
            f"LDAPBindUser {slapd.milter_dn}",
            f"LDAPBindPassword {slapd.milter_pw}",
            "InternalHosts 127.0.0.1",
            f"StateDirectory {tmp}",
            "LogWhy no",
            "SyslogSuccess no",
        ]
        admin = slapd.connect(slapd.admin_dn)
        with MilterProcess(tmp / "milter", lines) as milter:
            senders = [Sender(milter.socket) for _ in range(sessions)]
            for sender in senders:
                for _ in range(20):  # warm up: the replica's first refresh, key parsing
                    sender.selectors()
            reached = workers_reached(milter.port) if milter.port else set()
            active, pending = "k0", "k1"
            samples: list[float] = []
            messages: list[int] = []
            round_trips: list[float] = []
            for _ in range(args.samples):
                dn = f"dkimSignSelector={pending},{domain_dn}"
                change = [(ldap.MOD_REPLACE, "dkimSignKeyState", [b"active"])]
                started = time.perf_counter()
                msgid = admin.modify_ext(dn, change)
                count = 0
                waiting = list(senders)
                while waiting:
                    for sender in list(waiting):
                        before = time.perf_counter()
                        seen = sender.selectors()
                        now = time.perf_counter()
                        round_trips.append(now - before)
                        count += 1
                        if pending in seen:
                            waiting.remove(sender)
                    if now - started > 10:
                        raise SystemExit(f"{pending} did not sign within 10 s:\n{milter.log()}")
                samples.append(now - started)
                messages.append(count)
                admin.result(msgid)
                old = f"dkimSignSelector={active},{domain_dn}"
                admin.modify_s(old, [(ldap.MOD_REPLACE, "dkimSignKeyState", [b"pending"])])
                for sender in senders:
                    while active in sender.selectors():
                        pass
                active, pending = pending, active
            for sender in senders:
                sender.session.close(polite=True)
        admin.unbind_s()
    ordered = sorted(samples)
    trips = sorted(round_trips)
    ms = 1000.0
    print(
        f"samples: {len(samples)} (modify of dkimSignKeyState -> first message signed with it "
        f"on every one of {sessions} sessions; Workers {args.workers}, sessions served by "
        f"{len(reached)} processes)"
    )
    print("| statistic | ms |")
    print("| --- | --- |")
    for label, value in (
        ("p50", _pct(ordered, 0.50)),
        ("p90", _pct(ordered, 0.90)),
        ("p99", _pct(ordered, 0.99)),
        ("max", ordered[-1]),
        ("mean", statistics.fmean(ordered)),
    ):
        print(f"| {label} | {value * ms:.2f} |")
    print(
        f"| message round trip p50 (resolution) | {_pct(trips, 0.5) * ms:.2f} |\n"
        f"| messages sent until the change showed, median | {statistics.median(messages):g} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
