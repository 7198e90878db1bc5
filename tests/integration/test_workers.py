"""``Workers 2``: two milter processes on one socket behind Postfix, kept by a supervisor.

The supervisor opens the socket and forks the workers; each signs on its own.
Both read one replica database; one of them writes it, and when that one is
killed, under load or halfway through a refresh, another takes over from the
committed cookie.
A worker killed with SIGKILL is replaced and mail goes on being signed;
SIGHUP and SIGUSR1 reach both workers; SIGTERM stops all of them; systemd
hears READY=1 from the supervisor once both workers have their directory view.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lmdb
import pytest
from harness import milterload
from harness.common import free_port, wait_for
from harness.dnsserver import DnsServer
from harness.mailsite import MailSite, message
from harness.milterproc import MilterProcess
from harness.postfix import Postfix, header_values, require_postfix
from harness.provisioning import without_version_line
from harness.slapd import Slapd

from ldapdkim import keys
from ldapdkim.directory import ldifout
from ldapdkim.model import Algorithm


def children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


@dataclass
class Pool:
    milter: MilterProcess
    postfix: Postfix
    notify: socket.socket
    metrics_port: int
    site: MailSite
    sent: int = 0

    def scrape(self, path: str) -> tuple[int, str]:
        try:
            url = f"http://127.0.0.1:{self.metrics_port}{path}"
            with urllib.request.urlopen(url, timeout=5) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as err:
            with err:
                return err.code, err.read().decode()

    def signed_total(self) -> float:
        _, text = self.scrape("/metrics")
        found = re.search(r"^ldapdkim_messages_signed_total (\S+)$", text, re.M)
        assert found is not None, text
        return float(found.group(1))

    @property
    def pid(self) -> int:
        assert self.milter.process is not None
        return self.milter.process.pid

    def workers(self) -> set[int]:
        return children(self.pid)

    def writers(self) -> list[int]:
        """The workers that took the replica's writer role, in order."""
        return self.writers_in(self.milter.log())

    @staticmethod
    def writers_in(log: str) -> list[int]:
        pattern = r"ldapdkim\[(\d+)\]: INFO: directory: this process keeps"
        return [int(p) for p in re.findall(pattern, log)]

    def send_signed(self, domain: str = "example.com") -> None:
        self.sent += 1
        subject = f"pool {self.sent}"
        reply = self.postfix.send(
            message(domain, subject=subject),
            mail_from=f"alice@{domain}",
            rcpt_to=["bob@example.net"],
        )
        assert reply.accepted, (reply, self.milter.log())
        delivered = self.postfix.wait_for_message(subject)
        signatures = header_values(delivered, "DKIM-Signature")
        assert len(signatures) == 1, self.milter.log()
        assert f"d={domain};" in signatures[0].replace(" ", ""), signatures


@pytest.fixture
def pool(slapd: Slapd, ldap_base: str, tmp_path: Path) -> Iterator[Pool]:
    require_postfix()
    notify_path = tmp_path / "notify"
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify,
        DnsServer() as dns,
        Postfix(tmp_path / "postfix") as postfix,
    ):
        notify.bind(str(notify_path))
        notify.settimeout(20)
        site = MailSite(slapd, ldap_base, dns, tmp_path)
        site.add_domains(["example.com"], "rsa-sha256")
        metrics_port = free_port()
        lines = site.milter_config(
            "Workers 2",
            f"StateDirectory {tmp_path}",
            f"MetricsSocket inet:{metrics_port}@127.0.0.1",
        )
        milter = MilterProcess(tmp_path / "milter", lines, env={"NOTIFY_SOCKET": str(notify_path)})
        with milter:
            postfix.set_milter(milter.postfix_address)
            postfix.reload()
            found = Pool(milter, postfix, notify, metrics_port, site)
            wait_for("two workers", lambda: len(found.workers()) == 2)
            yield found
            assert "Traceback" not in milter.log(), milter.log()


def test_the_supervisor_says_ready_once_both_workers_are(pool: Pool) -> None:
    heard: list[str] = []
    while not heard or "READY=1" not in heard[-1]:
        heard.append(pool.notify.recv(4096).decode())
    assert heard[-1] == "READY=1\nSTATUS=2 workers serving", heard
    # One replica database: one worker keeps it current, both read it.
    assert pool.milter.log().count("directory: content sync") == 1
    assert len(pool.writers()) == 1 and pool.writers()[0] in pool.workers()


