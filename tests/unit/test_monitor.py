"""The metrics and health endpoint, the counters behind it, and systemd's notifications."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from ldapdkim.config.values import Context, tcp_socket
from ldapdkim.errors import ConfigError
from ldapdkim.milter import daemon
from ldapdkim.milter.monitor import Figures, Health, Monitor, judge
from ldapdkim.milter.session import _count_verified
from ldapdkim.model import DirectoryView, DkimResult, Failure, VerifyResult

CURRENT = DirectoryView(mode="sync", connected=True, age=0.0, entries=3, sync_age=0.0)


# -- health --------------------------------------------------------------------


def test_a_milter_with_a_current_view_is_healthy() -> None:
    health = judge(True, CURRENT, max_stale=60)
    assert health == Health(True, "ok: accepting sessions; directory view current (sync)")


def test_a_view_older_than_directory_max_stale_is_not() -> None:
    old = DirectoryView(mode="sync", connected=False, age=61.0)
    health = judge(True, old, max_stale=60)
    assert not health.ok
    assert health.why == (
        "directory view is 61 s old, more than DirectoryMaxStale 60 s (sync, no server connected)"
    )


def test_a_view_within_directory_max_stale_is_still_healthy() -> None:
    health = judge(True, DirectoryView(mode="lookup", connected=False, age=59.0), max_stale=60)
    assert health == Health(True, "ok: accepting sessions; directory view 59 s old (lookup)")


def test_no_view_at_all_is_unhealthy() -> None:
    health = judge(True, DirectoryView(mode="sync", connected=False, age=None), max_stale=60)
    assert not health.ok and "no directory view yet" in health.why


def test_a_milter_that_stopped_accepting_is_unhealthy_whatever_its_view() -> None:
    assert not judge(False, CURRENT, max_stale=60).ok


# -- the endpoint ---------------------------------------------------------------


@pytest.fixture
def endpoint() -> Iterator[tuple[int, list[Figures]]]:
    """A monitor on a free loopback port; the test sets what the milter reports."""
    now = [Figures(sessions=2, view=CURRENT, health=judge(True, CURRENT, 60))]
    monitor = Monitor("127.0.0.1", 0, lambda: now[0])
    monitor.start()
    yield monitor.port, now
    monitor.close()


def get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers["Content-Type"], err.read().decode()


def test_healthz_is_200_with_the_reason_then_503_when_the_view_is_gone(
    endpoint: tuple[int, list[Figures]],
) -> None:
    port, now = endpoint
    assert get(port, "/healthz")[::2] == (
        200,
        "ok: accepting sessions; directory view current (sync)\n",
    )
    gone = DirectoryView(mode="sync", connected=False, age=None)
    now[0] = Figures(sessions=0, view=gone, health=judge(True, gone, 60))
    status, _, why = get(port, "/healthz")
    assert status == 503 and why.startswith("no directory view yet")


def test_metrics_are_prometheus_text_with_the_milters_figures(
    endpoint: tuple[int, list[Figures]],
) -> None:
    port, _ = endpoint
    status, content_type, text = get(port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    missing = {
        "ldapdkim_sessions 2.0",
        "ldapdkim_healthy 1.0",
        "ldapdkim_replica_entries 3.0",
        'ldapdkim_directory_mode{mode="sync"} 1.0',
        'ldapdkim_directory_mode{mode="lookup"} 0.0',
        'ldapdkim_messages_not_signed_total{reason="no_active_key"} 0.0',
    } - set(text.splitlines())
    assert not missing, text
    assert "_created" not in text  # one series per counter, not two


def test_other_paths_are_404(endpoint: tuple[int, list[Figures]]) -> None:
    assert get(endpoint[0], "/metrics/../etc/passwd")[0] == 404


# -- what is counted -------------------------------------------------------------


def _verified(result: DkimResult, algorithm: str) -> VerifyResult:
    return VerifyResult(result, "example.com", "s1", algorithm, "", failure=Failure.NONE)


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_message_with_one_passing_signature_counts_as_pass() -> None:
    before = _value("ldapdkim_messages_verified_total", result="pass")
    _count_verified(
        [_verified(DkimResult.FAIL, "rsa-sha256"), _verified(DkimResult.PASS, "ed25519-sha256")]
    )
    assert _value("ldapdkim_messages_verified_total", result="pass") == before + 1


def test_an_algorithm_named_by_the_sender_never_becomes_a_label_value() -> None:
    """a= comes from the message: a label per value would let senders grow the series."""
    before = _value("ldapdkim_signatures_verified_total", algorithm="unknown", result="permerror")
    _count_verified([_verified(DkimResult.PERMERROR, "x-attacker-chosen-1")])
    _count_verified([_verified(DkimResult.PERMERROR, "x-attacker-chosen-2")])
    after = _value("ldapdkim_signatures_verified_total", algorithm="unknown", result="permerror")
    assert after == before + 2
    assert "x-attacker-chosen-1" not in str(list(REGISTRY.collect()))


# -- MetricsSocket ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("inet:9469@127.0.0.1", ("127.0.0.1", 9469)),
        ("inet6:9469@[::1]", ("::1", 9469)),
        ("inet:9469", ("0.0.0.0", 9469)),  # noqa: S104 - what inet:PORT means for Socket too
    ],
)
def test_metrics_socket_takes_sockets_syntax(text: str, address: tuple[str, int]) -> None:
    assert tcp_socket(Context("t.conf", 3, "MetricsSocket"), text) == address


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("local:/run/ldapdkim/metrics", "'local:/run/ldapdkim/metrics' is not a TCP socket"),
        ("9469", "'9469' is not a TCP socket"),
        ("inet:0@127.0.0.1", "'inet:0@127.0.0.1' has no valid port (1-65535)"),
    ],
)
def test_metrics_socket_must_be_tcp(text: str, what: str) -> None:
    with pytest.raises(ConfigError) as refused:
        tcp_socket(Context("t.conf", 3, "MetricsSocket"), text)
    fix = "use inet:PORT@HOST or inet6:PORT@HOST, e.g. inet:9469@127.0.0.1"
    assert str(refused.value) == f"t.conf:3: MetricsSocket {what}; {fix}"


# -- systemd notifications ---------------------------------------------------------


def test_notify_writes_to_the_socket_systemd_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        daemon.notify("READY=1", "STATUS=ok")
        assert listener.recv(100) == b"READY=1\nSTATUS=ok"


def test_notify_without_systemd_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    daemon.notify("READY=1")  # no socket, no error


def test_the_supervisor_adds_up_the_workers_counters_but_not_their_replicas() -> None:
    from ldapdkim.milter.workers import add_up

    lines = [
        "sessions=1 signed=5 verified=2 directory_mode=sync replica_entries=30 "
        "replica_staleness_s=0.0",
        "sessions=0 signed=7 verified=1 directory_mode=sync replica_entries=30",
    ]
    assert add_up(lines) == "sessions=1 signed=12 verified=3"
