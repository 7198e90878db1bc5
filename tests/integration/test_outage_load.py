"""A directory outage under load: 16 concurrent MTA sessions while slapd dies or freezes.

The load comes from ``harness/milterload.py`` (real milter-protocol sessions
against ``ldapdkim run``; every reply must carry a DKIM-Signature).  The
milter runs in lookup mode (``DirectorySync no``) and its fresh cache lives
0.2 s, so during the run lookups really go to the server after it has gone:
signatures after that come from the last known answer
(``DirectoryMaxStale``), which the milter's counters confirm (``stale_served``
in its SIGUSR1 stats line).

* slapd killed with SIGKILL after the 100th answer of 400: nothing lost,
  nothing failed, every message signed (and the same with the content-sync
  replica, ``DirectorySync yes``, which serves its copy, in one process and
  with ``Workers 2`` reading one replica database);
* slapd frozen with SIGSTOP after the 100th answer: every message still
  answered, signed, and none took longer than 2 x LDAPTimeout (one timed-out
  search plus one timed-out reconnect) and a margin;
* the milter started while the directory is down and nothing is known:
  On-DirectoryError (tempfail) for every message.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from harness import milterload
from harness.dnsserver import DnsServer
from harness.mailsite import MailSite
from harness.milterproc import MilterProcess
from harness.slapd import SLAPD_BINARIES, Slapd, require_binaries

LDAP_TIMEOUT = 1.0
CONCURRENCY = 16
COUNT = 400
OUTAGE_AFTER = 100
MARGIN = 1.5
"""Seconds on top of 2 x LDAPTimeout: signing, scheduling, a busy machine."""


@dataclass
class Outage:
    slapd: Slapd
    milter: MilterProcess
    workers: int = 1
    answered_at: list[float] = field(default_factory=list)

    def options(self, count: int, *, require_signature: bool = True) -> milterload.LoadOptions:
        return milterload.LoadOptions(
            socket=self.milter.socket,
            concurrency=CONCURRENCY,
            count=count,
            timeout=30.0,
            require_signature=require_signature,
        )

    def stats(self) -> dict[str, str]:
        """The milter's counters (asked for with SIGUSR1): all workers' added up."""
        before = self.milter.log().count("workers): ")
        stats = self.milter.stats()
        assert stats is not None, self.milter.log()
        if self.workers == 1:
            return stats
        deadline = time.monotonic() + 10
        while self.milter.log().count("workers): ") == before:
            assert time.monotonic() < deadline, self.milter.log()
            time.sleep(0.02)
        line = self.milter.log().split("workers): ")[before + 1].splitlines()[0]
        return dict(re.findall(r"(\w+)=(\S+)", line))

    def load_with_outage(
        self, monkeypatch: pytest.MonkeyPatch, outage: Callable[[], None]
    ) -> tuple[milterload.LoadResult, float]:
        """Run COUNT messages; call *outage* once OUTAGE_AFTER have been answered.

        Each session that has an answer after that waits, before sending its
        next message, until *outage* has returned: however slowly this thread
        is scheduled on a busy machine or the outage takes effect, at most the
        messages in flight (CONCURRENCY - 1) are answered between the
        OUTAGE_AFTER-th answer and the outage, so the rest meet it.  The
        latencies measured exclude that wait (they end with the answer).

        Returns the result and the monotonic time of the outage.
        """
        judge = milterload.judge
        lock = threading.Lock()
        reached = threading.Event()
        happened = threading.Event()

        def counting_judge(outcome: milterload.Outcome, *wanted: bool) -> None:
            with lock:
                self.answered_at.append(time.monotonic())
                answered = len(self.answered_at)
                if answered == OUTAGE_AFTER:
                    reached.set()
            if answered >= OUTAGE_AFTER:
                happened.wait(60)
            judge(outcome, *wanted)

        monkeypatch.setattr(milterload, "judge", counting_judge)
        results: list[milterload.LoadResult] = []
        runner = threading.Thread(
            target=lambda: results.append(milterload.run_load(self.options(COUNT))),
            name="milterload",
        )
        runner.start()
        try:
            assert reached.wait(60), f"only {len(self.answered_at)} answers in 60 s"
            outage()
            outage_at = time.monotonic()
        finally:
            happened.set()
            runner.join(120)
        assert results, "the load run did not finish"
        return results[0], outage_at


@pytest.fixture
def sync_mode() -> str:
    """The milter's DirectorySync: lookups only, unless a test says otherwise."""
    return "no"