def test_when_the_writer_is_killed_another_worker_takes_over_the_replica(
    pool: Pool, tmp_path: Path
) -> None:
    pool.send_signed()
    (writer,) = pool.writers()
    os.kill(writer, signal.SIGKILL)
    wait_for("another writer", lambda: len(pool.writers()) == 2)
    assert pool.writers()[1] != writer
    wait_for("resumed", lambda: "resuming from the committed cookie" in pool.milter.log())
    # A change made after the kill reaches the database both workers read, by the new
    # writer, within seconds (content sync commits it 0.1 s after it arrives; a message
    # sent before that is rightly not signed) ...
    entries, _ = _replica(tmp_path)
    pool.site.add_domains(["late.example"], "ed25519-sha256")  # a domain and its key
    wait_for("the change in the replica", lambda: _replica(tmp_path)[0] == entries + 2, 5)
    # ... and from there both workers' signing.
    for _ in range(4):
        pool.send_signed("late.example")


def test_a_killed_worker_is_replaced_and_mail_stays_signed(pool: Pool) -> None:
    for _ in range(4):
        pool.send_signed()
    before = pool.workers()
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_for("a new worker", lambda: len(pool.workers()) == 2 and victim not in pool.workers())
    assert re.search(
        rf"worker \d \(pid {victim}\) ended with signal 9; starting another", pool.milter.log()
    ), pool.milter.log()
    for _ in range(4):
        pool.send_signed()


def test_reload_and_counters_reach_every_worker_and_stop_ends_them_all(pool: Pool) -> None:
    for _ in range(3):
        pool.send_signed()
    workers = pool.workers()
    pool.milter.signal(signal.SIGHUP)
    wait_for("two reloads", lambda: pool.milter.log().count("configuration reloaded") == 2)
    pool.milter.signal(signal.SIGUSR1)
    wait_for("two stats lines", lambda: pool.milter.log().count("stats: ") == 2)
    stats_pids = set(re.findall(r"ldapdkim\[(\d+)\]: INFO: stats: ", pool.milter.log()))
    assert {int(p) for p in stats_pids} == workers
    wait_for("the sum", lambda: "stats (2 of 2 workers): " in pool.milter.log())
    each = [int(n) for n in re.findall(r"INFO: stats: .*?\bsigned=(\d+)", pool.milter.log())]
    total = re.search(r"stats \(2 of 2 workers\): .*?\bsigned=(\d+)", pool.milter.log())
    assert total is not None and int(total.group(1)) == sum(each)
    assert pool.milter.process is not None
    pool.milter.signal(signal.SIGTERM)
    assert pool.milter.process.wait(timeout=30) == 0, pool.milter.log()
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)


def test_metrics_add_up_across_workers_and_outlive_a_dead_one(pool: Pool) -> None:
    wait_for("healthy", lambda: pool.scrape("/healthz")[0] == 200)
    assert pool.scrape("/healthz")[1].startswith("ok: 2 workers serving"), pool.scrape("/healthz")
    for _ in range(6):
        pool.send_signed()
    assert pool.signed_total() == 6
    os.kill(min(pool.workers()), signal.SIGKILL)
    wait_for("a new worker", lambda: len(pool.workers()) == 2)
    assert pool.signed_total() == 6  # what the dead worker counted still counts
    wait_for("healthy again", lambda: pool.scrape("/healthz")[0] == 200)
    pool.send_signed()
    assert pool.signed_total() == 7


