"""A running milter's ``/metrics``, ``/healthz`` and systemd notifications.

The milter runs behind a real Postfix with ``MetricsSocket`` on loopback;
the figures scraped after a few signed and verified messages must count
exactly those messages.  Health follows the directory: a slapd of the
test's own is stopped and started again under the running milter.
"""

from __future__ import annotations

import re
import signal
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness.common import free_port, wait_for
from harness.dnsserver import DnsServer
from harness.mailsite import MailSite, message
from harness.milterproc import MilterProcess
from harness.postfix import Postfix, require_postfix
from harness.slapd import SLAPD_BINARIES, Slapd, require_binaries

import ldapdkim

OUTSIDE = "127.0.0.2"


def get(port: int, path: str) -> tuple[int, str]:
    """Status and body of ``GET http://127.0.0.1:PORT/PATH``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read().decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in Prometheus text (None when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        got = ",".join(sorted(re.findall(r'\w+="[^"]*"', match.group(2) or "")))
        if got == wanted:
            return float(match.group(3))
    return None


@dataclass
class Monitored:
    site: MailSite
    milter: MilterProcess
    postfix: Postfix
    metrics_port: int

    def send(self, msg: bytes, source: str = "127.0.0.1") -> bytes:
        subject = re.search(rb"Subject: (.*)\r\n", msg)
        assert subject is not None
        reply = self.postfix.send(
            msg, mail_from="alice@example.com", rcpt_to=["bob@example.net"], source_address=source
        )
        assert reply.accepted, (reply, self.milter.log())
        return self.postfix.wait_for_message(subject.group(1).decode())


@pytest.fixture
def own_slapd(tmp_path: Path) -> Iterator[Slapd]:
    require_binaries(*SLAPD_BINARIES)
    with Slapd(tmp_path / "slapd") as slapd:
        yield slapd


@pytest.fixture
def monitored(own_slapd: Slapd, tmp_path: Path) -> Iterator[Monitored]:
    require_postfix()
    port = free_port()
    with DnsServer() as dns, Postfix(tmp_path / "postfix") as postfix:
        site = MailSite(own_slapd, own_slapd.domains_base, dns, tmp_path)
        site.add_domains(["example.com"], "rsa-sha256", "ed25519-sha256")
        lines = site.milter_config(
            f"MetricsSocket inet:{port}@127.0.0.1", "DirectorySync yes", "DirectoryMaxStale 2"
        )
        with MilterProcess(tmp_path / "milter", lines) as milter:
            postfix.set_milter(milter.postfix_address)
            postfix.reload()
            yield Monitored(site, milter, postfix, port)
            assert "Traceback" not in milter.log(), milter.log()


def test_metrics_count_the_messages_signed_and_verified(monitored: Monitored) -> None:
    for i in range(3):
        monitored.send(message(subject=f"metrics {i}"))
    site = monitored.site
    monitored.send(site.signed_elsewhere("outside good"), OUTSIDE)
    forged = site.signed_elsewhere("outside bad").replace(b"the figures", b"new figures")
    monitored.send(forged, OUTSIDE)
    monitored.send(message(subject="outside none"), OUTSIDE)

    status, text = get(monitored.metrics_port, "/metrics")
    assert status == 200
    assert sample(text, "ldapdkim_messages_signed_total") == 3
    assert sample(text, "ldapdkim_signatures_made_total", algorithm="rsa-sha256") == 3
    assert sample(text, "ldapdkim_signatures_made_total", algorithm="ed25519-sha256") == 3
    verified = {
        result: sample(text, "ldapdkim_messages_verified_total", result=result)
        for result in ("pass", "fail", "none", "temperror")
    }
    assert verified == {"pass": 1, "fail": 1, "none": 1, "temperror": 0}, monitored.milter.log()
    for algorithm in ("rsa-sha256", "ed25519-sha256"):
        for result in ("pass", "fail"):
            labels = {"algorithm": algorithm, "result": result}
            assert sample(text, "ldapdkim_signatures_verified_total", **labels) == 1, labels
    assert sample(text, "ldapdkim_actions_total", outcome="On-NoSignature", action="accept") == 1
    assert sample(text, "ldapdkim_actions_total", outcome="On-BadSignature", action="accept") == 1
    dns_lookups = sample(text, "ldapdkim_dns_query_seconds_count", result="answer")
    assert dns_lookups is not None and dns_lookups >= 2  # two selectors
    assert sample(text, "ldapdkim_messages_not_signed_total", reason="domain_not_signed") == 0
    assert sample(text, "ldapdkim_directory_mode", mode="sync") == 1
    assert sample(text, "ldapdkim_directory_connected") == 1
    assert sample(text, "ldapdkim_directory_view_age_seconds") == 0
    entries = sample(text, "ldapdkim_replica_entries")
    assert entries is not None and entries >= 3  # the domain and its two keys
    assert sample(text, "ldapdkim_healthy") == 1
    assert sample(text, "ldapdkim_sessions") is not None
    assert sample(text, "process_resident_memory_bytes") is not None
    assert sample(text, "ldapdkim_info", version=ldapdkim.__version__) == 1


def test_health_follows_the_directory_and_recovers(monitored: Monitored, own_slapd: Slapd) -> None:
    port = monitored.metrics_port
    status, why = get(port, "/healthz")
    assert status == 200 and why.startswith("ok:"), why

    own_slapd.stop()
    wait_for("/healthz says 503 with slapd down", lambda: get(port, "/healthz")[0] == 503)
    status, why = get(port, "/healthz")
    assert "more than DirectoryMaxStale 2 s" in why, why
    assert sample(get(port, "/metrics")[1], "ldapdkim_healthy") == 0

    own_slapd.start()
    wait_for("/healthz back to 200", lambda: get(port, "/healthz")[0] == 200, timeout=60)


def test_anything_but_metrics_and_health_is_refused(monitored: Monitored) -> None:
    assert get(monitored.metrics_port, "/")[0] == 404
    request = urllib.request.Request(
        f"http://127.0.0.1:{monitored.metrics_port}/metrics", data=b"x", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)  # noqa: S310
    with refused.value:
        assert refused.value.code == 405


def test_systemd_hears_ready_once_the_view_is_loaded_and_stopping_at_the_end(
    site_for_notify: tuple[MailSite, Path],
) -> None:
    site, workdir = site_for_notify
    notify_path = workdir / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(notify_path))
        listener.settimeout(20)
        milter = MilterProcess(
            workdir / "milter",
            site.milter_config("DirectorySync yes"),
            env={"NOTIFY_SOCKET": str(notify_path)},
        )
        with milter:
            heard = [listener.recv(4096).decode()]
            while "READY=1" not in heard[-1]:
                heard.append(listener.recv(4096).decode())
            assert "directory view current (sync)" in heard[-1], heard
            milter.signal(signal.SIGTERM)
            stopping = listener.recv(4096).decode()
            assert stopping == "STOPPING=1", stopping


@pytest.fixture
def site_for_notify(own_slapd: Slapd, tmp_path: Path) -> Iterator[tuple[MailSite, Path]]:
    with DnsServer() as dns:
        site = MailSite(own_slapd, own_slapd.domains_base, dns, tmp_path)
        site.add_domains(["example.com"], "rsa-sha256")
        yield site, tmp_path