@pytest.fixture
def workers() -> int:
    """The milter's Workers: one process, unless a test says otherwise."""
    return 1


@pytest.fixture
def outage(tmp_path: Path, sync_mode: str, workers: int) -> Iterator[Outage]:
    require_binaries(*SLAPD_BINARIES)
    with Slapd(tmp_path / "slapd") as slapd, DnsServer() as dns:
        site = MailSite(slapd, slapd.domains_base, dns, tmp_path)
        site.add_domains(["example.com"], "rsa-sha256")
        lines = site.milter_config(
            f"DirectorySync {sync_mode}",
            f"Workers {workers}",
            f"LDAPTimeout {LDAP_TIMEOUT:g}",
            "LDAPCacheTTL 0.2",
            "LDAPNegativeCacheTTL 0.2",
        )
        with MilterProcess(tmp_path / "milter", lines) as milter:
            if sync_mode == "yes":
                # DirectorySync yes tempfails until the first refresh is in (as documented).
                deadline = time.monotonic() + 10
                while (milter.stats() or {}).get("directory_mode") != "sync" or (
                    milter.stats() or {}
                ).get("replica_entries", "0") == "0":
                    assert time.monotonic() < deadline, milter.log()
                    time.sleep(0.05)
            yield Outage(slapd, milter, workers)
            assert "Traceback" not in milter.log(), milter.log()


def _warm_up(outage: Outage) -> None:
    """Some signed mail while the directory is up: the last known answer to fall back on."""
    warm = milterload.run_load(outage.options(CONCURRENCY))
    assert warm.ok == CONCURRENCY, warm.summary()


@pytest.mark.parametrize(
    ("sync_mode", "workers"), [("no", 1), ("yes", 1), ("yes", 2)], ids=["lookup", "sync", "workers"]
)
def test_slapd_killed_under_load_loses_nothing(
    outage: Outage, monkeypatch: pytest.MonkeyPatch, sync_mode: str, workers: int
) -> None:
    _warm_up(outage)
    result, killed_at = outage.load_with_outage(monkeypatch, outage.slapd.kill)
    summary = result.summary()
    assert (result.messages, result.ok, result.failures) == (COUNT, COUNT, {}), summary
    after = sum(1 for moment in outage.answered_at if moment > killed_at)
    assert after >= COUNT - OUTAGE_AFTER - CONCURRENCY, (after, summary)
    stats = outage.stats()
    assert int(stats["signed"]) == COUNT + CONCURRENCY, stats
    if sync_mode == "no":
        assert int(stats["stale_served"]) > 0, stats  # lookups did hit the dead server
    print(f"\nSIGKILL: {after} of {COUNT} answered after the kill, {summary}, milter {stats}")


def test_slapd_frozen_under_load_answers_within_the_timeout(
    outage: Outage, monkeypatch: pytest.MonkeyPatch
) -> None:
    _warm_up(outage)
    try:
        result, _ = outage.load_with_outage(monkeypatch, outage.slapd.pause)
    finally:
        outage.slapd.resume()
    summary = result.summary()
    assert (result.messages, result.ok, result.failures) == (COUNT, COUNT, {}), summary
    slowest = max(result.total_latency)
    stats = outage.stats()
    print(f"\nSIGSTOP: slowest {slowest:.3f} s, {summary}, milter {stats}")
    assert int(stats["stale_served"]) > 0, stats
    assert slowest < 2 * LDAP_TIMEOUT + MARGIN, summary


def test_start_with_the_directory_down_tempfails_every_message(outage: Outage) -> None:
    outage.milter.stop()
    outage.slapd.kill()
    outage.milter.start()  # a fresh process: nothing known
    result = milterload.run_load(outage.options(2 * CONCURRENCY))
    assert result.messages == 2 * CONCURRENCY, result.summary()
    assert result.failures == {"tempfail": 2 * CONCURRENCY}, result.summary()
    stats = outage.stats()
    assert (stats["signed"], stats["stale_served"]) == ("0", "0"), stats