@pytest.mark.parametrize("victim", ["reader", "writer"])
def test_killing_a_worker_under_load_loses_nothing(pool: Pool, victim: str) -> None:
    """16 senders, 400 messages through Postfix (milter_default_action tempfail); a worker
    is killed with SIGKILL halfway: one that only reads the replica, or the one that
    writes it.  Sessions it had in flight are tempfailed and sent again, as an MTA
    would; every message arrives, signed, once."""
    total, senders = 400, 16
    outcomes: dict[str, int] = {"accepted": 0, "tempfailed": 0}
    lock = threading.Lock()
    killed = threading.Event()

    def sender(number: int) -> None:
        for i in range(total // senders):
            subject = f"load {number}-{i}"
            for _attempt in range(20):
                reply = pool.postfix.send(
                    message(subject=subject),
                    mail_from="alice@example.com",
                    rcpt_to=["bob@example.net"],
                )
                with lock:
                    outcomes["accepted" if reply.accepted else "tempfailed"] += 1
                    if outcomes["accepted"] == total // 2 and not killed.is_set():
                        killed.set()
                        (writer,) = pool.writers()
                        readers = pool.workers() - {writer}
                        os.kill(writer if victim == "writer" else min(readers), signal.SIGKILL)
                if reply.accepted:
                    break
                assert 400 <= reply.code < 500 or reply.code == 0, reply
                time.sleep(0.2)
            else:
                raise AssertionError(f"{subject} never accepted")

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert killed.is_set() and outcomes["accepted"] == total, outcomes
    wait_for("every message delivered", lambda: len(pool.postfix.delivered) >= total, 120)
    delivered = pool.postfix.delivered
    subjects = [header_values(m, "Subject")[0] for m in delivered]
    assert sorted(subjects) == sorted(
        f"load {n}-{i}" for n in range(senders) for i in range(total // senders)
    )
    unsigned = [
        s
        for s, m in zip(subjects, delivered, strict=True)
        if not header_values(m, "DKIM-Signature")
    ]
    assert unsigned == [], (unsigned, outcomes)
    print(f"killed the {victim} under load: {outcomes}")


@pytest.mark.parametrize("cpus", ["0", None], ids=["taskset-one-cpu", "every-cpu"])
def test_workers_auto_runs_one_worker_per_cpu_the_milter_may_use(
    slapd: Slapd, ldap_base: str, tmp_path: Path, cpus: str | None
) -> None:
    """The default: one worker per CPU in the affinity mask; on one CPU, no supervisor."""
    with DnsServer() as dns:
        site = MailSite(slapd, ldap_base, dns, tmp_path)
        site.add_domains(["example.com"], "rsa-sha256")
        program = ["taskset", "-c", cpus, sys.executable, "-m", "ldapdkim"] if cpus else None
        expected = 1 if cpus else len(os.sched_getaffinity(0))
        lines = site.milter_config("Workers auto", f"StateDirectory {tmp_path}")
        with MilterProcess(tmp_path / "milter", lines, program=program) as milter:
            assert milter.process is not None
            pid = milter.process.pid  # taskset execs the milter in its own process
            if expected == 1:
                assert children(pid) == set(), milter.log()
            else:
                wait_for(f"{expected} workers", lambda: len(children(pid)) == expected)


def _replica(state: Path) -> tuple[int, str | None]:
    """(entries, cookie) of the replica database, read as any process reads it."""
    env = lmdb.open(str(state / "replica.mdb"), subdir=False, readonly=True, max_dbs=8)
    try:
        with env.begin() as txn:
            entries = txn.stat(env.open_db(b"entries", txn=txn, create=False))["entries"]
            cookie = txn.get(b"cookie", db=env.open_db(b"meta", txn=txn, create=False))
            return entries, None if cookie is None else bytes(cookie).decode()
    finally:
        env.close()


def _signs(milter: MilterProcess, domain: str) -> bool:
    options = milterload.LoadOptions(socket=milter.socket, count=1, domain=domain, timeout=10)
    return milterload.run_load(options).ok == 1


def test_the_writer_killed_in_the_middle_of_a_refresh_loses_nothing(tmp_path: Path) -> None:
    """kill -9 of the worker writing a refresh that resumes from the cookie, halfway: the
    database keeps what was committed and the cookie before the refresh, the other worker
    signs from it meanwhile, and the next writer resumes from that cookie and completes."""
    bulk = 10_000  # domains added while the milter was away: 20 000 entries, 4 commits
    state = tmp_path / "state"
    state.mkdir()
    with Slapd(tmp_path / "slapd") as slapd, DnsServer() as dns:
        site = MailSite(slapd, slapd.domains_base, dns, tmp_path)
        site.add_domains(["example.com"], "rsa-sha256")
        lines = site.milter_config("Workers 2", "DirectorySync yes", f"StateDirectory {state}")
        with MilterProcess(tmp_path / "first", lines) as milter:
            wait_for("a signature", lambda: _signs(milter, "example.com"))
        before, cookie = _replica(state)
        assert cookie is not None
        records = []
        for number in range(bulk):
            dn, attrs = ldifout.domain_record(f"d{number}.bulk.test", slapd.domains_base)
            key = keys.generate(Algorithm.ED25519_SHA256)
            records += [(dn, attrs), ldifout.key_record(dn, "e1", key)]
        slapd.ldapadd(without_version_line(ldifout.render(records)))

        with MilterProcess(tmp_path / "second", lines) as milter:
            wait_for("the first commit of the refresh", lambda: _replica(state)[0] > before)
            slapd.pause()
            try:
                [writer] = Pool.writers_in(milter.log())
                os.kill(writer, signal.SIGKILL)
                entries, kept_cookie = _replica(state)
                assert before < entries < before + 2 * bulk, "the refresh was not cut short"
                assert kept_cookie == cookie  # entries committed so far, the cookie before them
                assert _signs(milter, "example.com"), milter.log()
            finally:
                slapd.resume()
            wait_for(
                "the refresh completed by the next writer",
                lambda: _replica(state)[0] == before + 2 * bulk,
                timeout=60,
            )
            assert _replica(state)[1] != cookie
            assert len(Pool.writers_in(milter.log())) >= 2  # another took the role
            assert _signs(milter, f"d{bulk - 1}.bulk.test"), milter.log()
